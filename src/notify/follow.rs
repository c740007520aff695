//! One webhook's delivery: it reads the audit chain from its cursor on
//! (from disk what it has not seen, then live) and sends each record it
//! asks for in order, retrying until the receiver takes it.
//!
//! The cursor is saved (an fsynced rename) at most once a second while
//! records flow, and at once when the stream stops: when the receiver
//! starts failing, when the gateway stops or a reload replaces the
//! webhook. A crash re-sends at most the last second's records, which
//! receivers tell by `record.seq`; saving after every record would make
//! the disk, not the receiver, set the pace of delivery.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cursors::Cursors;
use super::{Target, count, payload};
use crate::audit::AuditRecord;
use crate::events::{ChainError, ChainReader};
use crate::gateway::{Gateway, Subjects};

/// Refusals (4xx) of one record before it is given up: the waits between
/// them add up to about a minute.
const REFUSALS: u32 = 7;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries at an unreachable or failing receiver.
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// The wait before reading the log again after it could not be read.
const LOG_RETRY: Duration = Duration::from_secs(5);
/// How long a moved cursor may wait to be saved.
const SAVE_WITHIN: Duration = Duration::from_secs(1);

/// The gateway is stopping, or a reload replaced this webhook.
struct Stopped;

pub struct Follower {
    gateway: Arc<Gateway>,
    target: Arc<Target>,
    cursors: Arc<Cursors>,
    stop: CancellationToken,
    /// When the cursor moved past a delivered record not yet saved.
    unsaved_since: Option<Instant>,
    /// Which resource each record is about, for a webhook that asked
    /// for some resources only.
    subjects: Subjects,
}

impl Follower {
    pub fn new(
        gateway: Arc<Gateway>,
        target: Arc<Target>,
        cursors: Arc<Cursors>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            gateway,
            target,
            cursors,
            stop,
            unsaved_since: None,
            subjects: Subjects::default(),
        }
    }

    pub async fn run(mut self) {
        let (log, head) = self.gateway.audit_position();
        let after = self.cursors.begin(self.target.key(), head);
        let mut chain = ChainReader::new(self.gateway.bus().clone(), log, after);
        loop {
            let save_at = self.unsaved_since.map(|since| since + SAVE_WITHIN);
            let next = tokio::select! {
                () = self.stop.cancelled() => break,
                () = sleep_until(save_at) => {
                    self.save().await;
                    continue;
                }
                next = chain.next() => next,
            };
            let step = match next {
                Ok(record) => self.take(&record).await,
                Err(ChainError::Closed) => break,
                Err(error) => {
                    tracing::warn!(webhook = %self.target.origin(), %error, "webhook waits for the audit log");
                    self.pause(LOG_RETRY).await
                }
            };
            if step.is_err() {
                break;
            }
        }
        self.save().await;
    }

    /// Saves the cursor if it moved past a delivered record since the
    /// last save.
    async fn save(&mut self) {
        if self.unsaved_since.take().is_some() {
            self.cursors.save().await;
        }
    }

    /// Sends `record` if the webhook asked for it, and moves past it.
    async fn take(&mut self, record: &AuditRecord) -> Result<(), Stopped> {
        let target = self.target.clone();
        let key = target.key();
        if target.wants(record) && self.about_its_resources(&target, record) {
            self.deliver(record).await?;
            self.cursors.advance(key, record.seq);
            self.unsaved_since.get_or_insert_with(Instant::now);
        } else {
            // Saved with the next delivery: passing over it again after a
            // restart costs nothing.
            self.cursors.advance(key, record.seq);
        }
        // Against jitgate_audit_head_seq: how far behind the webhook is.
        metrics::gauge!("jitgate_webhook_cursor_seq", "webhook" => target.origin().to_string())
            .set(record.seq as f64);
        Ok(())
    }

    /// Whether `record` is about one of the resources the webhook asked
    /// for (any record, when it named none).
    fn about_its_resources(&mut self, target: &Target, record: &AuditRecord) -> bool {
        let Some(resources) = target.resources() else {
            return true;
        };
        self.subjects
            .resource_of(&self.gateway, &record.event)
            .is_some_and(|resource| resources.contains(&resource))
    }

    /// Posts `record` until the receiver takes it. An unreachable or
    /// failing receiver (no answer, 5xx, 408, 429) is tried again for as
    /// long as it takes, waiting longer each time up to five minutes; one
    /// that keeps refusing the record (other 4xx) has it given up after
    /// about a minute, so one bad record does not stop the stream.
    async fn deliver(&mut self, record: &AuditRecord) -> Result<(), Stopped> {
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
            // The stream stops here for a while: what was delivered so far
            // is saved before the wait.
            self.save().await;
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
