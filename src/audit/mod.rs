//! The tamper-evident audit log: JSON lines chained by SHA-256.
//!
//! Each line is `{"seq", "ts", "prev", "event", "hash"}` where `hash` is the
//! SHA-256 of the line's canonical JSON without `hash`, and `prev` is the
//! previous line's `hash` (64 zeros for the first). Editing, deleting or
//! swapping any line breaks the chain at that line; `verify` finds it.
//! When the file grows past its size limit it is renamed `FILE.N` and a new
//! one continues the same chain, so rotated files verify as one.
//!
//! A chain cannot show by itself that its newest records were cut off (what
//! is left is still a valid chain). For that, its head (seq and hash) must be
//! kept somewhere else: `verify` prints it, the `jitgate_audit_head_seq`
//! metric exports the seq, and `verify --anchor SEQ:HASH` checks a log
//! against a head recorded earlier.
//!
//! Records that end a recorded session carry the digest of its recording
//! or query log, so the chain vouches for those files too (`evidence`).

mod anchor;
mod backlog;
mod event;
mod evidence;
mod held;
mod reserve;
mod verify;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::fsutil;

pub use anchor::{Anchor, anchor_path, check_anchor, load_anchor, save_anchor};
pub use backlog::records_after;
pub use event::{AuditEvent, Protocol};
pub use evidence::{
    Digesting, EvidenceFile, EvidenceKind, EvidenceReport, FileDigest, Vouched, check_evidence,
    create_evidence_file, digest_file, read_vouched, vouched_for_session,
};
pub use held::Recorded;
pub use verify::{VerifyError, VerifyReport, chain_files, verify_against, verify_files};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} ends in a record that cannot be continued: {problem}")]
    BadTail { path: PathBuf, problem: String },
    #[error("audit log writes failed just now; {held} record(s) wait to be written")]
    Waiting { held: usize },
    #[error(transparent)]
    Reserve(#[from] crate::journal::ReserveError),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    pub event: AuditEvent,
    pub hash: String,
}

/// Text from the network or from users, bound for audit records and
/// other users' terminals: control characters dropped, at most
/// `max_chars` characters.
pub fn printable(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// SHA-256 of the canonical JSON of a record object without its `hash`.
pub(crate) fn record_hash(object: &Map<String, Value>) -> String {
    let without_hash: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| k.as_str() != "hash")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let canonical = Value::Object(without_hash).to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Why a batch was not written, and the batch itself.
type BatchFailed = (AuditError, Vec<(String, AuditEvent)>);

pub struct AuditLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotate_bytes: u64,
    next_seq: u64,
    prev: String,
    /// A write failed and its partial line could not be cut off yet: no
    /// record may follow it until it is.
    torn: bool,
    /// Records the log could not take yet (`held`).
    held: held::Held,
    /// Where held records are kept on disk (`reserve`); `None` if it
    /// could not be set up.
    reserve: Option<crate::journal::reserve::Reserve>,
}

