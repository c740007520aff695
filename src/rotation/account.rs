//! After an SSH rotation, the gateway looks at the managed account itself:
//! which startup files changed since the last look, and (with no window
//! open) which processes windows left running. Neither fails the
//! rotation, whose new key is already in; both are audited. Processes
//! that outlive the look (or a look that fails) mark the resource, which
//! then rotates again with backoff and, if single-user, is not handed out
//! until a look finds none.

use super::ssh::AccountShell;
use super::{RotationError, Rotator, leftovers, startup_files};
use crate::audit::AuditEvent;
use crate::config::Resource;
use crate::secret::Secret;

impl Rotator {
    /// Logs in once (with `secret`, or as the reconcile account) for both
    /// looks.
    pub(super) async fn inspect_account(&self, resource: &Resource, secret: &Secret) {
        let known = self.gateway.known_hosts();
        let shell = match AccountShell::open(resource, known, secret).await {
            Ok(shell) => shell,
            Err(error) => {
                if resource.end_leftover_processes && !self.gateway.window_open(&resource.name) {
                    self.gateway.processes_left_running(&resource.name, true);
                }
                return self
                    .check_failed(resource, "the account after rotation", error)
                    .await;
            }
        };
        let now = startup_files::fingerprint(&shell).await;
        self.report_changes(resource, "startup files", now, |files| {
            AuditEvent::StartupFilesChanged {
                resource: resource.name.clone(),
                files,
            }
        })
        .await;
        if resource.end_leftover_processes {
            self.end_leftover_processes(resource, &shell).await;
        }
        shell.close().await;
    }

    /// With no window open on `resource`, ends what its windows left
    /// running on the target.
    async fn end_leftover_processes(&self, resource: &Resource, shell: &AccountShell) {
        let window_open = || self.gateway.window_open(&resource.name);
        if window_open() {
            return;
        }
        let found = leftovers::end(&leftovers::SshProcesses(shell), &window_open).await;
        self.report_leftovers(resource, found).await;
    }

    /// Audits what a look at leftover processes (or Postgres sessions)
    /// found, and marks the resource while any survive or the look failed.
    pub(super) async fn report_leftovers(
        &self,
        resource: &Resource,
        found: Result<leftovers::Leftovers, RotationError>,
    ) {
        let left = found
            .as_ref()
            .map_or(true, |found| !found.remaining.is_empty());
        self.gateway.processes_left_running(&resource.name, left);
        match found {
            Ok(found) if found.ended.is_empty() && found.remaining.is_empty() => {}
            Ok(found) => {
                self.audit(AuditEvent::LeftoverProcessesEnded {
                    resource: resource.name.clone(),
                    ended: found.ended.iter().map(ToString::to_string).collect(),
                    remaining: found.remaining.iter().map(ToString::to_string).collect(),
                })
                .await;
            }
            Err(error) => {
                self.check_failed(resource, "leftover processes", error)
                    .await
            }
        }
    }

    pub(super) async fn check_failed(
        &self,
        resource: &Resource,
        check: &str,
        error: RotationError,
    ) {
        tracing::warn!(resource = %resource.name, check, %error, "could not check the managed account");
        self.audit(AuditEvent::AccountCheckFailed {
            resource: resource.name.clone(),
            check: check.to_string(),
            error: error.to_string(),
        })
        .await;
    }
}
