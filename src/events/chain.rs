//! Reading the audit chain from a position on, without losing a record:
//! what is on disk past the position first, then new records from the bus,
//! going back to the disk whenever the bus skipped some (the reader fell
//! behind, or a record never reached the bus). A slow reader costs disk
//! reads, not memory, and never drops out.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use super::{EventBus, Subscription, SubscriptionEnded};
use crate::audit::{AuditRecord, records_after};

/// Records read from disk at a time.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read the audit log: {0}")]
    Io(#[from] std::io::Error),
    #[error("the gateway is shutting down")]
    Closed,
}

pub struct ChainReader {
    bus: EventBus,
    log: PathBuf,
    /// The seq of the last record handed out.
    after: u64,
    live: Option<Subscription>,
    /// Whether the disk may hold records the bus will not bring.
    behind: bool,
    read: VecDeque<AuditRecord>,
}

impl ChainReader {
    /// Reads the chain kept in `log` (with its rotated files) from the
    /// record after `after` on.
    pub fn new(bus: EventBus, log: PathBuf, after: u64) -> Self {
        Self {
            bus,
            log,
            after,
            live: None,
            behind: true,
            read: VecDeque::new(),
        }
    }

    /// The next record in the chain, waiting for it to be written. Cancel
    /// safe: a call dropped while it waits loses nothing.
    pub async fn next(&mut self) -> Result<Arc<AuditRecord>, ChainError> {
        loop {
            if let Some(record) = self.read.pop_front() {
                self.after = record.seq;
                return Ok(Arc::new(record));
            }
            if self.live.is_none() {
                // Subscribed before reading the disk, so nothing written in
                // between is missed; records seen twice are skipped by seq.
                self.live = Some(self.bus.subscribe());
                self.behind = true;
            }
            if self.behind {
                let batch = self.read_disk().await?;
                self.behind = !batch.is_empty();
                self.read = batch.into();
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            match live.next().await {
                Ok(record) if record.seq <= self.after => {}
                Ok(record) if record.seq == self.after + 1 => {
                    self.after = record.seq;
                    return Ok(record);
                }
                Ok(_) => self.behind = true,
                Err(SubscriptionEnded::TooSlow(_)) => self.live = None,
                Err(SubscriptionEnded::Closed) => return Err(ChainError::Closed),
            }
        }
    }

    /// The next record already on disk, without waiting for new ones:
    /// `None` once the reader has caught up with the log.
    pub async fn written(&mut self) -> Result<Option<Arc<AuditRecord>>, ChainError> {
        if self.read.is_empty() {
            self.read = self.read_disk().await?.into();
        }
        Ok(self.read.pop_front().map(|record| {
            self.after = record.seq;
            Arc::new(record)
        }))
    }

    /// Records past the position from disk. A batch that does not start
    /// right after it is read once more: the log may have been rotated
    /// between listing its files and reading them. (A gap that stays is a
    /// damaged log, which `audit verify` names.)
    async fn read_disk(&self) -> std::io::Result<Vec<AuditRecord>> {
        let batch = self.read_batch().await?;
        if batch
            .first()
            .is_some_and(|record| record.seq != self.after + 1)
        {
            return self.read_batch().await;
        }
        Ok(batch)
    }

    async fn read_batch(&self) -> std::io::Result<Vec<AuditRecord>> {
        let (log, after) = (self.log.clone(), self.after);
        tokio::task::spawn_blocking(move || records_after(&log, after, BATCH))
            .await
            .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};

    struct Chain {
        _dir: tempfile::TempDir,
        log: AuditLog,
        bus: EventBus,
    }

    impl Chain {
        fn new(bus_capacity: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            // Small files: a few records each, so reads cross rotations.
            let (log, _) = AuditLog::open(&dir.path().join("audit.log"), 4096).unwrap();
            Self {
                _dir: dir,
                log,
                bus: EventBus::new(bus_capacity),
            }
        }

        /// Appends a record; publishes it unless `quietly`.
        fn write(&mut self, quietly: bool) {
            let record = self.log.append(AuditEvent::GatewayStopped).unwrap();
            if !quietly {
                self.bus.publish(record);
            }
        }

        fn reader(&self, after: u64) -> ChainReader {
            ChainReader::new(self.bus.clone(), self.log.path().to_path_buf(), after)
        }
    }

    async fn seqs(reader: &mut ChainReader, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..count {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), reader.next());
            seqs.push(next.await.expect("no record").unwrap().seq);
        }
        seqs
    }

    #[tokio::test]
    async fn reads_the_disk_then_the_bus_then_the_disk_again_after_falling_behind() {
        let mut chain = Chain::new(4);
        for _ in 0..300 {
            chain.write(false);
        }
        let mut reader = chain.reader(10);
        assert_eq!(seqs(&mut reader, 290).await, (11..=300).collect::<Vec<_>>());
        // Caught up: new records come from the bus.
        chain.write(false);
        assert_eq!(seqs(&mut reader, 1).await, vec![301]);
        // Far more than the bus holds while the reader is busy elsewhere.
        for _ in 0..50 {
            chain.write(false);
        }
        assert_eq!(seqs(&mut reader, 50).await, (302..=351).collect::<Vec<_>>());
        // A record that never reached the bus is read from disk.
        chain.write(true);
        chain.write(false);
        assert_eq!(seqs(&mut reader, 2).await, vec![352, 353]);
    }

    #[tokio::test]
    async fn written_records_end_where_the_log_ends() {
        let mut chain = Chain::new(16);
        for _ in 0..3 {
            chain.write(true);
        }
        let mut reader = chain.reader(1);
        let mut seqs = Vec::new();
        while let Some(record) = reader.written().await.unwrap() {
            seqs.push(record.seq);
        }
        assert_eq!(seqs, vec![2, 3]);
    }

    #[tokio::test]
    async fn waits_for_the_next_record_without_losing_it_when_cancelled() {
        let mut chain = Chain::new(16);
        chain.write(false);
        let mut reader = chain.reader(1);
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(waited.is_err(), "nothing new was written");
        chain.write(false);
        assert_eq!(seqs(&mut reader, 1).await, vec![2]);
    }
}
