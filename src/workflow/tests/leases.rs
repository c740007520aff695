//! Checkout, exclusivity, expiry, timeouts, extensions and replay.

use std::time::Duration;

use super::World;
use crate::config::Permission;
use crate::workflow::*;

#[test]
fn checkout_requires_owner_approval_and_mfa() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    assert!(matches!(
        w.checkout("alice", id),
        Err(WorkflowError::WrongState { .. })
    ));
    w.approve("bob", id).unwrap();
    w.approve("erin", id).unwrap();
    w.approve("dave", id).unwrap();
    assert_eq!(
        w.checkout("zoe", id),
        Err(WorkflowError::NotYourRequest(id))
    );
    assert_eq!(
        w.commit(w.engine.decide_checkout(&w.ctx(), "alice", id, false, None)),
        Err(WorkflowError::MfaRequired("orders-prod".into()))
    );
    assert_eq!(w.state(id), RequestState::Approved);
    w.checkout("alice", id).unwrap();
    assert!(w.engine.request(id).unwrap().mfa_passed);
}

#[test]
fn exclusive_resource_is_held_by_one_user_until_released() {
    let mut w = World::new();
    let first = w.hold_orders("alice");
    let second = w.request("zoe", "orders-prod").unwrap();
    w.approve("bob", second).unwrap();
    w.approve("erin", second).unwrap();
    w.approve("dave", second).unwrap();
    let err = w.checkout("zoe", second).unwrap_err();
    assert!(matches!(&err, WorkflowError::HeldBy { holder, .. } if holder == "alice"));
    assert_eq!(
        err.to_string(),
        "orders-prod is held by alice until 12:30 UTC: `watch` tells you when it is free"
    );
    w.commit(w.engine.decide_checkin(&w.ctx(), "alice", first))
        .unwrap();
    w.checkout("zoe", second).unwrap();
    assert_eq!(w.engine.holder("orders-prod").unwrap().requester, "zoe");
}

#[test]
fn a_lapsed_holder_does_not_block_the_next_checkout() {
    let mut w = World::new();
    let first = w.hold_orders("alice");
    let second = w.request("zoe", "orders-prod").unwrap();
    for who in ["bob", "erin", "dave"] {
        w.approve(who, second).unwrap();
    }
    w.advance(1801);
    let events = w.checkout("zoe", second).unwrap();
    assert!(
        matches!(events[0], Event::Ended { id, reason: EndReason::Expired, .. } if id == first)
    );
    assert_eq!(w.state(first), RequestState::Expired);
}

/// Gives `resource` the workflow `like` has, as `workflow set` would.
fn set_workflow_like(w: &mut World, resource: &str, like: &str) {
    let settings = w.config.resources[like].workflow.clone();
    w.commit(
        w.engine
            .decide_set_workflow(&w.ctx(), "wanda", resource, settings),
    )
    .unwrap();
}

#[test]
fn a_single_user_lease_stays_exclusive_when_the_resource_is_opened_up() {
    let mut w = World::new();
    w.hold_orders("alice");
    // An administrator makes orders-prod multi-user while alice holds it.
    set_workflow_like(&mut w, "orders-prod", "web-01");
    let second = w.request("zoe", "orders-prod").unwrap();
    w.approve("bob", second).unwrap();
    let err = w.checkout("zoe", second).unwrap_err();
    assert!(matches!(&err, WorkflowError::HeldBy { holder, .. } if holder == "alice"));
    // Once alice's window is over, the shared lease may start.
    w.advance(1801);
    w.checkout("zoe", second).unwrap();
}

