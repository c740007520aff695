//! The Postgres data plane end to end: the real `jitgate` binary, a real
//! PostgreSQL target, and stock `psql`/`pgbench` through the gateway.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pg_raw::{self as raw, world_with_known_ca};
use common::{World, assert_success, wait_until, wait_until_stalled};

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
    // The refusal names the command to run, with the gateway's address.
    let request = format!(
        "no active lease for orders-prod: request and check out first (ssh -p {} alice@127.0.0.1 request orders-prod)",
        world.ssh_port
    );
    assert!(err.contains(&request), "{err}");
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
    // Replication connections are refused, not turned into SQL sessions.
    for mode in ["database", "true"] {
        let connection = format!("dbname=orders-prod replication={mode}");
        let out = world
            .psql("zoe", &connection, &zoe_password)
            .args(["-c", "IDENTIFY_SYSTEM"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("jitgate does not relay replication connections"),
            "{mode}: {err}"
        );
    }
    let audit = world.audit_text();
    for reason in [
        "does not relay replication",
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
    world.assert_one_sever_timed("postgres");
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
        // Well-formed TLS records a handshake does not expect: a
        // HelloRequest, and application data before any handshake.
        tls_after_ssl_request(b"\x16\x03\x01\x00\x04\x00\x00\x00\x00"),
        tls_after_ssl_request(b"\x17\x03\x03\x00\x05hello"),
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
    assert!(world.open_connections("postgres").unwrap() >= 500.0);
    drop(idle);
    // Every connection's task ends with it: none is left behind.
    assert_all_connections_ended_cleanly(&world);
    // Garbage from anyone who can connect is no warning in the log.
    assert!(!world.log().contains("WARN"), "{}", world.log());
}

/// An SSLRequest followed by `record`, as the bytes of one probe.
fn tls_after_ssl_request(record: &[u8]) -> Vec<u8> {
    [
        &8i32.to_be_bytes()[..],
        &80_877_103i32.to_be_bytes(),
        record,
    ]
    .concat()
}

/// Every Postgres connection's task ended with it, and nothing panicked.
fn assert_all_connections_ended_cleanly(world: &World) {
    assert!(
        wait_until(Duration::from_secs(10), || world
            .open_connections("postgres")
            == Some(0.0)),
        "{:?} Postgres connections still open",
        world.open_connections("postgres")
    );
    assert!(!world.log().contains("panicked"), "{}", world.log());
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn copy_in_and_out_of_sixty_megabytes_is_byte_exact() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let source = world.path("copy-in.tsv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for id in 0..600_000u64 {
            let mut line = format!("{id}\t");
            for _ in 0..6 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                line.push_str(&format!("{state:016x}"));
            }
            line.push('\n');
            file.write_all(line.as_bytes()).unwrap();
        }
    }
    assert!(std::fs::metadata(&source).unwrap().len() > 60_000_000);
    let (_, err, ok) = world.psql_run(
        "alice",
        &password,
        "create table big (id bigint, line text)",
    );
    assert!(ok, "{err}");
    let (_, err, ok) = world.psql_run(
        "alice",
        &password,
        &format!("\\copy big from '{}'", source.display()),
    );
    assert!(ok, "{err}");
    let target = world.path("copy-out.tsv");
    let (_, err, ok) = world.psql_run(
        "alice",
        &password,
        &format!(
            "\\copy (select * from big order by id) to '{}'",
            target.display()
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(sha256_of(&source), sha256_of(&target));
}

/// A stock Postgres client program run against the gateway as alice
/// (`args` name the database); its output, asserting it succeeded.
fn pg_tool(world: &World, password: &str, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &world.pg_port.to_string(),
            "-U",
            "alice",
        ])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "require")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

#[test]
fn pg_dump_and_pg_restore_in_parallel_round_trip_through_the_gateway() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let (_, err, ok) = world.psql_run(
        "alice",
        &password,
        "create table items (id int primary key, note text not null);
         insert into items select n, md5(n::text) from generate_series(1, 20000) n;
         create table tags (item int references items, tag text);
         insert into tags select n, 'tag-' || (n % 7) from generate_series(1, 20000, 3) n;
         create view tagged as select i.id, t.tag from items i join tags t on t.item = i.id",
    );
    assert!(ok, "{err}");
    let fingerprint = "select md5(string_agg(id || note, ',' order by id)) from items \
                       union all select count(*)::text from tagged";
    let (before, err, ok) = world.psql_run("alice", &password, fingerprint);
    assert!(ok, "{err}");

    // Directory format with two workers: three connections sharing the
    // leader's exported snapshot.
    let dump = world.path("orders.dump");
    let dump_arg = dump.display().to_string();
    pg_tool(
        &world,
        &password,
        "pg_dump",
        &["-d", "orders-prod", "-Fd", "-j", "2", "-f", &dump_arg],
    );
    let (_, err, ok) = world.psql_run(
        "alice",
        &password,
        "drop view tagged; drop table tags; drop table items",
    );
    assert!(ok, "{err}");
    pg_tool(
        &world,
        &password,
        "pg_restore",
        &["-d", "orders-prod", "-j", "2", "--no-owner", &dump_arg],
    );
    let (after, err, ok) = world.psql_run("alice", &password, fingerprint);
    assert!(ok, "{err}");
    assert_eq!(before, after);
    assert!(before.ends_with("\n6667"), "{before}");

    // The dump's and the restore's statements are in the query log.
    assert!(wait_until(Duration::from_secs(5), || {
        let logs = world.query_logs();
        logs.contains("COPY public.items (id, note) TO stdout")
            && logs.contains("COPY public.items (id, note) FROM stdin")
    }));
}

