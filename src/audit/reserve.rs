//! The audit log's reserve: records the log could not take (a full disk),
//! kept on disk until it can, in `AUDIT_LOG.reserve`, a file written out
//! in full when the log opens (the journal's kind of reserve: see
//! `journal::reserve`). Records held while the log fails survive a crash
//! this way: the next open writes them to the log, with the times they
//! happened, before anything else. The gateway still lets nobody new in
//! while any wait: they are safe, but not yet in the log that `audit tail`
//! and the webhooks follow.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::journal::ReserveError;
use crate::journal::reserve::{Reserve, frames_from};

use super::{AuditError, AuditEvent, AuditLog};

/// A held record as the reserve keeps it.
#[derive(Serialize, Deserialize)]
struct Waiting {
    ts: String,
    event: AuditEvent,
}

/// `audit.log` → `audit.log.reserve`, beside it (never taken for a
/// rotated file: those end in a number).
pub(super) fn reserve_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".reserve");
    PathBuf::from(name)
}

impl AuditLog {
    /// Opens the reserve and writes the records waiting in it to the log;
    /// those the log cannot take yet are held, still in the reserve.
    /// Returns how many it found.
    pub(super) fn recover_reserve(&mut self) -> Result<usize, AuditError> {
        let path = reserve_path(&self.path);
        let (reserve, waiting) = Reserve::open_waiting(&path, self.next_seq)?;
        self.reserve = reserve;
        let mut batch = Vec::with_capacity(waiting.len());
        for (seq, payload) in waiting {
            let record: Waiting =
                serde_json::from_slice(&payload).map_err(|e| ReserveError::Undecodable {
                    path: path.clone(),
                    seq,
                    problem: e.to_string(),
                })?;
            batch.push((record.ts, record.event));
        }
        let found = batch.len();
        if found == 0 {
            return Ok(0);
        }
        self.held.reserved = found;
        match self.write_batch(batch) {
            Ok(_) => self.release_reserve(),
            Err((e, batch)) => {
                tracing::error!(error = %e, "the audit log cannot take the records waiting in its reserve yet");
                self.held.records = batch.into();
            }
        }
        Ok(found)
    }

    /// Keeps the reserve in step with the held records: all of them on
    /// disk while any wait, emptied once none do. (Held records only grow
    /// at the back, or are all written at once.)
    pub(super) fn keep_reserve_in_step(&mut self) {
        let held = self.held.records.len();
        if held == 0 {
            if self.held.reserved > 0 {
                self.release_reserve();
            }
            return;
        }
        // Records are only added: once they overflow the reserve, they
        // do until all are written.
        if held == self.held.reserved || self.held.reserve_full {
            return;
        }
        let payloads: Result<Vec<Vec<u8>>, _> = self
            .held
            .records
            .iter()
            .map(|(ts, event)| {
                serde_json::to_vec(&Waiting {
                    ts: ts.clone(),
                    event: event.clone(),
                })
            })
            .collect();
        let (Ok(payloads), Some(reserve)) = (payloads, self.reserve.as_mut()) else {
            return;
        };
        match reserve.keep(&frames_from(self.next_seq, &payloads)) {
            Ok(()) => {
                self.held.reserved = held;
                self.held.reserve_failing = false;
            }
            Err(e) => {
                if !self.held.reserve_failing {
                    tracing::error!(error = %e, "the audit log's reserve cannot be written either: held audit records are in memory only");
                }
                self.held.reserve_failing = true;
                self.held.reserve_full = matches!(e, ReserveError::Full { .. });
            }
        }
    }

    /// Empties the reserve once its records are in the log. Failing is
    /// harmless: records the log holds are skipped at the next open.
    fn release_reserve(&mut self) {
        self.held.reserved = 0;
        self.held.reserve_full = false;
        if let Some(reserve) = self.reserve.as_mut()
            && let Err(e) = reserve.clear()
        {
            tracing::warn!(error = %e, "cannot empty the audit log's reserve");
        }
    }

    /// How many held records are on disk in the reserve.
    pub fn reserved(&self) -> usize {
        self.held.reserved
    }

    /// Puts `file` in the reserve file's place (a failing one, in tests).
    #[cfg(test)]
    pub(crate) fn replace_reserve_file(&mut self, file: std::fs::File) -> Option<std::fs::File> {
        self.reserve.as_mut().map(|r| r.replace_file(file))
    }
}