#[test]
fn a_single_user_lease_waits_for_leases_taken_before_the_resource_became_single_user() {
    let mut w = World::new();
    let shared = w.request("alice", "web-01").unwrap();
    w.approve("bob", shared).unwrap();
    w.checkout("alice", shared).unwrap();
    // An administrator makes web-01 single-user while alice holds it.
    set_workflow_like(&mut w, "web-01", "orders-prod");
    let exclusive = w.request("zoe", "web-01").unwrap();
    for who in ["bob", "erin", "dave"] {
        w.approve(who, exclusive).unwrap();
    }
    let err = w.checkout("zoe", exclusive).unwrap_err();
    assert!(matches!(&err, WorkflowError::HeldBy { holder, .. } if holder == "alice"));
    w.commit(w.engine.decide_checkin(&w.ctx(), "alice", shared))
        .unwrap();
    w.checkout("zoe", exclusive).unwrap();
    assert_eq!(w.engine.holder("web-01").unwrap().requester, "zoe");
}

#[test]
fn one_user_holds_at_most_one_lease_or_open_request_per_resource() {
    let mut w = World::new();
    let first = w.request("alice", "web-01").unwrap();
    let again = |w: &mut World| w.request("alice", "web-01");
    let resource = || "web-01".to_string();
    assert_eq!(
        again(&mut w),
        Err(WorkflowError::AlreadyRequested {
            resource: resource(),
            id: first
        })
    );
    assert!(
        w.request("zoe", "web-01").is_ok(),
        "others ask for themselves"
    );
    w.approve("bob", first).unwrap();
    assert_eq!(
        again(&mut w),
        Err(WorkflowError::AlreadyApprovedFor {
            resource: resource(),
            id: first
        })
    );
    w.checkout("alice", first).unwrap();
    assert_eq!(
        again(&mut w),
        Err(WorkflowError::AlreadyHolding {
            resource: resource(),
            id: first
        })
    );
    // A window over, though its timer has not ended it yet, is no lease.
    w.advance(1800);
    let second = again(&mut w).unwrap();
    w.approve("bob", second).unwrap();
    w.checkout("alice", second).unwrap();
    assert_eq!(w.state(first), RequestState::Expired);
}

#[test]
fn revoking_a_user_ends_every_lease_and_open_request_of_theirs_alone() {
    let mut w = World::new();
    let web = w.request("alice", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("alice", web).unwrap();
    let orders = w.request("alice", "orders-prod").unwrap();
    let zoes = w.request("zoe", "web-01").unwrap();
    w.approve("bob", zoes).unwrap();
    w.checkout("zoe", zoes).unwrap();
    assert_eq!(
        w.engine.decide_revoke_user(&w.ctx(), "bob", "alice", None),
        Err(WorkflowError::MissingPermission(Permission::Admin))
    );
    assert_eq!(
        w.engine
            .decide_revoke_user(&w.ctx(), "root", "nobody", None),
        Err(WorkflowError::UnknownUser("nobody".into()))
    );
    let why = Some("laptop stolen".to_string());
    let events = w
        .engine
        .decide_revoke_user(&w.ctx(), "root", "alice", why.clone());
    w.commit(events).unwrap();
    assert_eq!(w.state(web), RequestState::Revoked);
    assert_eq!(w.state(orders), RequestState::Cancelled);
    for id in [web, orders] {
        assert_eq!(w.engine.requests[&id].ended_why, why, "request {id}");
    }
    assert_eq!(w.state(zoes), RequestState::Active);
    assert_eq!(
        w.engine.decide_revoke_user(&w.ctx(), "root", "alice", None),
        Ok(vec![]),
        "nothing left"
    );
}

#[test]
fn a_denied_request_or_a_lapsed_approval_leaves_room_for_a_new_one() {
    let mut w = World::new();
    let denied = w.request("alice", "web-01").unwrap();
    w.commit(w.engine.decide_deny(&w.ctx(), "bob", denied, None))
        .unwrap();
    let approved = w.request("alice", "web-01").unwrap();
    w.approve("bob", approved).unwrap();
    w.advance(48 * 3600);
    assert!(w.request("alice", "web-01").is_ok());
}

#[test]
fn expiry_ends_only_windows_that_are_over() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    w.advance(1799);
    assert!(w.engine.decide_expire(id, w.now).is_empty());
    w.advance(1);
    let events = w.engine.decide_expire(id, w.now);
    w.commit(Ok(events)).unwrap();
    assert_eq!(w.state(id), RequestState::Expired);
    assert!(
        w.engine.decide_expire(id, w.now).is_empty(),
        "expiry is idempotent"
    );
}

