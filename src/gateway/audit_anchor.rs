//! Keeping the audit chain's head in the state directory (see
//! `audit::anchor`), so that a log cut short while the gateway is down is
//! noticed at its next start.
//!
//! Every record moves the saved head at once, without waiting for the disk
//! (a rename under the audit lock, in step with the append), so even records
//! written just before the process is killed are covered; a timer makes the
//! saved head durable within about a second, for power losses.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::{Anchor, AuditRecord};

use super::Gateway;

/// Where the audit chain is and how far it goes, readable without waiting
/// for a write in progress (which holds the audit lock through its fsync).
pub(super) struct AuditHead {
    /// The file the chain continues in (older files are rotated away).
    log: PathBuf,
    /// Where the head is saved: fixed at start like the journal's
    /// directory, whatever a reload says.
    anchor: PathBuf,
    /// The newest record's seq; 0 while the chain is empty.
    seq: AtomicU64,
}

impl AuditHead {
    pub(super) fn new(log: PathBuf, anchor: PathBuf, head: Option<&Anchor>) -> Self {
        Self {
            log,
            anchor,
            seq: AtomicU64::new(head.map_or(0, |head| head.seq)),
        }
    }

    fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }
}

impl Gateway {
    /// Makes the saved head durable. Called at start and at shutdown; every
    /// record already moved it.
    pub fn sync_audit_anchor(&self) {
        if self.audit_head.seq() > 0 {
            sync_anchor_file(&self.audit_head.anchor);
        }
    }

    /// Moves the saved head to `record`, just appended under the audit
    /// lock (which keeps saves in the order of the records).
    pub(super) fn follow_audit_head(&self, record: &AuditRecord) {
        let head = Anchor {
            seq: record.seq,
            hash: record.hash.clone(),
        };
        let path = &self.audit_head.anchor;
        if let Err(e) = crate::audit::save_anchor(path, &head) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save the audit head");
        }
        self.audit_head.seq.store(record.seq, Ordering::Release);
    }

    /// Makes the saved head durable whenever it moved, once a second.
    pub async fn run_audit_anchor(self: Arc<Self>, shutdown: CancellationToken) {
        let mut synced = self.audit_head.seq();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let head = self.audit_head.seq();
            if head != synced {
                let path = self.audit_head.anchor.clone();
                let _ = tokio::task::spawn_blocking(move || sync_anchor_file(&path)).await;
                synced = head;
            }
        }
    }

    /// The file the audit chain continues in, and its newest record's seq
    /// (0 while empty): where a follower that fell behind reads on from.
    pub fn audit_position(&self) -> (PathBuf, u64) {
        (self.audit_head.log.clone(), self.audit_head.seq())
    }
}

fn sync_anchor_file(path: &std::path::Path) {
    if let Err(e) = crate::fsutil::sync_file(path) {
        tracing::warn!(error = %e, path = %path.display(), "cannot make the saved audit head durable");
    }
}
