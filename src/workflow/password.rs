//! A new connection password for an active Postgres lease: checkout shows
//! the password once, and a requester who lost it should not need new
//! approvals to get back in.

use crate::config::ResourceKind;

use super::Engine;
use super::decide::Context;
use super::error::WorkflowError;
use super::model::{Event, RequestId, RequestState};

impl Engine {
    /// Checks everything except MFA, as [`Engine::decide_checkout`] does,
    /// so a refused command never burns a TOTP code; the caller then calls
    /// again with the MFA outcome and the new password's record.
    pub fn decide_new_password(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        mfa_passed: bool,
        secret_hash: Option<String>,
    ) -> Result<Vec<Event>, WorkflowError> {
        let request = self.request(id).ok_or(WorkflowError::UnknownRequest(id))?;
        if request.requester != actor {
            return Err(WorkflowError::NotYourRequest(id));
        }
        let open = request.window_end.is_some_and(|end| end > ctx.now);
        if request.state != RequestState::Active || !open {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "given a new password",
            });
        }
        let kind = ctx.resources.get(&request.resource).map(|r| r.kind);
        if kind != Some(ResourceKind::Postgres) {
            return Err(WorkflowError::NoConnectionPassword {
                id,
                resource: request.resource.clone(),
            });
        }
        if request.settings.mfa_required && !mfa_passed {
            return Err(WorkflowError::MfaRequired(request.resource.clone()));
        }
        Ok(vec![Event::PasswordReplaced {
            id,
            secret_hash,
            mfa_passed,
            at: ctx.now,
        }])
    }
}
