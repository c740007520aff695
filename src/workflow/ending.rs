//! Decisions that end access before its time: a check-in by the holder,
//! a revocation by an administrator (one request, or everything a user
//! holds), and what revoking means for a request in each state.

use crate::config::Permission;

use super::Engine;
use super::decide::{Context, Decision, MAX_TEXT_CHARS, given_text};
use super::error::WorkflowError;
use super::model::{EndReason, Event, Request, RequestId, RequestState, Time};

impl Engine {
    pub fn decide_checkin(&self, ctx: &Context, actor: &str, id: RequestId) -> Decision {
        let request = self.owned(ctx, actor, id)?;
        if request.state != RequestState::Active {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "checked in",
            });
        }
        Ok(vec![Event::Ended {
            id,
            reason: EndReason::CheckedIn,
            by: Some(actor.to_string()),
            why: None,
            at: ctx.now,
        }])
    }

    /// An administrator ends a live lease, or withdraws a request in flight.
    pub fn decide_revoke(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        why: Option<String>,
    ) -> Decision {
        self.require(ctx, actor, Permission::Admin)?;
        let request = self.get(id)?;
        let why = given_text("reason", why, MAX_TEXT_CHARS)?;
        let revoked =
            revocation(request, (Some(actor), &why), ctx.now).ok_or(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "revoked",
            })?;
        Ok(vec![revoked])
    }

    /// Ends every lease of `user` and cancels every open request of
    /// theirs at once: the incident-response form of `revoke`. A user the
    /// configuration no longer knows may still hold leases from before.
    pub fn decide_revoke_user(
        &self,
        ctx: &Context,
        actor: &str,
        user: &str,
        why: Option<String>,
    ) -> Decision {
        self.require(ctx, actor, Permission::Admin)?;
        let theirs: Vec<&Request> = self
            .requests
            .values()
            .filter(|r| r.requester == user)
            .collect();
        if theirs.is_empty() && ctx.directory.user(user).is_none() {
            return Err(WorkflowError::UnknownUser(user.to_string()));
        }
        let why = given_text("reason", why, MAX_TEXT_CHARS)?;
        Ok(theirs
            .into_iter()
            .filter_map(|r| revocation(r, (Some(actor), &why), ctx.now))
            .collect())
    }
}

/// Who revokes what the gateway itself takes away.
const GATEWAY: &str = "gateway";

/// What revoking `request` means in its state: an active lease ends as
/// revoked, an open request is cancelled, anything else stays. `by` is
/// who revokes (`None` is the gateway itself) and `why` what they said.
pub(super) fn revocation(
    request: &Request,
    (by, why): (Option<&str>, &Option<String>),
    at: Time,
) -> Option<Event> {
    let why = why.clone();
    match request.state {
        RequestState::Active => Some(Event::Ended {
            id: request.id,
            reason: EndReason::Revoked,
            by: by.map(String::from),
            why,
            at,
        }),
        RequestState::Pending | RequestState::Approved => Some(Event::Cancelled {
            id: request.id,
            by: by.unwrap_or(GATEWAY).to_string(),
            why,
            at,
        }),
        _ => None,
    }
}