#[test]
fn pending_requests_time_out() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(
        w.engine.next_deadline(),
        Some(w.now + chrono::Duration::hours(24))
    );
    w.advance(24 * 3600 - 1);
    assert!(w.engine.decide_timeouts(w.now).is_empty());
    w.advance(1);
    let events = w.engine.decide_timeouts(w.now);
    w.commit(Ok(events)).unwrap();
    assert_eq!(w.state(id), RequestState::TimedOut);
    assert!(matches!(
        w.approve("bob", id),
        Err(WorkflowError::WrongState { .. })
    ));
}

#[test]
fn clock_starting_at_approval_lapses_unused_approvals() {
    let mut w = World::new();
    let id = w.request("alice", "sandbox").unwrap();
    w.advance(1800);
    assert_eq!(
        w.checkout("alice", id),
        Err(WorkflowError::ApprovalLapsed(id))
    );
    let events = w.engine.decide_timeouts(w.now);
    w.commit(Ok(events)).unwrap();
    assert_eq!(w.state(id), RequestState::TimedOut);
}

#[test]
fn clock_starting_at_approval_counts_from_approval() {
    let mut w = World::new();
    let id = w.request("alice", "sandbox").unwrap();
    let approved_at = w.now;
    w.advance(600);
    w.checkout("alice", id).unwrap();
    assert_eq!(
        w.engine.request(id).unwrap().window_end,
        Some(approved_at + chrono::Duration::seconds(1800))
    );
}

#[test]
fn extension_within_allowance_is_self_service() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    let end = w.engine.request(id).unwrap().window_end.unwrap();
    w.commit(w.decide_extend("alice", id, 600)).unwrap();
    assert_eq!(
        w.engine.request(id).unwrap().window_end,
        Some(end + chrono::Duration::seconds(600))
    );
    // 10m used of the 15m allowance: another 10m needs approval again.
    let events = w.commit(w.decide_extend("alice", id, 600)).unwrap();
    assert!(matches!(events[0], Event::ExtensionRequested { .. }));
    assert_eq!(
        w.decide_extend("alice", id, 60),
        Err(WorkflowError::ExtensionPending(id))
    );
    // A bad argument is named as such, whatever the request's state.
    assert_eq!(
        w.decide_extend("alice", id, 0),
        Err(WorkflowError::ZeroDuration)
    );
    assert_eq!(w.approve("alice", id), Err(WorkflowError::SelfApproval));
    let events = w.approve("erin", id).unwrap();
    assert!(matches!(events.last(), Some(Event::Extended { .. })));
    let request = w.engine.request(id).unwrap();
    assert_eq!(
        request.window_end,
        Some(end + chrono::Duration::seconds(1200))
    );
    assert_eq!(request.extended_secs, 1200);
    assert_eq!(request.state, RequestState::Active);
}