/// A driver that is not libpq (asyncpg speaks the protocol itself, in
/// binary formats, with named statements, pipelined executemany, binary
/// COPY, portals fetched in batches, notifications) works unchanged,
/// logging in with a cleartext password or with SCRAM.
#[test]
fn asyncpg_a_driver_without_libpq_works_unchanged() {
    for client_auth in ["password", "scram-sha-256"] {
        let world = World::with_pg_target(&[], |t| {
            format!("{t}\n[postgres]\nclient_auth = \"{client_auth}\"\n")
        });
        asyncpg_session(&world);
    }
}

fn asyncpg_session(world: &World) {
    let (_, password) = world.lease_pg("alice", "10m");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/asyncpg_client.py"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(world.pg_port.to_string())
        .args(["alice", "orders-prod", &password])
        .output()
        .expect("python3 with asyncpg (scripts/install-deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Rows 501..=1000: 500 of them, values n/4, tags "t0".."t2".
    assert_eq!(
        results["fetchrow"],
        serde_json::json!([500, 93812.5, ["t2", "x"]])
    );
    // Binary COPY: 19-byte header, 2-byte trailer, and per row a 2-byte
    // field count plus 4+4 (int) and 4+8 (float8) bytes.
    assert_eq!(
        results["binary_copy_out_bytes"],
        19 + 2 + 3000 * (2 + 8 + 12)
    );
    assert_eq!(results["cursor_rows"], 3000);
    assert_eq!(results["unique_violation"], "23505");
    assert_eq!(results["after_failed_transaction"], 3000);
    assert_eq!(results["notification"], "hello from asyncpg");
    assert!(wait_until(Duration::from_secs(5), || world
        .query_logs()
        .contains("insert into readings values ($1, $2, $3)")));
    assert!(!world.log().contains("panicked"), "{}", world.log());
}

fn pgbench(world: &World, password: &str, args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().copied().chain(["orders-prod"]).collect();
    pg_tool(world, password, "pgbench", &args)
}

#[test]
fn pgbench_extended_and_prepared_protocols_run_through_the_gateway() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    pgbench(&world, &password, &["-i", "-s", "1", "-q"]);
    for mode in ["extended", "prepared"] {
        let text = pgbench(
            &world,
            &password,
            &["-n", "-c", "4", "-j", "2", "-t", "200", "-M", mode],
        );
        assert!(
            text.contains("number of transactions actually processed: 800/800"),
            "{text}"
        );
        assert!(!text.contains("number of failed transactions: 1"), "{text}");
    }
    // The prepared statements' texts are in the query log with outcomes.
    let logs = world.query_logs();
    assert!(logs.contains(r#""statement":"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;","outcome":"UPDATE 1""#), "{}", &logs[..logs.len().min(2000)]);
    // Parameters are not logged by default.
    assert!(!logs.contains(r#""parameters""#));
}

#[test]
fn the_managed_password_never_reaches_clients_logs_or_audit() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let managed = world.pg().password.clone();
    let (out, err, ok) = world.psql_run(
        "alice",
        &password,
        "select 1; select * from pg_settings where name = 'password_encryption'; select 1/0",
    );
    assert!(!ok);
    // A target that refuses the managed credential: the client hears only
    // that the session could not be opened.
    world
        .pg()
        .server
        .sql(
            "postgres",
            "ALTER ROLE orders_app PASSWORD 'changed-behind-our-back'",
        )
        .unwrap();
    let (_, refused, _) = world.psql_run("alice", &password, "select 1");
    assert!(
        refused.contains("could not open a session on orders-prod"),
        "{refused}"
    );
    for (name, text) in [
        ("psql stdout", out),
        ("psql stderr", err),
        ("refusal", refused),
        ("serve log", world.log()),
        ("audit log", world.audit_text()),
        ("query logs", world.query_logs()),
    ] {
        assert!(
            !text.contains(&managed),
            "the managed password leaked into the {name}"
        );
        assert!(
            !text.contains(&password),
            "the lease password leaked into the {name}"
        );
    }
}

#[test]
fn warnings_arrive_before_expiry_as_notices() {
    let world = World::with_pg_target(&[], |text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"15s\"]",
        )
    });
    // The warning is due 5 s into a 20 s window; the query spans it with
    // room for a slow machine on both sides.
    let (id, password) = world.lease_pg("alice", "20s");
    let (_, err, _) = world.psql_run("alice", &password, "select pg_sleep(8)");
    assert!(
        err.contains("WARNING:  jitgate: access window for orders-prod ends in"),
        "{err}"
    );
    let extend = format!(
        "ssh -p {} alice@127.0.0.1 extend {id} --for 15m --reason TEXT",
        world.ssh_port
    );
    assert!(err.contains(&extend), "{err}");
}

#[test]
fn an_extension_after_a_warning_brings_a_warning_before_the_new_end() {
    let world = World::with_pg_target(&[], |text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"5s\"]",
        )
    });
    // Warned 3 s in; extended by 8 s at about 5 s in, so warned again
    // about 11 s in; the query ends at about 14 s, before the window.
    let (id, password) = world.lease_pg("alice", "8s");
    let query = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(13)"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    world.ok(
        "alice",
        &format!("extend {id} --for 8s --reason 'query runs on'"),
    );
    world.ok("bob", &format!("approve {id}"));
    world.ok("dave", &format!("approve {id}"));
    let out = query.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("WARNING:  jitgate: access window for orders-prod ends in")
            .count(),
        2,
        "{err}"
    );
}

