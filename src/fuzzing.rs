//! Entry points for the fuzz targets under `fuzz/` (cargo fuzz): each takes
//! arbitrary bytes, drives the code that reads what clients, targets or
//! the disk hand the gateway, and checks what must hold whatever the input:
//! no panic, the same result however a stream is cut into reads, every
//! statement or file accounted for once, memory within its bounds.
//!
//! The unit tests below run each entry over seeded pseudo-random and
//! mutated well-formed inputs, so CI keeps them compiling and honest; the
//! fuzzer explores much further (see the README).

use clap::Parser;

use crate::postgres::framer::Framer;
use crate::postgres::querylog::{self, Statement, StatementTracker};
use crate::postgres::{scram, wire};
use crate::ssh::sftp::{self, Entry, scp};

pub mod seeds;

/// The relay's cap on a message it reads in full (tests use a small one so
/// the fuzzer reaches it).
const MESSAGE_LIMIT: usize = 64 * 1024;

/// A small deterministic generator (xorshift): the same sequence for the
/// same seed, for the random walks and mutation tests.
pub struct Dice(pub u64);

impl Dice {
    pub fn number(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `sides` (0 when `sides` is 0).
    pub fn roll(&mut self, sides: usize) -> usize {
        (self.number() % sides.max(1) as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.roll(from.len())]
    }
}

/// Cuts `data` into reads of sizes drawn from `seed`: how a socket might
/// hand the same bytes over.
fn reads(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state % 23 + 1) as usize;
        let (read, tail) = rest.split_at(size.min(rest.len()));
        out.push(read);
        rest = tail;
    }
    out
}

/// `data` as (direction, bytes) segments: a header byte whose low bit picks
/// the direction, a length byte, then that many bytes.
fn segments(mut data: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    while let [header, length, rest @ ..] = data {
        let (bytes, tail) = rest.split_at((*length as usize).min(rest.len()));
        out.push((header & 1 == 1, bytes));
        data = tail;
    }
    out
}

/// The startup phase of a Postgres connection: the first packet, the
/// password message, and what the gateway reads of upstream errors and
/// key data.
pub fn postgres_startup(data: &[u8]) {
    if let Ok(wire::StartupPacket::Startup { params, .. }) = wire::parse_startup(data) {
        assert!(params.iter().all(|(key, _)| !key.is_empty()));
    }
    if let Some((&tag, body)) = data.split_first() {
        let _ = wire::password_from(tag, body);
    }
    let _ = wire::error_fields(data);
    let _ = wire::backend_key(data);
}

/// The relay's framing of a Postgres stream: the messages found must not
/// depend on how the stream is cut into reads.
pub fn postgres_framing(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frame(&[stream]);
    let cut = frame(&reads(stream, seed));
    assert_eq!(whole, cut, "framing depends on how reads are cut");
}

type Framed = (Vec<(u8, Vec<u8>)>, bool, usize);

/// The messages (tag, captured body), whether the stream broke the
/// protocol, and the bytes still owed at the end.
fn frame(reads: &[&[u8]]) -> Framed {
    let mut framer = Framer::new(|tag| tag != b'd', MESSAGE_LIMIT);
    let mut messages = Vec::new();
    for read in reads {
        if framer
            .feed(read, &mut |tag, body| messages.push((tag, body.to_vec())))
            .is_err()
        {
            return (messages, true, 0);
        }
        assert_eq!(framer.at_boundary(), framer.bytes_to_boundary() == 0);
    }
    (messages, false, framer.bytes_to_boundary())
}

/// The query log's pairing of client messages with server results: every
/// statement counted is logged exactly once (on its result, on overflow or
/// at the session's end), and entries stay within their size limits.
pub fn postgres_query_log(data: &[u8]) {
    let log_parameters = data.first().is_some_and(|b| b & 1 == 1);
    let mut tracker = StatementTracker::new(log_parameters);
    let mut logged: Vec<Statement> = Vec::new();
    for (from_client, bytes) in segments(data.get(1..).unwrap_or_default()) {
        let Some((&tag, body)) = bytes.split_first() else {
            continue;
        };
        let done = if from_client {
            tracker.client_message(tag, body)
        } else {
            tracker.server_message(tag, body)
        };
        logged.extend(done);
    }
    logged.extend(tracker.unfinished());
    assert_eq!(
        logged.len() as u64,
        tracker.statements,
        "a statement was lost or logged twice"
    );
    for statement in &logged {
        assert!(!statement.outcome.is_empty(), "a statement without outcome");
        // Segments are at most 255 bytes: one result, then the capped rest.
        assert!(statement.outcome.len() <= querylog::OUTCOME_LIMIT + 300);
    }
}

