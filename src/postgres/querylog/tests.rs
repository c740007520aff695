use super::*;

fn cstring(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn complete(tracker: &mut StatementTracker, tag: &str) {
    assert!(tracker.server_message(b'C', &cstring(&[tag])).is_empty());
}

fn error(tracker: &mut StatementTracker, code: &str, message: &str) {
    let mut body = vec![b'C'];
    body.extend(cstring(&[code]));
    body.push(b'M');
    body.extend(cstring(&[message]));
    body.push(0);
    tracker.server_message(b'E', &body);
}

fn outcomes(entries: &[Statement]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|s| (s.statement.to_string(), s.outcome.clone()))
        .collect()
}

#[test]
fn simple_queries_get_every_result_of_their_statements() {
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'Q', &cstring(&["select 1; select 2"]));
    complete(&mut tracker, "SELECT 1");
    complete(&mut tracker, "SELECT 1");
    let done = tracker.server_message(b'Z', b"I");
    assert_eq!(
        outcomes(&done),
        [("select 1; select 2".into(), "SELECT 1; SELECT 1".into())]
    );
    assert_eq!(tracker.statements, 1);
}

#[test]
fn pipelined_extended_protocol_is_paired_in_order_and_errors_skip_to_sync() {
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'P', &cstring(&["s1", "select $1"]));
    for _ in 0..2 {
        let mut bind = cstring(&["", "s1"]);
        bind.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        tracker.client_message(b'B', &bind);
        tracker.client_message(b'E', &cstring(&[""]));
    }
    tracker.client_message(b'S', b"");
    tracker.client_message(b'P', &cstring(&["", "insert into t values (1)"]));
    tracker.client_message(b'B', &{
        let mut b = cstring(&["", ""]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        b
    });
    tracker.client_message(b'E', &cstring(&[""]));
    tracker.client_message(b'B', &{
        let mut b = cstring(&["", ""]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        b
    });
    tracker.client_message(b'E', &cstring(&[""]));
    tracker.client_message(b'S', b"");

    error(&mut tracker, "22012", "division by zero");
    let first = tracker.server_message(b'Z', b"I");
    assert_eq!(
        outcomes(&first),
        [
            ("select $1".into(), "ERROR 22012: division by zero".into()),
            (
                "select $1".into(),
                "skipped (an earlier statement failed)".into()
            )
        ]
    );
    complete(&mut tracker, "INSERT 0 1");
    complete(&mut tracker, "INSERT 0 1");
    let second = tracker.server_message(b'Z', b"I");
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|s| s.outcome == "INSERT 0 1"));
    assert!(second.iter().all(|s| s.parameters.is_none()));
    assert_eq!(tracker.statements, 4);
}

