//! Session recordings, SFTP file logs and query logs, vouched for by the
//! audit chain.
//!
//! Each file a session writes is digested as it is written (exactly the
//! bytes the file accepted), and the record that closes the channel or
//! session carries the digest. Since that record is chained, editing,
//! truncating or swapping a recording afterwards shows: `audit verify
//! --files` digests each file again and compares.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a file held when its session closed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

/// A writer that digests what its inner writer accepts.
pub struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Digesting<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> FileDigest {
        FileDigest {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.clone().finalize()),
        }
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A new evidence file `dir/name` (0600; `dir` made private if missing),
/// never an existing one, digested from its first byte.
pub fn create_evidence_file(dir: &Path, name: &str) -> std::io::Result<(PathBuf, Digesting<File>)> {
    crate::fsutil::ensure_private_dir(dir)?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, Digesting::new(file)))
}

/// Digests a file as it is now.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut digesting = Digesting::new(std::io::sink());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            return Ok(digesting.digest());
        }
        digesting.write_all(&buf[..read])?;
    }
}

/// How the files a chain vouches for compare with what it recorded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EvidenceReport {
    pub intact: usize,
    /// Gone (a retention policy may have deleted them): (seq, file).
    pub missing: Vec<(u64, PathBuf)>,
    /// Changed since: (seq, file, what differs).
    pub altered: Vec<(u64, PathBuf, String)>,
}

/// Digests again every recording and query log named, with a digest, in
/// the records of `files` (a chain already verified).
pub fn check_evidence(files: &[PathBuf]) -> std::io::Result<EvidenceReport> {
    let mut report = EvidenceReport::default();
    for file in files {
        let text = std::fs::read_to_string(file)?;
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let seq = record["seq"].as_u64().unwrap_or_default();
            for (_, path, recorded) in vouched(&record["event"]) {
                check_one(&mut report, seq, path, &recorded);
            }
        }
    }
    Ok(report)
}

/// What a vouched-for file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// An SSH pty session's asciicast recording.
    Recording,
    /// A Postgres session's query log (JSON lines).
    QueryLog,
    /// An SFTP channel's file log (JSON lines).
    FileLog,
}

/// A file named with its digest in one record (`session_interrupted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceFile {
    pub kind: EvidenceKind,
    pub path: String,
    pub digest: FileDigest,
}

