use super::*;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn wants_queries(tag: u8) -> bool {
    tag == b'Q'
}

#[test]
fn boundaries_are_found_at_every_split_point() {
    let mut stream = message(b'Q', b"select 1\0");
    stream.extend(message(b'D', &[7; 300]));
    stream.extend(message(b'S', b""));
    stream.extend(message(b'Q', b"select 2\0"));
    for split in 0..=stream.len() {
        let mut framer = Framer::new(wants_queries, 1 << 20);
        let mut seen = Vec::new();
        let mut record = |tag: u8, body: &[u8]| seen.push((tag, body.to_vec()));
        framer.feed(&stream[..split], &mut record).unwrap();
        framer.feed(&stream[split..], &mut record).unwrap();
        assert!(framer.at_boundary());
        assert_eq!(
            seen,
            vec![
                (b'Q', b"select 1\0".to_vec()),
                (b'D', Vec::new()),
                (b'S', Vec::new()),
                (b'Q', b"select 2\0".to_vec())
            ],
            "split at {split}"
        );
    }
}

#[test]
fn bytes_to_boundary_counts_down_through_header_and_body() {
    let stream = message(b'D', &[1; 10]);
    let mut framer = Framer::new(wants_queries, 1 << 20);
    let mut ignore = |_: u8, _: &[u8]| {};
    framer.feed(&stream[..2], &mut ignore).unwrap();
    assert_eq!(framer.bytes_to_boundary(), 3);
    framer.feed(&stream[2..8], &mut ignore).unwrap();
    assert_eq!(framer.bytes_to_boundary(), 7);
    framer.feed(&stream[8..], &mut ignore).unwrap();
    assert_eq!(framer.bytes_to_boundary(), 0);
}

#[test]
fn bad_lengths_and_oversized_messages_are_errors() {
    let mut ignore = |_: u8, _: &[u8]| {};
    for length in [0i32, 3, -1, i32::MIN] {
        let mut bytes = vec![b'Q'];
        bytes.extend_from_slice(&length.to_be_bytes());
        let mut framer = Framer::new(wants_queries, 1 << 20);
        assert!(framer.feed(&bytes, &mut ignore).is_err(), "{length}");
    }
    let mut bytes = vec![b'Q'];
    bytes.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut framer = Framer::new(wants_queries, 1 << 20);
    assert_eq!(
        framer.feed(&bytes, &mut ignore),
        Err(WireError::TooLarge {
            size: i32::MAX as usize - 4,
            limit: 1 << 20
        })
    );
}

#[test]
fn captured_bodies_are_capped() {
    let body = vec![b'x'; CAPTURE_LIMIT * 2];
    let stream = message(b'Q', &body);
    let mut framer = Framer::new(wants_queries, usize::MAX);
    let mut captured = 0;
    framer
        .feed(&stream, &mut |_, body: &[u8]| captured = body.len())
        .unwrap();
    assert_eq!(captured, CAPTURE_LIMIT);
}
