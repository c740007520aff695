//! The gateway core: the one place where workflow state changes.
//!
//! A command is decided by the pure engine, journaled (fsynced), applied,
//! audited, published on the event bus and mirrored into the lease table, in
//! that order, under the core mutex. The audit log has a mutex of its own,
//! taken after the core's: the records of logins and sessions, many more
//! than commands, then wait only for each other, and workflow reads never
//! wait for their fsyncs. Both are `parking_lot` mutexes, never held across
//! an `.await`: async callers run commands and audit writes through
//! `spawn_blocking`, so a slow disk never stalls the runtime's workers.

mod audit_anchor;
mod audit_outage;
mod command;
mod interrupted;
mod journal_outage;
mod lease_end;
mod penalties;
mod pending_logins;
mod recovery;
mod rotation_marks;
mod rotation_state;
mod subjects;

#[cfg(test)]
mod random_walk;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::audit::{AuditError, AuditEvent, AuditLog};
use crate::config::Config;
use crate::events::EventBus;
use crate::journal::{Journal, JournalError};
use crate::lease::{Lease, LeaseTable};
use crate::mfa::{MfaError, MfaGuard};
use crate::workflow::{Context, Engine, Event, Request, RequestId, RequestState, WorkflowError};

pub use audit_outage::AUDIT_UNAVAILABLE;
pub use command::{Command, Outcome};
use journal_outage::Journaled;
pub use journal_outage::NOT_YET_RECORDED;
pub use pending_logins::PendingLogin;
pub use rotation_marks::RotationMarks;
pub use subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Mfa(#[from] MfaError),
    #[error(
        "the change was not recorded (storage error): try again; details are in the gateway log"
    )]
    Journal(#[from] JournalError),
    #[error("audit log unavailable: {0}")]
    Audit(#[from] AuditError),
    #[error("{AUDIT_UNAVAILABLE}: nothing was changed; try again later")]
    AuditUnavailable,
    /// Not a refusal: the change took effect, its record waits in memory.
    #[error("{NOT_YET_RECORDED}")]
    NotYetRecorded,
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("{0} is rotating its credential after the last lease: try again in a moment")]
    Rotating(String),
    #[error(
        "{0} is held back: processes a window left running on it could not be ended; the gateway keeps trying (see `audit tail`), or an administrator can end them on the target"
    )]
    LeftRunning(String),
    #[error(transparent)]
    KnownHosts(#[from] crate::ssh::upstream::KnownHostsError),
    #[error(transparent)]
    RotationMarks(#[from] rotation_marks::RotationMarksError),
}

impl GatewayError {
    /// Whether the change was made all the same (it is not a refusal).
    pub fn took_effect(&self) -> bool {
        matches!(self, Self::NotYetRecorded)
    }
}

/// Runs `work`, which may wait on a disk, from synchronous code that may be
/// on the async runtime (a russh handler, a view built for a stream): on a
/// multi-threaded runtime the worker hands its other tasks on meanwhile.
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// One journal record: the events of one command, plus the TOTP step it
/// consumed so replay protection survives a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JournalRecord {
    events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mfa_step: Option<(String, u64)>,
}

/// What a snapshot holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistentState {
    engine: Engine,
    mfa_steps: BTreeMap<String, u64>,
}

/// Workflow state and its journal: what commands change.
struct Core {
    state: PersistentState,
    journal: Journal,
    /// Records applied while the journal could not take them
    /// (`journal_outage`), oldest first.
    held: VecDeque<JournalRecord>,
    /// Whether all of `held` is in the journal's reserve, on disk.
    held_in_reserve: bool,
}

/// The audit chain, under a lock of its own so that the records of logins
/// and sessions (and their fsyncs) never hold up workflow reads. Taken
/// after `Core`'s lock when both are needed, never before.
struct AuditSide {
    log: AuditLog,
}

pub struct Gateway {
    config: RwLock<Arc<Config>>,
    core: Mutex<Core>,
    audit: Mutex<AuditSide>,
    audit_head: audit_anchor::AuditHead,
    leases: Arc<LeaseTable>,
    mfa: MfaGuard,
    bus: EventBus,
    sessions: Arc<crate::sessions::SessionRegistry>,
    vault: Arc<crate::vault::Vault>,
    /// SCRAM keys derived from managed Postgres passwords (dropped on rotation).
    scram_keys: Arc<crate::postgres::scram::KeyCache>,
    known_hosts: Arc<crate::ssh::KnownHosts>,
    /// One rotation at a time per resource, whoever starts it.
    rotation_locks: dashmap::DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Woken when the earliest request deadline may have changed.
    deadlines_changed: Notify,
    /// Reasons to rotate that the journal and vault do not hold.
    rotation_marks: rotation_marks::RotationMarks,
    /// Failed logins by source address.
    penalties: penalties::PenaltyBox,
    /// Connections still logging in, by source address.
    pending_logins: pending_logins::PendingLogins,
    /// The audit log failed and holds records back (`audit_outage`).
    audit_failing: std::sync::atomic::AtomicBool,
    /// Counts configurations taken in, so connections can check that the
    /// one in force still lets their login stand.
    reloads: tokio::sync::watch::Sender<u64>,
}

