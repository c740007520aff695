use super::*;

/// A packet: length, type, id, then `fields` as they are.
pub fn packet(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(&id.to_be_bytes());
    for field in fields {
        body.extend_from_slice(field);
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

#[test]
fn packets_are_found_at_every_split_point_and_big_ones_keep_only_their_head() {
    let data = vec![7u8; 100_000];
    let mut stream = packet(
        3,
        1,
        &[&string(b"/etc/passwd"), &1u32.to_be_bytes(), &[0; 4]],
    );
    stream.extend(packet(6, 2, &[&string(b"h1"), &[0; 8], &string(&data)]));
    stream.extend(packet(13, 3, &[&string(b"/tmp/x")]));
    for split in (0..stream.len())
        .step_by(997)
        .chain([1, 4, 5, stream.len() - 1])
    {
        let mut packets = Packets::default();
        let mut seen = Vec::new();
        let mut record = |head: &[u8]| seen.push(parse_request(head));
        packets.feed(&stream[..split], &mut record);
        packets.feed(&stream[split..], &mut record);
        assert_eq!(
            seen,
            vec![
                Some(Request::Open {
                    id: 1,
                    path: "/etc/passwd".into(),
                    flags: 1
                }),
                Some(Request::Write {
                    id: 2,
                    handle: b"h1".to_vec(),
                    bytes: 100_000
                }),
                Some(Request::Change {
                    id: 3,
                    op: "remove",
                    path: "/tmp/x".into(),
                    target: None
                }),
            ],
            "split at {split}"
        );
    }
}

#[test]
fn renames_links_and_replies_parse_and_garbage_does_not() {
    let rename = packet(18, 4, &[&string(b"/a"), &string(b"/b")]);
    let posix = packet(
        200,
        5,
        &[
            &string(b"posix-rename@openssh.com"),
            &string(b"/c"),
            &string(b"/d"),
        ],
    );
    assert_eq!(
        parse_request(&rename[4..]),
        Some(Request::Change {
            id: 4,
            op: "rename",
            path: "/a".into(),
            target: Some("/b".into())
        })
    );
    assert!(matches!(
        parse_request(&posix[4..]),
        Some(Request::Change { op: "rename", .. })
    ));
    let other = packet(200, 6, &[&string(b"statvfs@openssh.com"), &string(b"/")]);
    assert_eq!(parse_request(&other[4..]), None);
    let data = packet(103, 7, &[&string(&[1; 300])]);
    assert_eq!(
        parse_reply(&data[4..]),
        Some(Reply::Data { id: 7, bytes: 300 })
    );
    for garbage in [
        &[][..],
        &[3],
        &[3, 0, 0],
        &[3, 0, 0, 0, 1, 0, 0, 0, 9, b'x'],
    ] {
        assert_eq!(parse_request(garbage), None, "{garbage:?}");
    }
    assert_eq!(open_mode(0x1a), "write,create,truncate");
    assert_eq!(status_text(3), "permission denied");
}
