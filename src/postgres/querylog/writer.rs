//! The query log file: one JSON line per statement in
//! `DIR/<session>.jsonl` (0600), digested as written, with each line
//! published to live followers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::Statement;
use crate::audit::{Digesting, FileDigest, create_evidence_file};

/// One JSON line of a query log.
#[derive(Serialize)]
struct Line<'a> {
    time: chrono::DateTime<chrono::Utc>,
    session: &'a str,
    user: &'a str,
    resource: &'a str,
    #[serde(flatten)]
    statement: &'a Statement,
}

/// Appends a session's entries to `DIR/<session>.jsonl` (0600) and
/// publishes each line for live followers.
pub struct QueryLogWriter {
    pub path: PathBuf,
    file: Arc<parking_lot::Mutex<std::io::BufWriter<Digesting<std::fs::File>>>>,
    session: String,
    user: String,
    resource: String,
    lines: u64,
    live: tokio::sync::broadcast::Sender<crate::ssh::LiveEvent>,
    /// The line being written, kept to spare an allocation per statement.
    scratch: Vec<u8>,
}

impl QueryLogWriter {
    pub fn create(
        dir: &Path,
        session: &str,
        user: &str,
        resource: &str,
        live: tokio::sync::broadcast::Sender<crate::ssh::LiveEvent>,
    ) -> std::io::Result<Self> {
        let (path, file) = create_evidence_file(dir, &format!("{session}.jsonl"))?;
        Ok(Self {
            path,
            file: Arc::new(parking_lot::Mutex::new(std::io::BufWriter::new(file))),
            session: session.to_string(),
            user: user.to_string(),
            resource: resource.to_string(),
            lines: 0,
            live,
            scratch: Vec::with_capacity(512),
        })
    }

    pub fn write(&mut self, statement: &Statement) -> std::io::Result<()> {
        self.scratch.clear();
        serde_json::to_writer(
            &mut self.scratch,
            &Line {
                time: chrono::Utc::now(),
                session: &self.session,
                user: &self.user,
                resource: &self.resource,
                statement,
            },
        )
        .map_err(std::io::Error::other)?;
        self.scratch.push(b'\n');
        self.file.lock().write_all(&self.scratch)?;
        self.lines += 1;
        // A copy for live followers only when someone follows.
        if self.live.receiver_count() > 0 {
            let line = String::from_utf8_lossy(&self.scratch[..self.scratch.len() - 1]);
            let _ = self.live.send(crate::ssh::LiveEvent {
                index: self.lines,
                line: Arc::from(line.as_ref()),
            });
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().flush()
    }

    /// What the file holds, once flushed.
    pub fn digest(&self) -> FileDigest {
        self.file.lock().get_ref().digest()
    }

    /// A handle that flushes this log from elsewhere (a follower).
    pub fn flusher(&self) -> crate::sessions::Flush {
        let file = self.file.clone();
        Arc::new(move || {
            let _ = file.lock().flush();
        })
    }
}

/// Reads a query log back, numbered like the live events.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<(u64, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line.to_string()))
        .collect())
}
