//! The parts of SFTP (version 3, what OpenSSH speaks) the file log needs:
//! packet boundaries in a byte stream, and the requests and replies that
//! name files or directories, or move their bytes or names. Everything
//! else passes unread.

/// How much of a packet is kept for parsing: names and handles fit, the
/// data of a READ reply or WRITE request need not (only its length is read).
const CAPTURE: usize = 8 * 1024;

/// Finds packet boundaries as bytes pass, keeping each packet's head.
#[derive(Default)]
pub struct Packets {
    length: [u8; 4],
    have: usize,
    remaining: usize,
    head: Vec<u8>,
}

impl Packets {
    /// Walks `data`, calling `on_packet(head)` for each packet that ends in
    /// it (`head` is its first bytes, type first).
    pub fn feed(&mut self, mut data: &[u8], on_packet: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.have < 4 {
                let n = (4 - self.have).min(data.len());
                self.length[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 4 {
                    self.remaining = u32::from_be_bytes(self.length) as usize;
                    self.head.clear();
                    if self.remaining == 0 {
                        self.have = 0;
                    }
                }
                continue;
            }
            let n = self.remaining.min(data.len());
            let room = CAPTURE.saturating_sub(self.head.len()).min(n);
            self.head.extend_from_slice(&data[..room]);
            self.remaining -= n;
            data = &data[n..];
            if self.remaining == 0 {
                on_packet(&self.head);
                self.have = 0;
            }
        }
    }
}

/// A client request the log follows.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Open {
        id: u32,
        path: String,
        flags: u32,
    },
    Read {
        id: u32,
        handle: Vec<u8>,
    },
    Write {
        id: u32,
        handle: Vec<u8>,
        bytes: u64,
    },
    Close {
        id: u32,
        handle: Vec<u8>,
    },
    /// opendir: a directory listing begins.
    OpenDir {
        id: u32,
        path: String,
    },
    /// readdir: the next names of a listing.
    ReadDir {
        id: u32,
        handle: Vec<u8>,
    },
    /// remove, mkdir, rmdir, setstat, rename, symlink, hardlink.
    Change {
        id: u32,
        op: &'static str,
        path: String,
        target: Option<String>,
    },
    /// fsetstat: an attribute change through an open file's handle.
    HandleChange {
        id: u32,
        op: &'static str,
        handle: Vec<u8>,
    },
    /// copy-data (sftp's `copy`, OpenSSH 9.0+; named as in the IETF
    /// draft, without @openssh.com): the server copies from one open file
    /// into another, no data passing by.
    Copy {
        id: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// A server reply the log follows.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Status {
        id: u32,
        code: u32,
    },
    Handle {
        id: u32,
        handle: Vec<u8>,
    },
    Data {
        id: u32,
        bytes: u64,
    },
    /// SSH_FXP_NAME: how many names a readdir (or realpath) returned.
    Name {
        id: u32,
        count: u32,
    },
}

/// Reads SFTP's big-endian integers and length-prefixed strings.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A string's length, and as much of it as was captured.
    fn string(&mut self) -> Option<(u32, &'a [u8])> {
        let length = self.u32()?;
        let available = (length as usize).min(self.0.len());
        Some((length, self.take(available)?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        Some(self.string()?.1.to_vec())
    }

    fn text(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.string()?.1).into_owned())
    }
}

pub fn parse_request(packet: &[u8]) -> Option<Request> {
    let mut r = Reader(packet);
    let kind = r.u8()?;
    let id = r.u32()?;
    let change = |op, path, target| {
        Some(Request::Change {
            id,
            op,
            path,
            target,
        })
    };
    match kind {
        3 => {
            let path = r.text()?;
            let flags = r.u32()?;
            Some(Request::Open { id, path, flags })
        }
        4 => Some(Request::Close {
            id,
            handle: r.bytes()?,
        }),
        5 => Some(Request::Read {
            id,
            handle: r.bytes()?,
        }),
        6 => {
            let handle = r.bytes()?;
            r.take(8)?;
            let (bytes, _) = r.string()?;
            Some(Request::Write {
                id,
                handle,
                bytes: bytes.into(),
            })
        }
        9 => change("setstat", r.text()?, None),
        10 => Some(Request::HandleChange {
            id,
            op: "setstat",
            handle: r.bytes()?,
        }),
        11 => Some(Request::OpenDir {
            id,
            path: r.text()?,
        }),
        12 => Some(Request::ReadDir {
            id,
            handle: r.bytes()?,
        }),
        13 => change("remove", r.text()?, None),
        14 => change("mkdir", r.text()?, None),
        15 => change("rmdir", r.text()?, None),
        18 => change("rename", r.text()?, Some(r.text()?)),
        20 => change("symlink", r.text()?, Some(r.text()?)),
        200 => match r.text()?.as_str() {
            "posix-rename@openssh.com" => change("rename", r.text()?, Some(r.text()?)),
            "hardlink@openssh.com" => change("hardlink", r.text()?, Some(r.text()?)),
            "lsetstat@openssh.com" => change("setstat", r.text()?, None),
            "copy-data" => {
                let from = r.bytes()?;
                r.take(16)?; // read offset and length
                Some(Request::Copy {
                    id,
                    from,
                    to: r.bytes()?,
                })
            }
            _ => None,
        },
        _ => None,
    }
}

pub fn parse_reply(packet: &[u8]) -> Option<Reply> {
    let mut r = Reader(packet);
    let kind = r.u8()?;
    let id = r.u32()?;
    match kind {
        101 => Some(Reply::Status { id, code: r.u32()? }),
        102 => Some(Reply::Handle {
            id,
            handle: r.bytes()?,
        }),
        103 => Some(Reply::Data {
            id,
            bytes: r.string()?.0.into(),
        }),
        104 => Some(Reply::Name {
            id,
            count: r.u32()?,
        }),
        _ => None,
    }
}

/// What an SSH_FXP_STATUS code means, for the log.
pub fn status_text(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1 => "end of file",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        8 => "operation unsupported",
        _ => "error",
    }
}

/// An SSH_FXP_OPEN's pflags as words: read, write, append, create,
/// truncate, exclusive.
pub fn open_mode(flags: u32) -> String {
    const WORDS: [(u32, &str); 6] = [
        (1, "read"),
        (2, "write"),
        (4, "append"),
        (8, "create"),
        (16, "truncate"),
        (32, "exclusive"),
    ];
    let words: Vec<&str> = WORDS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, word)| *word)
        .collect();
    words.join(",")
}

#[cfg(test)]
pub(super) mod tests;
