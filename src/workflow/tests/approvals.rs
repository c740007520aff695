//! Requests and approvals: levels, refusals, delegation, escalation.

use std::time::Duration;

use super::World;
use crate::config::Permission;
use crate::workflow::*;

#[test]
fn single_level_request_is_approved_checked_out_and_checked_in() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(w.state(id), RequestState::Pending);
    let events = w.approve("bob", id).unwrap();
    assert!(matches!(events.last(), Some(Event::Granted { .. })));
    assert_eq!(w.state(id), RequestState::Approved);
    w.checkout("alice", id).unwrap();
    assert_eq!(w.state(id), RequestState::Active);
    assert_eq!(
        w.engine.request(id).unwrap().window_end,
        Some(w.now + chrono::Duration::seconds(1800))
    );
    w.commit(w.engine.decide_checkin(&w.ctx(), "alice", id))
        .unwrap();
    assert_eq!(w.state(id), RequestState::CheckedIn);
}

#[test]
fn resource_without_levels_is_granted_at_once() {
    let mut w = World::new();
    let id = w.request("alice", "sandbox").unwrap();
    assert_eq!(w.state(id), RequestState::Approved);
}

#[test]
fn levels_complete_in_order_with_required_counts() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    assert_eq!(
        w.approve("dave", id),
        Err(WorkflowError::LevelNotReached { id, waiting: 0 }),
        "level 2 cannot approve before level 1 completes"
    );
    w.approve("bob", id).unwrap();
    assert_eq!(
        w.state(id),
        RequestState::Pending,
        "level 1 needs two approvals"
    );
    assert_eq!(
        w.approve("bob", id),
        Err(WorkflowError::AlreadyApproved(id))
    );
    w.approve("erin", id).unwrap();
    assert_eq!(w.engine.request(id).unwrap().round.level, 1);
    assert_eq!(
        w.approve("erin", id),
        Err(WorkflowError::AlreadyApproved(id))
    );
    w.approve("dave", id).unwrap();
    assert_eq!(w.state(id), RequestState::Approved);
}

#[test]
fn requester_can_never_approve_their_own_request() {
    let mut w = World::new();
    let id = w.request("bob", "web-01").unwrap();
    assert_eq!(w.approve("bob", id), Err(WorkflowError::SelfApproval));
    w.commit(
        w.engine
            .decide_delegate(&w.ctx(), "erin", "bob", vec![], None),
    )
    .unwrap();
    assert_eq!(
        w.approve("bob", id),
        Err(WorkflowError::SelfApproval),
        "not even as a delegate"
    );
}

#[test]
fn non_approvers_and_unknown_users_are_refused() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(w.approve("zoe", id), Err(WorkflowError::NotAnApprover(id)));
    assert_eq!(w.approve("dave", id), Err(WorkflowError::NotAnApprover(id)));
    assert_eq!(
        w.approve("mallory", id),
        Err(WorkflowError::UnknownUser("mallory".into()))
    );
    assert_eq!(
        w.approve("bob", 999),
        Err(WorkflowError::UnknownRequest(999))
    );
    assert_eq!(w.state(id), RequestState::Pending);
}

#[test]
fn one_deny_ends_the_request() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    w.approve("bob", id).unwrap();
    assert_eq!(
        w.commit(w.engine.decide_deny(&w.ctx(), "zoe", id, None)),
        Err(WorkflowError::NotAnApprover(id))
    );
    w.commit(
        w.engine
            .decide_deny(&w.ctx(), "erin", id, Some("not now".into())),
    )
    .unwrap();
    assert_eq!(w.state(id), RequestState::Denied);
    assert!(matches!(
        w.approve("erin", id),
        Err(WorkflowError::WrongState { .. })
    ));
}

