//! Session recordings in asciicast v2 (what `asciinema play` replays),
//! written as the session runs, and published live for `follow`.
//!
//! Each event is written straight to the file (no user-space buffering), so
//! a crash loses nothing already relayed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::broadcast;

use crate::audit::{Digesting, FileDigest, create_evidence_file};

/// One recorded event line, numbered so a follower can join the file
/// catch-up and the live stream without gaps or repeats.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub index: u64,
    pub line: Arc<str>,
}

pub struct Recorder {
    path: PathBuf,
    file: Digesting<File>,
    started: Instant,
    /// Bytes of an incomplete UTF-8 sequence held back from the last chunk.
    carry: Vec<u8>,
    record_input: bool,
    /// Bytes of data recorded so far, and the most that may be.
    recorded: u64,
    limit: Option<u64>,
    stopped: bool,
    events: u64,
    live: broadcast::Sender<LiveEvent>,
    /// A write failed: the channel must not go on unrecorded.
    failed: bool,
}

impl Recorder {
    pub fn create(
        dir: &Path,
        name: &str,
        width: u32,
        height: u32,
        term: &str,
        record_input: bool,
    ) -> std::io::Result<Self> {
        let (path, mut file) = create_evidence_file(dir, &format!("{name}.cast"))?;
        let header = json!({
            "version": 2,
            "width": width.clamp(1, 10_000),
            "height": height.clamp(1, 10_000),
            "timestamp": chrono::Utc::now().timestamp(),
            "env": { "TERM": term },
        });
        writeln!(file, "{header}")?;
        let (live, _) = broadcast::channel(1024);
        Ok(Self {
            path,
            file,
            started: Instant::now(),
            carry: Vec::new(),
            record_input,
            recorded: 0,
            limit: None,
            stopped: false,
            events: 0,
            live,
            failed: false,
        })
    }

    /// Records at most `bytes` of data; then one event says so and the
    /// rest goes unrecorded.
    pub fn limited_to(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything failed to reach the file.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// What the file holds so far, byte for byte.
    pub fn digest(&self) -> FileDigest {
        self.file.digest()
    }

    /// What `follow` needs: the file for catch-up and the live stream.
    pub fn live(&self) -> crate::sessions::LiveRecording {
        crate::sessions::LiveRecording {
            kind: crate::sessions::RecordingKind::Asciicast,
            flush: None,
            path: self.path.clone(),
            events: self.live.clone(),
        }
    }

    pub fn output(&mut self, bytes: &[u8]) {
        let (bytes, cut) = self.within_limit(bytes);
        let text = self.decode(bytes);
        if !text.is_empty() {
            self.event("o", &text);
        }
        self.note_cut(cut);
    }

    pub fn input(&mut self, bytes: &[u8]) {
        if !self.record_input {
            return;
        }
        let (bytes, cut) = self.within_limit(bytes);
        if !bytes.is_empty() {
            self.event("i", &String::from_utf8_lossy(bytes));
        }
        self.note_cut(cut);
    }

    /// The part of `bytes` still within the limit, and whether the rest
    /// was cut off here (from then on nothing is recorded).
    fn within_limit<'a>(&mut self, bytes: &'a [u8]) -> (&'a [u8], bool) {
        let Some(limit) = self.limit else {
            return (bytes, false);
        };
        if self.stopped {
            return (&[], false);
        }
        let room = limit.saturating_sub(self.recorded);
        let taken = &bytes[..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        self.recorded += taken.len() as u64;
        self.stopped = taken.len() < bytes.len();
        (taken, self.stopped)
    }

    fn note_cut(&mut self, cut: bool) {
        if let (true, Some(limit)) = (cut, self.limit) {
            let note = format!("\r\n[jitgate] recording stopped after {limit} bytes\r\n");
            self.event("o", &note);
        }
    }

    pub fn resize(&mut self, width: u32, height: u32) {
        self.event("r", &format!("{width}x{height}"));
    }

    fn event(&mut self, kind: &str, data: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let line = json!([(elapsed * 1e6).round() / 1e6, kind, data]).to_string();
        if let Err(e) = writeln!(self.file, "{line}") {
            if !self.failed {
                tracing::error!(error = %e, path = %self.path.display(), "recording write failed; the channel is ended");
            }
            self.failed = true;
        }
        self.events += 1;
        let _ = self.live.send(LiveEvent {
            index: self.events,
            line: line.into(),
        });
    }

    /// Decodes output as UTF-8, holding back a sequence split across chunks.
    fn decode(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push('\u{fffd}');
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        text
    }
}

/// Reads the output events of a recording file, with their index.
pub fn read_events(path: &Path) -> std::io::Result<Vec<(u64, String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, line)| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((
                i as u64 + 1,
                value[1].as_str()?.to_string(),
                value[2].as_str()?.to_string(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_asciicast_v2_header_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::create(dir.path(), "s-1", 80, 24, "xterm", false).unwrap();
        recorder.output(b"hello\r\n");
        recorder.resize(100, 30);
        recorder.input(b"secret typing");
        let text = std::fs::read_to_string(recorder.path()).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            (
                header["version"].as_u64(),
                header["width"].as_u64(),
                header["height"].as_u64()
            ),
            (Some(2), Some(80), Some(24))
        );
        let output: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            (output[1].as_str(), output[2].as_str()),
            (Some("o"), Some("hello\r\n"))
        );
        let resize: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(resize[2], "100x30");
        assert!(
            lines.next().is_none(),
            "input is not recorded unless enabled"
        );
    }

    #[test]
    fn a_limited_recording_stops_where_the_limit_falls_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::create(dir.path(), "s-3", 80, 24, "dumb", true)
            .unwrap()
            .limited_to(10);
        recorder.input(b"cat\n");
        recorder.output(b"hello world");
        recorder.output(b"never seen");
        recorder.input(b"nor this");
        let events = read_events(recorder.path()).unwrap();
        let data: Vec<(&str, &str)> = events
            .iter()
            .map(|(_, kind, data)| (kind.as_str(), data.as_str()))
            .collect();
        assert_eq!(
            data,
            vec![
                ("i", "cat\n"),
                ("o", "hello "),
                ("o", "\r\n[jitgate] recording stopped after 10 bytes\r\n"),
            ]
        );
    }

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::create(dir.path(), "s-2", 80, 24, "xterm", true).unwrap();
        let snowman = "☃".as_bytes();
        recorder.output(&snowman[..1]);
        recorder.output(&snowman[1..]);
        recorder.output(&[0xff, b'a']);
        let events = read_events(recorder.path()).unwrap();
        assert_eq!(events[0].2, "☃");
        assert_eq!(events[1].2, "\u{fffd}a");
    }
}
