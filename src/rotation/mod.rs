//! Credential rotation: after leases end, on a schedule, on demand.
//!
//! Two-phase, so the working credential is never lost: the new secret is
//! stored in the vault as *pending* before the target is touched, applied,
//! confirmed by logging in with it, and only then promoted to *current*.
//! Whatever dies in between, the next attempt (or the next start) first
//! tests which of the two the target accepts and converges on it.
//!
//! - `postgres`: ALTER ROLE with a gateway-computed SCRAM verifier.
//! - `ssh`: a new ed25519 key replaces all of `authorized_keys`.
//!
//! With no window open, what the windows left running as the managed
//! account is ended: processes on an SSH target, sessions on a Postgres
//! one.

mod account;
mod baseline;
mod database;
mod leftovers;
mod pg_leftovers;
mod pg_roles;
mod pg_tls;
mod postgres;
mod ssh;
mod startup_files;

#[cfg(test)]
pub(crate) use ssh::generate as generate_ssh_key;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEvent;
use crate::config::Resource;
use crate::gateway::Gateway;
use crate::secret::Secret;
use crate::vault::{CredentialKind, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("target unreachable: {0}")]
    Unreachable(String),
    #[error("target refused the gateway's credential: {0}")]
    Refused(String),
    #[error("target error: {0}")]
    Target(String),
    #[error("credential unusable: {0}")]
    Credential(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("no such resource {0:?}")]
    UnknownResource(String),
    #[error(
        "neither the current nor the pending credential of {0} is accepted by the target: set one with `jitgate vault set`"
    )]
    Lost(String),
}

/// How long a failed rotation waits before the next try, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the loop looks for due rotations without being woken.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How long a rotation after a lease waits for its sessions to be severed.
const SEVER_WAIT: Duration = Duration::from_secs(5);

pub struct Rotator {
    gateway: Arc<Gateway>,
    /// Resource → (next attempt, current backoff) after a failure.
    retry: Mutex<HashMap<String, (Instant, Duration)>>,
    /// Fingerprints of SSH accounts' startup files and Postgres targets'
    /// roles, compared at each rotation.
    baselines: baseline::Baselines,
    /// Resources whose first fingerprints could not be taken yet:
    /// (next attempt, current backoff).
    baseline_retry: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl Rotator {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        let baselines = baseline::Baselines::new(&gateway.config().state_dir);
        Arc::new(Self {
            gateway,
            retry: Mutex::new(HashMap::new()),
            baselines,
            baseline_retry: Mutex::default(),
        })
    }

    /// Rotates `resource` now; returns the new version.
    pub async fn rotate(&self, name: &str, reason: &str) -> Result<u64, RotationError> {
        let lock = self.gateway.rotation_lock(name);
        let _serialized = lock.lock().await;
        self.rotate_serialized(name, reason).await
    }

    /// Rotates `resource` if it is still due once no other rotation of it
    /// runs: one asked for meanwhile (`rotate`) may have done the work.
    async fn rotate_if_still_due(&self, resource: &Resource) {
        let lock = self.gateway.rotation_lock(&resource.name);
        let _serialized = lock.lock().await;
        if let Some(reason) = self.gateway.rotation_due(resource) {
            let _ = self.rotate_serialized(&resource.name, &reason).await;
        }
    }

    /// Called with the resource's rotation lock held.
    async fn rotate_serialized(&self, name: &str, reason: &str) -> Result<u64, RotationError> {
        let resource = self
            .gateway
            .config()
            .resources
            .get(name)
            .cloned()
            .ok_or_else(|| RotationError::UnknownResource(name.to_string()))?;
        self.audit(AuditEvent::RotationStarted {
            resource: name.to_string(),
            reason: reason.to_string(),
        })
        .await;
        let result = self.rotate_locked(&resource).await;
        match &result {
            Ok(version) => {
                metrics::counter!("jitgate_rotations_total", "outcome" => "succeeded").increment(1);
                metrics::gauge!("jitgate_rotation_pending", "resource" => name.to_string())
                    .set(0.0);
                self.gateway.credential_confirmed(name);
                // Due again at once, and would rotate at every scan.
                if self.gateway.has_processes_left_running(&resource) {
                    self.back_off(name);
                } else {
                    self.retry.lock().remove(name);
                }
                self.audit(AuditEvent::RotationSucceeded {
                    resource: name.to_string(),
                    version: *version,
                })
                .await;
            }
            Err(error) => {
                metrics::counter!("jitgate_rotations_total", "outcome" => "failed").increment(1);
                metrics::gauge!("jitgate_rotation_pending", "resource" => name.to_string())
                    .set(1.0);
                tracing::warn!(resource = name, %error, "credential rotation failed");
                let _ = self
                    .gateway
                    .vault()
                    .set_error(name, Some(error.to_string()));
                self.back_off(name);
                self.audit(AuditEvent::RotationFailed {
                    resource: name.to_string(),
                    error: error.to_string(),
                })
                .await;
            }
        }
        result
    }

