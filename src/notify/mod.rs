//! Webhook notifications. Each `[[webhook]]` gets every audit record it
//! asks for, POSTed as JSON (`{"text": ..., "record": ...}`, and
//! `"awaiting_approval_from": [...]` while a request waits) in the order
//! the records were written, moments after they are on disk: approvers
//! hear of a request where they already are, and a SIEM gets the stream.
//!
//! Delivery is at least once: each webhook's place in the chain is kept in
//! the state directory, a receiver that is down or failing is tried again
//! until it takes the record, and records written while it (or the
//! gateway) was down are read from the log and sent in order. Only a
//! record the receiver keeps refusing (4xx) is given up, after about a
//! minute, so one bad record cannot stop the stream.
//! A crash may send the last second's records again (see `follow`):
//! receivers tell by `record.seq`. A reload brings the new configuration's webhooks; one
//! whose URL is unchanged goes on from where it was.

mod cursors;
mod follow;
mod post;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AuditEvent, AuditRecord};
use crate::config::webhook::Webhook;
use crate::events::SubscriptionEnded;
use crate::gateway::Gateway;

pub use cursors::{Cursors, CursorsError};
pub use post::{PostError, Target};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Post(#[from] PostError),
    #[error(transparent)]
    Cursors(#[from] CursorsError),
}

/// Prepares every webhook of the configuration (reading token and CA
/// files, and where each webhook stands, so a mistake refuses the start)
/// and starts delivering to them, and to the webhooks of each
/// configuration a reload brings. The tasks returned end once `stop` is
/// cancelled and each webhook has saved how far it got.
pub fn start(gateway: &Arc<Gateway>, stop: CancellationToken) -> Result<TaskTracker, NotifyError> {
    let targets = prepare(&gateway.config().webhooks)?;
    let webhooks = Webhooks {
        gateway: gateway.clone(),
        cursors: Cursors::load(&gateway.config().state_dir)?,
        stop,
        tasks: TaskTracker::new(),
    };
    let tasks = webhooks.tasks.clone();
    tasks.spawn(webhooks.supervise(targets));
    tasks.close();
    Ok(tasks)
}

/// Builds a target for each webhook: what start and reload check.
pub fn prepare(webhooks: &[Webhook]) -> Result<Vec<Arc<Target>>, PostError> {
    webhooks
        .iter()
        .map(|webhook| Target::new(webhook).map(Arc::new))
        .collect()
}

struct Webhooks {
    gateway: Arc<Gateway>,
    cursors: Arc<Cursors>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Webhooks {
    /// Runs one generation of delivery tasks per configuration: a reload
    /// ends the running one and starts the new one.
    async fn supervise(self, targets: Vec<Arc<Target>>) {
        let mut records = self.gateway.bus().subscribe();
        let mut generation = self.launch(&targets);
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return,
                next = records.next() => next,
            };
            match next {
                Ok(record)
                    if matches!(record.event, AuditEvent::ConfigReloaded { ok: true, .. }) =>
                {
                    match prepare(&self.gateway.config().webhooks) {
                        Ok(targets) => {
                            generation.cancel();
                            generation = self.launch(&targets);
                        }
                        Err(error) => {
                            tracing::error!(%error, "webhooks unchanged by the reload");
                        }
                    }
                }
                Ok(_) => {}
                Err(SubscriptionEnded::TooSlow(_)) => records = self.gateway.bus().subscribe(),
                Err(SubscriptionEnded::Closed) => return,
            }
        }
    }

    fn launch(&self, targets: &[Arc<Target>]) -> CancellationToken {
        let keys: BTreeSet<String> = targets.iter().map(|t| t.key().to_string()).collect();
        self.cursors.retain(&keys);
        let generation = self.stop.child_token();
        for target in targets {
            let follower = follow::Follower::new(
                self.gateway.clone(),
                target.clone(),
                self.cursors.clone(),
                generation.clone(),
            );
            self.tasks.spawn(follower.run());
        }
        generation
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
    let ctx = crate::workflow::Context::of(&config, chrono::Utc::now());
    gateway.read(|engine| engine.approvers_now(&ctx, id))
}

fn count(outcome: &'static str) {
    metrics::counter!("jitgate_webhook_deliveries_total", "outcome" => outcome).increment(1);
}
