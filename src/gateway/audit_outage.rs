//! When the audit log cannot be written (a full or failing disk), nothing
//! new is let in: no login to a target, no change that grants or widens
//! access. What ends access (check-in, revocation, expiry, severing) goes
//! on, and its records wait in memory, in order, until the log takes them
//! again. New records and admission checks retry them (at most every
//! 200 ms: see `audit::held`).

use std::sync::atomic::Ordering;

use crate::audit::{AuditError, AuditEvent, Recorded};
use crate::workflow::Event;

use super::{AuditSide, Gateway};

/// What users are told while access is refused for this reason.
pub const AUDIT_UNAVAILABLE: &str =
    "jitgate cannot write its audit log, so no new access is granted until it can";

impl Gateway {
    /// Appends `events` together, after any held records, in one write
    /// and one fsync, and publishes what was written. Failures are logged
    /// and counted, never hidden.
    pub fn audit_all(&self, events: Vec<AuditEvent>) {
        let mut side = self.audit.lock();
        let recorded = side.log.record(events);
        self.published(&mut side, recorded);
    }

    /// `audit_all` for synchronous code that runs on the async runtime (a
    /// russh handler's login check): the worker hands its other tasks on
    /// while the write and its fsync take, instead of stalling them.
    pub fn audit_all_in_place(&self, events: Vec<AuditEvent>) {
        super::in_place(|| self.audit_all(events));
    }

    /// Whether the last audit attempt failed and records are held.
    pub fn audit_failing(&self) -> bool {
        self.audit_failing.load(Ordering::Acquire)
    }

    /// Whether the audit log takes records: true at once unless it failed
    /// before, in which case the held records are written first.
    pub fn audit_ready(&self) -> bool {
        if !self.audit_failing() {
            return true;
        }
        let mut side = self.audit.lock();
        if side.log.holding() == 0 {
            return true;
        }
        let recorded = side.log.retry_held();
        self.published(&mut side, recorded);
        side.log.holding() == 0
    }

    /// Records still held when the gateway stops wait in the audit log's
    /// reserve for the next start; those it could not take go to the
    /// gateway's log, the only place left for them.
    pub fn log_held_audit_records(&self) {
        let side = self.audit.lock();
        let reserved = side.log.reserved();
        if reserved > 0 {
            tracing::warn!(
                records = reserved,
                "audit records the log could not take yet wait in its reserve; the next start writes them"
            );
        }
        for line in side.log.held_lines().into_iter().skip(reserved) {
            tracing::error!(record = %line, "audit record never written to the audit log");
        }
    }

    fn published(&self, side: &mut AuditSide, recorded: Recorded) {
        for record in recorded.written {
            self.follow_audit_head(&record);
            // Scraped, the head seq becomes a record kept off this machine.
            metrics::gauge!("jitgate_audit_head_seq").set(record.seq as f64);
            self.bus.publish(record);
        }
        let held = side.log.holding();
        metrics::gauge!("jitgate_audit_records_held").set(held as f64);
        let was_failing = self.audit_failing.swap(held > 0, Ordering::AcqRel);
        match recorded.failure {
            // Held without trying: the last write failed moments ago.
            Some(AuditError::Waiting { .. }) => {}
            Some(e) => {
                metrics::counter!("jitgate_audit_write_failures_total").increment(1);
                if !was_failing {
                    tracing::error!(error = %e, "audit write failed: {AUDIT_UNAVAILABLE}; records are held in memory");
                }
            }
            None if was_failing && held == 0 => {
                tracing::warn!("the audit log takes records again; the held ones are written");
            }
            None => {}
        }
    }
}

/// Whether `event` grants access or widens it: refused while the audit
/// log cannot record it. The rest ends or narrows access, and goes on.
pub(super) fn widens_access(event: &Event) -> bool {
    match event {
        Event::Requested { .. }
        | Event::Approved { .. }
        | Event::Granted { .. }
        | Event::CheckedOut { .. }
        | Event::ExtensionRequested { .. }
        | Event::Extended { .. }
        | Event::PasswordReplaced { .. }
        | Event::DelegationGranted { .. }
        | Event::WorkflowChanged { .. } => true,
        Event::Escalated { .. }
        | Event::Denied { .. }
        | Event::Cancelled { .. }
        | Event::TimedOut { .. }
        | Event::Ended { .. }
        | Event::DelegationRevoked { .. } => false,
    }
}
