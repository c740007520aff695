//! Streaming commands: `audit tail [-f]` and `follow`.

use std::sync::Arc;

use crate::audit::AuditRecord;
use crate::config::Permission;
use crate::events::{ChainError, ChainReader};
use crate::gateway::Gateway;
use crate::sessions::{Activity, LiveRecording, RecordingKind};

use super::narrate::record_line;
use super::since::{parse_since, start_of_moment};
use super::tail_filter::{TailFilter, start_of_last_matches};
use super::{Caller, ControlError, EXIT_OK, Terminal, fail};

/// Where `audit tail` starts: after the seq asked for, or at the last
/// `lines` records (that pass the filter); and which it prints.
pub struct TailFrom {
    pub lines: usize,
    pub after: Option<u64>,
    /// `--since WHEN`, as typed.
    pub since: Option<String>,
    pub filter: TailFilter,
}

/// Prints audit records from `from` to the newest, then with `follow`
/// every new one as it is written. A reader slower than the records are
/// written reads on from disk and misses none; one whose audit permission
/// a reload takes away is stopped.
pub async fn audit_tail<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    json: bool,
    from: TailFrom,
    follow: bool,
) -> u32 {
    if let Err(error) = require_audit(gateway, caller) {
        return fail(term, json, &error).await;
    }
    let (log, head) = gateway.audit_position();
    let (after, mut filter) = match tail_start(gateway, &log, head, from).await {
        Ok(start) => start,
        Err(error) => return fail(term, json, &error).await,
    };
    let mut chain = ChainReader::new(gateway.bus().clone(), log, after);
    loop {
        let next = tokio::select! {
            next = next_record(&mut chain, follow) => next,
            () = term.interrupted() => return EXIT_OK,
        };
        let record = match next {
            Ok(Some(record)) => record,
            Ok(None) => return EXIT_OK,
            Err(error) => {
                return fail(term, json, &ControlError::Refused(error.to_string())).await;
            }
        };
        if let Err(error) = require_audit(gateway, caller) {
            return fail(term, json, &error).await;
        }
        if filter.matches(gateway, &record.event) {
            term.out(&render(&record, json)).await;
        }
    }
}

/// The seq `audit tail` reads after, and its filter (which has learned the
/// requests met on the way back to it).
async fn tail_start(
    gateway: &Arc<Gateway>,
    log: &std::path::Path,
    head: u64,
    from: TailFrom,
) -> Result<(u64, TailFilter), ControlError> {
    let TailFrom {
        lines,
        after,
        since,
        mut filter,
    } = from;
    if let Some(after) = after {
        return Ok((after, filter));
    }
    if let Some(since) = since {
        let since = parse_since(&since, chrono::Utc::now()).map_err(ControlError::Refused)?;
        let path = log.to_path_buf();
        let found = tokio::task::spawn_blocking(move || start_of_moment(&path, head, since))
            .await
            .map_err(|_| ControlError::Refused("the audit log could not be read".into()))?;
        let after =
            found.map_err(|e| ControlError::Refused(format!("cannot read the audit log: {e}")))?;
        return Ok((after, filter));
    }
    if filter.is_empty() {
        return Ok((head.saturating_sub(lines as u64), filter));
    }
    let (walker, path) = (gateway.clone(), log.to_path_buf());
    let (found, filter) = tokio::task::spawn_blocking(move || {
        let found = start_of_last_matches(&walker, &path, head, lines, &mut filter);
        (found, filter)
    })
    .await
    .map_err(|_| ControlError::Refused("the audit log could not be read".into()))?;
    let after =
        found.map_err(|e| ControlError::Refused(format!("cannot read the audit log: {e}")))?;
    Ok((after, filter))
}

/// The next record to print: waiting for new ones when following, `None`
/// at the end of the log otherwise.
async fn next_record(
    chain: &mut ChainReader,
    follow: bool,
) -> Result<Option<Arc<AuditRecord>>, ChainError> {
    if follow {
        chain.next().await.map(Some)
    } else {
        chain.written().await
    }
}

