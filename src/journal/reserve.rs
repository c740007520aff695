//! The journal's reserve: a small file of fixed size, written out in full
//! when the journal opens, where records that could not be appended to
//! `journal.log` are kept durably until they can be. (The audit log keeps
//! one of its own, of the same make: see `audit::reserve`.)
//!
//! Its point is the full disk: overwriting blocks a file already owns
//! needs no free space on filesystems that write in place (ext4, xfs), so
//! a change that only ends access (a revocation, say) is still on disk
//! when the journal cannot grow, and survives a crash. (A failing disk or
//! a copy-on-write filesystem may refuse the reserve too; the caller then
//! falls back to memory.)
//!
//! Layout: two slots of [`SLOT_BYTES`], written alternately so that a
//! write torn by a crash leaves the other slot whole. A slot is
//! `[generation: u64 LE][len: u32 LE][crc32: u32 LE][len bytes of journal
//! frames]`, the CRC covering generation, length and frames; the valid
//! slot with the higher generation is the reserve's content. Frames carry
//! the sequence numbers the records will have in `journal.log`, so records
//! that reached it since are told apart from those still waiting.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::frame::{decode_frames, encode_frame};

pub(super) const RESERVE_FILE: &str = "journal.reserve";
/// Room for several hundred held records, far more than an outage makes.
pub const SLOT_BYTES: usize = 128 * 1024;
const HEADER: usize = 8 + 4 + 4;

/// Journal frames as sequence number and payload, oldest first.
pub type Frames = Vec<(u64, Vec<u8>)>;

pub struct Reserve {
    path: PathBuf,
    file: File,
    /// The generation of the slot written last (0: none yet).
    generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("reserve {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal reserve {path} is full: {needed} bytes of waiting records, room for {SLOT_BYTES}"
    )]
    Full { path: PathBuf, needed: usize },
    #[error("the reserve could not be set up when the gateway started")]
    Unavailable,
    #[error(
        "reserve {path} holds record {seq} where what it serves continues with {expected}; refusing to start rather than lose records (restore the state as a whole)"
    )]
    OutOfStep {
        path: PathBuf,
        seq: u64,
        expected: u64,
    },
    #[error("reserve {path}: record {seq} does not decode: {problem}")]
    Undecodable {
        path: PathBuf,
        seq: u64,
        problem: String,
    },
}

impl Reserve {
    /// Opens the reserve at `path`, creating and writing it out in full if
    /// it is missing or not whole; returns it with the frames it holds
    /// (sequence number and payload, oldest first). A reserve that cannot
    /// be written out (the disk is full already) is not returned, but what
    /// it holds is.
    pub fn open(path: &Path) -> Result<(Option<Self>, Frames), ReserveError> {
        let path = path.to_path_buf();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |source| ReserveError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (generation, frames) = newest_slot(&bytes);
        if bytes.len() != 2 * SLOT_BYTES {
            let allocated = allocate(&mut file, &bytes).and_then(|()| crate::fsutil::sync_dir(dir));
            if let Err(e) = allocated {
                tracing::warn!(error = %io(e), "cannot write the journal reserve out; records the journal cannot take will wait in memory only");
                return Ok((None, frames));
            }
        }
        let reserve = Self {
            path,
            file,
            generation,
        };
        Ok((Some(reserve), frames))
    }

    /// Opens the reserve at `path` for a log whose next record is
    /// `next_seq`; returns the frames waiting in it (earlier ones reached
    /// the log since). One that could not be created (a disk full already)
    /// is no error: records that cannot be written then wait in memory.
    pub fn open_waiting(
        path: &Path,
        next_seq: u64,
    ) -> Result<(Option<Self>, Frames), ReserveError> {
        let existed = path.exists();
        let (reserve, frames) = match Self::open(path) {
            Ok(opened) => opened,
            Err(e) if !existed => {
                tracing::warn!(error = %e, "cannot set up a reserve; records that cannot be written will wait in memory only");
                return Ok((None, Vec::new()));
            }
            // One that may hold records must be read.
            Err(e) => return Err(e),
        };
        let waiting: Frames = frames
            .into_iter()
            .filter(|(seq, _)| *seq >= next_seq)
            .collect();
        for ((seq, _), expected) in waiting.iter().zip(next_seq..) {
            if *seq != expected {
                return Err(ReserveError::OutOfStep {
                    path: path.to_path_buf(),
                    seq: *seq,
                    expected,
                });
            }
        }
        Ok((reserve, waiting))
    }