#[test]
fn extension_for_approval_carries_its_reason_where_reasons_are_required() {
    let mut w = World::new();
    let id = w.hold_orders("alice");
    // orders-prod requires a reason and allows no self-service time, so
    // the command its expiry warnings suggest asks for one.
    let held = w.engine.request(id).unwrap();
    assert_eq!(
        held.extend_command(900),
        format!("extend {id} --for 15m --reason TEXT")
    );
    assert_eq!(
        w.decide_extend("alice", id, 600),
        Err(WorkflowError::ReasonRequired("orders-prod".into()))
    );
    let spec = ExtendSpec {
        id,
        by: Duration::from_secs(600),
        reason: Some("  restore still running ".into()),
    };
    w.commit(w.engine.decide_extend(&w.ctx(), "alice", spec))
        .unwrap();
    let pending = w.engine.request(id).unwrap().extension.clone().unwrap();
    assert_eq!(pending.reason.as_deref(), Some("restore still running"));
    assert_eq!(pending.duration_secs, 600);
    // web-01 requires none: its extension beyond the allowance goes
    // to the approvers without one.
    let web = w.request("zoe", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("zoe", web).unwrap();
    let held = w.engine.request(web).unwrap();
    assert_eq!(held.extend_command(900), format!("extend {web} --for 15m"));
    let events = w.commit(w.decide_extend("zoe", web, 3600)).unwrap();
    assert!(matches!(
        events[0],
        Event::ExtensionRequested { reason: None, .. }
    ));
}

#[test]
fn extension_never_exceeds_the_maximum() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    // 30m granted, 2h maximum: 90m more is the most.
    assert!(matches!(
        w.decide_extend("alice", id, 5401),
        Err(WorkflowError::ExtensionTooLong { .. })
    ));
    assert!(w.decide_extend("alice", id, 5400).is_ok());
    assert_eq!(
        w.decide_extend("zoe", id, 60),
        Err(WorkflowError::NotYourRequest(id))
    );
}

#[test]
fn denied_extension_keeps_the_lease() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    w.commit(w.decide_extend("alice", id, 3600)).unwrap();
    let denied = w
        .commit(w.engine.decide_deny(&w.ctx(), "bob", id, None))
        .unwrap();
    assert!(matches!(
        denied[..],
        [Event::Denied {
            extension: true,
            ..
        }]
    ));
    let request = w.engine.request(id).unwrap();
    assert_eq!(request.state, RequestState::Active);
    assert!(request.extension.is_none());
    // A request denied before checkout is not an extension.
    let other = w.request("zoe", "web-01").unwrap();
    let denied = w.engine.decide_deny(&w.ctx(), "bob", other, None).unwrap();
    assert!(matches!(
        denied[..],
        [Event::Denied {
            extension: false,
            ..
        }]
    ));
}

#[test]
fn cancel_and_revoke_follow_ownership_and_admin_rights() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(
        w.engine.decide_cancel(&w.ctx(), "zoe", id, None),
        Err(WorkflowError::NotYourRequest(id))
    );
    w.commit(w.engine.decide_cancel(&w.ctx(), "alice", id, None))
        .unwrap();
    assert_eq!(w.state(id), RequestState::Cancelled);

    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    assert!(matches!(
        w.engine.decide_cancel(&w.ctx(), "alice", id, None),
        Err(WorkflowError::WrongState { .. })
    ));
    assert_eq!(
        w.engine.decide_revoke(&w.ctx(), "bob", id, None),
        Err(WorkflowError::MissingPermission(Permission::Admin))
    );
    assert_eq!(
        w.engine.decide_checkin(&w.ctx(), "zoe", id),
        Err(WorkflowError::NotYourRequest(id))
    );
    // A blank reason is no reason.
    w.commit(
        w.engine
            .decide_revoke(&w.ctx(), "root", id, Some("  ".into())),
    )
    .unwrap();
    assert_eq!(w.state(id), RequestState::Revoked);
    assert_eq!(w.engine.requests[&id].ended_why, None);
    assert!(matches!(
        w.engine.decide_checkin(&w.ctx(), "alice", id),
        Err(WorkflowError::WrongState { .. })
    ));
}

#[test]
fn replaying_events_rebuilds_identical_state() {
    let mut w = World::new();
    let held = w.hold_orders("alice");
    let web = w.request("zoe", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("zoe", web).unwrap();
    w.commit(w.decide_extend("zoe", web, 3600)).unwrap();
    w.commit(w.engine.decide_checkin(&w.ctx(), "alice", held))
        .unwrap();
    w.commit(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "frank", vec![], None),
    )
    .unwrap();
    let mut fresh = Engine::default();
    for event in &w.log {
        fresh.apply(event);
    }
    assert_eq!(fresh, w.engine);
}

