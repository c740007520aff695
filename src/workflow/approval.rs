//! Who may approve what: levels, escalation and delegation.

use crate::config::{ApprovalLevel, Permission};

use super::decide::Context;
use super::model::{ApprovalRound, Request, Time};
use super::{Engine, WorkflowError};

/// Whether `user` may approve at `level` in their own right, counting the
/// escalation approvers once the level has waited long enough.
pub fn eligible_at(
    ctx: &Context,
    level: &ApprovalLevel,
    level_started_at: Time,
    user: &str,
) -> bool {
    let direct = level
        .approvers
        .iter()
        .any(|p| ctx.directory.matches(user, p));
    let escalated = level.escalate_after.is_some_and(|after| {
        let after =
            chrono::Duration::from_std(after.as_duration()).unwrap_or(chrono::Duration::MAX);
        ctx.now >= level_started_at + after
    }) && level
        .escalate_to
        .iter()
        .any(|p| ctx.directory.matches(user, p));
    direct || escalated
}

impl Engine {
    /// Decides whose authority `actor` approves with at the round's current
    /// level: `Ok(None)` for their own, `Ok(Some(x))` as a delegate of `x`.
    pub(super) fn approval_authority(
        &self,
        ctx: &Context,
        request: &Request,
        round: &ApprovalRound,
        actor: &str,
    ) -> Result<Option<String>, WorkflowError> {
        let levels = request.levels();
        let current = &levels[round.level];
        let may_approve = |user: &str| ctx.directory.has(user, Permission::Approve);
        if eligible_at(ctx, current, round.level_started_at, actor) && may_approve(actor) {
            if round.has_counted(actor) {
                return Err(WorkflowError::AlreadyApproved(request.id));
            }
            return Ok(None);
        }
        let delegators = self
            .delegations
            .values()
            .filter(|d| d.to == actor && d.covers(&request.resource, ctx.now));
        for delegation in delegators {
            let from = delegation.from.as_str();
            if from != request.requester
                && eligible_at(ctx, current, round.level_started_at, from)
                && may_approve(from)
                && !round.has_counted(from)
                && !round.has_counted(actor)
            {
                return Ok(Some(from.to_string()));
            }
        }
        Err(self.why_not_approver(ctx, request, round, actor))
    }

    fn why_not_approver(
        &self,
        ctx: &Context,
        request: &Request,
        round: &ApprovalRound,
        actor: &str,
    ) -> WorkflowError {
        if round.has_counted(actor) {
            return WorkflowError::AlreadyApproved(request.id);
        }
        let later_level = request.levels()[round.level + 1..]
            .iter()
            .any(|level| eligible_at(ctx, level, ctx.now, actor));
        if later_level {
            return WorkflowError::LevelNotReached {
                id: request.id,
                waiting: round.level,
            };
        }
        if eligible_at(
            ctx,
            &request.levels()[round.level],
            round.level_started_at,
            actor,
        ) {
            return WorkflowError::MissingPermission(Permission::Approve);
        }
        WorkflowError::NotAnApprover(request.id)
    }

    /// Whether `actor` could act on the round's current level (own right or delegated).
    pub(super) fn can_act_on(
        &self,
        ctx: &Context,
        request: &Request,
        round: &ApprovalRound,
        actor: &str,
    ) -> bool {
        let Some(level) = request.levels().get(round.level) else {
            return false;
        };
        let own = eligible_at(ctx, level, round.level_started_at, actor);
        let delegated = self.delegations.values().any(|d| {
            d.to == actor
                && d.covers(&request.resource, ctx.now)
                && eligible_at(ctx, level, round.level_started_at, &d.from)
        });
        own || delegated
    }
}

impl Engine {
    /// Every user who could approve request `id` right now, by name: whom
    /// a requester or a chat tool should ask.
    pub fn approvers_now(&self, ctx: &Context, id: super::RequestId) -> Vec<String> {
        ctx.directory
            .users
            .keys()
            .filter(|user| self.awaits_approval_from(ctx, id, user))
            .cloned()
            .collect()
    }

    /// Whether `user` could approve request `id` right now: it waits for a
    /// level `user` belongs to (or is delegated for) and they have not
    /// counted yet. Drives `requests` listings and `watch` notifications.
    pub fn awaits_approval_from(&self, ctx: &Context, id: super::RequestId, user: &str) -> bool {
        let Some(request) = self.requests.get(&id) else {
            return false;
        };
        let Some(round) = request.open_round() else {
            return false;
        };
        request.requester != user
            && !round.has_counted(user)
            && self.can_act_on(ctx, request, round, user)
    }
}

/// "needs 1 approval from group:sre-leads, then 1 from group:security".
pub fn describe_waiting(request: &Request, round: &ApprovalRound) -> String {
    let parts: Vec<String> = request.levels()[round.level.min(request.levels().len())..]
        .iter()
        .enumerate()
        .map(|(offset, level)| {
            let done = if offset == 0 {
                round.approvals_at(round.level)
            } else {
                0
            };
            let missing = (level.required as usize).saturating_sub(done);
            let who: Vec<String> = level.approvers.iter().map(ToString::to_string).collect();
            let noun = if missing == 1 {
                "approval"
            } else {
                "approvals"
            };
            format!("{missing} {noun} from {}", who.join(" or "))
        })
        .collect();
    if parts.is_empty() {
        "no approvals needed".to_string()
    } else {
        format!("needs {}", parts.join(", then "))
    }
}
