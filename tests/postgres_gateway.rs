//! The Postgres data plane end to end: the real `jitgate` binary, a real
//! PostgreSQL target, and stock `psql`/`pgbench` through the gateway.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{World, wait_until};

#[test]
fn psql_runs_queries_as_the_managed_role_and_every_statement_is_logged() {
    let world = World::with_pg_target(&[], |t| t);
    let (id, password) = world.lease_pg("alice", "10m");
    let (out, err, ok) = world.psql_run(
        "alice",
        &password,
        "select current_user, current_database(); create table t (n int); insert into t select generate_series(1, 5); select sum(n) from t",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "orders_app|orders\n15");
    // Startup parameters the client chose reach the target.
    let out = world
        .psql("alice", "orders-prod", &password)
        .env("PGAPPNAME", "nightly-report")
        .args(["-c", "show application_name"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nightly-report"
    );

    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""statements":"#)));
    let logs = world.query_logs();
    let entry = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| {
            e["statement"]
                .as_str()
                .unwrap()
                .starts_with("select current_user")
        })
        .expect("the statement is in the query log");
    assert_eq!(entry["user"], "alice");
    assert_eq!(entry["resource"], "orders-prod");
    assert_eq!(
        entry["outcome"],
        "SELECT 1; CREATE TABLE; INSERT 0 5; SELECT 1"
    );
    assert!(entry["session"].as_str().unwrap().starts_with("s-"));
    let audit = world.audit_text();
    assert!(audit.contains(r#""event":{"accepted":true,"protocol":"postgres","remote":"#));
    let ended = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"]["type"] == "session_ended" && r["event"]["statements"] == 1)
        .expect("a session_ended record with its statement count");
    assert!(ended["event"]["bytes_to_client"].as_u64().unwrap() > 0);
    assert!(audit.contains(&format!(r#""request_id":{id}"#)));
}

#[test]
fn logins_are_refused_with_the_reason_and_audited() {
    let world = World::with_pg_target(&[], |text| {
        text.replace("single_user = true", "single_user = false")
    });
    // No lease at all, and a request that is not yet approved.
    let (_, err, ok) = world.psql_run("alice", "whatever", "select 1");
    assert!(!ok);
    assert!(err.contains("no active lease for orders-prod"), "{err}");
    world.request("alice", "orders-prod --for 10m --reason pending");
    let (_, err, _) = world.psql_run("alice", "whatever", "select 1");
    assert!(err.contains("no active lease for orders-prod"), "{err}");

    let (_, zoe_password) = world.lease_pg("zoe", "10m");
    // Without TLS.
    let out = world
        .psql("zoe", "orders-prod", &zoe_password)
        .env("PGSSLMODE", "disable")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jitgate requires TLS: use sslmode=require"),
        "{err}"
    );
    // A wrong password; another user's lease password; unknown names.
    for (user, resource, password) in [
        ("zoe", "orders-prod", "not-the-password"),
        ("alice", "orders-prod", zoe_password.as_str()),
        ("nobody", "orders-prod", zoe_password.as_str()),
        ("zoe", "no-such-db", zoe_password.as_str()),
        ("zoe", "web-01", zoe_password.as_str()),
    ] {
        let out = world
            .psql(user, resource, password)
            .args(["-c", "select 1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("password authentication failed")
                || (user == "alice" && err.contains("no active lease")),
            "{user}/{resource}: {err}"
        );
    }
    let (out, err, ok) = world.psql_run("zoe", &zoe_password, "select 1");
    assert!(ok, "{err}");
    assert_eq!(out, "1");
    let audit = world.audit_text();
    for reason in [
        "no active lease",
        "wrong lease password",
        "unknown user",
        "client did not use TLS",
    ] {
        assert!(audit.contains(reason), "audit lacks {reason:?}");
    }
}

#[test]
fn the_session_is_severed_at_expiry_and_the_backend_is_gone() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "4s");
    let started = Instant::now();
    let out = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(600)"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("access window for orders-prod ended at"),
        "{err}"
    );
    assert!(
        wait_until(Duration::from_secs(1), || world.pg().managed_backends()
            == 0),
        "the backend outlived the lease"
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""severed":"access window for orders-prod ended"#)));
    // And a new login is refused.
    let (_, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(!ok);
    assert!(err.contains("no active lease"), "{err}");
}

#[test]
fn ctrl_c_in_psql_cancels_the_running_query() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let mut psql = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(600)"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .server
        .sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'select pg_sleep%'"
        )
        .unwrap()
        == "1"));
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &psql.id().to_string()])
        .status()
        .unwrap();
    let status = psql.wait().unwrap();
    let mut err = String::new();
    psql.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert!(!status.success());
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
}

#[test]
fn bad_input_gets_a_clean_error_or_close_and_others_are_unaffected() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let address = format!("127.0.0.1:{}", world.pg_port);
    let probes: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        0i32.to_be_bytes().to_vec(),
        i32::MAX.to_be_bytes().to_vec(),
        [8i32.to_be_bytes(), 80_877_103i32.to_be_bytes()]
            .concat()
            .into_iter()
            .chain(b"\x16\x03\x01garbage".iter().copied())
            .collect(),
        [
            &16i32.to_be_bytes()[..],
            &80_877_102i32.to_be_bytes(),
            &[0; 8],
        ]
        .concat(),
    ];
    for probe in &probes {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(probe);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert!(
            reply.is_empty() || reply[0] == b'E' || reply[0] == b'S',
            "{probe:?} -> {reply:?}"
        );
    }
    // Half-open connections that say nothing hold no one else up.
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let (out, err, ok) = world.psql_run("alice", &password, "select 42");
    assert!(ok, "{err}");
    assert_eq!(out, "42");
    drop(idle);
    assert!(!world.log().contains("panicked"), "{}", world.log());
}