#[test]
fn per_user_connection_cap_and_idle_timeout_end_sessions_with_a_clear_error() {
    let world = World::with_pg_target(&[], |text| {
        format!("{text}\n[postgres]\nmax_connections_per_user = 1\nidle_timeout = \"2s\"\n")
    });
    let (_, password) = world.lease_pg("alice", "10m");
    // The query outlasts idle_timeout: a session waiting on a running
    // query is busy, not idle, and must survive.
    let mut holder = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(4)"])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .managed_backends()
        == 1));
    let (_, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(!ok);
    assert!(err.contains("too many connections for alice"), "{err}");
    assert!(holder.wait().unwrap().success());
    // An interactive session that goes quiet is closed.
    let mut idle = world
        .psql("alice", "orders-prod", &password)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = idle.stdin.take().unwrap();
    stdin.write_all(b"select 1;\n").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let _ = stdin.write_all(b"select 2;\n");
    drop(stdin);
    let out = idle.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without activity (postgres.idle_timeout)"),
        "{err}"
    );
    // The audit record of its end says why the gateway closed it.
    assert!(
        wait_until(Duration::from_secs(5), || world.audit_text().contains(
            r#""closed_by_gateway":"closed after 2s without activity (postgres.idle_timeout)""#
        )),
        "{}",
        world.audit_text()
    );
}

/// Writes a new certificate and key for the gateway over the old ones in
/// `dir` (`server.crt`, `server.key`), signed by a new CA written to `ca`.
fn renew_certificate(dir: &std::path::Path, ca: &std::path::Path) {
    let names = ["localhost".to_string()];
    let (authority, server) = jitgate::postgres::tls::generate::ca_and_server(&names).unwrap();
    std::fs::write(ca, &authority.cert).unwrap();
    jitgate::postgres::tls::write_pair(&server, &dir.join("server.crt"), &dir.join("server.key"))
        .unwrap();
}

#[test]
fn a_reload_brings_a_renewed_certificate_to_new_connections_and_a_broken_one_is_refused() {
    let (world, tls_dir) = world_with_known_ca("");
    let (_, password) = world.lease_pg("alice", "10m");
    let dir = tls_dir.path();
    let old_ca = dir.join("ca.crt");
    let mut open = raw::connect(world.pg_port, &old_ca);
    raw::login(&mut open, "alice", "orders-prod", &password);

    let new_ca = dir.join("new-ca.crt");
    renew_certificate(dir, &new_ca);
    world.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || raw::handshake(
            world.pg_port,
            &new_ca
        )
        .is_ok()),
        "the renewed certificate is not served after a reload"
    );
    let refused = raw::handshake(world.pg_port, &old_ca).unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    let mut fresh = raw::connect(world.pg_port, &new_ca);
    raw::login(&mut fresh, "alice", "orders-prod", &password);
    assert_eq!(raw::query(&mut fresh, "select 'renewed'"), "renewed");
    // A session opened before the renewal goes on as it was.
    assert_eq!(raw::query(&mut open, "select 'still here'"), "still here");

    // A key that does not load refuses the whole reload: the renewed
    // certificate stays in service.
    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    world.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || world
        .audit_text()
        .contains(r#""ok":false"#)));
    assert!(world.log().contains("new configuration refused"));
    raw::handshake(world.pg_port, &new_ca).unwrap();
    let mut after = raw::connect(world.pg_port, &new_ca);
    raw::login(&mut after, "alice", "orders-prod", &password);
}

