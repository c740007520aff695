//! The access workflow as a pure state machine: request → approvals → checkout → end.
//!
//! Commands are *decided* against the current state (`decide.rs`, with
//! check-in and revocation in `ending.rs` and delegations in
//! `delegation.rs`; what time alone decides is in `deadlines.rs`, what a
//! configuration change decides in `withdrawn.rs`), producing
//! [`Event`]s without touching anything; the caller journals the events and
//! then *applies* them (`apply.rs`). There is no I/O and no clock inside:
//! time is an argument, so every rule is unit-testable and replay is exact.

mod apply;
mod approval;
mod deadlines;
mod decide;
mod delegation;
mod ending;
mod error;
mod model;
mod password;
mod withdrawn;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use approval::describe_waiting;
pub use decide::{Context, ExtendSpec, RequestSpec};
pub use error::WorkflowError;
pub use model::{
    Approval, ApprovalRound, Delegation, EndReason, Event, PendingExtension, Request, RequestId,
    RequestState, SUGGESTED_EXTENSION_SECS, Time,
};

use crate::config::WorkflowSettings;

/// All workflow state. Serializable whole for journal snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    next_id: RequestId,
    requests: BTreeMap<RequestId, Request>,
    /// One delegation per delegating approver.
    delegations: BTreeMap<String, Delegation>,
    /// Settings changed at runtime with `workflow set`; they win over the file.
    workflow_overrides: BTreeMap<String, WorkflowSettings>,
    /// Exclusive resources and the request holding each.
    holders: BTreeMap<String, RequestId>,
}

impl Engine {
    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    pub fn requests(&self) -> impl Iterator<Item = &Request> {
        self.requests.values()
    }

    pub fn active_requests(&self) -> impl Iterator<Item = &Request> {
        self.requests
            .values()
            .filter(|r| r.state == RequestState::Active)
    }

    /// `user`'s open (pending, approved or active) request on `resource`:
    /// there is one at most, but for one whose approval lapsed or whose
    /// window is over before its timer ended them; the newest then.
    pub fn open_request_of(&self, user: &str, resource: &str) -> Option<&Request> {
        self.requests
            .values()
            .rev()
            .find(|r| r.requester == user && r.resource == resource && !r.state.is_final())
    }

    pub fn delegations(&self) -> impl Iterator<Item = &Delegation> {
        self.delegations.values()
    }

    pub fn workflow_override(&self, resource: &str) -> Option<&WorkflowSettings> {
        self.workflow_overrides.get(resource)
    }

    pub fn holder(&self, resource: &str) -> Option<&Request> {
        self.holders
            .get(resource)
            .and_then(|id| self.requests.get(id))
    }

    /// Drops finished requests that ended before `before`, so snapshots stay
    /// bounded. Their history lives on in the audit log.
    pub fn prune_finished(&mut self, before: Time) {
        self.requests
            .retain(|_, r| !r.state.is_final() || r.ended_at.unwrap_or(r.created_at) >= before);
    }
}