    async fn rotate_locked(&self, resource: &Resource) -> Result<u64, RotationError> {
        let vault = self.gateway.vault();
        let name = &resource.name;
        self.converge(resource).await?;
        let current = vault
            .current(name)
            .ok_or_else(|| VaultError::Missing(name.clone()))?;
        let kind = vault
            .kind(name)
            .ok_or_else(|| VaultError::Missing(name.clone()))?;
        let new = match kind {
            CredentialKind::Password => postgres::generate(),
            CredentialKind::SshKey => ssh::generate(),
        };
        let version = vault.begin_rotation(name, new.clone())?;
        fault_point("after_pending").await;
        let planted = match self.apply(resource, kind, &current, &new).await {
            Err(refused @ RotationError::Refused(_)) => {
                self.reconcile(resource, kind, &new, refused).await?
            }
            applied => applied?,
        };
        fault_point("after_apply").await;
        if !self.works(resource, kind, &new).await? {
            return Err(RotationError::Target(
                "the new credential is refused after applying it".into(),
            ));
        }
        if kind == CredentialKind::SshKey && self.works(resource, kind, &current).await? {
            return Err(RotationError::Target(
                "the old key is still accepted after replacing it".into(),
            ));
        }
        fault_point("after_confirm").await;
        match kind {
            CredentialKind::SshKey => self.inspect_account(resource, &new).await,
            CredentialKind::Password => self.inspect_database(resource, &new).await,
        }
        if !resource.end_leftover_processes {
            // A mark from before the setting was turned off holds nothing.
            self.gateway.processes_left_running(&resource.name, false);
        }
        vault.promote(name)?;
        self.gateway.scram_keys().forget(name);
        self.audit_planted(name, planted).await;
        Ok(version)
    }

    async fn audit_planted(&self, resource: &str, planted: Vec<String>) {
        for fingerprint in planted {
            self.audit(AuditEvent::PlantedKeyRemoved {
                resource: resource.to_string(),
                fingerprint,
            })
            .await;
        }
    }

    /// Settles a rotation that was interrupted: keeps whichever secret the
    /// target accepts.
    async fn converge(&self, resource: &Resource) -> Result<(), RotationError> {
        let vault = self.gateway.vault();
        let name = &resource.name;
        let Some(pending) = vault.pending(name) else {
            return Ok(());
        };
        let kind = vault
            .kind(name)
            .ok_or_else(|| VaultError::Missing(name.clone()))?;
        if self.works(resource, kind, &pending).await? {
            vault.promote(name)?;
            self.gateway.scram_keys().forget(name);
            tracing::info!(resource = %name, "an interrupted rotation had reached the target; promoted");
            return Ok(());
        }
        let current = vault
            .current(name)
            .ok_or_else(|| VaultError::Missing(name.clone()))?;
        if self.works(resource, kind, &current).await? {
            vault.abandon_pending(name)?;
            tracing::info!(resource = %name, "an interrupted rotation never reached the target; abandoned");
            return Ok(());
        }
        let planted = self
            .reconcile(resource, kind, &pending, RotationError::Lost(name.clone()))
            .await?;
        if !self.works(resource, kind, &pending).await? {
            return Err(RotationError::Lost(name.clone()));
        }
        vault.promote(name)?;
        self.gateway.scram_keys().forget(name);
        self.audit_planted(name, planted).await;
        Ok(())
    }