#[test]
fn checkout_prints_a_psql_command_that_verifies_the_gateway_by_its_name() {
    let (world, _tls) =
        world_with_known_ca("client_root_cert = \"{ca}\"\nclient_host = \"localhost\"\n");
    let out = world.checkout_pg("alice", "10m");
    let printed = out["psql"].as_str().unwrap();
    let conninfo = printed
        .strip_prefix("psql \"")
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap();
    assert!(
        conninfo.starts_with("host=localhost ") && conninfo.contains(" sslmode=verify-full "),
        "{conninfo}"
    );
    // As a user would paste it: it reaches the gateway and checks it.
    let through = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "select 'verified'"])
        .arg(conninfo)
        .env("PGPASSWORD", out["password"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&through.stdout).trim(),
        "verified",
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    // Status gives the same command again, never the password.
    let status = world.json("alice", "status");
    assert_eq!(status["leases"][0]["connect"], printed, "{status}");
    let text = world.ok("alice", "status");
    assert!(text.contains(printed), "{text}");
    assert!(!text.contains(out["password"].as_str().unwrap()), "{text}");
}

#[test]
fn cancel_requests_inside_tls_reach_the_right_backend_with_the_real_key() {
    let (world, tls_dir) = world_with_known_ca("");
    let (_, password) = world.lease_pg("alice", "10m");
    let ca_path = tls_dir.path().join("ca.crt");
    let mut session = raw::connect(world.pg_port, &ca_path);
    let (process_id, secret_key) = raw::login(&mut session, "alice", "orders-prod", &password);
    let backend: i32 = raw::query(&mut session, "select pg_backend_pid()")
        .parse()
        .unwrap();
    assert_ne!(
        process_id, backend,
        "the client must not see the real backend key"
    );

    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("select pg_sleep(600)", &mut out).unwrap();
    raw::send(&mut session, &out);
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .server
        .sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'select pg_sleep(600)'"
        )
        .unwrap()
        == "1"));
    // A wrong key cancels nothing.
    let mut stranger = raw::connect(world.pg_port, &ca_path);
    let mut cancel = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(process_id, secret_key ^ 1, &mut cancel);
    raw::send(&mut stranger, &cancel);
    raw::read_to_clean_close(&mut stranger);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        world.pg().server.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query = 'select pg_sleep(600)' AND state = 'active'").unwrap(),
        "1"
    );
    let sent = Instant::now();
    let mut canceller = raw::connect(world.pg_port, &ca_path);
    let mut cancel = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(process_id, secret_key, &mut cancel);
    raw::send(&mut canceller, &cancel);
    raw::read_to_clean_close(&mut canceller);
    let mut code = String::new();
    loop {
        match raw::read(&mut session) {
            (b'E', body) => code = String::from_utf8_lossy(&body).into_owned(),
            (b'Z', _) => break,
            _ => {}
        }
    }
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert!(code.contains("57014"), "{code}");
    assert_eq!(
        raw::query(&mut session, "select 'still usable'"),
        "still usable"
    );
}

/// Reads until the connection ends; returns the SQLSTATE of the last
/// ErrorResponse seen, if any.
fn error_code_before_close(stream: &mut raw::Tls) -> Option<String> {
    let mut code = None;
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let length = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (message, after) = rest.split_at((1 + length).min(rest.len()));
        if message[0] == b'E' {
            code = message[5..]
                .split(|b| *b == 0)
                .find_map(|field| field.strip_prefix(b"C"))
                .map(|c| String::from_utf8_lossy(c).into_owned());
        }
        rest = after;
    }
    code
}

/// A logged-in raw session of alice on orders-prod.
fn alice_session(world: &World, ca: &std::path::Path, password: &str) -> raw::Tls {
    let mut session = raw::connect(world.pg_port, ca);
    raw::login(&mut session, "alice", "orders-prod", password);
    session
}

#[test]
fn bad_messages_inside_a_session_end_it_with_a_clear_error_and_others_carry_on() {
    let (world, tls_dir) = world_with_known_ca("[postgres]\nmax_message_bytes = 4096\n");
    let (_, password) = world.lease_pg("alice", "10m");
    let ca = tls_dir.path().join("ca.crt");
    let mut bystander = alice_session(&world, &ca, &password);
    let header = |length: u32| [&[b'Q'][..], &length.to_be_bytes()].concat();
    let oversized = [header(8 * 1024 + 4), vec![b'x'; 8 * 1024]].concat();
    for (probe, expected) in [
        (header(0), "08P01"),
        (header(3), "08P01"),
        (header(1 << 31), "08P01"),
        (header(u32::MAX), "08P01"),
        (oversized, "54000"),
    ] {
        let mut session = alice_session(&world, &ca, &password);
        raw::send(&mut session, &probe);
        assert_eq!(
            error_code_before_close(&mut session).as_deref(),
            Some(expected),
            "{:?}",
            &probe[..5]
        );
        assert_eq!(
            raw::query(&mut bystander, "select 'unaffected'"),
            "unaffected"
        );
    }
    // A message cut off by the client's close ends that session alone.
    let mut session = alice_session(&world, &ca, &password);
    raw::send(&mut session, &[header(100), b"select".to_vec()].concat());
    drop(session);
    // Garbage where the password should be is refused before any login.
    let mut session = raw::connect(world.pg_port, &ca);
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "alice"), ("database", "orders-prod")],
        &mut startup,
    )
    .unwrap();
    raw::send(&mut session, &startup);
    assert_eq!(raw::read(&mut session).0, b'R');
    raw::send(&mut session, b"\xff\xff\xff\xff\xff\xff\xff\xff");
    assert_eq!(
        error_code_before_close(&mut session).as_deref(),
        Some("08P01")
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(
            "malformed password message: invalid message length -1"
        )));

    assert_eq!(
        raw::query(&mut bystander, "select 'still here'"),
        "still here"
    );
    drop(bystander);
    assert_all_connections_ended_cleanly(&world);
}

