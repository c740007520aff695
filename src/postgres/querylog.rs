//! Per-session query logs: which statements ran and how each ended.
//!
//! The client side of the relay reports `Query`, `Parse`, `Bind`,
//! `Execute`, `Close`, `Sync` and `FunctionCall`; the server side reports
//! `CommandComplete`, `ErrorResponse`, `PortalSuspended`,
//! `EmptyQueryResponse`, `FunctionCallResponse` and `ReadyForQuery`. [`StatementTracker`] pairs them in
//! protocol order — results come back in the order statements were sent,
//! and every `Sync` (or simple `Query`) ends with one `ReadyForQuery` — so
//! pipelined clients are logged correctly without stalling anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::wire::{cstr, error_fields};

/// Longest statement text kept in a log entry.
const STATEMENT_LIMIT: usize = 16 * 1024;
/// Longest outcome kept for a simple query's several results.
pub(crate) const OUTCOME_LIMIT: usize = 4 * 1024;
/// What ends an outcome whose further results were left out.
const MORE_RESULTS: &str = "; … (more results)";
/// Statements awaiting results beyond this are logged without an outcome,
/// so a client pipelining without end cannot grow the gateway's memory.
const PENDING_LIMIT: usize = 10_000;
/// Prepared statements and portals remembered beyond this are forgotten
/// (their executions are then logged as unknown), so a client that never
/// closes what it names cannot grow the gateway's memory. Portals are also
/// forgotten when their transaction ends, as upstream.
const NAMED_LIMIT: usize = 10_000;

/// Bind parameter values (`None` = SQL NULL), when logging them is enabled.
pub type Parameters = Option<Vec<Option<String>>>;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Statement {
    pub statement: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Parameters,
    pub outcome: String,
}

#[derive(Debug)]
enum Pending {
    Statement(Waiting),
    Sync,
}

/// A statement sent and not yet logged.
#[derive(Debug)]
struct Waiting {
    statement: Statement,
    /// Whether its result came (`outcome` holds it).
    done: bool,
    /// The most rows its `Execute` asked for (0 = all): a portal that
    /// reaches it is suspended instead of completed.
    row_limit: u32,
    /// When the client sent it, for `sessions`.
    sent: Instant,
}

/// A portal a `Bind` made: its statement, parameters, and how many sync
/// points the client had sent before it. A pipelining client may bind the
/// next transaction's portals before the first one's end is seen; the
/// count tells those apart from the portals that end ended.
#[derive(Clone)]
struct Portal {
    statement: Arc<str>,
    parameters: Parameters,
    bound_after_syncs: u64,
}

/// Pairs statements with their results; pure, so it is unit-tested alone.
pub struct StatementTracker {
    log_parameters: bool,
    prepared: HashMap<String, Arc<str>>,
    portals: HashMap<String, Portal>,
    pending: VecDeque<Pending>,
    /// Sync points (`Sync`, simple `Query`, `FunctionCall`) sent, and
    /// answered by a ReadyForQuery.
    syncs_sent: u64,
    syncs_answered: u64,
    pub statements: u64,
    /// Whether the last ReadyForQuery found a transaction open (or failed):
    /// a session idle inside one holds its locks.
    pub in_transaction: bool,
}

impl StatementTracker {
    pub fn new(log_parameters: bool) -> Self {
        Self {
            log_parameters,
            prepared: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            syncs_sent: 0,
            syncs_answered: 0,
            statements: 0,
            in_transaction: false,
        }
    }

    /// Notes a client message; returns entries that cannot wait for a result.
    pub fn client_message(&mut self, tag: u8, body: &[u8]) -> Vec<Statement> {
        match tag {
            b'Q' => {
                let text = text_of(body);
                self.push(shorten(&text), None, 0);
                self.sync_point();
            }
            b'P' => {
                if let Ok((name, rest)) = cstr(body) {
                    self.parse(name, rest);
                }
            }
            b'B' => self.bind(body),
            b'E' => {
                if let Ok((portal, rest)) = cstr(body) {
                    let (text, parameters) = self.portals.get(portal).map_or_else(
                        || (Arc::from("(unknown portal)"), None),
                        |p| (p.statement.clone(), p.parameters.clone()),
                    );
                    let row_limit = rest
                        .first_chunk::<4>()
                        .map_or(0, |n| u32::from_be_bytes(*n));
                    self.push(text, parameters, row_limit);
                }
            }
            b'S' => self.sync_point(),
            b'C' => self.close(body),
            b'F' => self.function_call(body),
            _ => {}
        }
        self.overflow()
    }

