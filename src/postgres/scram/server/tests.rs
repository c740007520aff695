use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

const PASSWORD: &str = "2c4603245e31468c9163fd3821e66e16ee530c08c817aba3";
const CERT_HASH: &[u8] = &[7; 32];

fn verifier() -> Verifier {
    Verifier::parse(&Verifier::compute(PASSWORD)).expect("a computed verifier parses")
}

/// Runs libpq's side (postgres-protocol's client) against the server:
/// the server-final message, or the server's error.
fn exchange(
    verifier: Verifier,
    password: &str,
    binding: ChannelBinding,
    mechanism: &str,
    end_point: Option<&[u8]>,
) -> Result<(), ScramServerError> {
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let (server, server_first) =
        ServerExchange::start(verifier, end_point, mechanism, client.message())?;
    client
        .update(&server_first)
        .expect("the client takes server-first");
    let server_final = server.finish(client.message())?;
    client
        .finish(&server_final)
        .expect("the client accepts the server's signature");
    Ok(())
}

#[test]
fn the_right_password_is_accepted_with_or_without_channel_binding() {
    let plus = ChannelBinding::tls_server_end_point(CERT_HASH.to_vec());
    assert_eq!(
        exchange(verifier(), PASSWORD, plus, MECHANISM_PLUS, Some(CERT_HASH)),
        Ok(())
    );
    let none = ChannelBinding::unsupported();
    assert_eq!(
        exchange(verifier(), PASSWORD, none, MECHANISM, Some(CERT_HASH)),
        Ok(())
    );
    // A client able to bind, told by a gateway that cannot.
    let able = ChannelBinding::unrequested();
    assert_eq!(
        exchange(verifier(), PASSWORD, able, MECHANISM, None),
        Ok(())
    );
}

#[test]
fn a_wrong_password_or_a_mock_verifier_is_refused_at_the_proof() {
    let wrong = exchange(
        verifier(),
        "not-the-password",
        ChannelBinding::unsupported(),
        MECHANISM,
        None,
    );
    assert_eq!(wrong, Err(ScramServerError::WrongProof));
    let mock = Verifier::mock(&[1; 32], "alice\0orders-prod");
    let refused = exchange(
        mock,
        PASSWORD,
        ChannelBinding::unsupported(),
        MECHANISM,
        None,
    );
    assert_eq!(refused, Err(ScramServerError::WrongProof));
}

#[test]
fn a_mock_verifier_keeps_its_salt_per_name_and_looks_like_a_real_one() {
    let secret = [9; 32];
    let salt_of = |verifier: Verifier| {
        let client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let (_, first) =
            ServerExchange::start(verifier, None, MECHANISM, client.message()).unwrap();
        let first = String::from_utf8(first).unwrap();
        let salt = first
            .split(',')
            .find_map(|p| p.strip_prefix("s="))
            .unwrap()
            .to_string();
        assert!(first.ends_with(&format!(",i={ITERATIONS}")), "{first}");
        salt
    };
    let alice = salt_of(Verifier::mock(&secret, "alice"));
    assert_eq!(alice, salt_of(Verifier::mock(&secret, "alice")));
    assert_ne!(alice, salt_of(Verifier::mock(&secret, "bob")));
    assert_eq!(alice.len(), salt_of(verifier()).len());
}

#[test]
fn binding_to_another_certificate_is_refused() {
    // A man in the middle: the client bound to the certificate it saw.
    let theirs = ChannelBinding::tls_server_end_point(vec![8; 32]);
    let refused = exchange(
        verifier(),
        PASSWORD,
        theirs,
        MECHANISM_PLUS,
        Some(CERT_HASH),
    );
    assert_eq!(refused, Err(ScramServerError::Binding));
}

#[test]
fn a_client_that_could_bind_but_saw_no_plus_offered_is_refused_when_it_was() {
    let able = ChannelBinding::unrequested();
    let refused = exchange(verifier(), PASSWORD, able, MECHANISM, Some(CERT_HASH));
    assert_eq!(refused, Err(ScramServerError::Binding));
}

#[test]
fn plus_is_refused_where_the_connection_cannot_bind() {
    let plus = ChannelBinding::tls_server_end_point(CERT_HASH.to_vec());
    let refused = exchange(verifier(), PASSWORD, plus, MECHANISM_PLUS, None);
    assert_eq!(refused, Err(ScramServerError::Binding));
}

#[test]
fn malformed_first_messages_are_refused() {
    for (mechanism, first) in [
        (MECHANISM, &b""[..]),
        (MECHANISM, b"n,,"),
        (MECHANISM, b"n,a=alice,n=,r=abc"),
        (MECHANISM, b"x,,n=,r=abc"),
        (MECHANISM, b"n,,m=ext,n=,r=abc"),
        (MECHANISM, b"n,,n=,r="),
        (MECHANISM, b"n,,n=,r=a\x01b"),
        (MECHANISM, b"n,,r=abc"),
        (MECHANISM, b"n,,n=\xff,r=abc"),
        ("SCRAM-SHA-1", b"n,,n=,r=abc"),
    ] {
        let started = ServerExchange::start(verifier(), None, mechanism, first);
        assert!(
            matches!(started, Err(ScramServerError::Malformed(_))),
            "{mechanism} {:?}",
            String::from_utf8_lossy(first)
        );
    }
}

#[test]
fn a_final_message_with_another_nonce_or_no_proof_is_refused() {
    let start = || {
        let (server, first) =
            ServerExchange::start(verifier(), None, MECHANISM, b"n,,n=,r=abc").unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().to_string();
        (server, nonce)
    };
    let proof = B64.encode([0u8; 32]);
    let (server, _) = start();
    let other = format!("c=biws,r=abcdef,p={proof}");
    assert!(matches!(
        server.finish(other.as_bytes()),
        Err(ScramServerError::Malformed(_))
    ));
    let (server, nonce) = start();
    let no_proof = format!("c=biws,{nonce}");
    assert!(matches!(
        server.finish(no_proof.as_bytes()),
        Err(ScramServerError::Malformed(_))
    ));
    let (server, nonce) = start();
    let short = format!("c=biws,{nonce},p={}", B64.encode([0u8; 8]));
    assert!(matches!(
        server.finish(short.as_bytes()),
        Err(ScramServerError::Malformed(_))
    ));
    let (server, nonce) = start();
    let guessed = format!("c=biws,{nonce},p={proof}");
    assert_eq!(
        server.finish(guessed.as_bytes()),
        Err(ScramServerError::WrongProof)
    );
}

#[test]
fn verifiers_parse_only_in_postgres_form() {
    assert!(Verifier::parse(&Verifier::compute("x")).is_some());
    for bad in [
        "",
        "md5abc",
        "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:!!$",
    ] {
        assert!(Verifier::parse(bad).is_none(), "{bad}");
    }
}