#[test]
fn auditors_see_postgres_sessions_and_follow_their_statements_live() {
    let world = World::with_pg_target(&[], |t| t);
    let (id, password) = world.lease_pg("alice", "10m");
    let mut psql = world
        .psql("alice", "orders-prod", &password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(b"select 'before-follow';\n").unwrap();
    let mut session = None;
    assert!(wait_until(Duration::from_secs(5), || {
        session = world.json("carol", "sessions")["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["protocol"] == "postgres" && s["resource"] == "orders-prod")
            .cloned();
        session.is_some()
    }));
    // Each session shows the lease it runs on and when that ends.
    let session = session.unwrap();
    assert_eq!(session["request_id"], id, "{session}");
    let window_end = world.json("alice", "status")["leases"][0]["window_end"].clone();
    assert_eq!(session["window_end"], window_end, "{session}");
    let session = session["id"].as_str().unwrap().to_string();
    let mut listed = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            listed = world.ok("carol", "sessions");
            let row = listed.lines().find(|l| l.starts_with(&session)).unwrap();
            row.contains(" UTC ") && row.trim_end().ends_with("idle (1 statement)")
        }),
        "{listed}"
    );
    // A statement the session waits on shows, with how long it runs.
    stdin.write_all(b"select pg_sleep(3.5);\n").unwrap();
    let running = |world: &World| {
        world.json("carol", "sessions")["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == session.as_str())
            .map(|s| s["activity"].clone())
            .unwrap()
    };
    let mut activity = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(2), || {
        activity = running(&world);
        activity["running"]["statement"] == "select pg_sleep(3.5);"
    }));
    assert!(activity["bytes_in"].as_u64().unwrap() > 0, "{activity}");
    let row = world.ok("carol", "sessions");
    assert!(row.contains(": select pg_sleep(3.5);"), "{row}");
    // Waiting on a statement for seconds is not idle.
    assert!(wait_until(Duration::from_secs(3), || {
        activity = running(&world);
        activity["running"]["seconds"].as_u64() >= Some(2)
    }));
    assert_eq!(activity["idle_seconds"], 0, "{activity}");
    assert!(wait_until(Duration::from_secs(5), || {
        running(&world)["running"].is_null()
    }));
    let (mut follower, output) = world.follow("carol", &session);
    // Lines arrive through a channel so a missing one fails the test
    // instead of hanging it.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in output.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line")
    };
    let first = next();
    assert!(
        first.contains("select 'before-follow'; -> SELECT 1"),
        "{first}"
    );
    assert!(next().contains("select pg_sleep(3.5);"));
    stdin.write_all(b"select 'live-' || 42;\n").unwrap();
    let live = next();
    assert!(live.contains("select 'live-' || 42; -> SELECT 1"), "{live}");
    // A statement that runs on shows while it runs, then with its outcome.
    stdin.write_all(b"select pg_sleep(2.5);\n").unwrap();
    let waiting = next();
    assert!(
        waiting.contains("select pg_sleep(2.5); -> running"),
        "{waiting}"
    );
    let done = next();
    assert!(done.contains("select pg_sleep(2.5); -> SELECT 1"), "{done}");
    // A session idle inside a transaction (holding its locks) says so.
    stdin.write_all(b"begin;\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            listed = world.ok("carol", "sessions");
            listed.lines().any(|l| {
                l.starts_with(&session) && l.ends_with("idle in transaction (5 statements)")
            })
        }),
        "{listed}"
    );
    drop(stdin);
    assert!(psql.wait().unwrap().success());
    World::follow_ended(&mut follower);
}

#[test]
fn the_gateway_reaches_a_tls_target_verifying_its_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let names = ["127.0.0.1".to_string()];
    let (ca, server) = jitgate::postgres::tls::generate::ca_and_server(&names).unwrap();
    let ca_path = certs.path().join("ca.crt");
    std::fs::write(&ca_path, &ca.cert).unwrap();
    let (cert, key) = (certs.path().join("db.crt"), certs.path().join("db.key"));
    jitgate::postgres::tls::write_pair(&server, &cert, &key).unwrap();
    // PostgreSQL insists on owning its key when it runs as postgres.
    std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(certs.path())
        .status()
        .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(certs.path())
        .status()
        .unwrap();
    let settings = [
        "ssl=on".to_string(),
        format!("ssl_cert_file={}", cert.display()),
        format!("ssl_key_file={}", key.display()),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let ca_text = ca_path.display().to_string();
    let world = World::with_pg_target(&settings, move |text| {
        text.replacen(
            "database = \"orders\"",
            &format!("database = \"orders\"\nupstream_tls_ca = \"{ca_text}\""),
            1,
        )
    });
    let (_, password) = world.lease_pg("alice", "10m");
    let (out, err, ok) = world.psql_run(
        "alice",
        &password,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "t");
    // Rotation reaches the target over the same verified TLS.
    let rotated = world.ok("root", "rotate orders-prod");
    assert!(rotated.contains("now version 2"), "{rotated}");
    let (out, err, ok) = world.psql_run("alice", &password, "select 'after rotation'");
    assert!(ok, "{err}");
    assert_eq!(out, "after rotation");
}