    /// A fast-path function call (`FunctionCall`, libpq's `PQfn`: its
    /// large-object functions use it) runs any function by its OID, as a
    /// `SELECT f(...)` would, so it is logged like a statement; it ends with
    /// its own ReadyForQuery, as a simple query does. Its arguments are
    /// laid out as a Bind's parameters.
    fn function_call(&mut self, body: &[u8]) {
        let Some((oid, arguments)) = body.split_first_chunk::<4>() else {
            return;
        };
        let text = format!(
            "fast-path call of function OID {}",
            u32::from_be_bytes(*oid)
        );
        let parameters = self
            .log_parameters
            .then(|| bind_parameters(arguments))
            .flatten();
        self.push(Arc::from(text), parameters, 0);
        self.sync_point();
    }

    /// A client message that ends with its own ReadyForQuery.
    fn sync_point(&mut self) {
        self.syncs_sent += 1;
        self.pending.push_back(Pending::Sync);
    }

    /// A closed statement or portal is forgotten here as upstream: drivers
    /// that prepare statements by the thousand (pgjdbc's S_1, S_2, ...)
    /// close them as their caches evict them.
    fn close(&mut self, body: &[u8]) {
        let Some((&kind, rest)) = body.split_first() else {
            return;
        };
        let Ok((name, _)) = cstr(rest) else {
            return;
        };
        match kind {
            b'S' => self.prepared.remove(name),
            b'P' => self.portals.remove(name).map(|p| p.statement),
            _ => None,
        };
    }

    /// Drivers re-send the same Parse (often for the unnamed statement)
    /// for every execution: keep the stored text then, allocating nothing.
    fn parse(&mut self, name: &str, rest: &[u8]) {
        let text = cstr(rest).map_or(rest, |(t, _)| t.as_bytes());
        if self
            .prepared
            .get(name)
            .is_some_and(|stored| stored.as_bytes() == text)
        {
            return;
        }
        let text = String::from_utf8_lossy(text);
        if self.prepared.len() >= NAMED_LIMIT {
            self.prepared.clear();
        }
        self.prepared.insert(name.to_string(), shorten(&text));
    }

    fn bind(&mut self, body: &[u8]) {
        let Ok((portal, rest)) = cstr(body) else {
            return;
        };
        let Ok((statement, rest)) = cstr(rest) else {
            return;
        };
        let text = self
            .prepared
            .get(statement)
            .cloned()
            .unwrap_or_else(|| Arc::from("(unknown statement)"));
        let parameters = self.log_parameters.then(|| bind_parameters(rest)).flatten();
        if self.portals.len() >= NAMED_LIMIT {
            self.portals.clear();
        }
        let portal_made = Portal {
            statement: text,
            parameters,
            bound_after_syncs: self.syncs_sent,
        };
        self.portals.insert(portal.to_string(), portal_made);
    }

    fn push(&mut self, statement: Arc<str>, parameters: Parameters, row_limit: u32) {
        self.statements += 1;
        self.pending.push_back(Pending::Statement(Waiting {
            statement: Statement {
                statement,
                parameters,
                outcome: String::new(),
            },
            done: false,
            row_limit,
            sent: Instant::now(),
        }));
    }

    fn overflow(&mut self) -> Vec<Statement> {
        let mut out = Vec::new();
        while self.pending.len() > PENDING_LIMIT {
            if let Some(Pending::Statement(mut waiting)) = self.pending.pop_front() {
                waiting.statement.outcome = "not tracked (too many pipelined statements)".into();
                out.push(waiting.statement);
            }
        }
        out
    }

    /// The oldest statement still waiting for its result, and when it was
    /// sent.
    pub fn waiting_on(&self) -> Option<(&str, Instant)> {
        self.pending.iter().find_map(|entry| match entry {
            Pending::Statement(waiting) if !waiting.done => {
                Some((&*waiting.statement.statement, waiting.sent))
            }
            _ => None,
        })
    }

    /// Notes a server message; returns the entries it completes.
    pub fn server_message(&mut self, tag: u8, body: &[u8]) -> Vec<Statement> {
        match tag {
            b'C' => {
                // PostgreSQL always names the command; a server that does
                // not still gets an outcome in the log.
                let tag = cstr(body)
                    .ok()
                    .filter(|(tag, _)| !tag.is_empty())
                    .map_or_else(|| "completed".to_string(), |(tag, _)| tag.to_string());
                self.record_outcome(tag);
                Vec::new()
            }
            b'E' => {
                let (code, message) = error_fields(body);
                self.record_outcome(format!("ERROR {code}: {message}"));
                Vec::new()
            }
            // What an Execute that reached its row limit gets instead of
            // CommandComplete (drivers fetching a row, or in batches).
            b's' => {
                self.record_suspended();
                Vec::new()
            }
            // What a fast-path function call gets instead (its value,
            // which may be personal data, is not logged).
            b'V' => {
                self.record_outcome("function returned".into());
                Vec::new()
            }
            // What an empty statement gets instead of CommandComplete.
            b'I' => {
                self.record_outcome("empty query".into());
                Vec::new()
            }
            b'Z' => {
                self.in_transaction = matches!(body.first(), Some(b'T' | b'E'));
                self.syncs_answered += 1;
                if !self.in_transaction {
                    self.end_transaction_portals();
                }
                self.ready()
            }
            _ => Vec::new(),
        }
    }

