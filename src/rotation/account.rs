//! After an SSH rotation, the gateway looks at the managed account itself:
//! which startup files changed since the last look, and (with no window
//! open) which processes windows left running. Neither fails the
//! rotation, whose new key is already in; both are audited. Processes
//! that outlive the look (or a look that fails) mark the resource, which
//! then rotates again with backoff and, if single-user, is not handed out
//! until a look finds none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ssh::AccountShell;
use super::{RotationError, Rotator, leftovers, startup_files};
use crate::audit::AuditEvent;
use crate::config::{Resource, ResourceKind};
use crate::secret::Secret;

/// The longest wait between tries at a first fingerprint.
const BASELINE_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longer than any try at a first fingerprint takes (it reports sooner).
const IN_FLIGHT: Duration = Duration::from_secs(3600);

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
        self.compare_startup_files(resource, &shell).await;
        if resource.end_leftover_processes {
            self.end_leftover_processes(resource, &shell).await;
        }
        shell.close().await;
    }

    /// Starts taking the first fingerprints of each SSH resource's startup
    /// files that has none, with no window open, so the first window is
    /// compared against something too. In the background: an unreachable
    /// target must not hold up rotations. Retried with backoff.
    pub(super) fn start_first_baselines(self: &Arc<Self>) {
        let config = self.gateway.config();
        for resource in config.resources.values() {
            // Cheapest first: once taken, `has` answers from memory.
            if resource.kind != ResourceKind::Ssh
                || self.baseline_waits(&resource.name)
                || !matches!(self.baselines.has(&resource.name), Ok(false))
                || !self.gateway.vault().contains(&resource.name)
                || self.gateway.window_open(&resource.name)
            {
                continue;
            }
            // In flight: not started again until it reports.
            let backoff = self.baseline_backoff(&resource.name);
            self.baseline_retry
                .lock()
                .insert(resource.name.clone(), (Instant::now() + IN_FLIGHT, backoff));
            let this = self.clone();
            let resource = resource.clone();
            tokio::spawn(async move { this.take_first_baseline(&resource).await });
        }
    }

    fn baseline_waits(&self, name: &str) -> bool {
        self.baseline_retry
            .lock()
            .get(name)
            .is_some_and(|(next, _)| Instant::now() < *next)
    }

    fn baseline_backoff(&self, name: &str) -> Duration {
        self.baseline_retry
            .lock()
            .get(name)
            .map_or(Duration::ZERO, |(_, backoff)| *backoff)
    }

    async fn take_first_baseline(&self, resource: &Resource) {
        // Not beside a rotation of the resource, whose clean-up would take
        // this login's shell for a leftover.
        let lock = self.gateway.rotation_lock(&resource.name);
        let _serialized = lock.lock().await;
        let taken = match self.baselines.has(&resource.name) {
            Ok(true) => Ok(()),
            _ => self.fingerprint_first(resource).await,
        };
        let mut retry = self.baseline_retry.lock();
        match taken {
            Ok(()) => {
                retry.remove(&resource.name);
            }
            Err(error) => {
                tracing::warn!(resource = %resource.name, %error, "cannot fingerprint the account's startup files yet");
                let backoff = retry
                    .get(&resource.name)
                    .map_or(Duration::ZERO, |(_, b)| *b);
                let backoff = (backoff * 2).clamp(Duration::from_secs(1), BASELINE_MAX_BACKOFF);
                retry.insert(resource.name.clone(), (Instant::now() + backoff, backoff));
            }
        }
    }

    async fn fingerprint_first(&self, resource: &Resource) -> Result<(), RotationError> {
        let Some(secret) = self.gateway.vault().current(&resource.name) else {
            return Ok(());
        };
        let shell = AccountShell::open(resource, self.gateway.known_hosts(), &secret).await?;
        let fingerprints = startup_files::fingerprint(&shell).await;
        shell.close().await;
        self.baselines.replace(&resource.name, fingerprints?)?;
        Ok(())
    }

    async fn compare_startup_files(&self, resource: &Resource, shell: &AccountShell) {
        let compared = async {
            let now = startup_files::fingerprint(shell).await?;
            let before = self.baselines.replace(&resource.name, now.clone())?;
            Ok(before.map(|before| startup_files::changed(&before, &now)))
        }
        .await;
        match compared {
            Ok(Some(files)) if !files.is_empty() => {
                self.audit(AuditEvent::StartupFilesChanged {
                    resource: resource.name.clone(),
                    files,
                })
                .await;
            }
            Ok(_) => {}
            Err(error) => self.check_failed(resource, "startup files", error).await,
        }
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
