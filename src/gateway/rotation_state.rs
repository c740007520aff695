//! When a resource's managed credential must be rotated, derived from
//! durable state (the journal's requests, the vault and the rotation
//! marks), so a crash at any moment loses no rotation.

use super::rotation_marks::RotationMark;
use super::{Gateway, GatewayError};
use crate::config::Resource;
use crate::workflow::Engine;

impl Gateway {
    /// Why `resource` needs a rotation now, if it does: an interrupted
    /// rotation, a lease that ended since the last rotation (with
    /// rotate-on-check-in), or its schedule.
    pub fn rotation_due(&self, resource: &Resource) -> Option<String> {
        self.read(|engine| self.rotation_due_in(engine, resource))
    }

    fn rotation_due_in(&self, engine: &Engine, resource: &Resource) -> Option<String> {
        let vault = self.vault();
        if !vault.contains(&resource.name) {
            return None;
        }
        if vault.pending(&resource.name).is_some() {
            return Some("finishing an interrupted rotation".into());
        }
        if self
            .rotation_marks
            .contains(&resource.name, RotationMark::CredentialRefused)
        {
            return Some(RotationMark::CredentialRefused.reason().into());
        }
        // While a window is open its processes are someone's work: the
        // rotation after the last window ends looks again.
        if self.has_processes_left_running(resource) && !self.window_open(&resource.name) {
            return Some(RotationMark::ProcessesLeftRunning.reason().into());
        }
        let since = vault.rotated_or_set_at(&resource.name)?;
        let last_end = engine
            .requests()
            .filter(|r| r.resource == resource.name && r.settings.rotate_on_checkin)
            .filter(|r| r.checked_out_at.is_some())
            .filter_map(|r| r.ended_at)
            .max();
        if last_end.is_some_and(|end| end >= since) {
            return Some("a lease ended".into());
        }
        let interval = resource.rotation_interval?;
        let age = (chrono::Utc::now() - since).to_std().unwrap_or_default();
        (age >= interval).then(|| "scheduled".into())
    }

    /// The target refused the managed credential at a login: someone may
    /// have changed it there. Rotating now resets it (with the resource's
    /// reconcile role) or fails loudly, instead of waiting for the lease
    /// to end while every other user of the resource is locked out.
    pub fn credential_refused(&self, resource: &str) {
        if self
            .rotation_marks
            .set(resource, RotationMark::CredentialRefused, true)
        {
            tracing::warn!(
                resource,
                "the target refused the managed credential; rotating"
            );
        }
    }

    /// A rotation confirmed a credential the target accepts.
    pub fn credential_confirmed(&self, resource: &str) {
        self.rotation_marks
            .set(resource, RotationMark::CredentialRefused, false);
    }

    /// What the last look at a resource's leftovers (an SSH account's
    /// processes, a Postgres role's sessions) found: `true` when some
    /// outlived it or it could not look. Until a later
    /// look finds none, the resource rotates again (with backoff) and, if
    /// single-user, is not handed out.
    pub fn processes_left_running(&self, resource: &str, left: bool) {
        self.rotation_marks
            .set(resource, RotationMark::ProcessesLeftRunning, left);
    }

    /// Whether the last look found processes left running (and the
    /// resource still ends them: a mark set before `end_leftover_processes`
    /// was turned off no longer holds anything back).
    pub fn has_processes_left_running(&self, resource: &Resource) -> bool {
        resource.end_leftover_processes
            && self
                .rotation_marks
                .contains(&resource.name, RotationMark::ProcessesLeftRunning)
    }

    /// Whether anyone's access window on `resource` is open now.
    pub fn window_open(&self, resource: &str) -> bool {
        self.leases.any_live_on(resource)
    }

    /// A single-user resource is not handed out while its credential is
    /// due for rotation, or processes of its last window still run: the
    /// next holder must not inherit the last one's access, nor share the
    /// account with it. (Called with the core locked, hence the engine
    /// passed in.)
    pub(super) fn checkout_held_back(
        &self,
        engine: &Engine,
        resource: &Resource,
    ) -> Result<(), GatewayError> {
        if !resource.workflow.single_user {
            return Ok(());
        }
        if self.has_processes_left_running(resource) {
            return Err(GatewayError::LeftRunning(resource.name.clone()));
        }
        if resource.workflow.rotate_on_checkin && self.rotation_due_in(engine, resource).is_some() {
            return Err(GatewayError::Rotating(resource.name.clone()));
        }
        Ok(())
    }
}
