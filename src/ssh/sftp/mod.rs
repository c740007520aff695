//! The file log of an SFTP channel (`sftp`, and `scp`, which speaks SFTP
//! since OpenSSH 9.0), or of a legacy SCP one (`scp`): which files were
//! opened for reading or writing and how many bytes moved through each,
//! which directories were listed and how many names each gave, and every
//! remove, rename, mkdir, rmdir, attribute change, link and server-side
//! copy, with how the target answered. JSON
//! lines next to the recordings, digested as written like them. The relay
//! passes every byte on unchanged; this only watches.

mod codec;
pub(crate) mod scp;

pub use scp::ScpCommand;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::LiveEvent;
use crate::audit::{Digesting, FileDigest, create_evidence_file};
use crate::sessions::{LiveRecording, RecordingKind};
use codec::{Packets, Reply, Request, open_mode, parse_reply, parse_request, status_text};

/// Requests awaiting a reply, and files open, beyond which new ones are
/// not followed: a client cannot grow the gateway's memory without bound.
const FOLLOWED: usize = 10_000;

/// One line of the file log.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub op: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For `open`: the mode asked for, and the bytes read and written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_bytes: Option<u64>,
    /// For `list`: the names the directory gave (its `.` and `..` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<u64>,
    pub outcome: String,
}

impl Entry {
    /// An entry for `op` on `path`, its outcome still to come.
    fn new(op: &'static str, path: String, target: Option<String>) -> Self {
        Self {
            op,
            path,
            target,
            mode: None,
            read_bytes: None,
            written_bytes: None,
            names: None,
            outcome: String::new(),
        }
    }
}

/// A file or directory the target handed out a handle for.
struct OpenFile {
    path: String,
    use_: Use,
    /// Which open it was (from 0), so files left open are logged in order.
    number: u64,
}

/// What a handle is for, and what went through it.
enum Use {
    File {
        mode: String,
        read: u64,
        written: u64,
    },
    Listing {
        names: u64,
    },
}

impl OpenFile {
    fn entry(self, outcome: &str) -> Entry {
        let mut entry = Entry::new("open", self.path, None);
        match self.use_ {
            Use::File {
                mode,
                read,
                written,
            } => {
                entry.mode = Some(mode);
                entry.read_bytes = Some(read);
                entry.written_bytes = Some(written);
            }
            Use::Listing { names } => {
                entry.op = "list";
                entry.names = Some(names);
            }
        }
        entry.outcome = outcome.to_string();
        entry
    }
}

enum Pending {
    Open { path: String, use_: Use },
    Read(Vec<u8>),
    ReadDir(Vec<u8>),
    Write(Vec<u8>, u64),
    Close(Vec<u8>),
    Change(Entry),
}

/// Pairs requests with replies; pure, so it is unit-tested alone.
#[derive(Default)]
pub struct Tracker {
    requests: Packets,
    replies: Packets,
    pending: HashMap<u32, Pending>,
    open: HashMap<Vec<u8>, OpenFile>,
    opens: u64,
}

impl Tracker {
    /// Bytes the client sent (requests).
    pub fn client_sent(&mut self, data: &[u8]) {
        let mut requests = std::mem::take(&mut self.requests);
        requests.feed(data, &mut |packet| {
            if let Some(request) = parse_request(packet) {
                self.request(request);
            }
        });
        self.requests = requests;
    }

    /// Bytes the target sent (replies); returns the entries they complete.
    pub fn target_sent(&mut self, data: &[u8]) -> Vec<Entry> {
        let mut done = Vec::new();
        let mut replies = std::mem::take(&mut self.replies);
        replies.feed(data, &mut |packet| {
            if let Some(reply) = parse_reply(packet) {
                done.extend(self.reply(reply));
            }
        });
        self.replies = replies;
        done
    }

    /// Files still open when the channel ends.
    pub fn unclosed(&mut self) -> Vec<Entry> {
        let mut files: Vec<OpenFile> = self.open.drain().map(|(_, file)| file).collect();
        files.sort_by_key(|file| file.number);
        files
            .into_iter()
            .map(|file| file.entry("not closed (channel ended)"))
            .collect()
    }

    fn request(&mut self, request: Request) {
        if self.pending.len() >= FOLLOWED {
            return;
        }
        let (id, pending) = match request {
            Request::Open { id, path, flags } => {
                let use_ = Use::File {
                    mode: open_mode(flags),
                    read: 0,
                    written: 0,
                };
                (id, Pending::Open { path, use_ })
            }
            Request::OpenDir { id, path } => {
                let use_ = Use::Listing { names: 0 };
                (id, Pending::Open { path, use_ })
            }
            Request::Read { id, handle } => (id, Pending::Read(handle)),
            Request::ReadDir { id, handle } => (id, Pending::ReadDir(handle)),
            Request::Write { id, handle, bytes } => (id, Pending::Write(handle, bytes)),
            Request::Close { id, handle } => (id, Pending::Close(handle)),
            Request::Change {
                id,
                op,
                path,
                target,
            } => (id, Pending::Change(Entry::new(op, path, target))),
            Request::HandleChange { id, op, handle } => (
                id,
                Pending::Change(Entry::new(op, self.path_of(&handle), None)),
            ),
            Request::Copy { id, from, to } => {
                let entry = Entry::new("copy", self.path_of(&from), Some(self.path_of(&to)));
                (id, Pending::Change(entry))
            }
        };
        self.pending.insert(id, pending);
    }

    fn opened(&mut self, path: String, use_: Use) -> OpenFile {
        self.opens += 1;
        OpenFile {
            path,
            use_,
            number: self.opens,
        }
    }

