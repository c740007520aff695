//! Opening the gateway: replay the journal, end what ended while it was down.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};

use crate::audit::{AuditEvent, AuditLog};
use crate::config::Config;
use crate::events::EventBus;
use crate::journal::{Journal, Recovered};
use crate::lease::LeaseTable;
use crate::mfa::MfaGuard;
use crate::workflow::RequestId;

use super::audit_anchor::AuditHead;
use super::{AuditSide, BUS_CAPACITY, Core, Gateway, GatewayError, JournalRecord, PersistentState};

/// The saved head of the audit chain and what is wrong with the log, if it
/// no longer holds that head.
fn audit_tampering(config: &Config, audit: &AuditLog) -> Option<(String, String)> {
    match crate::audit::load_anchor(&crate::audit::anchor_path(&config.state_dir)) {
        Ok(None) => None,
        Ok(Some(anchor)) => {
            crate::audit::check_anchor(&config.audit_log, audit.head().as_ref(), &anchor)
                .map(|problem| (anchor.to_string(), problem))
        }
        Err(problem) => Some((
            "unreadable".into(),
            format!("the saved audit head cannot be read: {problem}"),
        )),
    }
}

/// Sessions the last run left without an end (see `interrupted`). A log
/// that cannot be read for them delays nothing: they are only reported.
fn unended_sessions(config: &Config, audit: &AuditLog) -> Vec<super::interrupted::Unended> {
    let Some(head) = audit.head() else {
        return Vec::new();
    };
    super::interrupted::unended_sessions(&config.audit_log, head.seq).unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot look for sessions the last run left open");
        Vec::new()
    })
}

/// The recovered records the journal could not take at this start either:
/// they wait, in its reserve, to be appended before anything else.
fn waiting_in_reserve(
    recovered: &Recovered<PersistentState, JournalRecord>,
) -> VecDeque<JournalRecord> {
    if !recovered.still_reserved {
        return VecDeque::new();
    }
    let first = recovered.records.len() - recovered.from_reserve;
    recovered.records[first..].iter().cloned().collect()
}

/// What opening the state and the audit log found.
struct Findings {
    /// The saved audit head, and what is wrong with the log.
    tampered: Option<(String, String)>,
    /// Bytes of a torn record cut off the journal's end.
    journal_tail: Option<u64>,
    /// Records recovered from the journal's reserve.
    from_reserve: usize,
    /// Bytes of a torn line cut off the audit log's end.
    audit_tail: Option<u64>,
    /// Resources whose credentials were imported into the vault.
    imported: Vec<String>,
    /// Sessions the last run left without an end.
    unended: Vec<super::interrupted::Unended>,
}

impl Gateway {
    /// The gateway's start on record, with what opening found.
    fn audit_opening(&self, config: &Config, found: Findings) {
        let version = env!("CARGO_PKG_VERSION").to_string();
        self.audit(AuditEvent::GatewayStarted { version });
        if let Some((anchor, problem)) = found.tampered {
            tracing::error!(%anchor, %problem, "the audit log was tampered with while the gateway was down");
            metrics::counter!("jitgate_audit_tampering_detected_total").increment(1);
            self.audit(AuditEvent::AuditTampered { anchor, problem });
        }
        if found.from_reserve > 0 {
            let records = found.from_reserve;
            tracing::warn!(
                records,
                "changes made while the journal could not take them were recovered from its reserve"
            );
        }
        if let Some(bytes) = found.journal_tail {
            tracing::warn!(bytes, "dropped a torn record at the end of the journal");
            self.audit(AuditEvent::TornTailDropped {
                file: "journal.log".into(),
                bytes,
            });
        }
        if let Some(bytes) = found.audit_tail {
            tracing::warn!(bytes, "dropped a torn line at the end of the audit log");
            self.audit(AuditEvent::TornTailDropped {
                file: config.audit_log.display().to_string(),
                bytes,
            });
        }
        for resource in found.imported {
            self.audit(AuditEvent::CredentialImported { resource });
        }
        for interrupted in super::interrupted::interruption_records(config, &found.unended) {
            self.audit(interrupted);
        }
    }

