//! What time alone decides: requests pending too long, approvals left
//! unused, windows that end, levels that waited long enough to escalate,
//! and the next moment any of that is due (the housekeeping timer sleeps
//! until it).

use crate::config::ClockStart;

use super::Engine;
use super::decide::secs;
use super::model::{EndReason, Event, Request, RequestId, RequestState, Time};

/// When the open round's current level escalates, unless it already has.
/// (Eligibility itself is worked out from the clock, see `eligible_at`;
/// this only decides when the escalation is announced.)
fn escalation_due(request: &Request) -> Option<(Time, usize)> {
    let round = request.open_round().filter(|r| !r.escalated)?;
    let after = request.levels().get(round.level)?.escalate_after?;
    Some((
        round.level_started_at + secs(after.as_duration()),
        round.level,
    ))
}

impl Engine {
    /// The timer fired for request `id`; ends it if its window really is over.
    pub fn decide_expire(&self, id: RequestId, now: Time) -> Vec<Event> {
        match self.requests.get(&id) {
            Some(r)
                if r.state == RequestState::Active
                    && r.window_end.is_some_and(|end| end <= now) =>
            {
                vec![Event::Ended {
                    why: None,
                    id,
                    reason: EndReason::Expired,
                    by: None,
                    at: now,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// What time alone changes at `now`: requests pending too long,
    /// approvals left unused, (as a backstop to the lease timer) windows
    /// ended, and levels that waited long enough to escalate.
    pub fn decide_timeouts(&self, now: Time) -> Vec<Event> {
        let mut events = Vec::new();
        for request in self.requests.values() {
            match self.deadline_of(request) {
                Some(deadline) if deadline <= now => events.push(match request.state {
                    RequestState::Active => Event::Ended {
                        why: None,
                        id: request.id,
                        reason: EndReason::Expired,
                        by: None,
                        at: now,
                    },
                    _ => Event::TimedOut {
                        id: request.id,
                        at: now,
                    },
                }),
                _ => match escalation_due(request) {
                    Some((due, level)) if due <= now => events.push(Event::Escalated {
                        id: request.id,
                        level,
                        to: request.levels()[level].escalate_to.clone(),
                        at: now,
                    }),
                    _ => {}
                },
            }
        }
        events
    }

    /// The earliest moment `decide_timeouts` has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        self.requests
            .values()
            .flat_map(|r| [self.deadline_of(r), escalation_due(r).map(|(due, _)| due)])
            .flatten()
            .min()
    }

    fn deadline_of(&self, request: &Request) -> Option<Time> {
        match request.state {
            RequestState::Pending => {
                Some(request.created_at + secs(request.settings.pending_timeout.as_duration()))
            }
            RequestState::Approved => self.approval_deadline(request),
            RequestState::Active => request.window_end,
            _ => None,
        }
    }

    /// When an approved request stops being usable for checkout.
    pub(super) fn approval_deadline(&self, request: &Request) -> Option<Time> {
        match request.settings.clock_starts {
            ClockStart::Approval => request.window_end,
            ClockStart::Checkout => request
                .approved_at
                .map(|at| at + secs(request.settings.pending_timeout.as_duration())),
        }
    }
}