fn render(record: &AuditRecord, json: bool) -> String {
    if json {
        format!("{}\n", serde_json::to_string(record).unwrap_or_default())
    } else {
        record_line(record)
    }
}

/// `follow SESSION`: replays a live session's recording from the start,
/// then streams it as it happens, read-only, until the session ends.
pub async fn follow<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    session: &str,
) -> u32 {
    if let Err(error) = require_audit(gateway, caller) {
        return fail(term, false, &error).await;
    }
    let Some(recording) = gateway.sessions().recording(session) else {
        let error = ControlError::Refused(format!(
            "no live recorded session {session:?}: see `sessions`"
        ));
        return fail(term, false, &error).await;
    };
    let LiveRecording {
        path,
        events,
        kind,
        flush,
    } = recording;
    // Subscribe before reading the file so nothing falls between the two;
    // then let go of the sender, or the stream never closes when the
    // session ends.
    let mut live = events.subscribe();
    drop(events);
    if let Some(flush) = flush {
        flush();
    }
    let past = tokio::task::spawn_blocking(move || past_output(kind, &path))
        .await
        .unwrap_or_default();
    let mut seen = 0;
    for (index, text) in past {
        seen = index;
        term.out(&text).await;
    }
    // A statement is logged when it completes; one that runs on is told
    // of while it runs, from the session's activity.
    let mut running = RunningStatement::default();
    let mut look = tokio::time::interval(LOOK_FOR_RUNNING);
    loop {
        tokio::select! {
            _ = look.tick(), if kind == RecordingKind::QueryLog => {
                let activity = gateway.sessions().activity(session);
                if let Some(text) = activity.and_then(|a| running.announce(&a, chrono::Utc::now())) {
                    term.out(&text).await;
                }
            }
            event = live.recv() => match event {
                Ok(event) if event.index > seen => {
                    seen = event.index;
                    if let Some(text) = render_event(kind, &event.line) {
                        term.out(&text).await;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    term.err(&format!("\r\n[jitgate] follower fell behind; {missed} events skipped\r\n")).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    term.err("\r\n[jitgate] session ended\r\n").await;
                    return EXIT_OK;
                }
            },
            () = term.interrupted() => return EXIT_OK,
        }
    }
}

/// How often `follow` looks for a statement that runs on.
const LOOK_FOR_RUNNING: std::time::Duration = std::time::Duration::from_secs(1);

/// The statement a followed Postgres session runs, told once per run.
#[derive(Default)]
struct RunningStatement {
    /// The session's statement count when the last one was told of.
    told: Option<u64>,
}

impl RunningStatement {
    /// `HH:MM:SS statement -> running` for a statement running a second
    /// or more that has not been told of yet.
    fn announce(
        &mut self,
        activity: &Activity,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<String> {
        let running = activity.running.as_ref().filter(|r| r.seconds >= 1)?;
        let run = activity.statements.unwrap_or_default();
        if self.told == Some(run) {
            return None;
        }
        self.told = Some(run);
        let started = now - chrono::Duration::seconds(running.seconds as i64);
        Some(format!(
            "{} {} -> running\r\n",
            started.format("%H:%M:%S"),
            running.statement
        ))
    }
}

/// What a follower sees of a recording written so far, numbered.
fn past_output(kind: RecordingKind, path: &std::path::Path) -> Vec<(u64, String)> {
    match kind {
        RecordingKind::Asciicast => crate::ssh::read_events(path)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, kind, _)| kind == "o")
            .map(|(index, _, data)| (index, data))
            .collect(),
        RecordingKind::QueryLog | RecordingKind::FileLog => {
            crate::postgres::querylog::read_lines(path)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(index, line)| Some((index, render_event(kind, &line)?)))
                .collect()
        }
    }
}

pub(super) fn render_event(kind: RecordingKind, line: &str) -> Option<String> {
    match kind {
        RecordingKind::Asciicast => output_of(line),
        RecordingKind::QueryLog => query_line(line),
        RecordingKind::FileLog => file_operation(line),
    }
}