    /// Makes `frames` (whole journal frames, oldest first) the reserve's
    /// content, durably, replacing what it held.
    pub fn keep(&mut self, frames: &[u8]) -> Result<(), ReserveError> {
        if HEADER + frames.len() > SLOT_BYTES {
            return Err(ReserveError::Full {
                path: self.path.clone(),
                needed: frames.len(),
            });
        }
        let generation = self.generation + 1;
        let slot = encode_slot(generation, frames);
        let offset = (generation % 2) * SLOT_BYTES as u64;
        self.file
            .write_all_at(&slot, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| ReserveError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.generation = generation;
        Ok(())
    }

    /// Empties the reserve: its records reached the journal.
    pub fn clear(&mut self) -> Result<(), ReserveError> {
        self.keep(&[])
    }

    /// Puts `file` in the reserve file's place (a failing one, in tests).
    #[cfg(test)]
    pub(crate) fn replace_file(&mut self, file: File) -> File {
        std::mem::replace(&mut self.file, file)
    }
}

/// Writes the file out to its full size with real zeros (not a hole), so
/// that its blocks are the file's own before any disk fills up.
fn allocate(file: &mut File, old: &[u8]) -> std::io::Result<()> {
    let mut whole = vec![0u8; 2 * SLOT_BYTES];
    // Keep what a shorter or longer file held in its slots: a reserve is
    // never thrown away, only rewritten in full.
    let kept = old.len().min(whole.len());
    whole[..kept].copy_from_slice(&old[..kept]);
    file.set_len(0)?;
    file.write_all_at(&whole, 0)?;
    file.sync_all()
}

fn encode_slot(generation: u64, frames: &[u8]) -> Vec<u8> {
    let len = frames.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&generation.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(frames);
    let mut slot = Vec::with_capacity(HEADER + frames.len());
    slot.extend_from_slice(&generation.to_le_bytes());
    slot.extend_from_slice(&len.to_le_bytes());
    slot.extend_from_slice(&crc.finalize().to_le_bytes());
    slot.extend_from_slice(frames);
    slot
}

/// A slot's generation and frames, if it is whole.
fn decode_slot(slot: &[u8]) -> Option<(u64, Frames)> {
    let header = slot.get(..HEADER)?;
    let generation = u64::from_le_bytes(header[..8].try_into().ok()?);
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let frames = slot.get(HEADER..HEADER + len as usize)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..12]);
    hasher.update(frames);
    if hasher.finalize() != crc {
        return None;
    }
    // Whole by its CRC, so every frame in it is too.
    let decoded = decode_frames(frames).ok()?;
    (decoded.valid_len == frames.len() as u64).then_some((generation, decoded.frames))
}

/// The newest whole slot's generation and frames; none at all when
/// neither slot was ever written whole.
fn newest_slot(bytes: &[u8]) -> (u64, Frames) {
    bytes
        .chunks(SLOT_BYTES)
        .take(2)
        .filter_map(decode_slot)
        .max_by_key(|(generation, _)| *generation)
        .unwrap_or_default()
}

/// The frames of `records` as the journal will write them, the first with
/// sequence number `first_seq`.
pub fn frames_from(first_seq: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads
        .iter()
        .zip(first_seq..)
        .flat_map(|(payload, seq)| encode_frame(seq, payload))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(texts: &[&str]) -> Vec<Vec<u8>> {
        texts.iter().map(|t| t.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_new_reserve_is_written_out_in_full_and_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (reserve, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
        assert!(reserve.is_some() && frames.is_empty());
        let file = dir.path().join(RESERVE_FILE);
        let metadata = std::fs::metadata(&file).unwrap();
        assert_eq!(metadata.len(), 2 * SLOT_BYTES as u64);
        // Real blocks, not a hole: 512-byte units for every byte.
        use std::os::unix::fs::MetadataExt;
        assert!(metadata.blocks() * 512 >= metadata.len(), "sparse reserve");
    }

    #[test]
    fn what_was_kept_last_comes_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut reserve = Reserve::open(&dir.path().join(RESERVE_FILE))
            .unwrap()
            .0
            .unwrap();
        reserve
            .keep(&frames_from(7, &payloads(&["first"])))
            .unwrap();
        reserve
            .keep(&frames_from(7, &payloads(&["first", "second"])))
            .unwrap();
        drop(reserve);
        let (reserve, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
        let mut reserve = reserve.unwrap();
        assert_eq!(
            frames,
            vec![(7, b"first".to_vec()), (8, b"second".to_vec())]
        );
        reserve.clear().unwrap();
        drop(reserve);
        let (_, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
        assert!(frames.is_empty());
    }

    #[test]
    fn a_write_torn_at_any_byte_leaves_the_previous_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut reserve = Reserve::open(&dir.path().join(RESERVE_FILE))
            .unwrap()
            .0
            .unwrap();
        let before = frames_from(3, &payloads(&["revoke 1"]));
        reserve.keep(&before).unwrap();
        let path = dir.path().join(RESERVE_FILE);
        let whole_before = std::fs::read(&path).unwrap();
        let next = encode_slot(2, &frames_from(3, &payloads(&["revoke 1", "deny 2"])));
        for cut in 0..next.len() {
            let mut torn = whole_before.clone();
            torn[..cut].copy_from_slice(&next[..cut]);
            std::fs::write(&path, &torn).unwrap();
            let (_, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
            assert_eq!(frames, vec![(3, b"revoke 1".to_vec())], "cut at {cut}");
        }
    }

    #[test]
    fn more_than_a_slot_holds_is_refused_and_the_content_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut reserve = Reserve::open(&dir.path().join(RESERVE_FILE))
            .unwrap()
            .0
            .unwrap();
        reserve
            .keep(&frames_from(1, &payloads(&["small"])))
            .unwrap();
        let huge = vec![vec![b'x'; SLOT_BYTES]];
        let refused = reserve.keep(&frames_from(2, &huge)).unwrap_err();
        assert!(matches!(refused, ReserveError::Full { .. }), "{refused}");
        drop(reserve);
        let (_, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
        assert_eq!(frames, vec![(1, b"small".to_vec())]);
    }

    #[test]
    fn a_failing_write_is_reported_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut reserve = Reserve::open(&dir.path().join(RESERVE_FILE))
            .unwrap()
            .0
            .unwrap();
        reserve.keep(&frames_from(1, &payloads(&["kept"]))).unwrap();
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let real = reserve.replace_file(full);
        assert!(
            reserve
                .keep(&frames_from(1, &payloads(&["kept", "lost"])))
                .is_err()
        );
        reserve.replace_file(real);
        drop(reserve);
        let (_, frames) = Reserve::open(&dir.path().join(RESERVE_FILE)).unwrap();
        assert_eq!(frames, vec![(1, b"kept".to_vec())]);
    }
}