/// The upstream SCRAM exchange against whatever a server answers: a
/// malformed or hostile reply is an error, never a panic.
pub fn postgres_scram(data: &[u8]) {
    let (server_first, server_final) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &data[data.len()..]),
    };
    // PBKDF2 at a server-chosen count is bounded (10 million) but slow;
    // the fuzzer need not pay for it to explore the parsing.
    let cheap = std::str::from_utf8(server_first)
        .ok()
        .and_then(|text| scram::iteration_count(text).ok())
        .is_none_or(|iterations| iterations <= 64);
    if !cheap {
        return;
    }
    let cache = scram::KeyCache::default();
    let password = crate::secret::Secret::new("managed".to_string());
    let mut exchange = scram::Exchange::with_nonce(&cache, "db", &password, "", "nonce".into());
    if exchange.client_final(server_first).is_ok() {
        let _ = exchange.verify(server_final);
    }
    // The same bytes as a client's two messages to the gateway's side,
    // whose stand-in verifier (no lease) no proof may pass.
    let end_point = [7u8; 32];
    for (mechanism, binding) in [
        (scram::MECHANISM, None),
        (scram::server::MECHANISM_PLUS, Some(&end_point[..])),
    ] {
        let verifier = scram::server::Verifier::mock(&[0; 32], "fuzz");
        let started =
            scram::server::ServerExchange::start(verifier, binding, mechanism, server_first);
        if let Ok((exchange, _)) = started {
            assert!(
                exchange.finish(server_final).is_err(),
                "a stand-in verifier passed"
            );
        }
    }
}

/// The SFTP file log: requests and replies in any order, cut anyhow.
pub fn sftp_log(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let parts = segments(rest);
    let whole = sftp_entries(&parts, None);
    let cut = sftp_entries(&parts, Some(seed));
    assert_eq!(whole, cut, "the SFTP log depends on how reads are cut");
}

fn sftp_entries(parts: &[(bool, &[u8])], seed: Option<u8>) -> Vec<Entry> {
    let mut tracker = sftp::Tracker::default();
    let mut entries = Vec::new();
    for &(from_client, bytes) in parts {
        let pieces = seed.map_or_else(|| vec![bytes], |seed| reads(bytes, seed));
        for piece in pieces {
            if from_client {
                tracker.client_sent(piece);
            } else {
                entries.extend(tracker.target_sent(piece));
            }
        }
    }
    entries.extend(tracker.unclosed());
    entries
}

/// The legacy SCP file log: the command line, then both sides' bytes.
pub fn scp_log(data: &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &data[data.len()..]),
    };
    let line = String::from_utf8_lossy(line);
    if scp::ScpCommand::parse(&line).is_none() {
        return;
    }
    let Some((&seed, rest)) = rest.split_first() else {
        return;
    };
    let parts = segments(rest);
    let whole = scp_entries(&line, &parts, None);
    let cut = scp_entries(&line, &parts, Some(seed));
    assert_eq!(whole, cut, "the SCP log depends on how reads are cut");
}

fn scp_entries(line: &str, parts: &[(bool, &[u8])], seed: Option<u8>) -> Vec<Entry> {
    let Some(command) = scp::ScpCommand::parse(line) else {
        return Vec::new();
    };
    let mut tracker = scp::Tracker::new(command);
    let mut entries = Vec::new();
    for &(from_client, bytes) in parts {
        let pieces = seed.map_or_else(|| vec![bytes], |seed| reads(bytes, seed));
        for piece in pieces {
            if from_client {
                entries.extend(tracker.client_sent(piece));
            } else {
                entries.extend(tracker.target_sent(piece));
            }
        }
    }
    entries.extend(tracker.unclosed());
    for entry in &entries {
        assert!(!entry.outcome.is_empty(), "an SCP entry without outcome");
    }
    entries
}

/// What a user types after `ssh GW`, and the login name they connect as.
pub fn control_line(data: &[u8]) {
    if let Ok(args) = crate::control::split_line(data) {
        if let Err(error) = crate::control::ControlLine::try_parse_from(&args) {
            let _ = error.render().to_string();
        }
        let now = chrono::Utc::now();
        for arg in &args {
            let _ = crate::config::HumanDuration::parse(arg);
            let _ = crate::control::parse_since(arg, now);
        }
    }
    let name = String::from_utf8_lossy(data);
    if let Some((user, resource)) = crate::ssh::split_username(&name) {
        assert!(crate::config::is_valid_name(user));
        assert!(resource.is_none_or(crate::config::is_valid_name));
    }
    assert!(crate::ssh::printable_username(&name).chars().count() <= 64);
}

/// A config file as an administrator might write it: whatever the text,
/// a clear error or a config, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/nonexistent/jitgate.toml");
        if let Err(error) = crate::config::Config::from_toml(path, text) {
            assert!(!error.to_string().is_empty());
        }
    }
}

/// The journal as read back at start: whatever the disk holds, the valid
/// prefix re-encodes to exactly the bytes it was read from.
pub fn journal(data: &[u8]) {
    let Ok(decoded) = crate::journal::decode_frames(data) else {
        return;
    };
    let valid = usize::try_from(decoded.valid_len).unwrap_or(usize::MAX);
    assert!(valid <= data.len());
    let again: Vec<u8> = decoded
        .frames
        .iter()
        .flat_map(|(seq, payload)| crate::journal::encode_frame(*seq, payload))
        .collect();
    assert_eq!(again, data[..valid], "the valid prefix does not re-encode");
}

#[cfg(test)]
mod tests;
