use super::*;

/// RFC 7677 section 3.
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

fn rfc_exchange<'a>(cache: &'a KeyCache, password: &'a Secret) -> Exchange<'a> {
    Exchange::with_nonce(cache, "db", password, "user", "rOprNGfwEbeRWgbNEkqO".into())
}

#[test]
fn matches_the_rfc_7677_test_vector() {
    let cache = KeyCache::default();
    let password = Secret::new("pencil".into());
    let mut exchange = rfc_exchange(&cache, &password);
    assert_eq!(exchange.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let final_message = exchange.client_final(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(final_message).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    exchange
        .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        .unwrap();
}

#[test]
fn keys_are_derived_once_per_credential_and_forgotten_on_request() {
    let cache = KeyCache::default();
    let password = Secret::new("pencil".into());
    for _ in 0..3 {
        let mut exchange = rfc_exchange(&cache, &password);
        exchange.client_final(SERVER_FIRST.as_bytes()).unwrap();
    }
    assert_eq!(cache.len(), 1);
    let other = Secret::new("rotated".into());
    rfc_exchange(&cache, &other)
        .client_final(SERVER_FIRST.as_bytes())
        .unwrap();
    assert_eq!(cache.len(), 2);
    cache.forget("db");
    assert!(cache.is_empty());
}

#[test]
fn a_wrong_server_signature_or_foreign_nonce_is_refused() {
    let cache = KeyCache::default();
    let password = Secret::new("pencil".into());
    let mut exchange = rfc_exchange(&cache, &password);
    exchange.client_final(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(
        exchange.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        Err(ScramError::BadServerSignature)
    );
    assert!(matches!(
        exchange.verify(b"e=invalid-proof"),
        Err(ScramError::ServerError(_))
    ));
    let mut other = rfc_exchange(&cache, &password);
    assert_eq!(
        other.client_final(b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        Err(ScramError::NonceMismatch)
    );
    for bad in [
        "",
        "r=rOprNGfwEbeRWgbNEkqOx",
        "r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=1",
        "r=rOprNGfwEbeRWgbNEkqOx,s=AA==,i=0",
    ] {
        assert!(
            rfc_exchange(&cache, &password)
                .client_final(bad.as_bytes())
                .is_err(),
            "{bad}"
        );
    }
}