/// A file log line as `HH:MM:SS op path[ -> target][ [mode, read N, wrote
/// M]][ [N names]]: outcome`.
fn file_operation(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let time = value.get("time")?.as_str()?;
    let time = time.get(11..19).unwrap_or(time);
    let target = value
        .get("target")
        .and_then(|t| t.as_str())
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    let transfer = match (
        value.get("mode"),
        value.get("read_bytes"),
        value.get("written_bytes"),
    ) {
        (Some(mode), Some(read), Some(written)) => format!(
            " [{}, read {read}, wrote {written}]",
            mode.as_str().unwrap_or_default()
        ),
        _ => String::new(),
    };
    let names = value
        .get("names")
        .and_then(|n| n.as_u64())
        .map(|n| format!(" [{n} name{}]", if n == 1 { "" } else { "s" }))
        .unwrap_or_default();
    Some(format!(
        "{time} {} {}{target}{transfer}{names}: {}\r\n",
        value.get("op")?.as_str()?,
        value.get("path")?.as_str()?,
        value.get("outcome")?.as_str()?
    ))
}

/// The data of an asciicast output event line (`[t, "o", data]`).
fn output_of(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value.get(1)?.as_str()? == "o").then(|| value.get(2)?.as_str().map(String::from))?
}

/// A query log line as `HH:MM:SS statement -> outcome`.
fn query_line(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let time = value.get("time")?.as_str()?;
    let time = time.get(11..19).unwrap_or(time);
    Some(format!(
        "{time} {} -> {}\r\n",
        value.get("statement")?.as_str()?,
        value.get("outcome")?.as_str()?
    ))
}

pub(super) fn require_audit(gateway: &Gateway, caller: &Caller) -> Result<(), ControlError> {
    if gateway
        .config()
        .directory
        .has(&caller.user, Permission::Audit)
    {
        Ok(())
    } else {
        Err(ControlError::Refused(
            "permission denied: this needs the audit permission".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{RunningStatement, file_operation};
    use crate::sessions::{Activity, Running};

    fn waiting(statement: &str, seconds: u64, statements: u64) -> Activity {
        Activity {
            statements: Some(statements),
            running: Some(Running {
                statement: statement.into(),
                seconds,
            }),
            ..Activity::default()
        }
    }

    #[test]
    fn a_statement_that_runs_on_is_told_of_once_with_its_start() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T14:02:10Z")
            .unwrap()
            .to_utc();
        let mut running = RunningStatement::default();
        assert_eq!(running.announce(&waiting("select 1", 0, 1), now), None);
        assert_eq!(
            running.announce(&waiting("select pg_sleep(9)", 4, 2), now),
            Some("14:02:06 select pg_sleep(9) -> running\r\n".into())
        );
        assert_eq!(
            running.announce(&waiting("select pg_sleep(9)", 5, 2), now),
            None
        );
        // The same text run again is a new run.
        assert!(
            running
                .announce(&waiting("select pg_sleep(9)", 1, 3), now)
                .is_some()
        );
        assert_eq!(running.announce(&Activity::default(), now), None);
    }

    #[test]
    fn file_log_lines_read_as_operations_with_what_moved() {
        let open = r#"{"time":"2026-11-30T14:02:03.5Z","op":"open","path":"/srv/a","mode":"read","read_bytes":10,"written_bytes":0,"outcome":"ok"}"#;
        let list =
            r#"{"time":"2026-11-30T14:02:04Z","op":"list","path":"/etc","names":1,"outcome":"ok"}"#;
        let rename = r#"{"time":"2026-11-30T14:02:05Z","op":"rename","path":"/a","target":"/b","outcome":"no such file"}"#;
        assert_eq!(
            file_operation(open).unwrap(),
            "14:02:03 open /srv/a [read, read 10, wrote 0]: ok\r\n"
        );
        assert_eq!(
            file_operation(list).unwrap(),
            "14:02:04 list /etc [1 name]: ok\r\n"
        );
        assert_eq!(
            file_operation(rename).unwrap(),
            "14:02:05 rename /a -> /b: no such file\r\n"
        );
        assert_eq!(file_operation("not json"), None);
    }
}
