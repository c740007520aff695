//! Delegation decisions: an approver lets another user approve on their
//! behalf (for some resources, until some time), and takes it back.

use crate::config::Permission;

use super::Engine;
use super::decide::{Context, Decision};
use super::error::WorkflowError;
use super::model::{Delegation, Event, Time};

impl Engine {
    pub fn decide_delegate(
        &self,
        ctx: &Context,
        actor: &str,
        to: &str,
        resources: Vec<String>,
        until: Option<Time>,
    ) -> Decision {
        self.require(ctx, actor, Permission::Approve)?;
        if ctx.directory.user(to).is_none() {
            return Err(WorkflowError::UnknownUser(to.to_string()));
        }
        if to == actor {
            return Err(WorkflowError::SelfDelegation);
        }
        if let Some(unknown) = resources.iter().find(|r| !ctx.resources.contains_key(*r)) {
            return Err(WorkflowError::UnknownResource(unknown.clone()));
        }
        if let Some(until) = until.filter(|until| *until <= ctx.now) {
            return Err(WorkflowError::DelegationInPast(until));
        }
        let delegation = Delegation {
            from: actor.to_string(),
            to: to.to_string(),
            resources,
            until,
        };
        Ok(vec![Event::DelegationGranted {
            delegation,
            at: ctx.now,
        }])
    }

    pub fn decide_revoke_delegation(&self, ctx: &Context, actor: &str) -> Decision {
        if !self.delegations.contains_key(actor) {
            return Err(WorkflowError::NoDelegation);
        }
        Ok(vec![Event::DelegationRevoked {
            from: actor.to_string(),
            at: ctx.now,
        }])
    }
}