    /// The first statement still waiting for a result before the next sync
    /// gets it; a second result for a simple query (several statements in
    /// one `Query`) is appended to the last one.
    fn record_outcome(&mut self, outcome: String) {
        let mut last = None;
        for entry in self.pending.iter_mut() {
            match entry {
                Pending::Sync => break,
                Pending::Statement(waiting) if !waiting.done => {
                    waiting.statement.outcome = outcome;
                    waiting.done = true;
                    return;
                }
                Pending::Statement(waiting) => last = Some(&mut waiting.statement),
            }
        }
        if let Some(s) = last {
            append_result(&mut s.outcome, &outcome);
        }
    }

    /// A suspended portal returned exactly the rows its Execute asked for.
    fn record_suspended(&mut self) {
        let row_limit = self
            .pending
            .iter()
            .map_while(|entry| match entry {
                Pending::Statement(waiting) => Some(waiting),
                Pending::Sync => None,
            })
            .find(|waiting| !waiting.done)
            .map(|waiting| waiting.row_limit);
        if let Some(rows) = row_limit {
            let plural = if rows == 1 { "" } else { "s" };
            self.record_outcome(format!("{rows} row{plural}, then suspended (row limit)"));
        }
    }

    /// Outside a transaction now: the portals bound before this sync point
    /// went with the transaction that held them.
    fn end_transaction_portals(&mut self) {
        let answered = self.syncs_answered;
        self.portals.retain(|_, p| p.bound_after_syncs >= answered);
    }

    /// ReadyForQuery ends one sync point: everything before it is done.
    fn ready(&mut self) -> Vec<Statement> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.pop_front() {
            match entry {
                Pending::Sync => break,
                Pending::Statement(mut waiting) => {
                    if !waiting.done {
                        waiting.statement.outcome = "skipped (an earlier statement failed)".into();
                    }
                    out.push(waiting.statement);
                }
            }
        }
        out
    }

    /// What is left when the session ends.
    pub fn unfinished(&mut self) -> Vec<Statement> {
        self.pending
            .drain(..)
            .filter_map(|p| match p {
                Pending::Statement(mut waiting) => {
                    if !waiting.done {
                        waiting.statement.outcome = "unfinished (session ended)".into();
                    }
                    Some(waiting.statement)
                }
                Pending::Sync => None,
            })
            .collect()
    }
}

/// Adds one more result of a simple query to its outcome, up to a limit:
/// one `Query` can hold millions of statements, whose results must not
/// grow the gateway's memory (or the log line) without bound.
fn append_result(outcome: &mut String, result: &str) {
    if outcome.ends_with(MORE_RESULTS) {
        return;
    }
    if outcome.len() + "; ".len() + result.len() > OUTCOME_LIMIT {
        outcome.push_str(MORE_RESULTS);
        return;
    }
    outcome.push_str("; ");
    outcome.push_str(result);
}

/// The statement text at the start of `body`; the relay hands over at most
/// a capped prefix of long messages, so a missing terminator is expected.
fn text_of(body: &[u8]) -> String {
    match cstr(body) {
        Ok((text, _)) => text.to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn shorten(text: &str) -> Arc<str> {
    if text.len() <= STATEMENT_LIMIT {
        return Arc::from(text);
    }
    let mut end = STATEMENT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// Parameter values of a Bind body after portal and statement names:
/// text values as text, binary ones as hex.
fn bind_parameters(rest: &[u8]) -> Option<Vec<Option<String>>> {
    let mut cursor = rest;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = cursor.split_at_checked(n)?;
        cursor = tail;
        Some(head)
    };
    let format_count = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let mut formats = Vec::with_capacity(format_count.min(1024));
    for _ in 0..format_count {
        formats.push(u16::from_be_bytes(take(2)?.try_into().ok()?));
    }
    let count = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let mut values = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let length = i32::from_be_bytes(take(4)?.try_into().ok()?);
        if length < 0 {
            values.push(None);
            continue;
        }
        let value = take(length as usize)?;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(index) == Some(&1),
        };
        values.push(Some(match (binary, std::str::from_utf8(value)) {
            (false, Ok(text)) => text.to_string(),
            _ => format!("\\x{}", hex::encode(value)),
        }));
    }
    Some(values)
}

mod writer;
pub use writer::{QueryLogWriter, read_lines};

#[cfg(test)]
mod tests;
