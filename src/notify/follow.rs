//! One webhook's delivery: it reads the audit chain from its cursor on
//! (from disk what it has not seen, then live) and sends each record it
//! asks for in order, retrying until the receiver takes it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cursors::Cursors;
use super::{Target, count, payload};
use crate::audit::AuditRecord;
use crate::events::{ChainError, ChainReader};
use crate::gateway::Gateway;

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

pub struct Follower {
    pub gateway: Arc<Gateway>,
    pub target: Arc<Target>,
    pub cursors: Arc<Cursors>,
    pub stop: CancellationToken,
}

impl Follower {
    pub async fn run(self) {
        let (log, head) = self.gateway.audit_position();
        let after = self.cursors.begin(self.target.key(), head);
        let mut chain = ChainReader::new(self.gateway.bus().clone(), log, after);
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return,
                next = chain.next() => next,
            };
            let step = match next {
                Ok(record) => self.take(&record).await,
                Err(ChainError::Closed) => return,
                Err(error) => {
                    tracing::warn!(webhook = %self.target.origin(), %error, "webhook waits for the audit log");
                    self.pause(LOG_RETRY).await
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends `record` if the webhook asked for it, and moves past it.
    async fn take(&self, record: &AuditRecord) -> Result<(), Stopped> {
        let key = self.target.key();
        if self.target.wants(record) {
            self.deliver(record).await?;
            self.cursors.advance(key, record.seq);
            self.cursors.save().await;
        } else {
            // Saved with the next delivery: passing over it again after a
            // restart costs nothing.
            self.cursors.advance(key, record.seq);
        }
        // Against jitgate_audit_head_seq: how far behind the webhook is.
        metrics::gauge!("jitgate_webhook_cursor_seq", "webhook" => self.target.origin().to_string())
            .set(record.seq as f64);
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
        let mut failures = 0;
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
            if failures == REFUSALS {
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
