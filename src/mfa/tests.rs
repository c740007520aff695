use super::*;

const NOW: u64 = 1_800_000_000;

fn setup() -> (MfaGuard, Secret) {
    (
        MfaGuard::new(5, Duration::from_secs(300)),
        generate_secret(),
    )
}

#[test]
fn accepts_the_current_code() {
    let (guard, secret) = setup();
    let code = current_code(&secret, NOW).unwrap();
    assert_eq!(code.len(), 6);
    assert!(guard.verify("alice", &secret, &code, NOW).is_ok());
}

#[test]
fn matches_rfc_6238_reference_vector() {
    // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits) → 287082.
    let secret = Secret::new(base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        b"12345678901234567890",
    ));
    assert_eq!(current_code(&secret, 59).unwrap(), "287082");
}

#[test]
fn accepts_one_step_of_skew_either_way_but_not_two() {
    let (guard, secret) = setup();
    let previous = current_code(&secret, NOW - 30).unwrap();
    assert!(guard.verify("alice", &secret, &previous, NOW).is_ok());
    let next = current_code(&secret, NOW + 30).unwrap();
    assert!(guard.verify("alice", &secret, &next, NOW).is_ok());
    let too_old = current_code(&secret, NOW - 90).unwrap();
    let err = guard.verify("bob", &secret, &too_old, NOW).unwrap_err();
    assert_eq!(err.error, MfaError::Invalid);
}

#[test]
fn refuses_a_replayed_code() {
    let (guard, secret) = setup();
    let code = current_code(&secret, NOW).unwrap();
    guard.verify("alice", &secret, &code, NOW).unwrap();
    let err = guard.verify("alice", &secret, &code, NOW + 1).unwrap_err();
    assert_eq!(err.error, MfaError::Replayed);
    let older = current_code(&secret, NOW - 30).unwrap();
    assert_eq!(
        guard
            .verify("alice", &secret, &older, NOW)
            .unwrap_err()
            .error,
        MfaError::Replayed
    );
}

#[test]
fn replay_floor_survives_a_restart() {
    let (guard, secret) = setup();
    let code = current_code(&secret, NOW).unwrap();
    let pass = guard.verify("alice", &secret, &code, NOW).unwrap();
    let restarted = MfaGuard::new(5, Duration::from_secs(300));
    restarted.remember_step("alice", pass.step);
    assert_eq!(
        restarted
            .verify("alice", &secret, &code, NOW)
            .unwrap_err()
            .error,
        MfaError::Replayed
    );
}

#[test]
fn five_wrong_codes_lock_then_unlock_after_five_minutes() {
    let (guard, secret) = setup();
    for attempt in 1..=5 {
        let err = guard.verify("alice", &secret, "000000", NOW).unwrap_err();
        assert_eq!(err.locked_now, attempt == 5);
    }
    let good = current_code(&secret, NOW + 60).unwrap();
    let err = guard.verify("alice", &secret, &good, NOW + 60).unwrap_err();
    assert_eq!(err.error, MfaError::Locked(Duration::from_secs(240)));
    assert!(
        guard.verify("bob", &secret, &good, NOW + 60).is_ok(),
        "other users unaffected"
    );
    let later = current_code(&secret, NOW + 300).unwrap();
    assert!(guard.verify("alice", &secret, &later, NOW + 300).is_ok());
}

#[test]
fn a_success_resets_the_failure_count() {
    let (guard, secret) = setup();
    for _ in 0..4 {
        guard.verify("alice", &secret, "000000", NOW).unwrap_err();
    }
    guard
        .verify("alice", &secret, &current_code(&secret, NOW).unwrap(), NOW)
        .unwrap();
    for _ in 0..4 {
        assert!(
            !guard
                .verify("alice", &secret, "000000", NOW + 30)
                .unwrap_err()
                .locked_now
        );
    }
}

#[test]
fn garbage_codes_are_invalid_not_errors() {
    let (guard, secret) = setup();
    for code in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
        assert_eq!(
            guard.verify("alice", &secret, code, NOW).unwrap_err().error,
            MfaError::Invalid
        );
    }
}

#[test]
fn provisioning_uri_names_issuer_and_user() {
    let secret = generate_secret();
    let uri = provisioning_uri(&secret, "jitgate", "alice").unwrap();
    assert!(uri.starts_with("otpauth://totp/jitgate:alice?"), "{uri}");
    assert!(uri.contains(&format!("secret={}", secret.expose())));
}
