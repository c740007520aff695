use super::*;

fn startup_body(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    body
}

#[test]
fn startup_packets_are_classified() {
    assert_eq!(
        parse_startup(&startup_body(SSL_REQUEST, b"")),
        Ok(StartupPacket::SslRequest)
    );
    assert_eq!(
        parse_startup(&startup_body(GSSENC_REQUEST, b"")),
        Ok(StartupPacket::GssEncRequest)
    );
    let mut cancel = 7i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&(-9i32).to_be_bytes());
    assert_eq!(
        parse_startup(&startup_body(CANCEL_REQUEST, &cancel)),
        Ok(StartupPacket::Cancel {
            process_id: 7,
            secret_key: -9
        })
    );
    assert_eq!(
        parse_startup(&startup_body(
            PROTOCOL_3_0 + 2,
            b"user\0alice\0database\0orders-prod\0\0"
        )),
        Ok(StartupPacket::Startup {
            minor: 2,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "orders-prod".into())
            ]
        })
    );
}

#[test]
fn malformed_startup_packets_are_errors_not_panics() {
    for body in [
        Vec::new(),
        vec![1, 2],
        startup_body(SSL_REQUEST, b"x"),
        startup_body(CANCEL_REQUEST, b"1234"),
        startup_body(2 << 16, b"\0"),
        startup_body(PROTOCOL_3_0, b"user\0alice"),
        startup_body(PROTOCOL_3_0, b"user\0alice\0\0trailing"),
        startup_body(PROTOCOL_3_0, b"user\0\xff\0\0"),
    ] {
        assert!(parse_startup(&body).is_err(), "{body:?}");
    }
}

#[test]
fn backend_keys_are_exactly_eight_bytes() {
    let mut key = 7i32.to_be_bytes().to_vec();
    key.extend_from_slice(&i32::MIN.to_be_bytes());
    assert_eq!(backend_key(&key), Some((7, i32::MIN)));
    for length in [0, 4, 7, 9, 12] {
        assert_eq!(backend_key(&vec![1; length]), None, "{length}");
    }
}

#[tokio::test]
async fn length_fields_out_of_range_are_refused_before_allocating() {
    for length in [0i32, 4, 7, 10_001, i32::MAX, -1] {
        let bytes = length.to_be_bytes();
        assert!(read_startup(&mut &bytes[..]).await.is_err(), "{length}");
    }
    let mut message = vec![b'Q'];
    message.extend_from_slice(&(1i32 << 30).to_be_bytes());
    let error = read_message(&mut &message[..], 1 << 20).await.unwrap_err();
    assert!(error.to_string().contains("exceeds"), "{error}");
    let mut message = vec![b'p'];
    message.extend_from_slice(&3i32.to_be_bytes());
    assert!(read_message(&mut &message[..], 1 << 20).await.is_err());
}

#[test]
fn error_responses_round_trip_through_the_field_parser() {
    let buf = fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "access window for orders-prod ended",
    );
    assert_eq!(buf[0], b'E');
    let length = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
    assert_eq!(length + 1, buf.len());
    let (code, text) = error_fields(&buf[5..]);
    assert_eq!(code, "57P01");
    assert_eq!(text, "access window for orders-prod ended");
}

#[test]
fn password_messages_are_parsed_strictly() {
    assert_eq!(password_from(b'p', b"secret\0"), Ok("secret".into()));
    assert!(password_from(b'Q', b"secret\0").is_err());
    assert!(password_from(b'p', b"secret").is_err());
    assert!(password_from(b'p', b"a\0b\0").is_err());
}
