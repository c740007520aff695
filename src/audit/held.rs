//! Records the audit log could not take (a full or failing disk), held in
//! memory in order until it can. The gateway refuses new access while any
//! are held; what ends access goes on, its records held with the rest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AuditError, AuditEvent, AuditLog, AuditRecord, now};

/// At most this many records wait in memory; later ones are counted, and
/// the count is written in their place once the log takes records again.
const MAX_HELD: usize = 10_000;

/// After a failed write, new records are only held, not tried, for this
/// long: each try writes every held record, and runs under the gateway's
/// lock.
const RETRY_AFTER: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(super) struct Held {
    /// Each with the time it happened, oldest first.
    pub(super) records: VecDeque<(String, AuditEvent)>,
    lost: Option<Lost>,
    /// Set by a failed write: no try before then.
    next_try: Option<Instant>,
    /// How many of `records`, from the front, are in the reserve.
    pub(super) reserved: usize,
    /// The last write to the reserve failed (said once in the log).
    pub(super) reserve_failing: bool,
    /// The held records outgrew the reserve.
    pub(super) reserve_full: bool,
}

struct Lost {
    count: u64,
    first: String,
    last: String,
}

/// What one attempt wrote, and why it stopped short if it did.
#[must_use]
pub struct Recorded {
    pub written: Vec<Arc<AuditRecord>>,
    pub failure: Option<AuditError>,
}

impl Held {
    fn hold(&mut self, ts: String, event: AuditEvent) {
        if self.records.len() < MAX_HELD {
            self.records.push_back((ts, event));
            return;
        }
        match &mut self.lost {
            Some(lost) => {
                lost.count += 1;
                lost.last = ts;
            }
            None => {
                self.lost = Some(Lost {
                    count: 1,
                    first: ts.clone(),
                    last: ts,
                });
            }
        }
    }
}

impl AuditLog {
    /// Appends `events` after any records held from earlier failures, all
    /// in one write and fsync; if the log cannot take them, holds them too.
    pub fn record(&mut self, events: Vec<AuditEvent>) -> Recorded {
        let ts = now();
        for event in events {
            self.held.hold(ts.clone(), event);
        }
        self.retry_held()
    }

    /// Writes the held records unless a write failed moments ago; those
    /// still held are kept in the reserve.
    pub fn retry_held(&mut self) -> Recorded {
        let recorded = self.try_held();
        self.keep_reserve_in_step();
        recorded
    }

    fn try_held(&mut self) -> Recorded {
        match self.held.next_try {
            Some(at) if Instant::now() < at => Recorded {
                written: Vec::new(),
                failure: Some(AuditError::Waiting {
                    held: self.holding(),
                }),
            },
            _ => self.write_held(),
        }
    }

    /// Writes the held records, oldest first, then how many were lost.
    pub fn write_held(&mut self) -> Recorded {
        let recorded = self.write_held_now();
        self.held.next_try = recorded
            .failure
            .is_some()
            .then(|| Instant::now() + RETRY_AFTER);
        recorded
    }

    fn write_held_now(&mut self) -> Recorded {
        let mut written = Vec::new();
        if !self.held.records.is_empty() {
            let batch = self.held.records.drain(..).collect();
            match self.write_batch(batch) {
                Ok(records) => written = records,
                Err((e, batch)) => {
                    self.held.records = batch.into();
                    return Recorded {
                        written,
                        failure: Some(e),
                    };
                }
            }
        }
        if let Some(lost) = self.held.lost.take() {
            let event = AuditEvent::AuditRecordsLost {
                count: lost.count,
                first: lost.first.clone(),
                last: lost.last.clone(),
            };
            match self.write_batch(vec![(now(), event)]) {
                Ok(records) => written.extend(records),
                Err((e, _)) => {
                    self.held.lost = Some(lost);
                    return Recorded {
                        written,
                        failure: Some(e),
                    };
                }
            }
        }
        Recorded {
            written,
            failure: None,
        }
    }

    /// Records waiting for the log to take them (lost ones not counted).
    pub fn holding(&self) -> usize {
        self.held.records.len() + usize::from(self.held.lost.is_some())
    }