    /// The target refuses the managed account's own credential: someone
    /// changed it there, perhaps from inside a window, and would keep it
    /// past the window's end. Sets `new` with the reconcile account when
    /// the resource has one (returning, for SSH, the keys it found there
    /// instead of the gateway's); otherwise the rotation fails with
    /// `refused`.
    async fn reconcile(
        &self,
        resource: &Resource,
        kind: CredentialKind,
        new: &Secret,
        refused: RotationError,
    ) -> Result<Vec<String>, RotationError> {
        let Some(reconcile) = &resource.reconcile else {
            return Err(refused);
        };
        tracing::warn!(resource = %resource.name, "the managed credential was changed on the target; resetting it");
        let planted = match kind {
            CredentialKind::Password => {
                postgres::reset(resource, reconcile, new, self.timeout()).await?;
                Vec::new()
            }
            CredentialKind::SshKey => {
                ssh::reset(resource, self.gateway.known_hosts(), reconcile, new).await?
            }
        };
        self.audit(AuditEvent::CredentialReconciled {
            resource: resource.name.clone(),
            account: reconcile.account.clone(),
        })
        .await;
        Ok(planted)
    }

    async fn apply(
        &self,
        resource: &Resource,
        kind: CredentialKind,
        current: &Secret,
        new: &Secret,
    ) -> Result<Vec<String>, RotationError> {
        match kind {
            CredentialKind::Password => {
                postgres::apply(resource, current, new, self.timeout()).await?;
                Ok(Vec::new())
            }
            CredentialKind::SshKey => {
                let applied =
                    ssh::apply(resource, self.gateway.known_hosts(), current, new).await?;
                if let Some(account) = applied.reset_by {
                    self.audit(AuditEvent::CredentialReconciled {
                        resource: resource.name.clone(),
                        account,
                    })
                    .await;
                }
                Ok(applied.planted)
            }
        }
    }

    async fn works(
        &self,
        resource: &Resource,
        kind: CredentialKind,
        secret: &Secret,
    ) -> Result<bool, RotationError> {
        match kind {
            CredentialKind::Password => postgres::works(resource, secret, self.timeout()).await,
            CredentialKind::SshKey => {
                ssh::works(resource, self.gateway.known_hosts(), secret).await
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.gateway.config().postgres.connect_timeout
    }

    fn back_off(&self, name: &str) {
        let mut retry = self.retry.lock();
        let backoff = retry
            .get(name)
            .map_or(Duration::from_secs(1), |(_, b)| (*b * 2).min(MAX_BACKOFF));
        retry.insert(name.to_string(), (Instant::now() + backoff, backoff));
    }

    fn may_try(&self, name: &str) -> bool {
        self.retry
            .lock()
            .get(name)
            .is_none_or(|(next, _)| Instant::now() >= *next)
    }

    async fn audit(&self, event: AuditEvent) {
        let gateway = self.gateway.clone();
        let _ = tokio::task::spawn_blocking(move || gateway.audit(event)).await;
    }

    /// Rotates whatever is due, now and whenever a lease ends or the scan
    /// interval passes, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut events = self.gateway.bus().subscribe();
        loop {
            self.start_first_baselines();
            self.rotate_due().await;
            tokio::select! {
                () = stop.cancelled() => return,
                _ = events.next() => {}
                () = tokio::time::sleep(SCAN_INTERVAL) => {}
            }
        }
    }

    async fn rotate_due(&self) {
        let config = self.gateway.config();
        for resource in config.resources.values() {
            if self.gateway.rotation_due(resource).is_none() || !self.may_try(&resource.name) {
                continue;
            }
            self.wait_for_severed_sessions(resource).await;
            self.rotate_if_still_due(resource).await;
        }
    }

    /// Sessions of ended leases are being severed; give them a moment, so
    /// the rotation does not race their last bytes.
    async fn wait_for_severed_sessions(&self, resource: &Resource) {
        let deadline = Instant::now() + SEVER_WAIT;
        while Instant::now() < deadline {
            let leases = self.gateway.leases();
            let lingering = self.gateway.sessions().list().into_iter().any(|s| {
                s.resource.as_deref() == Some(resource.name.as_str())
                    && leases.lookup(&s.user, &resource.name).is_none()
            });
            if !lingering {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fault injection for the tests, compiled into debug builds only:
/// `JITGATE_FAULT=rotation:<point>` aborts the process there, and
/// `JITGATE_FAULT=rotation:<point>:pause` holds every rotation there for
/// longer than the scan interval, so a test can race the background loop.
async fn fault_point(point: &str) {
    #[cfg(debug_assertions)]
    if let Ok(fault) = std::env::var("JITGATE_FAULT") {
        let here = format!("rotation:{point}");
        if fault == here {
            eprintln!("jitgate: fault injected at {here}");
            std::process::abort();
        }
        if fault.strip_prefix(here.as_str()) == Some(":pause") {
            tokio::time::sleep(SCAN_INTERVAL + Duration::from_secs(1)).await;
        }
    }
    let _ = point;
}
