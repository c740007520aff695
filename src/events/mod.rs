//! The in-process event bus that `watch`, `audit tail -f` and notifications
//! subscribe to. Every audit record is published here once it is on disk.
//!
//! The bus is bounded and never blocks the publisher: a subscriber that falls
//! more than `capacity` records behind is dropped with a notice instead of
//! slowing the engine or growing memory. Readers that must not miss a
//! record (`audit tail -f`, `watch`, webhooks) use a [`ChainReader`], which reads
//! what they missed from the audit log on disk.

mod chain;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::audit::AuditRecord;

pub use chain::{ChainError, ChainReader};

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<AuditRecord>>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionEnded {
    #[error(
        "you fell {0} events behind and were disconnected from the live stream; reconnect to continue"
    )]
    TooSlow(u64),
    #[error("the gateway is shutting down")]
    Closed,
}

pub struct Subscription {
    receiver: broadcast::Receiver<Arc<AuditRecord>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    pub fn publish(&self, record: Arc<AuditRecord>) {
        // No subscribers is the normal idle case, not an error.
        let _ = self.sender.send(record);
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
        }
    }

    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Subscription {
    /// The next record, or why the stream ended. After `TooSlow` the
    /// subscription is finished: callers report it and stop.
    pub async fn next(&mut self) -> Result<Arc<AuditRecord>, SubscriptionEnded> {
        match self.receiver.recv().await {
            Ok(record) => Ok(record),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics::counter!("jitgate_event_subscribers_dropped_total").increment(1);
                Err(SubscriptionEnded::TooSlow(missed))
            }
            Err(broadcast::error::RecvError::Closed) => Err(SubscriptionEnded::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn record(seq: u64) -> Arc<AuditRecord> {
        Arc::new(AuditRecord {
            seq,
            ts: String::new(),
            prev: String::new(),
            event: AuditEvent::GatewayStopped,
            hash: String::new(),
        })
    }

    #[tokio::test]
    async fn subscribers_receive_records_in_order() {
        let bus = EventBus::new(16);
        let mut sub = bus.subscribe();
        bus.publish(record(1));
        bus.publish(record(2));
        assert_eq!(sub.next().await.unwrap().seq, 1);
        assert_eq!(sub.next().await.unwrap().seq, 2);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_without_blocking_the_publisher() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        for seq in 0..100 {
            bus.publish(record(seq));
        }
        assert!(matches!(
            slow.next().await,
            Err(SubscriptionEnded::TooSlow(96))
        ));
        let mut fresh = bus.subscribe();
        bus.publish(record(100));
        assert_eq!(fresh.next().await.unwrap().seq, 100);
    }
}