#[test]
fn an_administrator_terminates_a_session_mid_query_and_its_backend_is_gone() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let psql = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(600)"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let session = world.live_session("postgres");
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .managed_backends()
        == 1));
    world.ok("root", &format!("terminate {session}"));
    let out = psql.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("session {session} terminated by root")),
        "{err}"
    );
    assert!(
        wait_until(Duration::from_secs(1), || world.pg().managed_backends()
            == 0),
        "the backend outlived the session"
    );
    // The lease stays.
    let (out, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(ok && out == "1", "{err}");
}

/// The activity of the one live Postgres session, if there is one.
fn postgres_activity(world: &World) -> Option<serde_json::Value> {
    world.json("carol", "sessions")["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["protocol"] == "postgres")
        .map(|s| s["activity"].clone())
}

/// Starts `sql` in psql, waits until the gateway sees it running, and
/// kills psql (as a crash or a lost laptop would).
fn leave_in_the_middle_of(world: &World, password: &str, sql: &str, running: &str) {
    let mut client = world
        .psql("alice", "orders-prod", password)
        .args(["-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            postgres_activity(world)
                .is_some_and(|a| a["running"]["statement"].as_str() == Some(running))
        }),
        "{sql} never ran"
    );
    client.kill().unwrap();
    client.wait().unwrap();
}

#[test]
fn a_statement_outlives_its_departed_client_but_not_the_window() {
    let world = World::with_pg_target(&[], |t| t);
    let (id, password) = world.lease_pg("alice", "10m");
    let (_, err, ok) = world.psql_run("alice", &password, "create table departed (n int)");
    assert!(ok, "{err}");

    // What the client sent runs to its end, as on a direct connection, and
    // the session stays listed (its client gone) until it has.
    let sql = "select pg_sleep(2); insert into departed values (42)";
    leave_in_the_middle_of(&world, &password, sql, sql);
    let activity = postgres_activity(&world).expect("the session went with its client");
    assert_eq!(activity["client_gone"], true, "{activity}");
    let listed = world.ok("carol", "sessions");
    assert!(listed.contains("client gone, running"), "{listed}");
    assert!(
        wait_until(Duration::from_secs(10), || postgres_activity(&world)
            .is_none()),
        "the session outlived its statement"
    );
    let rows = world
        .pg()
        .server
        .sql("orders", "SELECT count(*) FROM departed WHERE n = 42")
        .unwrap();
    assert_eq!(rows, "1");
    assert!(
        wait_until(Duration::from_secs(5), || world
            .query_logs()
            .contains("INSERT 0 1")),
        "{}",
        world.query_logs()
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .pg()
        .managed_backends()
        == 0));

    // A departed client's statement still ends with the window: severed
    // and cancelled like any other.
    leave_in_the_middle_of(
        &world,
        &password,
        "select pg_sleep(600)",
        "select pg_sleep(600)",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        world.pg().managed_backends(),
        1,
        "the statement did not run on"
    );
    world.ok("alice", &format!("checkin {id}"));
    assert!(
        wait_until(Duration::from_secs(5), || world.pg().managed_backends()
            == 0),
        "the backend outlived the window"
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""severed":"access window for orders-prod ended"#)));
}

#[test]
fn a_departed_clients_statement_that_streams_rows_is_stopped() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    // Its rows come as they are made, a millisecond or more apart: half a
    // minute of output in all.
    let sql = "select g, pg_sleep(0.001) from generate_series(1, 30000) g";
    leave_in_the_middle_of(&world, &password, sql, sql);
    // As on a direct connection, where PostgreSQL fails writing the rows
    // to the departed client and ends the session.
    assert!(
        wait_until(Duration::from_secs(5), || world.pg().managed_backends()
            == 0),
        "the statement streamed on to nobody"
    );
    assert!(postgres_activity(&world).is_none());
    assert!(
        wait_until(Duration::from_secs(5), || world
            .query_logs()
            .contains("unfinished (session ended)")),
        "{}",
        world.query_logs()
    );
}