    /// Opens the state directory and audit log, rebuilds every request,
    /// approval and lease from the journal, and ends leases whose window
    /// closed while the gateway was down. Returns the gateway and the channel
    /// of lease expiries for `run_housekeeping`.
    pub fn open(config: Config) -> Result<(Arc<Self>, mpsc::Receiver<RequestId>), GatewayError> {
        // First: the vault's lock keeps a second process off all the state.
        let (vault, imported) = crate::vault::open_for(&config)?;
        crate::vault::check_reconcile_files(&config)?;
        let (journal, recovered) =
            Journal::open::<PersistentState, JournalRecord>(&config.state_dir)?;
        let (audit, audit_dropped) = AuditLog::open(&config.audit_log, config.audit_rotate_bytes)?;
        let known_hosts = crate::ssh::KnownHosts::load(&config.state_dir)?;
        let rotation_marks = super::rotation_marks::RotationMarks::load(&config.state_dir)?;
        let tampered = audit_tampering(&config, &audit);
        let unended = unended_sessions(&config, &audit);
        let held = waiting_in_reserve(&recovered);
        let state = replayed(recovered.snapshot, &recovered.records);
        let mfa = MfaGuard::new(config.mfa.max_failures, config.mfa.lockout);
        for (user, step) in &state.mfa_steps {
            mfa.remember_step(user, *step);
        }
        let (leases, expired) = LeaseTable::new();
        metrics::gauge!("jitgate_journal_held_records").set(held.len() as f64);
        let gateway = Arc::new(Self {
            config: RwLock::new(Arc::new(config.clone())),
            core: Mutex::new(Core {
                state,
                journal,
                held_in_reserve: !held.is_empty(),
                held,
            }),
            audit_head: AuditHead::new(
                audit.path().to_path_buf(),
                crate::audit::anchor_path(&config.state_dir),
                audit.head().as_ref(),
            ),
            audit: Mutex::new(AuditSide { log: audit }),
            leases,
            mfa,
            bus: EventBus::new(BUS_CAPACITY),
            sessions: Arc::default(),
            vault: Arc::new(vault),
            scram_keys: Arc::default(),
            known_hosts: Arc::new(known_hosts),
            rotation_locks: Default::default(),
            deadlines_changed: Notify::new(),
            rotation_marks,
            penalties: Default::default(),
            pending_logins: Default::default(),
            audit_failing: Default::default(),
            reloads: tokio::sync::watch::Sender::new(0),
        });
        gateway.audit_opening(
            &config,
            Findings {
                tampered,
                journal_tail: recovered.dropped_tail,
                from_reserve: recovered.from_reserve,
                audit_tail: audit_dropped,
                imported,
                unended,
            },
        );
        gateway.audit_first_contact_host_keys();
        gateway.restore_leases();
        gateway.sync_audit_anchor();
        Ok((gateway, expired))
    }

    /// A target's host key seen for the first time is trusted and
    /// recorded; the audit log says so.
    fn audit_first_contact_host_keys(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.known_hosts.on_record(move |resource, fingerprint| {
            if let Some(gateway) = weak.upgrade() {
                gateway.audit(AuditEvent::TargetHostKey {
                    resource: resource.to_string(),
                    fingerprint: fingerprint.to_string(),
                    accepted: true,
                    reason: "recorded on first contact".into(),
                });
            }
        });
    }

    /// Ends what ran out while the gateway was down and what the
    /// configuration no longer allows, then puts every still-active lease
    /// back into the table.
    fn restore_leases(&self) {
        self.run_timeouts();
        self.end_withdrawn_leases();
        let core = self.core.lock();
        crate::metrics::record_request_states(&core.state.engine);
        let active: Vec<RequestId> = core.state.engine.active_requests().map(|r| r.id).collect();
        for id in active {
            self.mirror_lease(&core.state.engine, id);
        }
    }
}

/// The state as the journal left it: its snapshot, then every record
/// written after it, in order.
fn replayed(snapshot: Option<PersistentState>, records: &[JournalRecord]) -> PersistentState {
    let mut state = snapshot.unwrap_or_default();
    for record in records {
        for event in &record.events {
            state.engine.apply(event);
        }
        if let Some((user, step)) = &record.mfa_step {
            state.mfa_steps.insert(user.clone(), *step);
        }
    }
    state
}
