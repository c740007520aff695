//! When the journal cannot be written (a full or failing disk), nothing
//! new is let in: a command that grants or widens access is refused and
//! changes nothing. A change that only ends or narrows access (check-in,
//! revocation, denial, expiry, timeouts) takes effect at once all the
//! same, so a revocation is never held up by a disk, and its record waits
//! in memory, in order, until the journal takes records again: before the
//! next command's, or on the housekeeping loop's retry. The person who
//! made the change is told it is not yet recorded; should the gateway
//! stop before it is, the change is lost with it and its records go to
//! the gateway's log.

use std::time::Duration;

use crate::journal::JournalError;

use super::audit_outage::widens_access;
use super::{Core, Gateway, JournalRecord};

/// How often held records are retried while no command comes.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What users are told when their change took effect unrecorded.
pub const NOT_YET_RECORDED: &str = "the change took effect at once, since it only ends or narrows access, but it is not yet recorded on disk (storage error): the gateway keeps trying to record it; details are in the gateway log";

impl JournalRecord {
    /// Whether the record may take effect before it is on disk: it only
    /// ends or narrows access and consumes no TOTP code.
    fn may_wait(&self) -> bool {
        self.mfa_step.is_none() && !self.events.iter().any(widens_access)
    }
}

/// Where a committed record is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Journaled {
    OnDisk,
    /// In memory, waiting for the journal (`Core::held`).
    Held,
}

impl Core {
    /// Appends the held records, in order, then `record`.
    fn append_after_held(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        self.write_held()?;
        self.journal.append(record)?;
        Ok(())
    }

    /// Appends the held records, in order; stops at the first failure.
    pub(super) fn write_held(&mut self) -> Result<(), JournalError> {
        while let Some(first) = self.held.front() {
            self.journal.append(first)?;
            self.held.pop_front();
            metrics::gauge!("jitgate_journal_held_records").set(self.held.len() as f64);
        }
        Ok(())
    }

    /// Journals `record`, or, when the journal fails and the record may
    /// wait, keeps it for later. The caller applies it either way once
    /// this returns `Ok`.
    pub(super) fn journal(&mut self, record: &JournalRecord) -> Result<Journaled, JournalError> {
        match self.append_after_held(record) {
            Ok(()) => Ok(Journaled::OnDisk),
            Err(error) if record.may_wait() => {
                tracing::error!(error = %error, "the journal cannot be written: a change that only ends or narrows access takes effect now and waits in memory to be recorded");
                self.held.push_back(record.clone());
                metrics::gauge!("jitgate_journal_held_records").set(self.held.len() as f64);
                Ok(Journaled::Held)
            }
            Err(error) => Err(error),
        }
    }
}

impl Gateway {
    /// Retries the held records (the housekeeping loop); whether any are
    /// still held.
    pub(super) fn retry_held_journal(&self, core: &mut Core) -> bool {
        if core.held.is_empty() {
            return false;
        }
        match core.write_held() {
            Ok(()) => tracing::info!("the journal takes records again; held changes recorded"),
            Err(e) => tracing::debug!(error = %e, "the journal still cannot be written"),
        }
        !core.held.is_empty()
    }

    /// Held records still unwritten when the gateway stops go to its log,
    /// the only place left for them: the changes they made are lost.
    pub fn log_held_journal_records(&self) {
        let mut core = self.core.lock();
        if self.retry_held_journal(&mut core) {
            for record in &core.held {
                let events: Vec<_> = record.events.iter().map(|e| e.redacted()).collect();
                let line = serde_json::to_string(&events).unwrap_or_default();
                tracing::error!(events = %line, "a change never reached the journal and is lost at this stop");
            }
        }
    }
}

#[cfg(test)]
impl Gateway {
    /// Makes every journal write fail, as on a full disk; returns the real
    /// file for `repair_journal`.
    pub(super) fn break_journal(&self) -> std::fs::File {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        self.core.lock().journal.replace_file(full)
    }

    pub(super) fn repair_journal(&self, file: std::fs::File) {
        self.core.lock().journal.replace_file(file);
    }

    pub(super) fn held_journal_records(&self) -> usize {
        self.core.lock().held.len()
    }
}

#[cfg(test)]
mod tests;