#[test]
fn reason_ticket_duration_and_permission_rules_are_enforced() {
    let mut w = World::new();
    let ctx = w.ctx();
    let spec = |resource: &str, secs: u64, reason: Option<&str>| RequestSpec {
        resource: resource.into(),
        duration: Some(Duration::from_secs(secs)),
        reason: reason.map(Into::into),
        ticket: None,
    };
    assert_eq!(
        w.engine
            .decide_request(&ctx, "alice", spec("orders-prod", 60, Some("  "))),
        Err(WorkflowError::ReasonRequired("orders-prod".into()))
    );
    // Free text is kept to what an approver's list can show.
    let longest = "é".repeat(1000);
    let too_long = format!("{longest}!");
    assert_eq!(
        w.engine
            .decide_request(&ctx, "alice", spec("orders-prod", 60, Some(&too_long))),
        Err(WorkflowError::TextTooLong {
            what: "reason",
            chars: 1001,
            max: 1000
        })
    );
    assert!(
        w.engine
            .decide_request(&ctx, "alice", spec("orders-prod", 60, Some(&longest)))
            .is_ok()
    );
    let with_ticket = RequestSpec {
        ticket: Some("T".repeat(101)),
        ..spec("web-01", 60, None)
    };
    assert!(matches!(
        w.engine.decide_request(&ctx, "alice", with_ticket),
        Err(WorkflowError::TextTooLong {
            what: "ticket id",
            ..
        })
    ));
    assert!(matches!(
        w.engine
            .decide_request(&ctx, "alice", spec("web-01", 3 * 3600, None)),
        Err(WorkflowError::DurationTooLong { .. })
    ));
    assert_eq!(
        w.engine
            .decide_request(&ctx, "alice", spec("web-01", 0, None)),
        Err(WorkflowError::ZeroDuration)
    );
    assert_eq!(
        w.engine
            .decide_request(&ctx, "alice", spec("nope", 60, None)),
        Err(WorkflowError::UnknownResource("nope".into()))
    );
    assert_eq!(
        w.engine
            .decide_request(&ctx, "wanda", spec("web-01", 60, None)),
        Err(WorkflowError::MissingPermission(Permission::Request))
    );
    let mut settings = w.config.resources["web-01"].workflow.clone();
    settings.require_ticket = true;
    w.commit(
        w.engine
            .decide_set_workflow(&w.ctx(), "wanda", "web-01", settings),
    )
    .unwrap();
    assert_eq!(
        w.engine
            .decide_request(&w.ctx(), "alice", spec("web-01", 60, None)),
        Err(WorkflowError::TicketRequired("web-01".into()))
    );
    let with_ticket = RequestSpec {
        ticket: Some("OPS-1".into()),
        ..spec("web-01", 60, None)
    };
    assert!(
        w.engine
            .decide_request(&w.ctx(), "alice", with_ticket)
            .is_ok()
    );
}

#[test]
fn default_duration_applies_when_none_is_given() {
    let mut w = World::new();
    let spec = RequestSpec {
        resource: "web-01".into(),
        ..Default::default()
    };
    let events = w
        .commit(w.engine.decide_request(&w.ctx(), "alice", spec))
        .unwrap();
    let id = events[0].request_id().unwrap();
    assert_eq!(w.engine.request(id).unwrap().duration_secs, 1800);
}

#[test]
fn only_workflow_managers_change_settings_and_changes_are_validated() {
    let mut w = World::new();
    let mut settings = w.config.resources["web-01"].workflow.clone();
    settings.max_duration = crate::config::HumanDuration::from_secs(60);
    assert_eq!(
        w.engine
            .decide_set_workflow(&w.ctx(), "alice", "web-01", settings.clone()),
        Err(WorkflowError::MissingPermission(Permission::ManageWorkflow))
    );
    assert!(
        matches!(
            w.engine
                .decide_set_workflow(&w.ctx(), "wanda", "web-01", settings.clone()),
            Err(WorkflowError::InvalidWorkflow { .. })
        ),
        "default 30m above the new 1m maximum"
    );
    settings.default_duration = crate::config::HumanDuration::from_secs(60);
    settings.approval_levels[0].approvers = vec![crate::config::Principal::Group("ghosts".into())];
    assert!(matches!(
        w.engine
            .decide_set_workflow(&w.ctx(), "wanda", "web-01", settings.clone()),
        Err(WorkflowError::InvalidWorkflow { .. })
    ));
    settings.approval_levels.clear();
    w.commit(
        w.engine
            .decide_set_workflow(&w.ctx(), "wanda", "web-01", settings),
    )
    .unwrap();
    let id = w.request("alice", "sandbox").unwrap();
    assert_eq!(w.state(id), RequestState::Approved);
    assert!(
        w.engine
            .decide_request(
                &w.ctx(),
                "alice",
                RequestSpec {
                    resource: "web-01".into(),
                    duration: Some(Duration::from_secs(120)),
                    ..Default::default()
                }
            )
            .is_err()
    );
}

#[test]
fn delegated_approval_is_recorded_as_delegate_for_delegator() {
    let mut w = World::new();
    w.commit(w.engine.decide_delegate(
        &w.ctx(),
        "dave",
        "frank",
        vec!["orders-prod".into()],
        Some(w.now + chrono::Duration::hours(1)),
    ))
    .unwrap();
    let id = w.request("alice", "orders-prod").unwrap();
    w.approve("bob", id).unwrap();
    w.approve("erin", id).unwrap();
    let events = w.approve("frank", id).unwrap();
    let Event::Approved { approval, .. } = &events[0] else {
        panic!("expected an approval")
    };
    assert_eq!(
        (approval.approver.as_str(), approval.on_behalf_of.as_deref()),
        ("frank", Some("dave"))
    );
    assert_eq!(w.state(id), RequestState::Approved);
}

