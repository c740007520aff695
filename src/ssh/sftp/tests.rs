use super::codec::tests::{packet, string};
use super::*;

fn status(id: u32, code: u32) -> Vec<u8> {
    packet(101, id, &[&code.to_be_bytes(), &string(b""), &string(b"")])
}

/// op, path, bytes read, bytes written, outcome.
type Summary<'a> = (&'a str, &'a str, Option<u64>, Option<u64>, &'a str);

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

    let summary: Vec<Summary> = entries
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
        .collect();
    assert_eq!(
        summary,
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