#[test]
fn a_client_that_stopped_reading_is_still_cut_off_when_its_window_ends() {
    let world = World::with_pg_target(&[], |t| t);
    let (id, password) = world.lease_pg("alice", "10m");
    // psql writes COPY's rows to a pipe nobody reads: it stops reading its
    // socket, and the gateway's writes to it wait.
    let mut client = world
        .psql("alice", "orders-prod", &password)
        .args([
            "-c",
            "copy (select generate_series(1, 100000000)) to stdout",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until_stalled(|| world.bytes_to_client("postgres")),
        "the copy never stalled"
    );
    world.ok("alice", &format!("checkin {id}"));
    assert!(
        wait_until(Duration::from_secs(2), || postgres_activity(&world)
            .is_none()),
        "the session outlived its window"
    );
    assert!(
        wait_until(Duration::from_secs(2), || world.pg().managed_backends()
            == 0),
        "the backend outlived the window"
    );
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn large_objects_written_over_the_fast_path_are_in_the_query_log() {
    let world = World::with_pg_target(&[], |t| t);
    let (_, password) = world.lease_pg("alice", "10m");
    let file = world.path("object.bin");
    std::fs::write(&file, "large object content ".repeat(5000)).unwrap();
    // psql's \lo_import writes through libpq's large-object functions,
    // which call lo_creat, lo_open, lowrite and lo_close by OID
    // (FunctionCall), not by SQL.
    let imported = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", &format!("\\lo_import {}", file.display())])
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    let (count, _, ok) = world.psql_run(
        "alice",
        &password,
        "select count(*) from pg_largeobject_metadata",
    );
    assert!(ok);
    assert_eq!(count, "1");

    let logs = world.query_logs();
    let calls: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("fast-path call of function OID"))
        .collect();
    assert!(calls.len() >= 4, "{logs}");
    assert!(
        calls.iter().all(|line| line.contains("function returned")),
        "{logs}"
    );
    // The statements after them are still paired with their own results.
    assert!(logs.contains(r#""outcome":"COMMIT""#), "{logs}");
    assert!(!logs.contains("large object content"), "{logs}");
}

/// With `client_auth = "scram-sha-256"` the lease password never crosses
/// the wire: the gateway offers SCRAM (and SCRAM-SHA-256-PLUS, bound to
/// its own TLS connection, which libpq takes by itself), never a
/// cleartext password; refusals say what they say with a cleartext login.
#[test]
fn with_scram_client_auth_the_password_never_crosses_the_wire() {
    let (world, tls_dir) = world_with_known_ca("[postgres]\nclient_auth = \"scram-sha-256\"\n");
    let checkout = world.checkout_pg("alice", "10m");
    let password = checkout["password"].as_str().unwrap().to_string();
    // The printed command insists on channel binding, so a man in the
    // middle cannot ask it for the password in cleartext instead.
    let psql = checkout["psql"].as_str().unwrap();
    assert!(psql.ends_with(" channel_binding=require\""), "{psql}");
    let ca = tls_dir.path().join("ca.crt");

    let mut stream = raw::connect(world.pg_port, &ca);
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "alice"), ("database", "orders-prod")],
        &mut out,
    )
    .unwrap();
    raw::send(&mut stream, &out);
    let (tag, body) = raw::read(&mut stream);
    assert_eq!(tag, b'R');
    assert_eq!(body[..4], 10i32.to_be_bytes(), "AuthenticationSASL");
    assert_eq!(&body[4..], b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    drop(stream);

    for binding in ["require", "disable"] {
        let out = world
            .psql("alice", "orders-prod", &password)
            .env("PGCHANNELBINDING", binding)
            .args(["-c", "select current_user"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "channel_binding={binding}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "orders_app");
    }

    let refusal = |user: &str, password: &str| {
        let out = world
            .psql(user, "orders-prod", password)
            .args(["-c", "select 1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let wrong = refusal("alice", "not-the-lease-password");
    assert!(
        wrong.contains("password authentication failed for user \"alice\""),
        "{wrong}"
    );
    let unknown = refusal("mallory", &password);
    assert!(
        unknown.contains("password authentication failed for user \"mallory\""),
        "{unknown}"
    );
    let no_lease = refusal("dave", &password);
    assert!(
        no_lease.contains("no active lease for orders-prod"),
        "{no_lease}"
    );

    let audit = world.audit_text();
    assert!(
        audit.contains("wrong lease password (SCRAM proof)"),
        "{audit}"
    );
    assert!(!audit.contains(&password));
    assert!(!world.log().contains(&password));
}

/// A man in the middle that terminates the client's TLS with a
/// certificate of its own (which a client using `sslmode=require` does not
/// check) and opens its own TLS connection to the gateway, passing the
/// bytes on between the two; returns its port.
fn man_in_the_middle(gateway_port: u16, gateway_ca: &std::path::Path) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let own = jitgate::postgres::tls::generate::self_signed(&["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("mitm.crt"), dir.path().join("mitm.key"));
    jitgate::postgres::tls::write_pair(&own, &cert, &key).unwrap();
    let acceptor = jitgate::postgres::tls::acceptor_from(&cert, &key)
        .unwrap()
        .acceptor;
    let connector = jitgate::postgres::tls::connector(gateway_ca).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let _dir = dir;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut client, _)) = listener.accept().await {
                let (acceptor, connector) = (acceptor.clone(), connector.clone());
                tokio::spawn(async move {
                    let mut ssl_request = [0u8; 8];
                    client.read_exact(&mut ssl_request).await?;
                    client.write_all(b"S").await?;
                    let mut client = acceptor.accept(client).await?;
                    let mut upstream =
                        tokio::net::TcpStream::connect(("127.0.0.1", gateway_port)).await?;
                    upstream.write_all(&ssl_request).await?;
                    upstream.read_exact(&mut [0u8; 1]).await?;
                    let name = "localhost".try_into().unwrap();
                    let mut upstream = connector.connect(name, upstream).await?;
                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                    Ok::<_, std::io::Error>(())
                });
            }
        });
    });
    port
}

#[test]
fn a_man_in_the_middle_cannot_pass_a_scram_login_on() {
    let (world, tls_dir) = world_with_known_ca("[postgres]\nclient_auth = \"scram-sha-256\"\n");
    let (_, password) = world.lease_pg("alice", "10m");
    let mitm = man_in_the_middle(world.pg_port, &tls_dir.path().join("ca.crt"));
    let through_mitm = |binding: &str| {
        world
            .psql("alice", "orders-prod", &password)
            .args(["-p", &mitm.to_string()])
            .env("PGCHANNELBINDING", binding)
            .args(["-c", "select current_user"])
            .output()
            .unwrap()
    };
    // Bound to the certificate the client saw, the proof fails at the
    // gateway, which presented another.
    let out = through_mitm("prefer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SCRAM channel binding check failed"),
        "{stderr}"
    );
    // Unbound, a relayed SCRAM login passes, but the password still never
    // crossed the wire: the printed command therefore insists on binding.
    let out = through_mitm("disable");
    assert_success(&out);
    // Straight to the gateway, bound, it works.
    let out = world
        .psql("alice", "orders-prod", &password)
        .env("PGCHANNELBINDING", "require")
        .args(["-c", "select current_user"])
        .output()
        .unwrap();
    assert_success(&out);
}

