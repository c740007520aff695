//! Long random walks through the workflow: every command by every kind of
//! actor, with time passing and the workflow changed at runtime, checking
//! after each step what must always hold — and at the end that replaying
//! the journal, or a snapshot, gives back the very same state.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::{ClockStart, Config};
use crate::fuzzing::Dice;

const ACTORS: &[&str] = &[
    "alice", "zoe", "frank", "bob", "erin", "dave", "root", "wanda", "ghost",
];
const RESOURCES: &[&str] = &["web-01", "orders-prod", "sandbox", "nope"];

/// One random command, decided against the world's state.
fn random_decision(world: &World, dice: &mut Dice) -> Result<Vec<Event>, WorkflowError> {
    let ctx = world.ctx();
    let engine = &world.engine;
    let actor = dice.pick(ACTORS);
    // Mostly a request still in flight; sometimes any id, even unused.
    let open: Vec<RequestId> = engine
        .requests()
        .filter(|r| !r.state.is_final())
        .map(|r| r.id)
        .collect();
    let id = match dice.roll(4) {
        0 => dice.roll(engine.next_id as usize + 2) as RequestId,
        _ if open.is_empty() => 1,
        _ => open[dice.roll(open.len())],
    };
    match dice.roll(16) {
        0..=2 => engine.decide_request(
            &ctx,
            actor,
            RequestSpec {
                resource: dice.pick(RESOURCES).into(),
                duration: [None, Some(0), Some(60), Some(1800), Some(30_000)][dice.roll(5)]
                    .map(Duration::from_secs),
                reason: (dice.roll(4) > 0).then(|| "incident".into()),
                ticket: None,
            },
        ),
        3..=5 => {
            let approver = dice.pick(&["bob", "erin", "dave", "root", actor]);
            engine.decide_approve(&ctx, approver, id, None)
        }
        6 => engine.decide_deny(&ctx, actor, id, None),
        7 => engine.decide_cancel(&ctx, actor, id, Some("not needed".into())),
        8 | 9 => {
            let owner = engine.request(id).map_or(actor, |r| r.requester.as_str());
            engine.decide_checkout(&ctx, owner, id, dice.roll(5) > 0, None)
        }
        10 => {
            let owner = engine.request(id).map_or(actor, |r| r.requester.as_str());
            engine.decide_checkin(&ctx, owner, id)
        }
        11 => match dice.roll(3) {
            0 => engine.decide_revoke(&ctx, actor, id, None),
            1 => engine.decide_revoke_user(&ctx, actor, dice.pick(ACTORS), Some("drill".into())),
            _ => {
                let owner = engine.request(id).map_or(actor, |r| r.requester.as_str());
                let by = [0, 300, 900, 7200, 40_000][dice.roll(5)];
                let reason = dice.roll(2).eq(&0).then(|| "more".to_string());
                let by = Duration::from_secs(by);
                engine.decide_extend(&ctx, owner, ExtendSpec { id, by, reason })
            }
        },
        12 => match dice.roll(2) {
            0 => engine.decide_delegate(&ctx, actor, dice.pick(ACTORS), Vec::new(), None),
            _ => engine.decide_revoke_delegation(&ctx, actor),
        },
        13 => {
            // An administrator swaps one resource's workflow for another's.
            let from = dice.pick(&RESOURCES[..3]);
            let settings = engine.settings_for(&ctx, from).cloned().unwrap_or_default();
            engine.decide_set_workflow(&ctx, "wanda", dice.pick(RESOURCES), settings)
        }
        _ => {
            // What the timers decide: lapsed approvals, ended windows.
            let mut events = engine.decide_timeouts(ctx.now);
            for request in engine.active_requests() {
                events.extend(engine.decide_expire(request.id, ctx.now));
            }
            Ok(events)
        }
    }
}