    /// The path an open handle was opened with, as the log names it.
    fn path_of(&self, handle: &[u8]) -> String {
        self.open.get(handle).map_or_else(
            || "(a file opened before the log followed)".into(),
            |file| file.path.clone(),
        )
    }

    fn use_of(&mut self, handle: &[u8]) -> Option<&mut Use> {
        self.open.get_mut(handle).map(|file| &mut file.use_)
    }

    fn reply(&mut self, reply: Reply) -> Option<Entry> {
        let id = match &reply {
            Reply::Status { id, .. }
            | Reply::Handle { id, .. }
            | Reply::Data { id, .. }
            | Reply::Name { id, .. } => *id,
        };
        let pending = self.pending.remove(&id)?;
        match (pending, reply) {
            (Pending::Open { path, use_ }, Reply::Handle { handle, .. }) => {
                if self.open.len() >= FOLLOWED {
                    return None;
                }
                let file = self.opened(path, use_);
                // A server handing out a handle still open breaks the
                // protocol; the file it replaces is still logged.
                let replaced = self.open.insert(handle, file)?;
                Some(replaced.entry("not closed (the server reused its handle)"))
            }
            (Pending::Open { path, use_ }, Reply::Status { code, .. }) => {
                Some(self.opened(path, use_).entry(status_text(code)))
            }
            (Pending::Read(handle), Reply::Data { bytes, .. }) => {
                if let Some(Use::File { read, .. }) = self.use_of(&handle) {
                    *read += bytes;
                }
                None
            }
            (Pending::ReadDir(handle), Reply::Name { count, .. }) => {
                if let Some(Use::Listing { names }) = self.use_of(&handle) {
                    *names += u64::from(count);
                }
                None
            }
            (Pending::Write(handle, bytes), Reply::Status { code: 0, .. }) => {
                if let Some(Use::File { written, .. }) = self.use_of(&handle) {
                    *written += bytes;
                }
                None
            }
            (Pending::Close(handle), Reply::Status { code, .. }) => {
                let file = self.open.remove(&handle)?;
                Some(file.entry(status_text(code)))
            }
            (Pending::Change(mut entry), Reply::Status { code, .. }) => {
                entry.outcome = status_text(code).to_string();
                Some(entry)
            }
            _ => None,
        }
    }
}

/// One line as written: the entry with its time.
#[derive(Serialize)]
struct Line<'a> {
    time: chrono::DateTime<chrono::Utc>,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// What a file log follows: an SFTP channel, or a legacy SCP one.
enum Follower {
    Sftp(Tracker),
    Scp(scp::Tracker),
}

/// A channel's file log: `DIR/<name>.sftp.jsonl` for SFTP and
/// `DIR/<name>.scp.jsonl` for SCP (0600), each line also published for
/// live followers.
pub struct FileLog {
    path: PathBuf,
    file: Digesting<File>,
    follower: Follower,
    lines: u64,
    live: tokio::sync::broadcast::Sender<LiveEvent>,
    /// A write failed: the channel must not go on unlogged.
    failed: bool,
}

impl FileLog {
    /// The log of an SFTP channel.
    pub fn sftp(dir: &Path, name: &str) -> std::io::Result<Self> {
        Self::create(
            dir,
            &format!("{name}.sftp.jsonl"),
            Follower::Sftp(Tracker::default()),
        )
    }

    /// The log of an SCP channel running `command`.
    pub fn scp(dir: &Path, name: &str, command: ScpCommand) -> std::io::Result<Self> {
        let follower = Follower::Scp(scp::Tracker::new(command));
        Self::create(dir, &format!("{name}.scp.jsonl"), follower)
    }

    fn create(dir: &Path, file_name: &str, follower: Follower) -> std::io::Result<Self> {
        let (path, file) = create_evidence_file(dir, file_name)?;
        Ok(Self {
            path,
            file,
            follower,
            lines: 0,
            live: tokio::sync::broadcast::channel(1024).0,
            failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `follow` needs: the file for catch-up and the live stream.
    pub fn live(&self) -> LiveRecording {
        LiveRecording {
            kind: RecordingKind::FileLog,
            flush: None,
            path: self.path.clone(),
            events: self.live.clone(),
        }
    }

    pub fn client_sent(&mut self, data: &[u8]) {
        match &mut self.follower {
            Follower::Sftp(tracker) => tracker.client_sent(data),
            Follower::Scp(tracker) => {
                let done = tracker.client_sent(data);
                self.write(&done);
            }
        }
    }

    /// Whether anything failed to reach the file.
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn target_sent(&mut self, data: &[u8]) {
        let done = match &mut self.follower {
            Follower::Sftp(tracker) => tracker.target_sent(data),
            Follower::Scp(tracker) => tracker.target_sent(data),
        };
        self.write(&done);
    }

    /// Logs the files left open; the digest of the whole log.
    pub fn finish(&mut self) -> FileDigest {
        let left = match &mut self.follower {
            Follower::Sftp(tracker) => tracker.unclosed(),
            Follower::Scp(tracker) => tracker.unclosed(),
        };
        self.write(&left);
        self.file.digest()
    }

    fn write(&mut self, entries: &[Entry]) {
        for entry in entries {
            let line = Line {
                time: chrono::Utc::now(),
                entry,
            };
            let mut text = serde_json::to_vec(&line).unwrap_or_default();
            text.push(b'\n');
            if let Err(e) = self.file.write_all(&text) {
                if !self.failed {
                    tracing::error!(error = %e, path = %self.path.display(), "file log write failed; the channel is ended");
                }
                self.failed = true;
            }
            self.lines += 1;
            let line = String::from_utf8_lossy(&text[..text.len() - 1]);
            let _ = self.live.send(LiveEvent {
                index: self.lines,
                line: line.as_ref().into(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