/// How many records the event bus buffers for each subscriber.
const BUS_CAPACITY: usize = 4096;

impl Gateway {
    /// Changes whenever a new configuration is taken in.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    pub fn leases(&self) -> &Arc<LeaseTable> {
        &self.leases
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn sessions(&self) -> &Arc<crate::sessions::SessionRegistry> {
        &self.sessions
    }

    pub fn vault(&self) -> &Arc<crate::vault::Vault> {
        &self.vault
    }

    pub fn scram_keys(&self) -> &Arc<crate::postgres::scram::KeyCache> {
        &self.scram_keys
    }

    pub fn rotation_lock(&self, resource: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.rotation_locks
            .entry(resource.to_string())
            .or_default()
            .clone()
    }

    /// SSH target host keys recorded on first contact.
    pub fn known_hosts(&self) -> &Arc<crate::ssh::KnownHosts> {
        &self.known_hosts
    }

    /// Replaces the configuration (SIGHUP). The caller validated it already.
    pub fn reload(&self, config: Config) -> Result<(), crate::vault::VaultError> {
        // Resources added by the new config bring their credential files.
        let checked = crate::vault::check_reconcile_files(&config);
        let imported =
            match checked.and_then(|()| crate::vault::import_missing(&self.vault, &config)) {
                Ok(imported) => imported,
                Err(e) => {
                    self.audit(AuditEvent::ConfigReloaded {
                        ok: false,
                        error: Some(e.to_string()),
                    });
                    return Err(e);
                }
            };
        *self.config.write() = Arc::new(config);
        for resource in imported {
            self.audit(AuditEvent::CredentialImported { resource });
        }
        self.audit(AuditEvent::ConfigReloaded {
            ok: true,
            error: None,
        });
        self.end_withdrawn_leases();
        self.reloads.send_modify(|count| *count += 1);
        Ok(())
    }

    /// Ends, as revoked by the gateway, every lease whose user or resource
    /// the configuration in force no longer has: its sessions are severed.
    fn end_withdrawn_leases(&self) {
        let config = self.config();
        let ctx = Context::of(&config, chrono::Utc::now());
        let mut core = self.core.lock();
        let events = core.state.engine.decide_withdrawn(&ctx);
        self.commit_own(&mut core, events, "the leases the configuration withdrew");
    }

    /// Reads workflow state without changing it. While a command is being
    /// committed (its journal and audit fsyncs), a read from async code
    /// hands its worker's other tasks on instead of stalling them.
    pub fn read<T>(&self, view: impl FnOnce(&Engine) -> T) -> T {
        if let Some(core) = self.core.try_lock() {
            return view(&core.state.engine);
        }
        in_place(|| view(&self.core.lock().state.engine))
    }

    /// The command an expiry warning suggests for more time on lease `id`.
    pub fn extend_command(&self, id: RequestId) -> String {
        let by = crate::workflow::SUGGESTED_EXTENSION_SECS;
        let command = self.read(|engine| engine.request(id).map(|r| r.extend_command(by)));
        command.unwrap_or_else(|| {
            format!(
                "extend {id} --for {}",
                crate::config::HumanDuration::from_secs(by)
            )
        })
    }

    pub fn request(&self, id: RequestId) -> Option<Request> {
        self.read(|engine| engine.request(id).cloned())
    }

    /// Appends a non-workflow event (logins, sessions, refusals) to the audit
    /// log and the bus. Audit failures are logged, never hidden.
    pub fn audit(&self, event: AuditEvent) {
        self.audit_all(vec![event]);
    }

    /// Journals, applies, audits and publishes `events`, then mirrors the
    /// affected requests into the lease table. A change that only ends or
    /// narrows access is made even when the journal fails: it then returns
    /// `NotYetRecorded` (see `journal_outage`).
    fn commit(
        &self,
        core: &mut Core,
        actor: Option<&str>,
        events: Vec<Event>,
        mfa_step: Option<(String, u64)>,
    ) -> Result<(), GatewayError> {
        if events.is_empty() {
            return Ok(());
        }
        // A person's change that would let anyone in more waits until it can
        // be audited; the gateway's own decisions only ever end access.
        if actor.is_some() && events.iter().any(audit_outage::widens_access) && !self.audit_ready()
        {
            return Err(GatewayError::AuditUnavailable);
        }
        let record = JournalRecord { events, mfa_step };
        let journaled = core.journal(&record)?;
        for event in &record.events {
            core.state.engine.apply(event);
        }
        if let Some((user, step)) = &record.mfa_step {
            core.state.mfa_steps.insert(user.clone(), *step);
        }
        // One audit write (and fsync) for all of the command's events.
        let changes = record.events.iter().map(|event| {
            count_event(event);
            AuditEvent::Workflow {
                actor: actor.map(String::from),
                change: event.redacted(),
            }
        });
        self.audit_all(changes.collect());
        for id in record.events.iter().filter_map(Event::request_id) {
            self.mirror_lease(&core.state.engine, id);
        }
        crate::metrics::record_request_states(&core.state.engine);
        self.maybe_compact(core);
        self.deadlines_changed.notify_one();
        match journaled {
            Journaled::OnDisk | Journaled::Reserved => Ok(()),
            Journaled::Held => Err(GatewayError::NotYetRecorded),
        }
    }

