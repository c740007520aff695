use super::super::tests::{audit_text, open, request};
use super::*;
use crate::gateway::{Command, GatewayError};
use crate::workflow::RequestState;

fn state(gateway: &Gateway, id: u64) -> RequestState {
    gateway.request(id).unwrap().state
}

/// A gateway with request `held` checked out by u0.
fn with_a_lease(dir: &std::path::Path) -> (std::sync::Arc<Gateway>, u64) {
    let gateway = open(dir, 2);
    let held = request(&gateway, "u0", "box", 600);
    gateway
        .execute(
            "u0",
            Command::Checkout {
                id: held,
                totp: None,
            },
        )
        .unwrap();
    (gateway, held)
}

#[test]
fn a_revocation_while_the_journal_fails_is_kept_in_the_reserve_and_survives_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, held) = with_a_lease(dir.path());
    let lease = gateway.leases().lookup("u0", "box").unwrap();

    let _real = gateway.break_journal();
    let spec = crate::workflow::RequestSpec {
        resource: "box".into(),
        ..Default::default()
    };
    let refused = gateway.execute("u1", Command::Request(spec)).unwrap_err();
    assert!(matches!(refused, GatewayError::Journal(_)), "{refused}");
    // On disk in the reserve: acknowledged as any change.
    gateway
        .execute(
            "root",
            Command::Revoke {
                id: held,
                why: None,
            },
        )
        .unwrap();
    assert!(lease.token.is_cancelled());
    assert_eq!(gateway.held_journal_records(), 1);
    // The gateway stops (or dies) before the journal works again.
    gateway.log_held_journal_records();
    drop(gateway);

    let reopened = open(dir.path(), 2);
    assert_eq!(state(&reopened, held), RequestState::Revoked);
    assert!(reopened.leases().lookup("u0", "box").is_none());
    assert_eq!(reopened.held_journal_records(), 0);
    let next = request(&reopened, "u1", "box", 600);
    let acknowledged = reopened.read(|engine| engine.clone());
    drop(reopened);
    // In the journal now: the next start replays it once, from there.
    let again = open(dir.path(), 2);
    assert_eq!(again.read(|engine| engine.clone()), acknowledged);
    assert!(again.request(next).is_some());
}

#[test]
fn when_the_reserve_fails_too_a_revocation_takes_effect_and_is_recorded_once_the_journal_works() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, held) = with_a_lease(dir.path());
    let lease = gateway.leases().lookup("u0", "box").unwrap();

    let real = gateway.break_journal();
    let real_reserve = gateway.break_journal_reserve();
    // Nothing new gets in: a request is refused and changes nothing.
    let requests_before = gateway.read(|engine| engine.requests().count());
    let spec = crate::workflow::RequestSpec {
        resource: "box".into(),
        ..Default::default()
    };
    let refused = gateway.execute("u1", Command::Request(spec)).unwrap_err();
    assert!(matches!(refused, GatewayError::Journal(_)), "{refused}");
    assert_eq!(
        gateway.read(|engine| engine.requests().count()),
        requests_before
    );
    // A revocation ends the lease at once all the same, and says so.
    let revoked = gateway
        .execute(
            "root",
            Command::Revoke {
                id: held,
                why: None,
            },
        )
        .unwrap_err();
    assert!(revoked.took_effect());
    assert!(
        revoked.to_string().contains("took effect at once"),
        "{revoked}"
    );
    assert_eq!(state(&gateway, held), RequestState::Revoked);
    assert!(lease.token.is_cancelled());
    assert!(gateway.leases().lookup("u0", "box").is_none());
    assert_eq!(gateway.held_journal_records(), 1);
    let audit = audit_text(&gateway);
    assert!(audit.contains(r#""type":"ended""#), "{audit}");
    assert!(!audit.contains("revoke 1"), "audited as refused: {audit}");

    // The housekeeping retry records it once the disk takes writes again.
    assert!(gateway.run_timeouts().is_some(), "no retry scheduled");
    gateway.repair_journal_reserve(real_reserve);
    gateway.repair_journal(real);
    gateway.run_timeouts();
    assert_eq!(gateway.held_journal_records(), 0);
    let next = request(&gateway, "u1", "box", 600);
    drop(gateway);

    let reopened = open(dir.path(), 2);
    assert_eq!(state(&reopened, held), RequestState::Revoked);
    assert!(reopened.request(next).is_some());
    assert!(reopened.leases().lookup("u0", "box").is_none());
}

#[test]
fn held_changes_go_to_the_journal_in_order_before_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 2);
    let first = request(&gateway, "u0", "box", 600);
    let second = request(&gateway, "u1", "box", 600);
    let real = gateway.break_journal();
    for (user, id) in [("u0", first), ("u1", second)] {
        gateway
            .execute(user, Command::Cancel { id, why: None })
            .unwrap();
    }
    assert_eq!(gateway.held_journal_records(), 2);
    gateway.repair_journal(real);
    let third = request(&gateway, "u0", "box", 600);
    assert_eq!(gateway.held_journal_records(), 0);
    let acknowledged = gateway.read(|engine| engine.clone());
    drop(gateway);

    let reopened = open(dir.path(), 2);
    assert_eq!(reopened.read(|engine| engine.clone()), acknowledged);
    assert_eq!(state(&reopened, first), RequestState::Cancelled);
    assert_eq!(state(&reopened, second), RequestState::Cancelled);
    assert!(reopened.request(third).is_some());
}

#[test]
fn held_changes_move_to_the_reserve_once_it_takes_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 2);
    let first = request(&gateway, "u0", "box", 600);
    let _real = gateway.break_journal();
    let real_reserve = gateway.break_journal_reserve();
    let cancelled = gateway
        .execute(
            "u0",
            Command::Cancel {
                id: first,
                why: None,
            },
        )
        .unwrap_err();
    assert!(cancelled.took_effect(), "{cancelled}");
    // The reserve works again before the journal does: the retry puts the
    // change there, so a stop now loses nothing.
    gateway.repair_journal_reserve(real_reserve);
    gateway.run_timeouts();
    assert_eq!(gateway.held_journal_records(), 1);
    drop(gateway);
    let reopened = open(dir.path(), 2);
    assert_eq!(state(&reopened, first), RequestState::Cancelled);
}
