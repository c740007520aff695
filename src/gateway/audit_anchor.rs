//! Keeping the audit chain's head in the state directory (see
//! `audit::anchor`), so that a log cut short while the gateway is down is
//! noticed at its next start.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::Anchor;

use super::Gateway;

impl Gateway {
    /// Saves the audit log's current head. Called at start and at shutdown.
    pub fn save_audit_anchor(&self) {
        if let Some(head) = self.audit_head() {
            self.write_audit_anchor(&head);
        }
    }

    /// Keeps the saved head within about a second of the log's.
    pub async fn run_audit_anchor(self: Arc<Self>, shutdown: CancellationToken) {
        let mut saved = self.audit_head();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let head = self.audit_head();
            if head != saved
                && let Some(moved) = head.clone()
            {
                let gateway = self.clone();
                let _ =
                    tokio::task::spawn_blocking(move || gateway.write_audit_anchor(&moved)).await;
                saved = head;
            }
        }
    }

    fn audit_head(&self) -> Option<Anchor> {
        self.core.lock().audit.head()
    }

    fn write_audit_anchor(&self, head: &Anchor) {
        let path = crate::audit::anchor_path(&self.config().state_dir);
        if let Err(e) = crate::audit::save_anchor(&path, head) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save the audit head");
        }
    }
}