    /// The held records as JSON lines: the last place they can go when
    /// the gateway stops before the log takes them.
    pub fn held_lines(&self) -> Vec<String> {
        self.held
            .records
            .iter()
            .map(|(ts, event)| serde_json::json!({ "ts": ts, "event": event }).to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{VerifyReport, chain_files, verify_files};

    fn event(n: u64) -> AuditEvent {
        AuditEvent::Refused {
            actor: format!("user{n}"),
            command: "approve 1".into(),
            reason: "test".into(),
        }
    }

    fn verify(path: &std::path::Path) -> VerifyReport {
        verify_files(&chain_files(path).unwrap()).unwrap()
    }

    /// Swaps the log's file for /dev/full: every write fails, as on a
    /// full disk, without touching the real file.
    fn fail_writes(log: &mut AuditLog) -> std::fs::File {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        std::mem::replace(&mut log.file, full)
    }

    #[test]
    fn records_the_log_cannot_take_are_written_in_order_once_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        assert_eq!(log.record(vec![event(1)]).written.len(), 1);
        let real = fail_writes(&mut log);

        for n in 2..=4 {
            let recorded = log.record(vec![event(n)]);
            assert!(recorded.written.is_empty());
            assert!(recorded.failure.is_some());
        }
        assert_eq!(log.holding(), 3);
        assert!(log.held_lines()[0].contains("user2"));
        assert!(log.write_held().failure.is_some());

        log.file = real;
        // Moments after a failure, records are only held...
        let recorded = log.record(vec![event(5)]);
        assert!(matches!(
            recorded.failure,
            Some(AuditError::Waiting { held: 4 })
        ));
        // ... and all written, in order, at the first try after.
        std::thread::sleep(RETRY_AFTER);
        let recorded = log.record(vec![event(6)]);
        assert!(recorded.failure.is_none());
        let seqs: Vec<u64> = recorded.written.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5, 6]);
        assert_eq!(log.holding(), 0);
        assert_eq!(verify(&path).records, 6);
        let text = std::fs::read_to_string(&path).unwrap();
        let order: Vec<usize> = (1..=6)
            .map(|n| text.find(&format!("\"user{n}\"")).unwrap())
            .collect();
        assert!(order.is_sorted(), "{text}");
    }

    #[test]
    fn records_held_when_the_log_dies_are_written_from_its_reserve_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        assert!(log.record(vec![event(1)]).failure.is_none());
        let _real = fail_writes(&mut log);
        for n in 2..=4 {
            assert!(log.record(vec![event(n)]).failure.is_some());
        }
        assert_eq!(log.reserved(), 3);
        let held_at = log.held_lines()[0].clone();
        drop(log);

        let (log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        assert_eq!(log.holding(), 0);
        assert_eq!(verify(&path).records, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let order: Vec<usize> = (1..=4)
            .map(|n| text.find(&format!("\"user{n}\"")).unwrap())
            .collect();
        assert!(order.is_sorted(), "{text}");
        // With the time it happened, not the time it was written.
        let ts = serde_json::from_str::<serde_json::Value>(&held_at).unwrap()["ts"].clone();
        assert!(text.contains(&format!("\"ts\":{ts}")), "{text}");
        drop(log);
        let (_, _) = AuditLog::open(&path, 1 << 30).unwrap();
        assert_eq!(verify(&path).records, 4, "written twice");
    }

    #[test]
    fn reserved_records_the_log_took_since_are_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        let real = fail_writes(&mut log);
        assert!(log.record(vec![event(1)]).failure.is_some());
        assert_eq!(log.reserved(), 1);
        // The log takes records again, but the reserve cannot be emptied:
        // it still holds record 1 when the gateway dies.
        log.file = real;
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        log.replace_reserve_file(full).unwrap();
        std::thread::sleep(RETRY_AFTER);
        assert!(log.record(vec![event(2)]).failure.is_none());
        drop(log);
        let (_, _) = AuditLog::open(&path, 1 << 30).unwrap();
        assert_eq!(verify(&path).records, 2);
    }

    #[test]
    fn beyond_the_bound_records_are_counted_and_the_count_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        let real = fail_writes(&mut log);
        for n in 0..(MAX_HELD as u64 + 7) {
            let _ = log.record(vec![event(n)]);
        }
        assert_eq!(log.holding(), MAX_HELD + 1);

        log.file = real;
        let recorded = log.write_held();
        assert!(recorded.failure.is_none());
        assert_eq!(recorded.written.len(), MAX_HELD + 1);
        match &recorded.written.last().unwrap().event {
            AuditEvent::AuditRecordsLost { count, .. } => assert_eq!(*count, 7),
            other => panic!("{other:?}"),
        }
        assert_eq!(verify(&path).records, MAX_HELD as u64 + 1);
    }

    #[test]
    fn a_partly_written_record_is_cut_off_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        log.append(event(1)).unwrap();
        // What a write cut short by a full disk leaves behind, with the
        // cut not yet possible.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"seq\":2,\"ts"))
            .unwrap();
        log.torn = true;
        log.append(event(2)).unwrap();
        assert_eq!(verify(&path).records, 2);
    }
}
