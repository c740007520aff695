use super::super::tests::{audit_text, open, request};
use super::*;
use crate::gateway::{Command, GatewayError};
use crate::workflow::RequestState;

fn state(gateway: &Gateway, id: u64) -> RequestState {
    gateway.request(id).unwrap().state
}

#[test]
fn a_revocation_takes_effect_while_the_journal_fails_and_is_recorded_once_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 2);
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
    let lease = gateway.leases().lookup("u0", "box").unwrap();

    let real = gateway.break_journal();
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
        .execute("root", Command::Revoke { id: held })
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
        let cancelled = gateway.execute(user, Command::Cancel { id }).unwrap_err();
        assert!(cancelled.took_effect(), "{cancelled}");
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