#[test]
fn bind_parameters_are_logged_only_when_enabled() {
    for (enabled, expected) in [
        (false, None),
        (true, Some(vec![Some("42".to_string()), None])),
    ] {
        let mut tracker = StatementTracker::new(enabled);
        tracker.client_message(b'P', &cstring(&["", "select $1, $2"]));
        let mut bind = cstring(&["", ""]);
        bind.extend_from_slice(&[
            0, 0, 0, 2, 0, 0, 0, 2, b'4', b'2', 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        tracker.client_message(b'B', &bind);
        tracker.client_message(b'E', &cstring(&[""]));
        tracker.client_message(b'S', b"");
        complete(&mut tracker, "SELECT 1");
        let done = tracker.server_message(b'Z', b"I");
        assert_eq!(done[0].parameters, expected);
    }
}

#[test]
fn malformed_or_truncated_bodies_are_ignored_not_fatal() {
    let mut tracker = StatementTracker::new(true);
    for (tag, body) in [
        (b'Q', &b"no terminator"[..]),
        (b'P', b"\0"),
        (b'B', b"\0\0\0"),
        (b'B', b"\0\0\0\x05"),
        (b'E', b""),
    ] {
        tracker.client_message(tag, body);
    }
    tracker.server_message(b'C', b"");
    tracker.server_message(b'E', b"garbage");
    let _ = tracker.server_message(b'Z', b"");
    let _ = tracker.unfinished();
}

#[test]
fn statements_still_running_at_the_end_are_reported_unfinished() {
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'Q', &cstring(&["select pg_sleep(600)"]));
    let left = tracker.unfinished();
    assert_eq!(
        outcomes(&left),
        [(
            "select pg_sleep(600)".into(),
            "unfinished (session ended)".into()
        )]
    );
}

#[test]
fn long_statements_are_shortened_on_a_character_boundary() {
    let text = "é".repeat(STATEMENT_LIMIT);
    let short = shorten(&text);
    assert!(short.len() < text.len());
    assert!(short.ends_with(&format!("({} bytes)", text.len())));
}

#[test]
fn a_repeated_parse_keeps_its_text_and_a_changed_one_replaces_it() {
    let mut tracker = StatementTracker::new(false);
    let run = |tracker: &mut StatementTracker, text: &str| {
        tracker.client_message(b'P', &cstring(&["", text]));
        let mut bind = cstring(&["", ""]);
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tracker.client_message(b'B', &bind);
        tracker.client_message(b'E', &cstring(&[""]));
        tracker.client_message(b'S', b"");
        complete(tracker, "SELECT 1");
        tracker.server_message(b'Z', b"I")
    };
    let first = run(&mut tracker, "select 1");
    let stored = tracker.prepared[""].clone();
    let again = run(&mut tracker, "select 1");
    assert!(
        Arc::ptr_eq(&stored, &tracker.prepared[""]),
        "same text, same entry"
    );
    let changed = run(&mut tracker, "select 2");
    assert_eq!(outcomes(&first), [("select 1".into(), "SELECT 1".into())]);
    assert_eq!(outcomes(&again), [("select 1".into(), "SELECT 1".into())]);
    assert_eq!(outcomes(&changed), [("select 2".into(), "SELECT 1".into())]);
}

#[test]
fn a_portal_suspended_at_its_row_limit_and_an_empty_query_get_their_outcomes() {
    // asyncpg's fetchval and fetchrow, and JDBC with a fetch size, run
    // Execute with a row limit: PostgreSQL answers PortalSuspended.
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'P', &cstring(&["s1", "select version()"]));
    let mut bind = cstring(&["", "s1"]);
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    tracker.client_message(b'B', &bind);
    let mut execute = cstring(&[""]);
    execute.extend_from_slice(&1u32.to_be_bytes());
    tracker.client_message(b'E', &execute);
    tracker.client_message(b'S', b"");
    tracker.client_message(b'Q', &cstring(&[""]));

    assert!(tracker.server_message(b's', b"").is_empty());
    let fetched = tracker.server_message(b'Z', b"T");
    assert!(tracker.server_message(b'I', b"").is_empty());
    let empty = tracker.server_message(b'Z', b"T");
    assert_eq!(
        outcomes(&fetched),
        [(
            "select version()".into(),
            "1 row, then suspended (row limit)".into()
        )]
    );
    assert_eq!(outcomes(&empty), [("".into(), "empty query".into())]);
    assert!(tracker.in_transaction, "the last ReadyForQuery said T");
    tracker.server_message(b'Z', b"I");
    assert!(!tracker.in_transaction);
}

#[test]
fn closed_statements_and_portals_are_forgotten_and_never_more_than_are_kept() {
    let mut tracker = StatementTracker::new(false);
    let bind = |tracker: &mut StatementTracker, portal: &str, statement: &str| {
        let mut bind = cstring(&[portal, statement]);
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tracker.client_message(b'B', &bind);
    };
    for n in 0..100 {
        let name = format!("S_{n}");
        tracker.client_message(b'P', &cstring(&[&name, "select 1"]));
        bind(&mut tracker, &format!("C_{n}"), &name);
        let mut close = vec![b'S'];
        close.extend(cstring(&[&name]));
        tracker.client_message(b'C', &close);
    }
    assert!(tracker.prepared.is_empty());
    assert_eq!(tracker.portals.len(), 100);
    let mut close = vec![b'P'];
    close.extend(cstring(&["C_0"]));
    tracker.client_message(b'C', &close);
    assert_eq!(tracker.portals.len(), 99);
    for body in [&b""[..], b"S", b"X\0"] {
        tracker.client_message(b'C', body);
    }

    for n in 0..NAMED_LIMIT + 5 {
        let name = format!("S_{n}");
        tracker.client_message(b'P', &cstring(&[&name, "select 1"]));
        bind(&mut tracker, &name, &name);
    }
    assert!(tracker.prepared.len() <= NAMED_LIMIT);
    assert!(tracker.portals.len() <= NAMED_LIMIT);
}

/// A FunctionCall body: function OID, text arguments, text result.
fn function_call(oid: u32, arguments: &[&str]) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(arguments.len() as u16).to_be_bytes());
    for argument in arguments {
        body.extend_from_slice(&(argument.len() as i32).to_be_bytes());
        body.extend_from_slice(argument.as_bytes());
    }
    body.extend_from_slice(&[0, 0]);
    body
}

