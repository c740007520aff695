//! Every transition and every refusal of the workflow engine.

use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::config::{Config, Permission};

const CONFIG: &str = r#"
[roles]
engineer = ["request"]
approver = ["request", "approve"]
workflow_admin = ["manage_workflow"]
admin = ["admin"]

[groups.engineers]
roles = ["engineer"]
[groups.sre-leads]
roles = ["approver"]
[groups.security]
roles = ["approver"]

[[user]]
name = "alice"
groups = ["engineers"]
[[user]]
name = "zoe"
groups = ["engineers"]
[[user]]
name = "bob"
groups = ["sre-leads"]
[[user]]
name = "erin"
groups = ["sre-leads"]
[[user]]
name = "dave"
groups = ["security"]
[[user]]
name = "frank"
groups = ["engineers"]
[[user]]
name = "root"
roles = ["admin"]
[[user]]
name = "wanda"
roles = ["workflow_admin"]

[[resource]]
name = "web-01"
kind = "ssh"
address = "127.0.0.1:22"
account = "deploy"
[resource.workflow]
mfa_required = false
max_duration = "2h"
self_service_extension = "15m"
approval_levels = [{ approvers = ["group:sre-leads"] }]

[[resource]]
name = "orders-prod"
kind = "postgres"
address = "127.0.0.1:5432"
account = "app"
database = "orders"
[resource.workflow]
single_user = true
require_reason = true
max_duration = "8h"
approval_levels = [
  { approvers = ["group:sre-leads"], required = 2 },
  { approvers = ["group:security"], escalate_after = "1h", escalate_to = ["user:root"] },
]

[[resource]]
name = "sandbox"
kind = "ssh"
address = "127.0.0.1:22"
account = "deploy"
[resource.workflow]
mfa_required = false
clock_starts = "approval"
pending_timeout = "10m"
"#;

struct World {
    config: Config,
    engine: Engine,
    now: Time,
    /// Every event committed, in order, as the journal would hold them.
    log: Vec<Event>,
}

impl World {
    fn new() -> Self {
        let config = Config::from_toml("test.toml".as_ref(), CONFIG).expect("test config is valid");
        Self {
            config,
            engine: Engine::default(),
            log: Vec::new(),
            now: chrono::Utc
                .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
                .unwrap(),
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            directory: &self.config.directory,
            resources: &self.config.resources,
            now: self.now,
        }
    }

    fn advance(&mut self, secs: i64) {
        self.now += chrono::Duration::seconds(secs);
    }

    fn commit(
        &mut self,
        decision: Result<Vec<Event>, WorkflowError>,
    ) -> Result<Vec<Event>, WorkflowError> {
        let events = decision?;
        for event in &events {
            self.engine.apply(event);
            self.log.push(event.clone());
        }
        Ok(events)
    }

    fn request(&mut self, who: &str, resource: &str) -> Result<RequestId, WorkflowError> {
        let spec = RequestSpec {
            resource: resource.into(),
            duration: Some(Duration::from_secs(1800)),
            reason: Some("incident 42".into()),
            ticket: None,
        };
        let events = self.commit(self.engine.decide_request(&self.ctx(), who, spec))?;
        Ok(events[0].request_id().unwrap())
    }

    fn approve(&mut self, who: &str, id: RequestId) -> Result<Vec<Event>, WorkflowError> {
        self.commit(self.engine.decide_approve(&self.ctx(), who, id, None))
    }

    fn checkout(&mut self, who: &str, id: RequestId) -> Result<Vec<Event>, WorkflowError> {
        self.commit(
            self.engine
                .decide_checkout(&self.ctx(), who, id, true, None),
        )
    }

    fn state(&self, id: RequestId) -> RequestState {
        self.engine.request(id).unwrap().state
    }

    /// Fully approves and checks out an orders-prod request of `who`.
    fn hold_orders(&mut self, who: &str) -> RequestId {
        let id = self.request(who, "orders-prod").unwrap();
        self.approve("bob", id).unwrap();
        self.approve("erin", id).unwrap();
        self.approve("dave", id).unwrap();
        self.checkout(who, id).unwrap();
        id
    }
}

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
        "orders-prod is held by alice until 12:30 UTC"
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

#[test]
fn one_user_holds_at_most_one_lease_per_resource() {
    let mut w = World::new();
    let first = w.request("alice", "web-01").unwrap();
    w.approve("bob", first).unwrap();
    w.checkout("alice", first).unwrap();
    let second = w.request("alice", "web-01").unwrap();
    w.approve("bob", second).unwrap();
    assert_eq!(
        w.checkout("alice", second),
        Err(WorkflowError::AlreadyHolding {
            resource: "web-01".into(),
            id: first
        })
    );
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
    w.commit(
        w.engine
            .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(600)),
    )
    .unwrap();
    assert_eq!(
        w.engine.request(id).unwrap().window_end,
        Some(end + chrono::Duration::seconds(600))
    );
    // 10m used of the 15m allowance: another 10m needs approval again.
    let events = w
        .commit(
            w.engine
                .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(600)),
        )
        .unwrap();
    assert!(matches!(events[0], Event::ExtensionRequested { .. }));
    assert_eq!(
        w.engine
            .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(60)),
        Err(WorkflowError::ExtensionPending(id))
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
fn extension_never_exceeds_the_maximum() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    // 30m granted, 2h maximum: 90m more is the most.
    assert!(matches!(
        w.engine
            .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(5401)),
        Err(WorkflowError::ExtensionTooLong { .. })
    ));
    assert!(
        w.engine
            .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(5400))
            .is_ok()
    );
    assert_eq!(
        w.engine
            .decide_extend(&w.ctx(), "zoe", id, Duration::from_secs(60)),
        Err(WorkflowError::NotYourRequest(id))
    );
}

#[test]
fn denied_extension_keeps_the_lease() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    w.commit(
        w.engine
            .decide_extend(&w.ctx(), "alice", id, Duration::from_secs(3600)),
    )
    .unwrap();
    w.commit(w.engine.decide_deny(&w.ctx(), "bob", id, None))
        .unwrap();
    let request = w.engine.request(id).unwrap();
    assert_eq!(request.state, RequestState::Active);
    assert!(request.extension.is_none());
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
fn cancel_and_revoke_follow_ownership_and_admin_rights() {
    let mut w = World::new();
    let id = w.request("alice", "web-01").unwrap();
    assert_eq!(
        w.engine.decide_cancel(&w.ctx(), "zoe", id),
        Err(WorkflowError::NotYourRequest(id))
    );
    w.commit(w.engine.decide_cancel(&w.ctx(), "alice", id))
        .unwrap();
    assert_eq!(w.state(id), RequestState::Cancelled);

    let id = w.request("alice", "web-01").unwrap();
    w.approve("bob", id).unwrap();
    w.checkout("alice", id).unwrap();
    assert!(matches!(
        w.engine.decide_cancel(&w.ctx(), "alice", id),
        Err(WorkflowError::WrongState { .. })
    ));
    assert_eq!(
        w.engine.decide_revoke(&w.ctx(), "bob", id),
        Err(WorkflowError::MissingPermission(Permission::Admin))
    );
    assert_eq!(
        w.engine.decide_checkin(&w.ctx(), "zoe", id),
        Err(WorkflowError::NotYourRequest(id))
    );
    w.commit(w.engine.decide_revoke(&w.ctx(), "root", id))
        .unwrap();
    assert_eq!(w.state(id), RequestState::Revoked);
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
    w.commit(
        w.engine
            .decide_extend(&w.ctx(), "zoe", web, Duration::from_secs(3600)),
    )
    .unwrap();
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
