use super::*;
use crate::ssh::sftp::tests::summary;

fn tracker(command: &str) -> Tracker {
    Tracker::new(ScpCommand::parse(command).unwrap())
}

#[test]
fn commands_that_are_not_scp_transfers_are_not_followed() {
    for command in [
        "ls -t",
        "scp",
        "rsync --server -t .",
        "scp -v host:x y",
        "'unclosed",
    ] {
        assert_eq!(ScpCommand::parse(command), None, "{command}");
    }
    assert!(ScpCommand::parse("/usr/bin/scp -t -- -odd").unwrap().upload);
    assert!(!ScpCommand::parse("scp -f a").unwrap().upload);
}

#[test]
fn an_upload_of_one_file_is_logged_with_its_size_and_the_receivers_answer() {
    let mut scp = tracker("scp -t up.bin");
    let mut entries = scp.target_sent(b"\0");
    entries.extend(scp.client_sent(b"T1700000000 0 1700000000 0\n"));
    entries.extend(scp.target_sent(b"\0"));
    entries.extend(scp.client_sent(b"C0644 11 local.bin\nhello"));
    entries.extend(scp.target_sent(b"\0"));
    entries.extend(scp.client_sent(b" world\0"));
    assert!(entries.is_empty());
    entries.extend(scp.target_sent(b"\0"));
    assert_eq!(
        summary(&entries),
        [("open", "up.bin", Some(0), Some(11), "ok")]
    );
}

#[test]
fn a_recursive_upload_logs_directories_files_and_refusals_in_order() {
    let mut scp = tracker("scp -r -t -- /srv/dest");
    let mut entries = scp.target_sent(b"\0");
    // A directory with one file written and one refused before its data.
    entries.extend(scp.client_sent(b"D0755 0 tree\n"));
    entries.extend(scp.target_sent(b"\0"));
    entries.extend(scp.client_sent(b"C0644 3 a\nabc\0"));
    entries.extend(scp.target_sent(b"\0\0"));
    entries.extend(scp.client_sent(b"C0644 5 b\n"));
    entries.extend(scp.target_sent(b"\x01scp: /srv/dest/tree/b: Permission denied\n"));
    entries.extend(scp.client_sent(b"E\n"));
    entries.extend(scp.target_sent(b"\0"));
    // Then a directory the receiver cannot make: the sender skips it.
    entries.extend(scp.client_sent(b"D0755 0 locked\n"));
    entries.extend(scp.target_sent(b"\x02scp: /srv/dest/locked: Read-only file system\n"));
    entries.extend(scp.client_sent(b"C0600 0 empty\n\0"));
    entries.extend(scp.target_sent(b"\0\0"));
    assert_eq!(
        summary(&entries),
        [
            ("mkdir", "/srv/dest/tree", None, None, "ok"),
            ("open", "/srv/dest/tree/a", Some(0), Some(3), "ok"),
            (
                "open",
                "/srv/dest/tree/b",
                Some(0),
                Some(5),
                "warning: scp: /srv/dest/tree/b: Permission denied"
            ),
            (
                "mkdir",
                "/srv/dest/locked",
                None,
                None,
                "error: scp: /srv/dest/locked: Read-only file system"
            ),
            ("open", "/srv/dest/empty", Some(0), Some(0), "ok"),
        ]
    );
}

#[test]
fn a_download_logs_the_files_sent_under_the_paths_asked_for() {
    let mut scp = tracker("scp -r -f /var/log/app");
    let mut entries = scp.client_sent(b"\0");
    entries.extend(scp.target_sent(b"D0755 0 app\n"));
    entries.extend(scp.client_sent(b"\0"));
    // Data split across reads, the answer in the same read as the next line.
    entries.extend(scp.target_sent(b"C0640 6 one.log\nabc"));
    entries.extend(scp.client_sent(b"\0"));
    entries.extend(scp.target_sent(b"def\0E\n"));
    entries.extend(scp.client_sent(b"\0\0"));
    assert_eq!(
        summary(&entries),
        [("open", "/var/log/app/one.log", Some(6), Some(0), "ok")]
    );

    // A missing file: the sender says so instead of sending it.
    let mut scp = tracker("scp -f /nope");
    let mut entries = scp.client_sent(b"\0");
    entries.extend(scp.target_sent(b"\x01scp: /nope: No such file or directory\n"));
    assert_eq!(
        summary(&entries),
        [(
            "open",
            "/nope",
            Some(0),
            Some(0),
            "warning: scp: /nope: No such file or directory"
        )]
    );
}

#[test]
fn a_transfer_cut_off_is_reported_and_garbage_stops_the_following() {
    let mut scp = tracker("scp -t big.bin");
    scp.target_sent(b"\0");
    scp.client_sent(b"C0644 1000 big.bin\n");
    scp.target_sent(b"\0");
    scp.client_sent(&[7; 400]);
    assert_eq!(
        summary(&scp.unclosed()),
        [(
            "open",
            "big.bin",
            Some(0),
            Some(1000),
            "not finished (channel ended)"
        )]
    );

    let mut scp = tracker("scp -t x");
    scp.target_sent(b"\0");
    assert!(scp.client_sent(b"not an scp line\nC0644 1 x\n").is_empty());
    assert!(scp.target_sent(b"\0").is_empty());
    assert!(scp.unclosed().is_empty());
}

#[test]
fn a_sender_running_far_ahead_of_the_answers_stops_being_followed() {
    let mut scp = tracker("scp -t dir");
    scp.target_sent(b"\0");
    let lines = b"C0644 0 x\n\0".repeat(FOLLOWED + 100);
    scp.client_sent(&lines);
    assert!(scp.awaiting.len() <= FOLLOWED * 2 && scp.entries.len() <= FOLLOWED);
    assert!(matches!(scp.sending, Sending::Lost));
}

#[test]
fn an_upload_the_receiver_refuses_at_once_is_logged() {
    let mut scp = tracker("scp -d -t /no/such/dir");
    let entries = scp.target_sent(b"\x01scp: /no/such/dir: No such file or directory\n");
    assert_eq!(
        summary(&entries),
        [(
            "open",
            "/no/such/dir",
            Some(0),
            Some(0),
            "warning: scp: /no/such/dir: No such file or directory"
        )]
    );
}

#[test]
fn a_receiver_answering_a_file_before_the_senders_zero_byte_is_followed() {
    // PuTTY's pscp acknowledges a file once it has read its data, then
    // reads the sender's zero byte; the two cross on the way.
    let mut scp = tracker("scp -v -f up.bin");
    let mut entries = scp.client_sent(b"\0");
    entries.extend(scp.target_sent(b"C0644 5 up.bin\n"));
    entries.extend(scp.client_sent(b"\0"));
    entries.extend(scp.target_sent(b"hello"));
    entries.extend(scp.client_sent(b"\0"));
    entries.extend(scp.target_sent(b"\0"));
    // An empty file the same way, then one answered in the usual order.
    entries.extend(scp.target_sent(b"C0644 0 empty\n"));
    entries.extend(scp.client_sent(b"\0"));
    entries.extend(scp.client_sent(b"\0"));
    entries.extend(scp.target_sent(b"\0"));
    entries.extend(scp.target_sent(b"C0644 2 last\nhi\0"));
    entries.extend(scp.client_sent(b"\0\0"));
    assert_eq!(
        summary(&entries),
        [
            ("open", "up.bin", Some(5), Some(0), "ok"),
            ("open", "empty", Some(0), Some(0), "ok"),
            ("open", "last", Some(2), Some(0), "ok"),
        ]
    );
}
