//! The file log of a legacy SCP channel (`scp -O`, PuTTY's `pscp -scp`):
//! the remote side runs `scp -t` (receiving) or `scp -f` (sending) as the
//! channel's command, and the two speak rcp's protocol over the channel.
//! (WinSCP's SCP mode types its commands into a shell channel instead,
//! which is recorded as a shell.)
//!
//! The sending side writes control lines (`C0644 SIZE NAME`, `D0755 0
//! NAME`, `E`, `T...`), each file's data after its `C` line and a zero
//! byte after the data; the receiving side answers each of those with one
//! acknowledgement: a zero byte, or 1 (warning) or 2 (fatal) and a message
//! line. The log pairs them: each file with its size and how the receiver
//! answered, each directory the receiver was asked to create.

use std::collections::VecDeque;

use super::Entry;

/// Control lines longer than this are not followed (rcp's own limit is
/// the path length).
const LINE_LIMIT: usize = 8 * 1024;
/// Lines awaiting an answer, and entries awaiting their outcome, beyond
/// which the log stops following the channel.
const FOLLOWED: usize = 10_000;

/// Which way files move, and where, from the command the target runs.
#[derive(Debug, PartialEq, Eq)]
pub struct ScpCommand {
    /// True for `scp -t` (files come from the client).
    pub upload: bool,
    /// What top-level names are placed under: the target directory of an
    /// upload to a directory, the directory of a single download path.
    base: Option<String>,
    /// An upload's destination when it may name the file itself.
    destination: Option<String>,
    /// The one path named, for a sender's error about it.
    single: Option<String>,
}

impl ScpCommand {
    /// Parses `scp [-r] [-p] [-d] [-v] -t|-f [--] PATH...`; None for any
    /// other command.
    pub fn parse(command: &str) -> Option<Self> {
        let words = shell_words::split(command).ok()?;
        let (program, rest) = words.split_first()?;
        if program.rsplit('/').next() != Some("scp") {
            return None;
        }
        let mut upload = None;
        let mut into_directory = false;
        let mut paths = Vec::new();
        let mut options_done = false;
        for word in rest {
            match word.as_str() {
                "--" if !options_done => options_done = true,
                flag if flag.starts_with('-') && !options_done => {
                    for letter in flag.chars().skip(1) {
                        match letter {
                            't' => upload = Some(true),
                            'f' => upload = Some(false),
                            'd' | 'r' => into_directory = true,
                            _ => {}
                        }
                    }
                }
                path => paths.push(path.to_string()),
            }
        }
        let upload = upload?;
        let single = match paths.as_slice() {
            [path] => Some(path.clone()),
            _ => None,
        };
        let (base, destination) = match (upload, single.clone()) {
            (true, Some(path)) if into_directory => (Some(path), None),
            (true, Some(path)) => (None, Some(path)),
            (false, Some(path)) => (parent(&path), None),
            (_, None) => (None, None),
        };
        Some(Self {
            upload,
            base,
            destination,
            single,
        })
    }
}

fn parent(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", _)) => Some("/".into()),
        Some((dir, _)) => Some(dir.to_string()),
        None => None,
    }
}

