//! When the journal cannot be written (a full or failing disk), nothing
//! new is let in: a command that grants or widens access is refused and
//! changes nothing. A change that only ends or narrows access (check-in,
//! revocation, denial, expiry, timeouts) takes effect at once all the
//! same, so a revocation is never held up by a disk. Its record waits, in
//! order, until the journal takes records again: before the next
//! command's, or on the housekeeping loop's retry. Meanwhile the waiting
//! records are kept in the journal's reserve (a file allocated in full
//! beforehand, so a full disk still takes them): the change is on disk and
//! acknowledged as usual, and should the gateway stop first, the next
//! start appends them. Only when the reserve fails too do they wait in
//! memory alone: the person who made the change is then told it is not
//! yet recorded, and a stop loses it (its records go to the gateway's log).

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
    /// Waiting for the journal (`Core::held`), on disk in its reserve.
    Reserved,
    /// Waiting for the journal in memory only.
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
    /// Once all are in, the reserve is emptied.
    pub(super) fn write_held(&mut self) -> Result<(), JournalError> {
        if self.held.is_empty() {
            return Ok(());
        }
        while let Some(first) = self.held.front() {
            self.journal.append(first)?;
            self.held.pop_front();
            metrics::gauge!("jitgate_journal_held_records").set(self.held.len() as f64);
        }
        self.journal.release_reserve();
        self.held_in_reserve = false;
        Ok(())
    }

    /// Journals `record`, or, when the journal fails and the record may
    /// wait, keeps it for later, in the reserve if it can. The caller
    /// applies it either way once this returns `Ok`.
    pub(super) fn journal(&mut self, record: &JournalRecord) -> Result<Journaled, JournalError> {
        match self.append_after_held(record) {
            Ok(()) => Ok(Journaled::OnDisk),
            Err(error) if record.may_wait() => {
                tracing::error!(error = %error, "the journal cannot be written: a change that only ends or narrows access takes effect now and waits to be recorded");
                self.held.push_back(record.clone());
                metrics::gauge!("jitgate_journal_held_records").set(self.held.len() as f64);
                Ok(self.reserve_held())
            }
            Err(error) => Err(error),
        }
    }

    /// Puts every held record in the journal's reserve (they replace what
    /// it held); says where they are now.
    fn reserve_held(&mut self) -> Journaled {
        match self.journal.reserve(self.held.make_contiguous()) {
            Ok(()) => {
                self.held_in_reserve = true;
                Journaled::Reserved
            }
            Err(error) => {
                self.held_in_reserve = false;
                tracing::error!(error = %error, "the journal's reserve cannot be written either: changes waiting for the journal are in memory only");
                Journaled::Held
            }
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
        if !core.held.is_empty() && !core.held_in_reserve {
            core.reserve_held();
        }
        !core.held.is_empty()
    }

    /// Held records still unwritten when the gateway stops wait in the
    /// reserve for the next start; those only in memory go to its log,
    /// the only place left for them: the changes they made are lost.
    pub fn log_held_journal_records(&self) {
        let mut core = self.core.lock();
        if self.retry_held_journal(&mut core) {
            if core.held_in_reserve {
                let records = core.held.len();
                tracing::warn!(
                    records,
                    "changes the journal could not take yet wait in its reserve; the next start records them"
                );
                return;
            }
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

    /// Makes every write to the journal's reserve fail too; returns the
    /// real file for `repair_journal_reserve`.
    pub(super) fn break_journal_reserve(&self) -> std::fs::File {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        self.core.lock().journal.replace_reserve_file(full).unwrap()
    }

    pub(super) fn repair_journal_reserve(&self, file: std::fs::File) {
        self.core.lock().journal.replace_reserve_file(file);
    }
}

#[cfg(test)]
mod tests;