    /// Commits the gateway's own decisions, which only ever end access.
    fn commit_own(&self, core: &mut Core, events: Vec<Event>, what: &str) {
        match self.commit(core, None, events, None) {
            Ok(()) | Err(GatewayError::NotYetRecorded) => {}
            Err(e) => tracing::error!(error = %e, "could not record {what}"),
        }
    }

    /// Makes the lease table agree with request `id`.
    fn mirror_lease(&self, engine: &Engine, id: RequestId) {
        let Some(request) = engine.request(id) else {
            return;
        };
        match (request.state, request.window_end) {
            (RequestState::Active, Some(window_end)) => {
                let left = (window_end - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default();
                self.leases.upsert(Lease {
                    request_id: id,
                    user: request.requester.clone(),
                    resource: request.resource.clone(),
                    window_end,
                    deadline: Instant::now() + left,
                    mfa_passed: request.mfa_passed,
                    secret_hash: request.secret_hash.clone(),
                    token: tokio_util::sync::CancellationToken::new(),
                    ended: Arc::default(),
                });
            }
            (state, _) if state.is_final() => {
                self.leases.end(&request.requester, &request.resource, id);
            }
            _ => {}
        }
    }

    fn maybe_compact(&self, core: &mut Core) {
        let threshold = self.config.read().journal_compact_records;
        // A snapshot would hold the held records' changes, and the records,
        // appended after it, would then be replayed twice.
        if core.journal.records_since_snapshot() < threshold || !core.held.is_empty() {
            return;
        }
        // Finished requests older than a week live on in the audit log only.
        core.state
            .engine
            .prune_finished(chrono::Utc::now() - chrono::Duration::days(7));
        let Core { state, journal, .. } = core;
        if let Err(e) = journal.compact(state) {
            tracing::error!(error = %e, "journal compaction failed; will retry on the next change");
        }
    }

    /// The lease timer fired for `id`: record the end durably.
    pub fn lease_expired(&self, id: RequestId) {
        let mut core = self.core.lock();
        let events = core.state.engine.decide_expire(id, chrono::Utc::now());
        self.commit_own(&mut core, events, "a lease expiry");
    }

    /// Times out requests whose deadline has passed, and retries records
    /// the journal could not take; returns when to run again.
    pub fn run_timeouts(&self) -> Option<crate::workflow::Time> {
        let mut core = self.core.lock();
        let now = chrono::Utc::now();
        let holding = self.retry_held_journal(&mut core);
        let events = core.state.engine.decide_timeouts(now);
        self.commit_own(&mut core, events, "request timeouts");
        let retry = holding.then(|| now + journal_outage::RETRY_EVERY);
        let next = core.state.engine.next_deadline();
        next.into_iter().chain(retry).min()
    }

    /// Background work: journals lease expiries and request timeouts.
    pub async fn run_housekeeping(
        self: Arc<Self>,
        mut expired: mpsc::Receiver<RequestId>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        tokio::spawn(self.leases.clone().run_expiry(shutdown.clone()));
        loop {
            let gateway = self.clone();
            let next = tokio::task::spawn_blocking(move || gateway.run_timeouts())
                .await
                .ok()
                .flatten();
            let wait = next.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default());
            let sleep = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(id) = expired.recv() => {
                    let gateway = self.clone();
                    let _ = tokio::task::spawn_blocking(move || gateway.lease_expired(id)).await;
                }
                () = sleep => {}
                () = self.deadlines_changed.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

fn count_event(event: &Event) {
    let name = match event {
        Event::Requested { .. } => "requested",
        Event::Approved { .. } => "approved",
        Event::Granted { .. } => "granted",
        Event::Escalated { .. } => "escalated",
        Event::Denied { .. } => "denied",
        Event::Cancelled { .. } => "cancelled",
        Event::TimedOut { .. } => "timed_out",
        Event::CheckedOut { .. } => "checked_out",
        Event::Ended { .. } => "ended",
        Event::ExtensionRequested { .. } => "extension_requested",
        Event::Extended { .. } => "extended",
        Event::PasswordReplaced { .. } => "password_replaced",
        Event::DelegationGranted { .. } => "delegation_granted",
        Event::DelegationRevoked { .. } => "delegation_revoked",
        Event::WorkflowChanged { .. } => "workflow_changed",
    };
    metrics::counter!("jitgate_workflow_events_total", "event" => name).increment(1);
}
