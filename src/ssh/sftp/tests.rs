use super::codec::tests::{packet, string};
use super::*;

fn status(id: u32, code: u32) -> Vec<u8> {
    packet(101, id, &[&code.to_be_bytes(), &string(b""), &string(b"")])
}

/// op, path, bytes read, bytes written, outcome.
pub(super) type Summary<'a> = (&'a str, &'a str, Option<u64>, Option<u64>, &'a str);

pub(super) fn summary(entries: &[Entry]) -> Vec<Summary<'_>> {
    entries
        .iter()
        .map(|e| {
            (
                e.op,
                e.path.as_str(),
                e.read_bytes,
                e.written_bytes,
                e.outcome.as_str(),
            )
        })
        .collect()
}

#[test]
fn a_download_an_upload_and_changes_are_logged_with_bytes_and_outcomes() {
    let mut tracker = Tracker::default();
    let mut entries = Vec::new();
    // Download: open for reading, two reads (the second hits EOF), close.
    tracker.client_sent(&packet(
        3,
        1,
        &[&string(b"/etc/hosts"), &1u32.to_be_bytes(), &[0; 4]],
    ));
    entries.extend(tracker.target_sent(&packet(102, 1, &[&string(b"H1")])));
    tracker.client_sent(&packet(
        5,
        2,
        &[&string(b"H1"), &[0; 8], &32768u32.to_be_bytes()],
    ));
    entries.extend(tracker.target_sent(&packet(103, 2, &[&string(&[b'x'; 221])])));
    tracker.client_sent(&packet(
        5,
        3,
        &[&string(b"H1"), &[0; 8], &32768u32.to_be_bytes()],
    ));
    entries.extend(tracker.target_sent(&status(3, 1)));
    tracker.client_sent(&packet(4, 4, &[&string(b"H1")]));
    entries.extend(tracker.target_sent(&status(4, 0)));
    // Upload: a write refused midway still counts what was taken.
    tracker.client_sent(&packet(
        3,
        5,
        &[&string(b"/tmp/up"), &0x1au32.to_be_bytes(), &[0; 4]],
    ));
    entries.extend(tracker.target_sent(&packet(102, 5, &[&string(b"H2")])));
    tracker.client_sent(&packet(
        6,
        6,
        &[&string(b"H2"), &[0; 8], &string(&[1; 1000])],
    ));
    tracker.client_sent(&packet(
        6,
        7,
        &[&string(b"H2"), &[0; 8], &string(&[1; 500])],
    ));
    // Replies in one read, out of order.
    let mut both = status(7, 4);
    both.extend(status(6, 0));
    entries.extend(tracker.target_sent(&both));
    // A remove of a missing file, an open refused.
    tracker.client_sent(&packet(13, 8, &[&string(b"/nope")]));
    tracker.client_sent(&packet(
        3,
        9,
        &[&string(b"/root/x"), &1u32.to_be_bytes(), &[0; 4]],
    ));
    let mut refusals = status(8, 2);
    refusals.extend(status(9, 3));
    entries.extend(tracker.target_sent(&refusals));
    entries.extend(tracker.unclosed());

    assert_eq!(
        summary(&entries),
        vec![
            ("open", "/etc/hosts", Some(221), Some(0), "ok"),
            ("remove", "/nope", None, None, "no such file"),
            ("open", "/root/x", Some(0), Some(0), "permission denied"),
            (
                "open",
                "/tmp/up",
                Some(0),
                Some(1000),
                "not closed (channel ended)"
            ),
        ]
    );
    assert_eq!(entries[3].mode.as_deref(), Some("write,create,truncate"));
}

#[test]
fn requests_never_answered_stop_being_followed_past_the_bound() {
    let mut tracker = Tracker::default();
    for id in 0..(FOLLOWED as u32 + 50) {
        tracker.client_sent(&packet(13, id, &[&string(b"/x")]));
    }
    assert_eq!(tracker.pending.len(), FOLLOWED);
}

/// Opens `path` with `flags` as request `id`, answered with `handle`.
fn opened(tracker: &mut Tracker, id: u32, path: &[u8], flags: u32, handle: &[u8]) {
    tracker.client_sent(&packet(
        3,
        id,
        &[&string(path), &flags.to_be_bytes(), &[0; 4]],
    ));
    assert!(
        tracker
            .target_sent(&packet(102, id, &[&string(handle)]))
            .is_empty()
    );
}

#[test]
fn server_side_copies_and_attribute_changes_through_handles_are_logged() {
    let mut tracker = Tracker::default();
    opened(&mut tracker, 1, b"/srv/a", 1, b"H1");
    opened(&mut tracker, 2, b"/srv/b", 0x1a, b"H2");
    let extended = |id: u32, name: &[u8], rest: &[&[u8]]| {
        let name = string(name);
        let mut fields: Vec<&[u8]> = vec![&name];
        fields.extend_from_slice(rest);
        packet(200, id, &fields)
    };
    // copy-data: read handle, offset, length, write handle, offset.
    tracker.client_sent(&extended(
        3,
        b"copy-data",
        &[&string(b"H1"), &[0; 8], &[0; 8], &string(b"H2"), &[0; 8]],
    ));
    // fsetstat on the written file, lsetstat on a link.
    tracker.client_sent(&packet(10, 4, &[&string(b"H2"), &[0; 4]]));
    tracker.client_sent(&extended(
        5,
        b"lsetstat@openssh.com",
        &[&string(b"/srv/link"), &[0; 4]],
    ));
    let mut replies = status(3, 0);
    replies.extend(status(4, 0));
    replies.extend(status(5, 3));
    let entries = tracker.target_sent(&replies);
    let summary: Vec<(&str, &str, Option<&str>, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.op,
                e.path.as_str(),
                e.target.as_deref(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("copy", "/srv/a", Some("/srv/b"), "ok"),
            ("setstat", "/srv/b", None, "ok"),
            ("setstat", "/srv/link", None, "permission denied"),
        ]
    );
}