/// A holder who lost the password checkout showed gets a new one with a
/// fresh MFA check and no new approvals; the old one stops working at
/// once and sessions opened with it carry on.
#[test]
fn password_gives_the_holder_a_new_connection_password_and_the_old_one_stops_working() {
    let mut world = World::with_pg_target(&[], |t| t);
    let (id, old) = world.lease_pg("alice", "10m");
    let running = world
        .psql("alice", "orders-prod", &old)
        .args(["-c", "select pg_sleep(8); select 'carried on'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        postgres_activity(&world).is_some()
    }));

    let status = world.ok("alice", "status");
    assert!(
        status.contains(&format!("lost it? `password {id}` gives a new one")),
        "{status}"
    );
    let without_mfa = world.refused("alice", &format!("password {id}"));
    assert!(without_mfa.contains("requires MFA"), "{without_mfa}");
    let by_another = world.refused("zoe", &format!("password {id} --totp 000000"));
    assert!(
        by_another.contains("belongs to someone else"),
        "{by_another}"
    );
    let (_, err, ok) = world.psql_run("alice", &old, "select 1");
    assert!(ok, "a refused command changes nothing: {err}");

    let given = world.json(
        "alice",
        &format!("password {id} --totp {}", world.totp_next("alice")),
    );
    let new = given["password"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        postgres_activity(&world).is_some(),
        "the session opened with the old password is still there"
    );
    assert_eq!(given["resource"], "orders-prod");
    assert!(
        given["psql"]
            .as_str()
            .unwrap()
            .contains("dbname=orders-prod")
    );

    let (_, err, ok) = world.psql_run("alice", &old, "select 1");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (out, err, ok) = world.psql_run("alice", &new, "select current_user");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "orders_app");
    let earlier = running.wait_with_output().unwrap();
    assert!(
        earlier.status.success(),
        "{}",
        String::from_utf8_lossy(&earlier.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&earlier.stdout).trim(),
        "carried on"
    );

    // Acknowledged, so it survives a crash.
    world.kill_hard();
    world.launch();
    let (_, err, ok) = world.psql_run("alice", &old, "select 1");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (_, err, ok) = world.psql_run("alice", &new, "select 1");
    assert!(ok, "{err}");

    let audit = world.audit_text();
    assert!(audit.contains(r#""password_replaced""#), "{audit}");
    for secret in [&old, &new] {
        assert!(!audit.contains(secret.as_str()));
        assert!(!world.log().contains(secret.as_str()));
    }
}

#[test]
fn password_is_refused_for_a_lease_without_one_and_after_check_in() {
    let world = World::with_pg_target(&[], |t| t);
    let (id, _) = world.lease_pg("alice", "10m");
    world.ok("alice", &format!("checkin {id}"));
    let after = world.refused(
        "alice",
        &format!("password {id} --totp {}", world.totp_next("alice")),
    );
    assert!(after.contains("cannot be given a new password"), "{after}");

    let web = world.lease_web("zoe", "10m");
    let ssh = world.refused("zoe", &format!("password {web}"));
    assert!(
        ssh.contains("web-01, which is not a database: it has no connection password"),
        "{ssh}"
    );
}
