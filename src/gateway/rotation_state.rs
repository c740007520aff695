//! When a resource's managed credential must be rotated, derived from
//! durable state (the journal's requests and the vault), so a crash at any
//! moment loses no rotation. The one in-memory reason, a credential the
//! target refused, is noticed again at the next login after a restart.

use super::Gateway;
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
        if self.refused_credentials.lock().contains(&resource.name) {
            return Some("the target refused the managed credential".into());
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
        if self.refused_credentials.lock().insert(resource.to_string()) {
            tracing::warn!(
                resource,
                "the target refused the managed credential; rotating"
            );
        }
    }

    /// A rotation confirmed a credential the target accepts.
    pub fn credential_confirmed(&self, resource: &str) {
        self.refused_credentials.lock().remove(resource);
    }

    /// A single-user resource is not handed out while its credential is
    /// due for rotation: the next holder must not inherit the last one's.
    /// (Called with the core locked, hence the engine passed in.)
    pub(super) fn rotation_blocks_checkout(&self, engine: &Engine, resource: &Resource) -> bool {
        resource.workflow.single_user
            && resource.workflow.rotate_on_checkin
            && self.rotation_due_in(engine, resource).is_some()
    }
}