#[test]
fn fast_path_function_calls_are_logged_and_keep_later_statements_paired() {
    for (enabled, expected) in [(false, None), (true, Some(vec![Some("131072".into())]))] {
        let mut tracker = StatementTracker::new(enabled);
        // lo_creat by OID, as libpq's large-object functions call it,
        // then a failing one, then a query sent before their answers.
        tracker.client_message(b'F', &function_call(957, &["131072"]));
        tracker.client_message(b'F', &function_call(764, &[]));
        tracker.client_message(b'Q', &cstring(&["select 1"]));
        assert!(tracker.server_message(b'V', b"\0\0\0\x04abcd").is_empty());
        let first = tracker.server_message(b'Z', b"T");
        assert_eq!(
            outcomes(&first),
            [(
                "fast-path call of function OID 957".into(),
                "function returned".into()
            )]
        );
        assert_eq!(first[0].parameters, expected);
        error(&mut tracker, "42883", "function does not exist");
        let second = tracker.server_message(b'Z', b"E");
        assert_eq!(
            outcomes(&second),
            [(
                "fast-path call of function OID 764".into(),
                "ERROR 42883: function does not exist".into()
            )]
        );
        complete(&mut tracker, "SELECT 1");
        let third = tracker.server_message(b'Z', b"I");
        assert_eq!(outcomes(&third), [("select 1".into(), "SELECT 1".into())]);
        assert_eq!(tracker.statements, 3);
    }
}

#[test]
fn a_truncated_function_call_is_ignored() {
    let mut tracker = StatementTracker::new(true);
    tracker.client_message(b'F', &[0, 0]);
    assert_eq!(tracker.statements, 0);
}

#[test]
fn a_server_that_names_no_command_still_gives_its_statement_an_outcome() {
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'Q', &cstring(&["vacuum"]));
    tracker.server_message(b'C', b"\0");
    let done = tracker.server_message(b'Z', b"I");
    assert_eq!(outcomes(&done), [("vacuum".into(), "completed".into())]);
}

#[test]
fn a_query_of_many_statements_keeps_its_outcome_bounded() {
    let mut tracker = StatementTracker::new(false);
    tracker.client_message(b'Q', &cstring(&["select 1; select 1; ..."]));
    for _ in 0..100_000 {
        complete(&mut tracker, "SELECT 1");
    }
    let done = tracker.server_message(b'Z', b"I");
    let outcome = &done[0].outcome;
    assert!(
        outcome.len() <= OUTCOME_LIMIT + MORE_RESULTS.len(),
        "{}",
        outcome.len()
    );
    assert!(outcome.starts_with("SELECT 1; SELECT 1; "));
    assert!(outcome.ends_with("; … (more results)"));
}

#[test]
fn portals_end_with_their_transaction_even_when_the_next_ones_are_already_bound() {
    let mut tracker = StatementTracker::new(false);
    let bind = |tracker: &mut StatementTracker, portal: &str, statement: &str| {
        tracker.client_message(b'P', &cstring(&[statement, statement]));
        let mut bind = cstring(&[portal, statement]);
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tracker.client_message(b'B', &bind);
    };
    let execute = |tracker: &mut StatementTracker, portal: &str| {
        let mut body = cstring(&[portal]);
        body.extend_from_slice(&[0, 0, 0, 0]);
        tracker.client_message(b'E', &body);
    };
    // Pipelined: p1 in an implicit transaction, then BEGIN and p2, before
    // any answer arrives.
    bind(&mut tracker, "p1", "select 1");
    tracker.client_message(b'S', b"");
    tracker.client_message(b'Q', &cstring(&["begin"]));
    bind(&mut tracker, "p2", "select 2");
    tracker.client_message(b'S', b"");
    // The first sync ends p1's transaction; p2 was bound after it.
    tracker.server_message(b'Z', b"I");
    assert_eq!(tracker.portals.keys().collect::<Vec<_>>(), ["p2"]);
    complete(&mut tracker, "BEGIN");
    tracker.server_message(b'Z', b"T");
    tracker.server_message(b'Z', b"T");
    // p2 lives on inside the open transaction, and is executed by name.
    execute(&mut tracker, "p2");
    tracker.client_message(b'S', b"");
    complete(&mut tracker, "SELECT 1");
    let done = tracker.server_message(b'Z', b"T");
    assert_eq!(outcomes(&done), [("select 2".into(), "SELECT 1".into())]);
    // COMMIT ends it; p1, long gone upstream, is unknown.
    tracker.client_message(b'Q', &cstring(&["commit"]));
    complete(&mut tracker, "COMMIT");
    tracker.server_message(b'Z', b"I");
    assert!(tracker.portals.is_empty());
    execute(&mut tracker, "p1");
    tracker.client_message(b'S', b"");
    let gone = cstring(&["SERROR", "C34000", "Mportal \"p1\" does not exist"]);
    tracker.server_message(b'E', &gone);
    let done = tracker.server_message(b'Z', b"I");
    assert_eq!(done[0].statement.as_ref(), "(unknown portal)");
}
