//! After a Postgres rotation, the gateway looks at the target itself, in
//! one login with the new password: which roles changed since the last
//! look, and (with no window open) which sessions of the managed role
//! windows left connected past the gateway. Neither fails the rotation,
//! whose new password is already set; both are audited, and sessions
//! that survive (or a look that fails) mark the resource as for SSH.

use super::pg_leftovers::PgSessions;
use super::{Rotator, leftovers, pg_roles, postgres};
use crate::audit::AuditEvent;
use crate::config::Resource;
use crate::secret::Secret;

impl Rotator {
    pub(super) async fn inspect_database(&self, resource: &Resource, secret: &Secret) {
        let ends_sessions =
            resource.end_leftover_processes && !self.gateway.window_open(&resource.name);
        let login =
            match postgres::connect(resource, &resource.account, secret, self.timeout()).await {
                Ok(login) => login,
                Err(error) => {
                    if ends_sessions {
                        self.gateway.processes_left_running(&resource.name, true);
                    }
                    return self
                        .check_failed(resource, "the database after rotation", error)
                        .await;
                }
            };
        let now = pg_roles::fingerprint(&login.client).await;
        self.report_changes(resource, "roles", now, |roles| AuditEvent::RolesChanged {
            resource: resource.name.clone(),
            roles,
        })
        .await;
        if ends_sessions {
            let window_open = || self.gateway.window_open(&resource.name);
            let found = leftovers::end(&PgSessions(&login.client), &window_open).await;
            self.report_leftovers(resource, found).await;
        }
        login.close().await;
    }
}