fn join(dir: Option<&str>, name: &str) -> String {
    match dir {
        Some("/") => format!("/{name}"),
        Some(dir) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// What the next acknowledgement answers.
#[derive(Debug)]
enum Awaiting {
    /// The receiver's first byte: ready (or why not).
    Ready,
    /// A `T` line or an `E` line.
    Other,
    /// A `C` line: the file may be refused before its data.
    FileStart(usize),
    /// The zero byte after a file's data: whether it was written.
    FileEnd(usize),
    /// A `D` line: whether the directory could be made.
    Directory(usize),
}

/// Where the sender's stream is.
#[derive(Debug)]
enum Sending {
    Line(Vec<u8>),
    /// Data of file `entry` still to come, then its zero byte.
    Data {
        entry: usize,
        remaining: u64,
    },
    /// The zero byte after file `entry`'s data; whether the answer to the
    /// whole file is awaited already (see `data_complete`).
    DataEnd {
        entry: usize,
        end_awaited: bool,
    },
    /// Something the log does not understand: it stops following.
    Lost,
}

/// Where the receiver's stream is.
#[derive(Debug)]
enum Answering {
    Ack,
    Message(u8, Vec<u8>),
}

/// Pairs an SCP channel's control lines with their answers; pure.
pub struct Tracker {
    command: ScpCommand,
    sending: Sending,
    answering: Answering,
    awaiting: VecDeque<Awaiting>,
    directories: Vec<String>,
    /// Entries not written out yet, oldest first.
    entries: VecDeque<Entry>,
    /// The number of the oldest of them (entries are numbered from 0).
    written: usize,
}

impl Tracker {
    pub fn new(command: ScpCommand) -> Self {
        Self {
            command,
            sending: Sending::Line(Vec::new()),
            answering: Answering::Ack,
            awaiting: VecDeque::from([Awaiting::Ready]),
            directories: Vec::new(),
            entries: VecDeque::new(),
            written: 0,
        }
    }

    /// Bytes the client sent; returns the entries they complete.
    pub fn client_sent(&mut self, data: &[u8]) -> Vec<Entry> {
        self.from(true, data)
    }

    /// Bytes the target sent; returns the entries they complete.
    pub fn target_sent(&mut self, data: &[u8]) -> Vec<Entry> {
        self.from(false, data)
    }

    fn from(&mut self, client: bool, data: &[u8]) -> Vec<Entry> {
        if client == self.command.upload {
            self.sent(data);
        } else {
            self.answered(data);
        }
        self.finished()
    }

    /// Entries still open when the channel ends.
    pub fn unclosed(&mut self) -> Vec<Entry> {
        self.written += self.entries.len();
        self.entries
            .drain(..)
            .map(|mut entry| {
                if entry.outcome.is_empty() {
                    entry.outcome = "not finished (channel ended)".into();
                }
                entry
            })
            .collect()
    }

    /// The entries whose outcome is known, in order.
    fn finished(&mut self) -> Vec<Entry> {
        let mut done = Vec::new();
        while self
            .entries
            .front()
            .is_some_and(|entry| !entry.outcome.is_empty())
        {
            done.extend(self.entries.pop_front());
            self.written += 1;
        }
        done
    }

    /// Adds an entry; returns its number.
    fn add(&mut self, entry: Entry) -> usize {
        self.entries.push_back(entry);
        self.written + self.entries.len() - 1
    }

    fn entry_mut(&mut self, number: usize) -> Option<&mut Entry> {
        self.entries.get_mut(number.checked_sub(self.written)?)
    }

    fn sent(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.sending {
                Sending::Lost => return,
                Sending::Line(line) => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let take = end.map_or(data.len(), |at| at + 1);
                    line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if line.len() > LINE_LIMIT {
                        self.sending = Sending::Lost;
                    } else if end.is_some() {
                        let line = std::mem::take(line);
                        self.control_line(&line);
                    }
                }
                Sending::Data { entry, remaining } => {
                    let take = (*remaining).min(data.len() as u64);
                    *remaining -= take;
                    data = &data[take as usize..];
                    if *remaining == 0 {
                        let entry = *entry;
                        self.data_complete(entry);
                    }
                }
                Sending::DataEnd { entry, end_awaited } => {
                    // A sender that ran ahead of the answer to its file's
                    // start.
                    if !*end_awaited {
                        self.awaiting.push_back(Awaiting::FileEnd(*entry));
                    }
                    // A sender that failed reading the file says so in an
                    // error line instead of the zero byte.
                    let line = if data[0] == 0 {
                        Vec::new()
                    } else {
                        vec![data[0]]
                    };
                    self.sending = Sending::Line(line);
                    data = &data[1..];
                }
            }
        }
    }

    /// File `entry`'s data is all sent: the receiver's next answer is to
    /// the whole file. It is awaited from here, not from the sender's zero
    /// byte after the data, since some receivers (PuTTY's pscp) answer
    /// without waiting for that byte, so their answer may pass it.
    fn data_complete(&mut self, entry: usize) {
        self.awaiting.push_back(Awaiting::FileEnd(entry));
        self.sending = Sending::DataEnd {
            entry,
            end_awaited: true,
        };
    }

    fn control_line(&mut self, line: &[u8]) {
        // A sender waits for each answer; one that runs far ahead of them
        // is not followed further, so it cannot grow the gateway's memory.
        if self.awaiting.len() >= FOLLOWED || self.entries.len() >= FOLLOWED {
            self.sending = Sending::Lost;
            return;
        }
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)).into_owned();
        let mut next = Sending::Line(Vec::new());
        match text.as_bytes().first() {
            Some(b'C' | b'D') => {
                let mut fields = text[1..].splitn(3, ' ');
                let (Some(_mode), Some(size), Some(name)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    self.sending = Sending::Lost;
                    return;
                };
                let Ok(size) = size.parse::<u64>() else {
                    self.sending = Sending::Lost;
                    return;
                };
                let path = self.path_of(name);
                if text.starts_with('D') {
                    // Downloads log the files a directory holds, not the
                    // directory the client makes for them.
                    if self.command.upload {
                        let entry = self.add(mkdir_entry(path));
                        self.awaiting.push_back(Awaiting::Directory(entry));
                    } else {
                        self.awaiting.push_back(Awaiting::Other);
                    }
                    self.directories.push(name.to_string());
                } else {
                    let entry = self.add(self.file_entry(path, size));
                    self.awaiting.push_back(Awaiting::FileStart(entry));
                    next = match size {
                        // Complete once the receiver takes the file.
                        0 => Sending::DataEnd {
                            entry,
                            end_awaited: false,
                        },
                        remaining => Sending::Data { entry, remaining },
                    };
                }
            }
            Some(b'E') => {
                self.directories.pop();
                self.awaiting.push_back(Awaiting::Other);
            }
            Some(b'T') => self.awaiting.push_back(Awaiting::Other),
            // A sender that cannot send a file (a download of a missing
            // one) says why instead.
            Some(&level @ (1 | 2)) => {
                let kind = if level == 1 { "warning" } else { "error" };
                self.refused_whole(format!("{kind}: {}", text[1..].trim()));
            }
            _ => next = Sending::Lost,
        }
        self.sending = next;
    }

    /// Where a name in the stream lands, as far as the command tells.
    fn path_of(&self, name: &str) -> String {
        if let (true, Some(destination)) = (self.directories.is_empty(), &self.command.destination)
        {
            return destination.clone();
        }
        let mut path = self.command.base.clone();
        for directory in &self.directories {
            path = Some(join(path.as_deref(), directory));
        }
        join(path.as_deref(), name)
    }

    /// An entry for a transfer refused as a whole, under the one path the
    /// command named.
    fn refused_whole(&mut self, outcome: String) {
        let path = self
            .command
            .single
            .clone()
            .unwrap_or_else(|| "(unknown)".into());
        let mut entry = self.file_entry(path, 0);
        entry.outcome = outcome;
        self.add(entry);
    }

    fn file_entry(&self, path: String, size: u64) -> Entry {
        let (mode, read, written) = if self.command.upload {
            ("write,create,truncate", 0, size)
        } else {
            ("read", size, 0)
        };
        Entry {
            mode: Some(mode.into()),
            read_bytes: Some(read),
            written_bytes: Some(written),
            ..Entry::new("open", path, None)
        }
    }

    fn answered(&mut self, data: &[u8]) {
        for &byte in data {
            match &mut self.answering {
                Answering::Ack if byte == 0 => self.answer("ok"),
                Answering::Ack => self.answering = Answering::Message(byte, Vec::new()),
                Answering::Message(_, text) if byte != b'\n' => {
                    if text.len() < LINE_LIMIT {
                        text.push(byte);
                    }
                }
                Answering::Message(level, text) => {
                    let kind = if *level == 1 { "warning" } else { "error" };
                    let outcome = format!("{kind}: {}", String::from_utf8_lossy(text));
                    self.answering = Answering::Ack;
                    self.answer(&outcome);
                }
            }
        }
    }

    /// Gives the next awaited answer its outcome. A file refused before
    /// its data gets none (the sender goes on to its next line), and a
    /// directory refused gets no lines of its own.
    fn answer(&mut self, outcome: &str) {
        let refused = outcome != "ok";
        let entry = match self.awaiting.pop_front() {
            Some(Awaiting::FileStart(entry)) if refused => {
                if matches!(self.sending, Sending::Data { entry: e, .. } | Sending::DataEnd { entry: e, .. } if e == entry)
                {
                    self.sending = Sending::Line(Vec::new());
                }
                entry
            }
            Some(Awaiting::FileStart(entry)) => {
                if matches!(self.sending, Sending::DataEnd { entry: e, end_awaited: false } if e == entry)
                {
                    self.data_complete(entry);
                }
                return;
            }
            Some(Awaiting::Directory(entry)) => {
                if refused {
                    self.directories.pop();
                }
                entry
            }
            Some(Awaiting::FileEnd(entry)) => entry,
            // A receiver that cannot take anything (an upload into a
            // directory that is not there) says so before anything moves.
            Some(Awaiting::Ready) if refused => {
                self.refused_whole(outcome.to_string());
                return;
            }
            _ => return,
        };
        if let Some(entry) = self.entry_mut(entry)
            && entry.outcome.is_empty()
        {
            entry.outcome = outcome.to_string();
        }
    }
}

fn mkdir_entry(path: String) -> Entry {
    Entry::new("mkdir", path, None)
}

#[cfg(test)]
mod tests;
