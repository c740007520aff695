//! The durable journal: every acknowledged state change is on disk first.
//!
//! Layout in the state directory:
//! - `journal.log`: frames `[len: u32 LE][crc32: u32 LE][seq: u64 LE][payload]`,
//!   the CRC covering seq and payload. Appends are fsynced before returning.
//! - `snapshot.json`: `{ "seq": N, "state": ... }`, written atomically; frames
//!   with `seq <= N` are already folded into it.
//!
//! - `journal.reserve`: records the journal could not take (a full disk),
//!   kept durably until it can; see `reserve`.
//!
//! A crash mid-append leaves a torn last frame: it is detected on open,
//! reported and cut off; nothing before it is lost. A bad frame *followed by
//! more data* is not a torn write but corruption, and opening refuses.

mod frame;
pub(crate) mod reserve;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::fsutil;

pub use frame::{DecodedFrames, FrameError, decode_frames, encode_frame};
pub use reserve::ReserveError;
use reserve::{RESERVE_FILE, Reserve, frames_from};

const JOURNAL_FILE: &str = "journal.log";
const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal {path} is corrupt at byte {offset}: {problem}; refusing to start rather than lose state (restore it from backup)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("snapshot {path} is unreadable: {problem}")]
    BadSnapshot { path: PathBuf, problem: String },
    #[error("cannot encode a journal record: {0}")]
    Encode(String),
    #[error(transparent)]
    Reserve(#[from] ReserveError),
}

#[derive(Serialize, Deserialize)]
struct Snapshot<S> {
    seq: u64,
    state: S,
}

