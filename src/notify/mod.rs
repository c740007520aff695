//! Webhook notifications. Each `[[webhook]]` gets every audit record it
//! asks for, POSTed as JSON (`{"text": ..., "record": ...}`, and
//! `"awaiting_approval_from": [...]` while a request waits) in the order
//! the records were written, moments after they are on disk: approvers
//! hear of a request where they already are, and a SIEM gets the stream.
//!
//! The audit log stays the durable record: delivery is retried with
//! backoff for about a minute, then given up (counted and logged); a
//! webhook that falls more than a queue behind loses the overflow, never
//! slows the gateway, and records written while the gateway is down are
//! not sent later. A reload brings the new configuration's webhooks.

mod post;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditRecord};
use crate::config::webhook::Webhook;
use crate::events::SubscriptionEnded;
use crate::gateway::Gateway;

pub use post::{PostError, Target};

/// Records queued per webhook while a delivery is retried.
const QUEUE: usize = 1024;
/// Tries per record: the waits between them add up to about a minute.
const ATTEMPTS: u32 = 7;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Prepares every webhook of the configuration (reading token and CA
/// files, so a mistake refuses the start) and starts delivering to them,
/// and to the webhooks of each configuration a reload brings.
pub fn start(gateway: &Arc<Gateway>, stop: CancellationToken) -> Result<(), PostError> {
    let targets = prepare(&gateway.config().webhooks)?;
    tokio::spawn(supervise(gateway.clone(), targets, stop));
    Ok(())
}

/// Builds a target for each webhook: what start and reload check.
pub fn prepare(webhooks: &[Webhook]) -> Result<Vec<Arc<Target>>, PostError> {
    webhooks
        .iter()
        .map(|webhook| Target::new(webhook).map(Arc::new))
        .collect()
}

/// Runs one generation of delivery tasks per configuration: a reload
/// ends the running one (records still queued for it are not sent) and
/// starts the new one.
async fn supervise(gateway: Arc<Gateway>, targets: Vec<Arc<Target>>, stop: CancellationToken) {
    let mut records = gateway.bus().subscribe();
    let mut generation = launch(&gateway, &targets, &stop);
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = records.next() => next,
        };
        match next {
            Ok(record) if matches!(record.event, AuditEvent::ConfigReloaded { ok: true, .. }) => {
                match prepare(&gateway.config().webhooks) {
                    Ok(targets) => {
                        generation.cancel();
                        generation = launch(&gateway, &targets, &stop);
                    }
                    Err(error) => {
                        tracing::error!(%error, "webhooks unchanged by the reload");
                    }
                }
            }
            Ok(_) => {}
            Err(SubscriptionEnded::TooSlow(_)) => records = gateway.bus().subscribe(),
            Err(SubscriptionEnded::Closed) => return,
        }
    }
}

fn launch(
    gateway: &Arc<Gateway>,
    targets: &[Arc<Target>],
    stop: &CancellationToken,
) -> CancellationToken {
    let generation = stop.child_token();
    for target in targets {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(select_records(
            gateway.clone(),
            target.clone(),
            queue,
            generation.clone(),
        ));
        tokio::spawn(deliver(
            gateway.clone(),
            target.clone(),
            queued,
            generation.clone(),
        ));
    }
    generation
}

/// Reads the event bus and queues what `target` asks for.
async fn select_records(
    gateway: Arc<Gateway>,
    target: Arc<Target>,
    queue: mpsc::Sender<Arc<AuditRecord>>,
    stop: CancellationToken,
) {
    let mut records = gateway.bus().subscribe();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = records.next() => next,
        };
        match next {
            Ok(record) if target.wants(&record) => {
                if queue.try_send(record).is_err() {
                    count("dropped");
                    tracing::warn!(webhook = %target.origin(), "webhook queue full; a record was not sent");
                }
            }
            Ok(_) => {}
            Err(SubscriptionEnded::TooSlow(missed)) => {
                tracing::warn!(webhook = %target.origin(), missed, "webhook fell behind the event bus");
                records = gateway.bus().subscribe();
            }
            Err(SubscriptionEnded::Closed) => return,
        }
    }
}

/// Sends queued records one at a time, in order, retrying each.
async fn deliver(
    gateway: Arc<Gateway>,
    target: Arc<Target>,
    mut queued: mpsc::Receiver<Arc<AuditRecord>>,
    stop: CancellationToken,
) {
    loop {
        let record = tokio::select! {
            () = stop.cancelled() => return,
            record = queued.recv() => match record {
                Some(record) => record,
                None => return,
            },
        };
        let body = payload(&gateway, &record);
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match target.post(body.clone()).await {
                Ok(()) => {
                    count("delivered");
                    break;
                }
                Err(error) if attempt == ATTEMPTS => {
                    count("dropped");
                    tracing::warn!(webhook = %target.origin(), seq = record.seq, %error, "webhook delivery given up");
                }
                Err(error) => {
                    count("retried");
                    tracing::debug!(webhook = %target.origin(), seq = record.seq, %error, "webhook delivery failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait *= 2;
                }
            }
        }
    }
}

/// What a webhook receives: the line `audit tail` shows, the record, and
/// for a request still waiting for approval, who may approve it now (so a
/// chat tool can mention them).
fn payload(gateway: &Gateway, record: &AuditRecord) -> bytes::Bytes {
    let mut body = serde_json::json!({
        "text": crate::control::describe(&record.event),
        "record": record,
    });
    let approvers = awaiting_approval_from(gateway, record);
    if !approvers.is_empty() {
        body["awaiting_approval_from"] = approvers.into();
    }
    bytes::Bytes::from(body.to_string())
}

fn awaiting_approval_from(gateway: &Gateway, record: &AuditRecord) -> Vec<String> {
    let AuditEvent::Workflow { change, .. } = &record.event else {
        return Vec::new();
    };
    let Some(id) = change.request_id() else {
        return Vec::new();
    };
    let config = gateway.config();
    let ctx = crate::workflow::Context {
        directory: &config.directory,
        resources: &config.resources,
        now: chrono::Utc::now(),
    };
    gateway.read(|engine| {
        config
            .directory
            .users
            .keys()
            .filter(|user| engine.awaits_approval_from(&ctx, id, user))
            .cloned()
            .collect()
    })
}

fn count(outcome: &'static str) {
    metrics::counter!("jitgate_webhook_deliveries_total", "outcome" => outcome).increment(1);
}