#[test]
fn files_left_open_are_logged_in_the_order_they_were_opened() {
    let mut tracker = Tracker::default();
    let paths: Vec<String> = (0..20).map(|n| format!("/srv/f{n}")).collect();
    for (id, path) in paths.iter().enumerate() {
        let handle = format!("H{id}");
        opened(
            &mut tracker,
            id as u32,
            path.as_bytes(),
            1,
            handle.as_bytes(),
        );
    }
    let logged: Vec<String> = tracker.unclosed().into_iter().map(|e| e.path).collect();
    assert_eq!(logged, paths);
}

#[test]
fn a_handle_the_server_hands_out_again_does_not_lose_the_first_file() {
    let mut tracker = Tracker::default();
    opened(&mut tracker, 1, b"/srv/first", 1, b"H");
    tracker.client_sent(&packet(
        3,
        2,
        &[&string(b"/srv/second"), &1u32.to_be_bytes(), &[0; 4]],
    ));
    let replaced = tracker.target_sent(&packet(102, 2, &[&string(b"H")]));
    assert_eq!(
        summary(&replaced),
        [(
            "open",
            "/srv/first",
            Some(0),
            Some(0),
            "not closed (the server reused its handle)"
        )]
    );
    assert_eq!(summary(&tracker.unclosed())[0].1, "/srv/second");
}

/// The NAME reply to a readdir: `count` names, as OpenSSH sends them.
fn names(id: u32, count: u32) -> Vec<u8> {
    let mut fields = vec![count.to_be_bytes().to_vec()];
    for n in 0..count {
        let name = format!("f{n}");
        fields.push(string(name.as_bytes()));
        fields.push(string(
            format!("-rw-r--r-- 1 root root 0 Jan 1 {name}").as_bytes(),
        ));
        fields.push(vec![0; 4]); // no attributes
    }
    let fields: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    packet(104, id, &fields)
}

#[test]
fn directory_listings_are_logged_with_the_names_they_gave() {
    let mut tracker = Tracker::default();
    let mut entries = Vec::new();
    // A listing in two batches, then end of directory and close.
    tracker.client_sent(&packet(11, 1, &[&string(b"/etc")]));
    entries.extend(tracker.target_sent(&packet(102, 1, &[&string(b"D1")])));
    for (id, count) in [(2, 100), (3, 7)] {
        tracker.client_sent(&packet(12, id, &[&string(b"D1")]));
        entries.extend(tracker.target_sent(&names(id, count)));
    }
    tracker.client_sent(&packet(12, 4, &[&string(b"D1")]));
    entries.extend(tracker.target_sent(&status(4, 1)));
    // A realpath's NAME reply counts toward nothing.
    tracker.client_sent(&packet(16, 5, &[&string(b".")]));
    entries.extend(tracker.target_sent(&names(5, 1)));
    tracker.client_sent(&packet(4, 6, &[&string(b"D1")]));
    entries.extend(tracker.target_sent(&status(6, 0)));
    // A directory refused, and one left open.
    tracker.client_sent(&packet(11, 7, &[&string(b"/root")]));
    entries.extend(tracker.target_sent(&status(7, 3)));
    tracker.client_sent(&packet(11, 8, &[&string(b"/srv")]));
    entries.extend(tracker.target_sent(&packet(102, 8, &[&string(b"D2")])));
    tracker.client_sent(&packet(12, 9, &[&string(b"D2")]));
    entries.extend(tracker.target_sent(&names(9, 3)));
    entries.extend(tracker.unclosed());

    let listed: Vec<(&str, &str, Option<u64>, &str)> = entries
        .iter()
        .map(|e| (e.op, e.path.as_str(), e.names, e.outcome.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("list", "/etc", Some(107), "ok"),
            ("list", "/root", Some(0), "permission denied"),
            ("list", "/srv", Some(3), "not closed (channel ended)"),
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.mode.is_none() && e.read_bytes.is_none())
    );
    let line = serde_json::to_string(&entries[0]).unwrap();
    assert_eq!(
        line,
        r#"{"op":"list","path":"/etc","names":107,"outcome":"ok"}"#
    );
}

#[test]
fn reads_and_writes_through_a_directory_handle_count_toward_nothing() {
    let mut tracker = Tracker::default();
    tracker.client_sent(&packet(11, 1, &[&string(b"/d")]));
    assert!(
        tracker
            .target_sent(&packet(102, 1, &[&string(b"H")]))
            .is_empty()
    );
    // A confused client reads and writes through the directory's handle.
    tracker.client_sent(&packet(
        5,
        2,
        &[&string(b"H"), &[0; 8], &32768u32.to_be_bytes()],
    ));
    assert!(
        tracker
            .target_sent(&packet(103, 2, &[&string(&[1; 10])]))
            .is_empty()
    );
    tracker.client_sent(&packet(6, 3, &[&string(b"H"), &[0; 8], &string(&[1; 5])]));
    assert!(tracker.target_sent(&status(3, 0)).is_empty());
    let left = tracker.unclosed();
    assert_eq!(
        (left[0].op, left[0].names, left[0].read_bytes),
        ("list", Some(0), None)
    );
}
