//! Session recordings and query logs are vouched for by the audit chain:
//! `audit verify --recordings` tells a file changed after its session
//! ended, or deleted, from one left as it was, and `replay` shows auditors
//! only files left as they were.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, World, wait_until};
use serde_json::Value;

fn verify_recordings(world: &World) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--recordings"])
        .arg(world.path("audit/audit.log"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The only file in `dir`.
fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn recordings_and_query_logs_are_shown_and_verified_only_as_their_sessions_left_them() {
    let world = World::with_both_targets(&[], |text| text);
    world.lease_web("alice", "10m");
    let shell = world.pty_shell("alice", b"echo recorded-$((6*7)); exit\n");
    assert!(shell.wait_with_output().unwrap().status.success());
    let (_, password) = world.lease_pg("alice", "10m");
    let (out, err, ok) = world.psql_run("alice", &password, "select 'logged-' || 42");
    assert!(ok, "{err}");
    assert_eq!(out, "logged-42");
    assert!(wait_until(Duration::from_secs(10), || {
        let audit = world.audit_text();
        audit.contains("\"recording_digest\"") && audit.contains("\"query_log_digest\"")
    }));

    let (ok, text) = verify_recordings(&world);
    assert!(ok, "{text}");
    assert!(
        text.contains("OK: 2 recording(s) and log(s) as their sessions left them"),
        "{text}"
    );

    // Auditors replay them over the control plane; others may not.
    let ssh_session = session_naming(&world, "recording");
    let pg_session = session_naming(&world, "query_log");
    assert!(
        world
            .ok("carol", &format!("replay {ssh_session}"))
            .contains("recorded-42")
    );
    let statements = world.ok("carol", &format!("replay {pg_session}"));
    assert!(
        statements.contains("select 'logged-' || 42 -> SELECT 1"),
        "{statements}"
    );
    let raw = world.ok("carol", &format!("replay {pg_session} --json"));
    let line: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(line["user"], "alice");
    let refused = world.refused("alice", &format!("replay {ssh_session}"));
    assert!(refused.contains("needs the audit permission"), "{refused}");
    let refused = world.refused("carol", "replay s-000000000000");
    assert!(
        refused.contains("no recording, file log or query log"),
        "{refused}"
    );

    // One character of the recording changed: named, with its record.
    let recording = only_file(&world.path("recordings"));
    let original = std::fs::read_to_string(&recording).unwrap();
    std::fs::write(&recording, original.replace("recorded-42", "recorded-43")).unwrap();
    let (ok, text) = verify_recordings(&world);
    assert!(!ok, "{text}");
    assert!(text.contains("FAILED: 1 recording(s)"), "{text}");
    assert!(
        text.contains(&format!("{}: its content changed", recording.display())),
        "{text}"
    );
    let refused = world.refused("carol", &format!("replay {ssh_session}"));
    assert!(
        refused.contains("changed since its session ended") && !refused.contains("recorded-4"),
        "{refused}"
    );
    std::fs::write(&recording, &original).unwrap();

    // A deleted query log is listed, not taken for a changed one.
    let query_log = only_file(&world.path("querylogs"));
    std::fs::remove_file(&query_log).unwrap();
    let refused = world.refused("carol", &format!("replay {pg_session}"));
    assert!(refused.contains("no longer exists"), "{refused}");
    let (ok, text) = verify_recordings(&world);
    assert!(ok, "{text}");
    assert!(text.contains("OK: 1 recording(s)"), "{text}");
    assert!(
        text.contains(&format!(
            "1 no longer there:\n  seq {}: {}",
            seq_of_session_end(&world, &query_log),
            query_log.display()
        )),
        "{text}"
    );

    // A record naming a file elsewhere (forged, say, by someone who can
    // write the log) never has the gateway show that file.
    let elsewhere = world.path("jitgate.toml");
    let forged = serde_json::json!({
        "seq": 999_999,
        "event": {
            "type": "channel_ended",
            "session": "s-forged",
            "recording": elsewhere,
            "recording_digest": digest_of(&elsewhere),
        },
    });
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(world.path("audit/audit.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, format!("{forged}\n").as_bytes()).unwrap();
    let refused = world.refused("carol", "replay s-forged");
    assert!(
        refused.contains("outside the recordings and query log directories"),
        "{refused}"
    );
    assert!(!refused.contains("[[user]]"), "{refused}");
}

/// `{"bytes", "sha256"}` of a file, as the audit log records it.
fn digest_of(path: &std::path::Path) -> Value {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    serde_json::json!({
        "bytes": bytes.len(),
        "sha256": hex::encode(sha2::Sha256::digest(&bytes)),
    })
}

/// The seq of the audit record that names `file`.
fn seq_of_session_end(world: &World, file: &std::path::Path) -> u64 {
    let name = file.display().to_string();
    world
        .audit_text()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|record| record["event"]["query_log"] == name.as_str())
        .and_then(|record| record["seq"].as_u64())
        .expect("a record naming the query log")
}

/// The session of the record that names a file in `field`.
fn session_naming(world: &World, field: &str) -> String {
    world
        .audit_text()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find_map(|record| {
            record["event"].get(field)?;
            record["event"]["session"].as_str().map(String::from)
        })
        .expect("a record naming a file")
}

/// The audit records of type `kind`.
fn records_of(world: &World, kind: &str) -> Vec<Value> {
    world
        .audit_text()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|record| record["event"]["type"] == kind)
        .collect()
}

#[test]
fn sessions_cut_off_by_a_killed_gateway_are_audited_with_their_files_at_the_next_start() {
    let mut world = World::with_both_targets(&[], |text| text);
    world.lease_web("alice", "30m");
    let mut shell = world.pty_shell("alice", b"echo started-$((6*7)); sleep 600\n");
    let recordings = world.path("recordings");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&recordings).is_ok_and(|mut entries| {
            entries.any(|entry| {
                std::fs::read_to_string(entry.unwrap().path())
                    .unwrap_or_default()
                    .contains("started-42")
            })
        })
    }));
    let (_, password) = world.lease_pg("alice", "30m");
    let mut psql = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select 'q-' || 42", "-c", "select pg_sleep(600)"])
        .spawn()
        .unwrap();
    // The query log is flushed a few times a second.
    assert!(wait_until(Duration::from_secs(10), || world
        .query_logs()
        .contains("select 'q-' || 42")));

    // Sessions start being audited just after they are let in.
    assert!(wait_until(Duration::from_secs(10), || records_of(
        &world,
        "session_started"
    )
    .len()
        == 2));
    world.kill_hard();
    world.launch();
    let interrupted = records_of(&world, "session_interrupted");
    assert_eq!(interrupted.len(), 2, "{}", world.audit_text());
    let mut sessions = Vec::new();
    for started in records_of(&world, "session_started") {
        let session = started["event"]["session"].as_str().unwrap().to_string();
        let cut = interrupted
            .iter()
            .find(|record| record["event"]["session"] == session.as_str())
            .expect("every session started was cut off");
        let kind = match started["event"]["protocol"].as_str() {
            Some("ssh") => "recording",
            _ => "query_log",
        };
        assert_eq!(cut["event"]["files"][0]["kind"], kind, "{cut}");
        sessions.push(session);
    }
    let (ok, text) = verify_recordings(&world);
    assert!(ok, "{text}");
    assert!(text.contains("OK: 2 recording(s)"), "{text}");
    let shown: String = sessions
        .iter()
        .map(|session| world.ok("carol", &format!("replay {session}")))
        .collect();
    assert!(shown.contains("started-42"), "{shown}");
    assert!(shown.contains("select 'q-' || 42 -> SELECT 1"), "{shown}");

    // A clean stop leaves nothing to report at the next start.
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(10)), Some(0));
    world.launch();
    assert_eq!(records_of(&world, "session_interrupted").len(), 2);
    let _ = (shell.kill(), psql.kill());
    let _ = (shell.wait(), psql.wait());
}