#[test]
fn a_configuration_without_a_requests_user_or_resource_ends_or_cancels_it_alone() {
    let mut w = World::new();
    let held = w.hold_orders("alice");
    let web = w.request("zoe", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("zoe", web).unwrap();
    let pending = w.request("alice", "web-01").unwrap();
    assert!(w.engine.decide_withdrawn(&w.ctx()).is_empty());

    let mut reloaded = w.config.clone();
    reloaded.directory.users.remove("alice");
    let ended = w.withdrawn_under(&reloaded);
    // Alice's lease ends as revoked by nobody (the gateway), her pending
    // request is cancelled; zoe's lease stays.
    assert_eq!(
        ended,
        [
            Event::Ended {
                id: held,
                reason: EndReason::Revoked,
                by: None,
                why: None,
                at: w.now,
            },
            Event::Cancelled {
                id: pending,
                by: "gateway".into(),
                why: None,
                at: w.now,
            }
        ]
    );
    w.commit(Ok(ended)).unwrap();
    assert_eq!(w.state(held), RequestState::Revoked);
    assert_eq!(w.state(web), RequestState::Active);
    assert_eq!(w.state(pending), RequestState::Cancelled);
    assert!(w.withdrawn_under(&reloaded).is_empty(), "decided twice");

    let mut reloaded = w.config.clone();
    reloaded.resources.remove("web-01");
    let ended = w.withdrawn_under(&reloaded);
    assert!(matches!(ended[..], [Event::Ended { id, .. }] if id == web));
}

#[test]
fn a_configuration_that_takes_the_request_permission_away_ends_the_users_leases() {
    let mut w = World::new();
    let web = w.request("zoe", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("zoe", web).unwrap();
    let held = w.hold_orders("alice");

    let mut reloaded = w.config.clone();
    let zoe = reloaded.directory.users.get_mut("zoe").unwrap();
    zoe.permissions.remove(&Permission::Request);
    zoe.permissions.insert(Permission::Audit);
    let ended = w.withdrawn_under(&reloaded);
    assert!(matches!(ended[..], [Event::Ended { id, .. }] if id == web));
    w.commit(Ok(ended)).unwrap();
    assert_eq!(w.state(web), RequestState::Revoked);
    assert_eq!(
        w.state(held),
        RequestState::Active,
        "alice may still request"
    );
}

#[test]
fn a_database_lease_gets_a_new_password_for_its_holder_alone_while_it_is_open() {
    let mut w = World::new();
    let id = w.hold_orders("alice");
    let replace = |w: &mut World, who: &str, mfa: bool| {
        let decision =
            w.engine
                .decide_new_password(&w.ctx(), who, id, mfa, Some("recorded-hash".into()));
        w.commit(decision)
    };
    assert!(matches!(
        replace(&mut w, "alice", false),
        Err(WorkflowError::MfaRequired(_))
    ));
    assert!(matches!(
        replace(&mut w, "zoe", true),
        Err(WorkflowError::NotYourRequest(_))
    ));
    replace(&mut w, "alice", true).unwrap();
    assert_eq!(
        w.engine.request(id).unwrap().secret_hash.as_deref(),
        Some("recorded-hash")
    );
    // The record of the password stays in the journal, never in the audit log.
    let replaced = w.log.last().unwrap();
    assert!(matches!(replaced, Event::PasswordReplaced { .. }));
    assert!(
        !serde_json::to_string(&replaced.redacted())
            .unwrap()
            .contains("recorded-hash")
    );

    let web = w.request("alice", "web-01").unwrap();
    w.approve("bob", web).unwrap();
    w.checkout("alice", web).unwrap();
    let ssh = w
        .engine
        .decide_new_password(&w.ctx(), "alice", web, true, None);
    assert!(matches!(
        ssh,
        Err(WorkflowError::NoConnectionPassword { .. })
    ));

    // A window that is over, though its timer has not ended it yet, has no
    // password to give.
    w.advance(3600);
    let late = replace(&mut w, "alice", true).unwrap_err();
    assert!(
        late.to_string().contains("cannot be given a new password"),
        "{late}"
    );
}
