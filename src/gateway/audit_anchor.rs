//! Keeping the audit chain's head in the state directory (see
//! `audit::anchor`), so that a log cut short while the gateway is down is
//! noticed at its next start.
//!
//! Every record moves the saved head at once, without waiting for the disk
//! (a rename under the audit lock, in step with the append), so even records
//! written just before the process is killed are covered; a timer makes the
//! saved head durable within about a second, for power losses.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::{Anchor, AuditRecord};

use super::{AuditSide, Gateway};

impl Gateway {
    /// Makes the saved head durable. Called at start and at shutdown; every
    /// record already moved it.
    pub fn sync_audit_anchor(&self) {
        if self.audit_head().is_some() {
            sync_anchor_file(&self.audit.lock().anchor);
        }
    }

    /// Moves the saved head to `record`, just appended under `side`'s lock
    /// (which keeps saves in the order of the records).
    pub(super) fn follow_audit_head(side: &AuditSide, record: &AuditRecord) {
        let head = Anchor {
            seq: record.seq,
            hash: record.hash.clone(),
        };
        let path = &side.anchor;
        if let Err(e) = crate::audit::save_anchor(path, &head) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save the audit head");
        }
    }

    /// Makes the saved head durable whenever it moved, once a second.
    pub async fn run_audit_anchor(self: Arc<Self>, shutdown: CancellationToken) {
        let path = self.audit.lock().anchor.clone();
        let mut synced = self.audit_head();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let head = self.audit_head();
            if head != synced {
                let path = path.clone();
                let _ = tokio::task::spawn_blocking(move || sync_anchor_file(&path)).await;
                synced = head;
            }
        }
    }

    fn audit_head(&self) -> Option<Anchor> {
        self.audit.lock().log.head()
    }

    /// The file the audit chain continues in, and its newest record's seq
    /// (0 while empty): where a follower that fell behind reads on from.
    pub fn audit_position(&self) -> (std::path::PathBuf, u64) {
        let side = self.audit.lock();
        let head = side.log.head().map_or(0, |head| head.seq);
        (side.log.path().to_path_buf(), head)
    }
}

fn sync_anchor_file(path: &std::path::Path) {
    if let Err(e) = crate::fsutil::sync_file(path) {
        tracing::warn!(error = %e, path = %path.display(), "cannot make the saved audit head durable");
    }
}