/// The files an event vouches for.
fn vouched(event: &Value) -> Vec<(EvidenceKind, PathBuf, FileDigest)> {
    let named = [
        (EvidenceKind::Recording, "recording", "recording_digest"),
        (EvidenceKind::QueryLog, "query_log", "query_log_digest"),
        (EvidenceKind::FileLog, "file_log", "file_log_digest"),
    ]
    .into_iter()
    .filter_map(|(kind, path, digest)| {
        let path = PathBuf::from(event.get(path)?.as_str()?);
        let digest = serde_json::from_value(event.get(digest)?.clone()).ok()?;
        Some((kind, path, digest))
    });
    let listed = event
        .get("files")
        .and_then(|files| serde_json::from_value::<Vec<EvidenceFile>>(files.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|file| (file.kind, PathBuf::from(file.path), file.digest));
    named.chain(listed).collect()
}

/// A file the chain vouches for, with the record that does.
#[derive(Debug, PartialEq, Eq)]
pub struct Vouched {
    pub seq: u64,
    pub kind: EvidenceKind,
    pub path: PathBuf,
    pub digest: FileDigest,
}

/// The recordings and query log of `session`, oldest first, from the
/// records of `files` (a chain's files, oldest first). Read newest first:
/// nothing of a session comes before its start, so older files are not
/// read once the start is found, and a recent session costs one file.
pub fn vouched_for_session(files: &[PathBuf], session: &str) -> std::io::Result<Vec<Vouched>> {
    let mut found = Vec::new();
    for file in files.iter().rev() {
        let (mut older, started_here) = vouched_in_file(file, session)?;
        older.append(&mut found);
        found = older;
        if started_here {
            break;
        }
    }
    Ok(found)
}

/// What one chain file vouches for of `session`, and whether the
/// session's start is in it.
fn vouched_in_file(file: &Path, session: &str) -> std::io::Result<(Vec<Vouched>, bool)> {
    let mut found = Vec::new();
    let mut started = false;
    let quoted = format!("\"{session}\"");
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    for line in std::io::BufRead::lines(reader) {
        let line = line?;
        // Most records are not about this session: skip them unparsed.
        if !line.contains(&quoted) {
            continue;
        }
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let event = &record["event"];
        if event["session"] != session {
            continue;
        }
        started |= event["type"] == "session_started";
        let seq = record["seq"].as_u64().unwrap_or_default();
        found.extend(
            vouched(event)
                .into_iter()
                .map(|(kind, path, digest)| Vouched {
                    seq,
                    kind,
                    path,
                    digest,
                }),
        );
    }
    Ok((found, started))
}

/// Reads a vouched-for file (up to `limit` bytes), if it is still what
/// the chain vouches for; else says what is wrong with it.
pub fn read_vouched(vouched: &Vouched, limit: u64) -> Result<Vec<u8>, String> {
    let name = vouched.path.display();
    if vouched.digest.bytes > limit {
        return Err(format!(
            "{name} holds {} bytes, more than {limit} can be shown here: read it on the gateway host",
            vouched.digest.bytes
        ));
    }
    let bytes = std::fs::read(&vouched.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{name} no longer exists"),
        _ => format!("{name} cannot be read: {e}"),
    })?;
    let mut digesting = Digesting::new(std::io::sink());
    digesting
        .write_all(&bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if digesting.digest() != vouched.digest {
        return Err(format!(
            "{name} changed since its session ended (audit record seq {}): not shown",
            vouched.seq
        ));
    }
    Ok(bytes)
}

fn check_one(report: &mut EvidenceReport, seq: u64, path: PathBuf, recorded: &FileDigest) {
    match digest_file(&path) {
        Ok(now) if now == *recorded => report.intact += 1,
        Ok(now) => {
            let problem = if now.bytes == recorded.bytes {
                "its content changed".to_string()
            } else {
                format!(
                    "it holds {} bytes where {} were written",
                    now.bytes, recorded.bytes
                )
            };
            report.altered.push((seq, path, problem));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.missing.push((seq, path)),
        Err(e) => report
            .altered
            .push((seq, path, format!("it cannot be read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_what_the_file_accepted_and_matches_a_fresh_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cast");
        let mut writer = Digesting::new(std::fs::File::create(&path).unwrap());
        writeln!(writer, "{{\"version\": 2}}").unwrap();
        writer.write_all(&[7u8; 100_000]).unwrap();
        let digest = writer.digest();
        assert_eq!(digest.bytes, 15 + 100_000);
        assert_eq!(digest_file(&path).unwrap(), digest);
        let empty = Digesting::new(std::io::sink()).digest();
        assert_eq!(
            empty.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn changed_truncated_and_deleted_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            (path.clone(), digest_file(&path).unwrap())
        };
        let files = [
            write("kept", "one\n"),
            write("edited", "rm -rf /\n"),
            write("cut", "two\nthree\n"),
            write("gone", "four\n"),
        ];
        std::fs::write(&files[1].0, "ls -la /\n").unwrap();
        std::fs::write(&files[2].0, "two\n").unwrap();
        std::fs::remove_file(&files[3].0).unwrap();
        let log = dir.path().join("audit.log");
        let lines: Vec<String> = files
            .iter()
            .enumerate()
            .map(|(i, (path, digest))| {
                serde_json::json!({
                    "seq": i + 1,
                    "event": {"type": "channel_ended", "recording": path, "recording_digest": digest},
                })
                .to_string()
            })
            .collect();
        std::fs::write(&log, lines.join("\n")).unwrap();

        let report = check_evidence(&[log]).unwrap();
        assert_eq!(report.intact, 1);
        assert_eq!(report.missing, vec![(4, files[3].0.clone())]);
        assert_eq!(
            report.altered,
            vec![
                (2, files[1].0.clone(), "its content changed".to_string()),
                (
                    3,
                    files[2].0.clone(),
                    "it holds 4 bytes where 10 were written".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_sessions_files_are_found_across_rotated_files_reading_back_only_to_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let digest = |text: &str| {
            let mut writer = Digesting::new(std::io::sink());
            writer.write_all(text.as_bytes()).unwrap();
            writer.digest()
        };
        let line = |seq: u64, event: serde_json::Value| {
            serde_json::json!({"seq": seq, "event": event}).to_string() + "\n"
        };
        let started =
            |session: &str| serde_json::json!({"type": "session_started", "session": session});
        let ended = |session: &str, file: &str| {
            serde_json::json!({"type": "channel_ended", "session": session,
                "recording": file, "recording_digest": digest(file)})
        };
        let rotated = dir.path().join("audit.log.1");
        let current = dir.path().join("audit.log");
        std::fs::write(
            &rotated,
            line(1, started("s-a")) + &line(2, ended("s-a", "a-1.cast")),
        )
        .unwrap();
        std::fs::write(
            &current,
            line(3, ended("s-a", "a-2.cast"))
                + &line(4, started("s-b"))
                + &line(5, ended("s-b", "b-1.cast")),
        )
        .unwrap();
        // Never there: reading it would fail, so it must not be read.
        let older = dir.path().join("audit.log.0");
        let files = [older, rotated, current];

        let paths = |session: &str| -> Vec<(u64, String)> {
            vouched_for_session(&files, session)
                .unwrap()
                .into_iter()
                .map(|v| (v.seq, v.path.display().to_string()))
                .collect()
        };
        assert_eq!(paths("s-b"), [(5, "b-1.cast".to_string())]);
        assert_eq!(
            paths("s-a"),
            [(2, "a-1.cast".to_string()), (3, "a-2.cast".to_string())]
        );
        assert!(vouched_for_session(&files, "s-never").is_err());
    }
}