impl AuditLog {
    /// Opens `path`, continuing the chain from its last record (or from the
    /// newest rotated file). A torn last line is cut off and reported in the
    /// returned byte count.
    pub fn open(path: &Path, rotate_bytes: u64) -> Result<(Self, Option<u64>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::ensure_private_dir(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let (valid_len, last) = scan_tail(path, &file)?;
        let total = file.metadata().map_err(io)?.len();
        let dropped = (valid_len < total).then(|| total - valid_len);
        if dropped.is_some() {
            file.set_len(valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let last = match last {
            Some(last) => Some(last),
            None => last_rotated(path)?.and_then(|rotated| last_head_of(&rotated)),
        };
        let (next_seq, prev) =
            last.map_or((1, GENESIS.to_string()), |head| (head.seq + 1, head.hash));
        let mut log = Self {
            path: path.to_path_buf(),
            file,
            size: valid_len,
            rotate_bytes,
            next_seq,
            prev,
            torn: false,
            held: held::Held::default(),
            reserve: None,
        };
        let found = log.recover_reserve()?;
        if found > 0 {
            tracing::warn!(
                records = found,
                "audit records held while the log could not take them were recovered from its reserve"
            );
        }
        Ok((log, dropped))
    }

    /// Appends `event`, chained to the previous record, and fsyncs it. A
    /// failed write leaves the chain as it was: no partial line stays.
    pub fn append(&mut self, event: AuditEvent) -> Result<Arc<AuditRecord>, AuditError> {
        let mut written = self.write_batch(vec![(now(), event)]).map_err(|(e, _)| e)?;
        Ok(written.remove(0))
    }

    /// Appends `batch` (each event with its time) in one write and one
    /// fsync: all of it or, when that fails, none of it (given back).
    fn write_batch(
        &mut self,
        batch: Vec<(String, AuditEvent)>,
    ) -> Result<Vec<Arc<AuditRecord>>, BatchFailed> {
        let (mut seq, mut prev) = (self.next_seq, self.prev.clone());
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        for (ts, event) in batch {
            let (line, hash) = encode_record(seq, &ts, &prev, &event);
            bytes.extend_from_slice(line.as_bytes());
            records.push(AuditRecord {
                seq,
                ts,
                prev: std::mem::replace(&mut prev, hash.clone()),
                event,
                hash,
            });
            seq += 1;
        }
        if let Err(e) = self.write_whole(&bytes) {
            return Err((e, records.into_iter().map(|r| (r.ts, r.event)).collect()));
        }
        self.next_seq = seq;
        self.prev = prev;
        Ok(records.into_iter().map(Arc::new).collect())
    }

    /// Writes whole records after the last whole record, rotating first
    /// when they would overfill the file.
    fn write_whole(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        self.cut_torn_line()?;
        if self.size > 0 && self.size + bytes.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        if let Err(source) = self.write_line(bytes) {
            self.cut_torn_line_after_failure();
            return Err(self.io_error(source));
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.file.write_all(line)?;
        self.file.sync_data()
    }

    /// A write that failed half-way (a full disk) may have left part of its
    /// line: cut back to the last whole record, now or before the next one.
    fn cut_torn_line_after_failure(&mut self) {
        self.torn = true;
        if let Err(e) = self.cut_torn_line() {
            tracing::error!(error = %e, "cannot cut a partly written audit record yet");
        }
    }

    fn cut_torn_line(&mut self) -> Result<(), AuditError> {
        if self.torn {
            let cut = self
                .file
                .set_len(self.size)
                .and_then(|()| self.file.sync_all());
            cut.map_err(|source| self.io_error(source))?;
            self.torn = false;
        }
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let number = last_rotated_number(&self.path)
            .map_err(io)?
            .map_or(1, |n| n + 1);
        let rotated = rotated_name(&self.path, number);
        std::fs::rename(&self.path, &rotated).map_err(io)?;
        let opened = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path);
        self.file = match opened {
            Ok(file) => file,
            Err(e) => {
                // Put the full file back, so records keep going to the
                // file named in the config (and a retry rotates again).
                let _ = std::fs::rename(&rotated, &self.path);
                return Err(io(e));
            }
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::sync_dir(dir).map_err(io)?;
        }
        self.size = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest record's seq and hash; `None` for an empty chain.
    pub fn head(&self) -> Option<Anchor> {
        (self.next_seq > 1).then(|| Anchor {
            seq: self.next_seq - 1,
            hash: self.prev.clone(),
        })
    }
}

/// One record's line (with its newline) and hash.
fn encode_record(seq: u64, ts: &str, prev: &str, event: &AuditEvent) -> (String, String) {
    let mut object = Map::new();
    object.insert("seq".into(), seq.into());
    object.insert("ts".into(), ts.into());
    object.insert("prev".into(), prev.into());
    object.insert(
        "event".into(),
        serde_json::to_value(event).unwrap_or(Value::Null),
    );
    let hash = record_hash(&object);
    object.insert("hash".into(), hash.clone().into());
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    (line, hash)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn rotated_name(path: &Path, number: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{number}"));
    PathBuf::from(name)
}

fn last_rotated_number(path: &Path) -> std::io::Result<Option<u64>> {
    Ok(chain_files(path)?
        .iter()
        .filter_map(|p| rotation_number(path, p))
        .max())
}

fn rotation_number(base: &Path, candidate: &Path) -> Option<u64> {
    let base_name = base.file_name()?.to_str()?;
    let name = candidate.file_name()?.to_str()?;
    name.strip_prefix(base_name)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

fn last_rotated(path: &Path) -> Result<Option<PathBuf>, AuditError> {
    let number = last_rotated_number(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(number.map(|n| rotated_name(path, n)))
}

fn last_head_of(path: &Path) -> Option<ChainHead> {
    chain_head(&last_line(path).ok()??)
}

/// The last line of a file, read from its end: rotated files are large,
/// and only their last record is wanted.
fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0; usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(newline) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(
                String::from_utf8_lossy(&body[newline + 1..]).into_owned(),
            ));
        }
        if start == 0 {
            return Ok((!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned()));
        }
        end = start;
    }
}

/// The chain position a record leaves behind: its sequence and hash.
struct ChainHead {
    seq: u64,
    hash: String,
}

fn chain_head(line: &str) -> Option<ChainHead> {
    let value: Value = serde_json::from_str(line).ok()?;
    Some(ChainHead {
        seq: value.get("seq")?.as_u64()?,
        hash: value.get("hash")?.as_str()?.to_string(),
    })
}

/// Finds the length of the prefix made of whole lines, and the chain head
/// left by the last of them. A final line without its newline is torn.
fn scan_tail(path: &Path, file: &File) -> Result<(u64, Option<ChainHead>), AuditError> {
    let mut reader = BufReader::new(file);
    let mut valid_len = 0u64;
    let mut last_line = None;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        valid_len += read as u64;
        last_line = Some(line.clone());
    }
    match last_line {
        None => Ok((valid_len, None)),
        Some(line) => chain_head(line.trim_end()).map(|head| (valid_len, Some(head))).ok_or_else(|| AuditError::BadTail {
            path: path.to_path_buf(),
            problem: "the last line has no seq/hash; run `jitgate audit verify` and move the file aside".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