/// What `open` found: the snapshot state, the records after it, and whether
/// a torn tail was cut off.
pub struct Recovered<S, R> {
    pub snapshot: Option<S>,
    pub records: Vec<R>,
    /// Bytes of an incomplete final record that were dropped.
    pub dropped_tail: Option<u64>,
    /// How many of `records`, at their end, came from the reserve: changes
    /// made while the journal could not take them.
    pub from_reserve: usize,
    /// Whether those are still waiting in the reserve (the journal cannot
    /// take them now either): they are to be appended before anything else.
    pub still_reserved: bool,
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Where the file ends: its last whole frame.
    len: u64,
    /// A failed append or compaction may have left the file longer than
    /// `len` (part of a frame, on a full disk, or a frame whose fsync
    /// failed and which was reported as not recorded). It is cut back
    /// before anything else is appended; until that works, nothing is.
    unsure: bool,
    next_seq: u64,
    records_since_snapshot: u64,
    /// `None` if it could not be set up at open (the gateway runs on, as
    /// it did before reserves: waiting records are then held in memory).
    reserve: Option<Reserve>,
    /// The reserve holds records not yet in the journal.
    reserve_in_use: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and reads it back.
    pub fn open<S: DeserializeOwned, R: DeserializeOwned>(
        dir: &Path,
    ) -> Result<(Self, Recovered<S, R>), JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        fsutil::ensure_private_dir(dir).map_err(io(dir))?;
        let (snapshot_seq, snapshot) = read_snapshot::<S>(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let decoded = decode_frames(&bytes).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            offset: e.offset,
            problem: e.problem,
        })?;
        let dropped_tail = (decoded.valid_len < bytes.len() as u64)
            .then(|| bytes.len() as u64 - decoded.valid_len);
        if dropped_tail.is_some() {
            file.set_len(decoded.valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let mut records = Vec::new();
        let mut last_seq = snapshot_seq;
        for (seq, payload) in decoded.frames {
            last_seq = last_seq.max(seq);
            if seq <= snapshot_seq {
                continue;
            }
            let record = serde_json::from_slice(&payload).map_err(|e| JournalError::Corrupt {
                path: path.clone(),
                offset: 0,
                problem: format!("record {seq} does not decode: {e}"),
            })?;
            records.push(record);
        }
        let mut journal = Self {
            dir: dir.to_path_buf(),
            file,
            len: decoded.valid_len,
            unsure: false,
            next_seq: last_seq + 1,
            records_since_snapshot: records.len() as u64,
            reserve: None,
            reserve_in_use: false,
        };
        let (reserved, still_reserved) = journal.recover_reserve()?;
        let from_reserve = reserved.len();
        records.extend(reserved);
        Ok((
            journal,
            Recovered {
                snapshot,
                records,
                dropped_tail,
                from_reserve,
                still_reserved,
            },
        ))
    }

    /// Opens the reserve and takes back the records waiting in it (those
    /// after the journal's last): appended to the journal now if it takes
    /// them, else left waiting there. Returns them, and whether they wait.
    fn recover_reserve<R: DeserializeOwned>(&mut self) -> Result<(Vec<R>, bool), JournalError> {
        let path = self.dir.join(RESERVE_FILE);
        let (reserve, waiting) = Reserve::open_waiting(&path, self.next_seq)?;
        self.reserve = reserve;
        let mut records = Vec::with_capacity(waiting.len());
        for (seq, payload) in &waiting {
            let record =
                serde_json::from_slice(payload).map_err(|e| ReserveError::Undecodable {
                    path: path.clone(),
                    seq: *seq,
                    problem: e.to_string(),
                })?;
            records.push(record);
        }
        if waiting.is_empty() {
            return Ok((records, false));
        }
        let frames: Vec<u8> = waiting
            .iter()
            .flat_map(|(seq, payload)| encode_frame(*seq, payload))
            .collect();
        self.reserve_in_use = true;
        match self.append_frames(&frames, waiting.len() as u64) {
            Ok(()) => {
                self.release_reserve();
                Ok((records, false))
            }
            Err(e) => {
                tracing::error!(error = %e, "the journal cannot take the records waiting in its reserve yet");
                Ok((records, true))
            }
        }
    }

    /// Keeps `waiting` (records the journal could not take, oldest first,
    /// to be appended before anything else) in the reserve, durably: should
    /// the gateway stop first, the next open appends them.
    pub fn reserve<R: Serialize>(&mut self, waiting: &[R]) -> Result<(), JournalError> {
        let payloads = waiting
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JournalError::Encode(e.to_string()))?;
        let frames = frames_from(self.next_seq, &payloads);
        let reserve = self.reserve.as_mut().ok_or(ReserveError::Unavailable)?;
        reserve.keep(&frames)?;
        self.reserve_in_use = true;
        Ok(())
    }

    /// Empties the reserve once its records are in the journal. Failing
    /// is harmless: records the journal holds are skipped at the next open.
    pub fn release_reserve(&mut self) {
        let Some(reserve) = self.reserve.as_mut().filter(|_| self.reserve_in_use) else {
            return;
        };
        match reserve.clear() {
            Ok(()) => self.reserve_in_use = false,
            Err(e) => tracing::warn!(error = %e, "cannot empty the journal reserve"),
        }
    }

    /// Appends one record and fsyncs it. Only after this returns may the
    /// change be acknowledged. A failed append leaves the journal as it
    /// was: the change is not replayed at the next start either.
    pub fn append<R: Serialize>(&mut self, record: &R) -> Result<u64, JournalError> {
        let payload =
            serde_json::to_vec(record).map_err(|e| JournalError::Encode(e.to_string()))?;
        let seq = self.next_seq;
        self.append_frames(&encode_frame(seq, &payload), 1)?;
        Ok(seq)
    }

    /// Appends `count` whole frames numbered from `next_seq` on, fsynced.
    fn append_frames(&mut self, frames: &[u8], count: u64) -> Result<(), JournalError> {
        let started = Instant::now();
        self.cut_to_len().map_err(|source| self.io_error(source))?;
        let written = self
            .file
            .write_all(frames)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            self.unsure = true;
            if let Err(e) = self.cut_to_len() {
                tracing::error!(error = %e, "cannot cut a failed journal append back yet");
            }
            return Err(self.io_error(source));
        }
        metrics::histogram!("jitgate_journal_fsync_seconds")
            .record(started.elapsed().as_secs_f64());
        self.len += frames.len() as u64;
        self.next_seq += count;
        self.records_since_snapshot += count;
        Ok(())
    }

    /// Cuts the file back to its last whole frame if a failure left that
    /// in doubt.
    fn cut_to_len(&mut self) -> std::io::Result<()> {
        if self.unsure {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            self.unsure = false;
        }
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.dir.join(JOURNAL_FILE),
            source,
        }
    }

    /// Puts `file` in the journal file's place (a failing one, in tests).
    #[cfg(test)]
    pub(crate) fn replace_file(&mut self, file: File) -> File {
        std::mem::replace(&mut self.file, file)
    }

    /// Puts `file` in the reserve file's place (a failing one, in tests).
    #[cfg(test)]
    pub(crate) fn replace_reserve_file(&mut self, file: File) -> Option<File> {
        self.reserve.as_mut().map(|r| r.replace_file(file))
    }

    pub fn records_since_snapshot(&self) -> u64 {
        self.records_since_snapshot
    }

    /// Folds everything so far into a snapshot of `state` and starts an
    /// empty journal. Crash-safe at every step: the snapshot names the last
    /// sequence it contains, so a journal not yet emptied replays nothing twice.
    pub fn compact<S: Serialize>(&mut self, state: &S) -> Result<(), JournalError> {
        let seq = self.next_seq - 1;
        let snapshot = serde_json::to_vec(&Snapshot { seq, state })
            .map_err(|e| JournalError::Encode(e.to_string()))?;
        let snapshot_path = self.dir.join(SNAPSHOT_FILE);
        fsutil::write_atomic(&snapshot_path, &snapshot, 0o600).map_err(|source| {
            JournalError::Io {
                path: snapshot_path,
                source,
            }
        })?;
        // The snapshot holds every frame now, so an empty journal is right
        // from here on, whenever the cut succeeds.
        self.len = 0;
        self.unsure = true;
        self.records_since_snapshot = 0;
        self.cut_to_len().map_err(|source| self.io_error(source))
    }
}

fn read_snapshot<S: DeserializeOwned>(dir: &Path) -> Result<(u64, Option<S>), JournalError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let snapshot: Snapshot<S> =
                serde_json::from_slice(&bytes).map_err(|e| JournalError::BadSnapshot {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            Ok((snapshot.seq, Some(snapshot.state)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, None)),
        Err(source) => Err(JournalError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests;
