//! The chain's head kept in the state directory, so that records cut off
//! the end of the audit log while the gateway was down are noticed at its
//! next start. (A chain alone cannot show it: what is left still chains.)
//!
//! The head is saved about once a second and at shutdown, so a crash loses
//! at most the last second of that protection, never a false alarm: after a
//! crash the log is ahead of the saved head, which is fine.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain_files;

/// A chain head recorded outside the log, written `SEQ:HASH` (as `audit
/// verify` prints it; `audit tail -n 1 --json` shows both fields). A chain
/// alone cannot tell that its newest records were cut off; checked against
/// an anchor kept elsewhere, it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("{text:?} is not SEQ:HASH (e.g. 120:3f5a...)");
        let (seq, hash) = text.split_once(':').ok_or_else(malformed)?;
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(malformed)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        Ok(Self {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Where the head is kept: beside the journal, away from the log.
pub fn anchor_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.head")
}

/// The saved head, `None` if none was saved yet.
pub fn load_anchor(path: &Path) -> Result<Option<Anchor>, String> {
    match std::fs::read_to_string(path) {
        // A power loss right after an unsynced save can leave the file
        // empty; deleting it would hide as much, so it is no alarm.
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(), "the saved audit head is empty: not checked");
            Ok(None)
        }
        Ok(text) => text.trim().parse().map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Saves `anchor` without waiting for the disk: cheap enough for every
/// record, and it survives the process being killed at once;
/// `fsutil::sync_file` makes it durable.
pub fn save_anchor(path: &Path, anchor: &Anchor) -> std::io::Result<()> {
    crate::fsutil::write_replacing(path, format!("{anchor}\n").as_bytes(), 0o600)
}

/// What is wrong if the log at `log_path` (with its rotated files), whose
/// newest record is `head`, no longer holds `anchor`.
pub fn check_anchor(log_path: &Path, head: Option<&Anchor>, anchor: &Anchor) -> Option<String> {
    let last_seq = head.map_or(0, |h| h.seq);
    if last_seq < anchor.seq {
        return Some(format!(
            "the audit log ends at seq {last_seq} but the gateway last wrote seq {}: records {} to {} were removed",
            anchor.seq,
            last_seq + 1,
            anchor.seq
        ));
    }
    // After a clean stop the log's head is the saved one: nothing to read.
    let hash = match head {
        Some(head) if head.seq == anchor.seq => Some(head.hash.clone()),
        _ => hash_at(log_path, anchor.seq),
    };
    match hash {
        Some(hash) if hash == anchor.hash => None,
        Some(_) => Some(format!(
            "record seq {} is not the one the gateway wrote: the audit log was rewritten",
            anchor.seq
        )),
        None => Some(format!(
            "record seq {} is missing from the audit log",
            anchor.seq
        )),
    }
}

/// The hash of record `seq`, searching from the newest file backwards (the
/// saved head is nearly always among the last records).
fn hash_at(log_path: &Path, seq: u64) -> Option<String> {
    for file in chain_files(log_path).ok()?.iter().rev() {
        let text = std::fs::read_to_string(file).ok()?;
        for line in text.lines().rev() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match record.get("seq").and_then(Value::as_u64) {
                Some(found) if found == seq => {
                    return record.get("hash")?.as_str().map(String::from);
                }
                Some(found) if found < seq => return None,
                _ => {}
            }
        }
    }
    None
}
