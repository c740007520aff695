//! Where each webhook stands in the audit chain: the seq of the last record
//! it has been sent, passed over (not asked for) or given up on. Kept in
//! `state_dir/webhook_cursors.json`, so records written while a receiver
//! or the gateway was down are sent once both are back, and a restart sends
//! again at most the records that were in flight.
//!
//! Webhooks are known by a digest of their URL: the file never holds a
//! URL, whose path is often the receiver's secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read {path}: {problem} (restore it from a backup; removing it makes every webhook start at the newest record, skipping any not yet sent)"
)]
pub struct CursorsError {
    path: PathBuf,
    problem: String,
}

type Positions = BTreeMap<String, u64>;

pub struct Cursors {
    path: PathBuf,
    positions: Mutex<Positions>,
    /// Saves one at a time, so an older snapshot never lands last.
    saving: tokio::sync::Mutex<()>,
}

/// The name a webhook's cursor is kept under.
pub fn key(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..12])
}

impl Cursors {
    pub fn load(state_dir: &Path) -> Result<Arc<Self>, CursorsError> {
        let path = state_dir.join("webhook_cursors.json");
        let positions = crate::fsutil::read_json_state(&path).map_err(|problem| CursorsError {
            path: path.clone(),
            problem,
        })?;
        Ok(Arc::new(Self {
            path,
            positions: Mutex::new(positions),
            saving: tokio::sync::Mutex::new(()),
        }))
    }

    /// Where the webhook `key` stands; one met for the first time starts
    /// after `head`, the newest record: a new webhook gets what happens from
    /// now on, not the history. A position past `head` belongs to a chain
    /// since moved aside and started anew, and starts after `head` too.
    pub fn begin(&self, key: &str, head: u64) -> u64 {
        let mut positions = self.positions.lock();
        let position = positions.entry(key.to_string()).or_insert(head);
        *position = (*position).min(head);
        *position
    }

    /// Moves `key` past `seq` (in memory; `save` writes it). Never back:
    /// a generation a reload replaced may still finish a record.
    pub fn advance(&self, key: &str, seq: u64) {
        let mut positions = self.positions.lock();
        let position = positions.entry(key.to_string()).or_default();
        *position = (*position).max(seq);
    }

    /// Forgets webhooks that are no longer configured.
    pub fn retain(&self, keys: &BTreeSet<String>) {
        self.positions.lock().retain(|key, _| keys.contains(key));
    }

    /// Writes the positions to disk; a failure is logged, and the next save
    /// tries again (meanwhile a restart would send some records twice).
    pub async fn save(self: &Arc<Self>) {
        let _one_at_a_time = self.saving.lock().await;
        let snapshot = self.positions.lock().clone();
        let cursors = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?;
            crate::fsutil::write_atomic(&cursors.path, &bytes, 0o600)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(error) = written {
            tracing::error!(path = %self.path.display(), %error, "cannot record how far webhooks got");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn positions_survive_a_restart_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let cursors = Cursors::load(dir.path()).unwrap();
        let (kept, dropped) = (key("http://a/"), key("http://b/"));
        assert_eq!(cursors.begin(&kept, 7), 7);
        assert_eq!(cursors.begin(&dropped, 7), 7);
        cursors.advance(&kept, 9);
        cursors.advance(&kept, 8);
        cursors.retain(&BTreeSet::from([kept.clone()]));
        cursors.save().await;

        let again = Cursors::load(dir.path()).unwrap();
        assert_eq!(again.begin(&kept, 20), 9);
        assert_eq!(again.begin(&dropped, 20), 20);
        // A log moved aside: the new chain's head is behind the position.
        assert_eq!(again.begin(&kept, 3), 3);
        let text = std::fs::read_to_string(dir.path().join("webhook_cursors.json")).unwrap();
        assert!(!text.contains("http"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook_cursors.json"), "{\"x\": ").unwrap();
        let error = Cursors::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("webhook_cursors.json"), "{error}");
    }
}