/// What must hold after every step.
fn check_invariants(
    world: &World,
    directory: &crate::config::Directory,
    finals: &mut BTreeMap<RequestId, RequestState>,
) {
    let engine = &world.engine;
    let active: Vec<&Request> = engine.active_requests().collect();
    for request in &active {
        let round = &request.round;
        assert_eq!(
            round.level,
            request.levels().len(),
            "active before approval: {request:?}"
        );
        assert!(request.checked_out_at.is_some() && request.window_end.is_some());
        assert!(
            request.mfa_passed || !request.settings.mfa_required,
            "active without MFA: {request:?}"
        );
        let allowed = request.duration_secs + request.extended_secs;
        assert!(
            allowed <= request.settings.max_duration.as_duration().as_secs(),
            "past the maximum: {request:?}"
        );
        let start = match request.settings.clock_starts {
            ClockStart::Approval => request.approved_at,
            ClockStart::Checkout => request.checked_out_at,
        };
        let latest = start.unwrap() + chrono::Duration::seconds(allowed as i64);
        assert!(
            request.window_end.unwrap() <= latest,
            "a window longer than granted: {request:?}"
        );
        let others = active
            .iter()
            .filter(|other| other.id != request.id && other.resource == request.resource);
        for other in others {
            assert!(
                other.requester != request.requester,
                "two leases of one user on one resource: {request:?} {other:?}"
            );
            assert!(
                !request.settings.single_user,
                "a single-user lease shared: {request:?} {other:?}"
            );
        }
    }
    for request in engine.requests() {
        let extension = request.extension.as_ref().map(|e| &e.round);
        for round in std::iter::once(&request.round).chain(extension) {
            assert!(round.level <= request.levels().len());
            for approval in &round.approvals {
                let authority = approval.on_behalf_of.as_ref().unwrap_or(&approval.approver);
                let level = &request.levels()[approval.level];
                let mut eligible = level.approvers.iter().chain(&level.escalate_to);
                assert!(
                    eligible.any(|p| directory.matches(authority, p)),
                    "approved by {authority}, who may not: {request:?}"
                );
            }
            let mut people: Vec<&str> = round.approvals.iter().flat_map(|a| a.people()).collect();
            assert!(
                !people.contains(&request.requester.as_str()),
                "self-approval: {request:?}"
            );
            people.sort_unstable();
            let counted = people.len();
            people.dedup();
            assert_eq!(people.len(), counted, "someone counted twice: {request:?}");
        }
        if let Some(state) = finals.get(&request.id) {
            assert_eq!(*state, request.state, "a final state changed: {request:?}");
        } else if request.state.is_final() {
            finals.insert(request.id, request.state);
        }
    }
}

/// Replaying the journal from nothing, and a snapshot, give the same state.
fn check_recovery(world: &World) {
    let mut replayed = Engine::default();
    for event in &world.log {
        replayed.apply(event);
    }
    assert_eq!(replayed, world.engine, "replay differs");
    let snapshot = serde_json::to_string(&world.engine).unwrap();
    let restored: Engine = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored, world.engine, "snapshot differs");
}

/// A reload to the original configuration, or to one without a user or a
/// resource: what it withdraws ends at once.
fn reload(world: &mut World, original: &Config, dice: &mut Dice) {
    let mut config = original.clone();
    match dice.roll(4) {
        0 => {
            config.directory.users.remove(dice.pick(&ACTORS[..8]));
        }
        1 => {
            config.resources.remove(dice.pick(&RESOURCES[..3]));
        }
        _ => {}
    }
    world.config = config;
    let withdrawn = world.engine.decide_withdrawn(&world.ctx());
    world.commit(Ok(withdrawn)).unwrap();
    for request in world.engine.requests().filter(|r| !r.state.is_final()) {
        assert!(
            world.config.directory.user(&request.requester).is_some()
                && world.config.resources.contains_key(&request.resource),
            "withdrawn but still open: {request:?}"
        );
    }
}

#[test]
fn random_walks_keep_every_rule_and_replay_exactly() {
    let original = World::new().config;
    for walk in 0..200u64 {
        let mut world = World::new();
        let mut dice = Dice(0x2545_f491_4f6c_dd1d ^ (walk + 1).wrapping_mul(0x9e37_79b9));
        let mut finals = BTreeMap::new();
        for _ in 0..400 {
            if dice.roll(8) == 0 {
                world.advance([30, 120, 600, 3600, 9000][dice.roll(5)]);
            }
            if dice.roll(40) == 0 {
                reload(&mut world, &original, &mut dice);
            }
            let decision = random_decision(&world, &mut dice);
            let _ = world.commit(decision);
            check_invariants(&world, &original.directory, &mut finals);
        }
        check_recovery(&world);
    }
}