#[test]
fn delegation_is_limited_by_resource_time_and_single_counting() {
    let mut w = World::new();
    let until = w.now + chrono::Duration::hours(1);
    w.commit(w.engine.decide_delegate(
        &w.ctx(),
        "bob",
        "frank",
        vec!["orders-prod".into()],
        Some(until),
    ))
    .unwrap();
    let web = w.request("alice", "web-01").unwrap();
    assert_eq!(
        w.approve("frank", web),
        Err(WorkflowError::NotAnApprover(web)),
        "other resource"
    );

    let id = w.request("alice", "orders-prod").unwrap();
    w.approve("bob", id).unwrap();
    assert_eq!(
        w.approve("frank", id),
        Err(WorkflowError::NotAnApprover(id)),
        "bob already counted"
    );

    let id2 = w.request("zoe", "orders-prod").unwrap();
    w.advance(3601);
    assert_eq!(
        w.approve("frank", id2),
        Err(WorkflowError::NotAnApprover(id2)),
        "delegation expired"
    );
}

#[test]
fn delegation_refusals_and_revocation() {
    let mut w = World::new();
    assert_eq!(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "bob", vec![], None),
        Err(WorkflowError::SelfDelegation)
    );
    assert_eq!(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "ghost", vec![], None),
        Err(WorkflowError::UnknownUser("ghost".into()))
    );
    assert_eq!(
        w.engine
            .decide_delegate(&w.ctx(), "alice", "zoe", vec![], None),
        Err(WorkflowError::MissingPermission(Permission::Approve))
    );
    assert_eq!(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "frank", vec!["nope".into()], None),
        Err(WorkflowError::UnknownResource("nope".into()))
    );
    assert!(matches!(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "frank", vec![], Some(w.now)),
        Err(WorkflowError::DelegationInPast(_))
    ));
    // A past end on another day names the day, not just the time.
    let long_ago = "2020-01-01T09:30:00Z".parse().unwrap();
    assert_eq!(
        WorkflowError::DelegationInPast(long_ago).to_string(),
        "the delegation end 2020-01-01 09:30 UTC is already past"
    );
    assert_eq!(
        w.engine.decide_revoke_delegation(&w.ctx(), "bob"),
        Err(WorkflowError::NoDelegation)
    );
    w.commit(
        w.engine
            .decide_delegate(&w.ctx(), "bob", "frank", vec![], None),
    )
    .unwrap();
    w.commit(w.engine.decide_revoke_delegation(&w.ctx(), "bob"))
        .unwrap();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(
        w.approve("frank", id),
        Err(WorkflowError::NotAnApprover(id))
    );
}

#[test]
fn escalation_opens_a_stalled_level_to_extra_approvers() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    w.approve("bob", id).unwrap();
    w.approve("erin", id).unwrap();
    assert_eq!(w.approve("root", id), Err(WorkflowError::NotAnApprover(id)));
    w.advance(3600);
    w.approve("root", id).unwrap();
    assert_eq!(w.state(id), RequestState::Approved);
}

#[test]
fn escalation_is_announced_once_when_the_level_has_waited() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    // Level 1 has no escalation: nothing to announce, only the timeout ahead.
    assert!(
        w.engine
            .decide_timeouts(w.now + chrono::Duration::hours(2))
            .is_empty()
    );
    w.advance(600);
    w.approve("bob", id).unwrap();
    w.approve("erin", id).unwrap();
    let level_two_started = w.now;
    assert_eq!(
        w.engine.next_deadline(),
        Some(level_two_started + chrono::Duration::hours(1)),
        "the escalation is the next thing time does"
    );
    w.advance(3599);
    assert!(w.engine.decide_timeouts(w.now).is_empty());
    w.advance(1);
    let events = w.engine.decide_timeouts(w.now);
    assert_eq!(
        events,
        vec![Event::Escalated {
            id,
            level: 1,
            to: vec![crate::config::Principal::User("root".into())],
            at: w.now,
        }]
    );
    w.commit(Ok(events)).unwrap();
    let ctx = w.ctx();
    assert!(w.engine.awaits_approval_from(&ctx, id, "root"));
    assert!(
        w.engine.decide_timeouts(w.now).is_empty(),
        "announced only once"
    );
    assert_eq!(
        w.engine.next_deadline(),
        Some(w.engine.request(id).unwrap().created_at + chrono::Duration::hours(24)),
        "then only the pending timeout is left"
    );
    // Replaying the journal keeps it announced.
    let mut replayed = Engine::default();
    for event in &w.log {
        replayed.apply(event);
    }
    assert!(replayed.decide_timeouts(w.now).is_empty());
    w.approve("root", id).unwrap();
    assert_eq!(w.state(id), RequestState::Approved);
}

#[test]
fn waiting_description_names_the_remaining_levels() {
    let mut w = World::new();
    let id = w.request("alice", "orders-prod").unwrap();
    let request = w.engine.request(id).unwrap();
    assert_eq!(
        describe_waiting(request, &request.round),
        "needs 2 approvals from group:sre-leads, then 1 approval from group:security"
    );
    w.approve("bob", id).unwrap();
    let request = w.engine.request(id).unwrap();
    assert_eq!(
        describe_waiting(request, &request.round),
        "needs 1 approval from group:sre-leads, then 1 approval from group:security"
    );
}
