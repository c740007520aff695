//! Events applied to the state. Applying never fails: an event was decided
//! against this very state (or is being replayed from the journal).

use std::time::Duration;

use crate::config::ClockStart;

use super::Engine;
use super::model::{ApprovalRound, EndReason, Event, Request, RequestState, Time};

impl Engine {
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Requested { .. } => self.open_request(event),
            Event::Approved { id, approval, .. } => self.with(*id, |r| r.count_approval(approval)),
            Event::Escalated { id, level, .. } => self.with(*id, |r| r.mark_escalated(*level)),
            Event::Granted { id, at } => self.with(*id, |r| {
                r.state = RequestState::Approved;
                r.approved_at = Some(*at);
                if r.settings.clock_starts == ClockStart::Approval {
                    r.window_end = Some(*at + chrono_secs(r.duration_secs));
                }
            }),
            Event::Denied {
                id, by, reason, at, ..
            } => self.with(*id, |r| {
                if r.state == RequestState::Active {
                    r.extension = None;
                } else {
                    finish(r, RequestState::Denied, *at, Some(by), reason);
                }
            }),
            Event::Cancelled { id, by, why, at } => self.with(*id, |r| {
                finish(r, RequestState::Cancelled, *at, Some(by), why);
            }),
            Event::TimedOut { id, at } => {
                self.with(*id, |r| finish(r, RequestState::TimedOut, *at, None, &None))
            }
            Event::CheckedOut { .. } => self.check_out(event),
            Event::Ended {
                id,
                reason,
                by,
                why,
                at,
            } => self.end(*id, *reason, (by.as_ref(), why), *at),
            Event::ExtensionRequested {
                id,
                duration_secs,
                reason,
                at,
            } => self.with(*id, |r| {
                r.extension = Some(Engine::new_extension(*duration_secs, reason.clone(), *at));
            }),
            Event::Extended { id, window_end, .. } => self.with(*id, |r| {
                let old_end = r.window_end.unwrap_or(*window_end);
                let added = (*window_end - old_end).num_seconds().max(0) as u64;
                r.extended_secs += added;
                r.window_end = Some(*window_end);
                r.extension = None;
            }),
            Event::PasswordReplaced {
                id, secret_hash, ..
            } => self.with(*id, |r| r.secret_hash = secret_hash.clone()),
            Event::DelegationGranted { delegation, .. } => {
                self.delegations
                    .insert(delegation.from.clone(), delegation.clone());
            }
            Event::DelegationRevoked { from, .. } => {
                self.delegations.remove(from);
            }
            Event::WorkflowChanged {
                resource, settings, ..
            } => {
                self.workflow_overrides
                    .insert(resource.clone(), settings.clone());
            }
        }
    }

    fn open_request(&mut self, event: &Event) {
        let Event::Requested {
            id,
            requester,
            resource,
            duration_secs,
            reason,
            ticket,
            settings,
            at,
        } = event
        else {
            return;
        };
        self.next_id = self.next_id.max(*id);
        let request = Request {
            id: *id,
            requester: requester.clone(),
            resource: resource.clone(),
            duration_secs: *duration_secs,
            reason: reason.clone(),
            ticket: ticket.clone(),
            created_at: *at,
            state: RequestState::Pending,
            settings: settings.clone(),
            round: ApprovalRound::new(*at),
            approved_at: None,
            checked_out_at: None,
            window_end: None,
            ended_at: None,
            ended_by: None,
            ended_why: None,
            extended_secs: 0,
            extension: None,
            secret_hash: None,
            mfa_passed: false,
        };
        self.requests.insert(*id, request);
    }

    /// A single-user resource's holder is the lease checked out last.
    fn check_out(&mut self, event: &Event) {
        let Event::CheckedOut {
            id,
            window_end,
            mfa_passed,
            secret_hash,
            at,
        } = event
        else {
            return;
        };
        let mut exclusive = None;
        self.with(*id, |r| {
            r.state = RequestState::Active;
            r.checked_out_at = Some(*at);
            r.window_end = Some(*window_end);
            r.mfa_passed = *mfa_passed;
            r.secret_hash = secret_hash.clone();
            if r.settings.single_user {
                exclusive = Some(r.resource.clone());
            }
        });
        if let Some(resource) = exclusive {
            self.holders.insert(resource, *id);
        }
    }

    fn end(
        &mut self,
        id: u64,
        reason: EndReason,
        (by, why): (Option<&String>, &Option<String>),
        at: Time,
    ) {
        let state = match reason {
            EndReason::CheckedIn => RequestState::CheckedIn,
            EndReason::Expired => RequestState::Expired,
            EndReason::Revoked => RequestState::Revoked,
        };
        self.with(id, |r| {
            finish(r, state, at, by, why);
            r.extension = None;
        });
        self.holders.retain(|_, holder| *holder != id);
    }

    fn with(&mut self, id: u64, change: impl FnOnce(&mut Request)) {
        if let Some(request) = self.requests.get_mut(&id) {
            change(request);
        }
    }
}

fn finish(
    request: &mut Request,
    state: RequestState,
    at: Time,
    by: Option<&String>,
    why: &Option<String>,
) {
    request.state = state;
    request.ended_at = Some(at);
    request.ended_by = by.cloned();
    request.ended_why = why.clone();
}

fn chrono_secs(secs: u64) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_secs(secs)).unwrap_or(chrono::Duration::MAX)
}
