//! One webhook's delivery: it follows the audit chain from its cursor,
//! reading the log on disk for records it has not seen (written while it
//! was down, or while it was behind) and the event bus for new ones, and
//! sends each record it asks for in order, retrying until the receiver
//! takes it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cursors::Cursors;
use super::{Target, count, payload};
use crate::audit::{AuditRecord, records_after};
use crate::events::SubscriptionEnded;
use crate::gateway::Gateway;

/// Records read from disk at a time while catching up.
const BATCH: usize = 256;
/// Refusals (4xx) of one record before it is given up: the waits between
/// them add up to about a minute.
const REFUSALS: u32 = 7;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries at an unreachable or failing receiver.
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// The wait before reading the log again after it could not be read.
const LOG_RETRY: Duration = Duration::from_secs(5);

/// The gateway is stopping, or a reload replaced this webhook.
struct Stopped;

/// Why following the live stream ended.
enum Flow {
    Stopped,
    /// The bus skipped records (this webhook fell behind, or a record
    /// never reached the bus): read them from disk.
    Behind,
}

pub struct Follower {
    pub gateway: Arc<Gateway>,
    pub target: Arc<Target>,
    pub cursors: Arc<Cursors>,
    pub stop: CancellationToken,
}

impl Follower {
    pub async fn run(self) {
        let (_, head) = self.gateway.audit_position();
        let mut after = self.cursors.begin(self.target.key(), head);
        loop {
            // Subscribed before reading the disk, so nothing written in
            // between is missed; records seen twice are skipped by seq.
            let mut live = self.gateway.bus().subscribe();
            if self.catch_up(&mut after).await.is_err() {
                return;
            }
            match self.follow_live(&mut live, &mut after).await {
                Flow::Stopped => return,
                Flow::Behind => {}
            }
        }
    }

    /// Sends what the log holds past `after`; `Err` once stopped.
    async fn catch_up(&self, after: &mut u64) -> Result<(), Stopped> {
        loop {
            let batch = match self.read_after(*after).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(webhook = %self.target.origin(), %error, "cannot read the audit log for a webhook; trying again");
                    self.pause(LOG_RETRY).await?;
                    continue;
                }
            };
            if batch.is_empty() {
                return Ok(());
            }
            for record in batch {
                self.take(&record, after).await?;
            }
        }
    }

    /// Records past `after` from disk. A batch that does not start right
    /// after it is read once more: the log may have been rotated between
    /// listing its files and reading them.
    async fn read_after(&self, after: u64) -> std::io::Result<Vec<AuditRecord>> {
        let batch = self.read_batch(after).await?;
        if batch.first().is_some_and(|record| record.seq != after + 1) {
            return self.read_batch(after).await;
        }
        Ok(batch)
    }

    async fn read_batch(&self, after: u64) -> std::io::Result<Vec<AuditRecord>> {
        let (path, _) = self.gateway.audit_position();
        tokio::task::spawn_blocking(move || records_after(&path, after, BATCH))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn follow_live(&self, live: &mut crate::events::Subscription, after: &mut u64) -> Flow {
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return Flow::Stopped,
                next = live.next() => next,
            };
            match next {
                Ok(record) if record.seq <= *after => {}
                Ok(record) if record.seq > *after + 1 => return Flow::Behind,
                Ok(record) => {
                    if self.take(&record, after).await.is_err() {
                        return Flow::Stopped;
                    }
                }
                Err(SubscriptionEnded::TooSlow(missed)) => {
                    tracing::info!(webhook = %self.target.origin(), missed, "webhook behind the live stream; reading on from the audit log");
                    return Flow::Behind;
                }
                Err(SubscriptionEnded::Closed) => return Flow::Stopped,
            }
        }
    }

    /// Sends `record` if the webhook asked for it, and moves past it.
    async fn take(&self, record: &AuditRecord, after: &mut u64) -> Result<(), Stopped> {
        let key = self.target.key();
        if self.target.wants(record) {
            self.deliver(record).await?;
            self.cursors.advance(key, record.seq);
            self.cursors.save().await;
        } else {
            self.cursors.advance(key, record.seq);
        }
        *after = record.seq;
        Ok(())
    }

    /// Posts `record` until the receiver takes it. An unreachable or
    /// failing receiver (no answer, 5xx, 408, 429) is tried again for as
    /// long as it takes, waiting longer each time up to five minutes; one
    /// that keeps refusing the record (other 4xx) has it given up after
    /// about a minute, so one bad record does not stop the stream.
    async fn deliver(&self, record: &AuditRecord) -> Result<(), Stopped> {
        let body = payload(&self.gateway, record);
        let mut wait = FIRST_RETRY;
        let mut refusals = 0;
        let mut failures = 0u64;
        loop {
            let error = match self.target.post(body.clone()).await {
                Ok(()) => {
                    count("delivered");
                    return Ok(());
                }
                Err(error) => error,
            };
            if error.is_refusal() {
                refusals += 1;
                if refusals == REFUSALS {
                    count("dropped");
                    tracing::warn!(webhook = %self.target.origin(), seq = record.seq, %error, "webhook refused a record; given up");
                    return Ok(());
                }
            }
            count("retried");
            failures += 1;
            if failures == u64::from(REFUSALS) {
                tracing::warn!(webhook = %self.target.origin(), seq = record.seq, %error, "webhook failing; still trying, records wait in the audit log");
            } else {
                tracing::debug!(webhook = %self.target.origin(), seq = record.seq, %error, "webhook delivery failed; retrying");
            }
            self.pause(wait).await?;
            wait = (wait * 2).min(LONGEST_RETRY);
        }
    }

    async fn pause(&self, wait: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = self.stop.cancelled() => Err(Stopped),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }
}
