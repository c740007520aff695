//! Per-source protections end to end: failed logins on either port shut
//! their source out for a while, and a source may hold only so many
//! connections still logging in.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{World, wait_until};

/// A plaintext Postgres login: refused ("requires TLS") and counted as a
/// failed login of its source, or closed unanswered while the source is
/// shut out. Returns what the gateway answered.
fn plaintext_pg_login(world: &World) -> String {
    let params = b"user\0alice\0database\0orders-prod\0\0";
    let mut packet = (8 + params.len() as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(params);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", world.pg_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(&packet);
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_source_whose_logins_keep_failing_is_shut_out_of_every_port_for_a_while() {
    // Two failures shut a source out for 5 s; loopback is not exempt here.
    let world = World::start_with(|text| {
        format!(
            "{text}\n[penalties]\nper_failure = \"10s\"\nthreshold = \"15s\"\nmax = \"20s\"\nexempt = []\n"
        )
    });
    world.ok("alice", "status");
    world.ok("alice", "status");
    assert!(plaintext_pg_login(&world).contains("requires TLS"));
    assert!(plaintext_pg_login(&world).contains("requires TLS"));
    // Shut out of both ports: closed before a word is said, even with
    // the right key.
    assert!(wait_until(Duration::from_secs(2), || plaintext_pg_login(
        &world
    )
    .is_empty()));
    let out = world.ssh("alice", "status");
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        world
            .audit_text()
            .contains(r#""source":"127.0.0.1","type":"source_penalized""#),
        "{}",
        world.audit_text()
    );
    // The penalty runs down.
    assert!(wait_until(Duration::from_secs(10), || world
        .ssh("alice", "status")
        .status
        .success()));

    // An unknown key is a failed login too; what is left of the penalty
    // still counts, so one more failure shuts the source out again.
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(world.path("keys").join("mallory"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = world
        .ssh_command("alice", "mallory")
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(wait_until(Duration::from_secs(2), || plaintext_pg_login(
        &world
    )
    .is_empty()));
    let metrics = world.metrics();
    for protocol in ["ssh", "postgres"] {
        assert!(
            metrics.contains(&format!(
                "jitgate_connections_penalized_total{{protocol=\"{protocol}\"}}"
            )),
            "{metrics}"
        );
    }

    // Exempting the source lets it in at once.
    world.reload_applied(|text| text.replace("exempt = []", "exempt = [\"127.0.0.1\"]"));
    assert!(plaintext_pg_login(&world).contains("requires TLS"));
    world.ok("alice", "status");
}

/// Waits for the audit record shutting loopback out.
fn wait_for_shut_out(world: &World) {
    assert!(
        wait_until(Duration::from_secs(10), || world
            .audit_text()
            .contains(r#""source":"127.0.0.1","type":"source_penalized""#)),
        "{}",
        world.audit_text()
    );
}

/// Connects to `port` and reads what the gateway says first, for up to
/// two seconds: an SSH banner, or nothing (a Postgres port waits for the
/// client; a connection closed at accept ends at once).
fn first_words(port: u16) -> (std::net::TcpStream, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut words = vec![0; 64];
    let read = std::io::Read::read(&mut stream, &mut words).unwrap_or(0);
    let words = String::from_utf8_lossy(&words[..read]).into_owned();
    (stream, words)
}

#[test]
fn a_source_may_hold_only_so_many_connections_still_logging_in() {
    let world = World::start_with(|text| {
        format!("{text}\n[penalties]\nmax_pending_logins = 3\nexempt = []\n")
    });
    // A session that logged in holds no place.
    let mut watcher = world.watching("bob", "bob");
    // Three connections that never log in, on both ports.
    let (ssh_one, banner) = first_words(world.ssh_port);
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    let (ssh_two, banner) = first_words(world.ssh_port);
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    // A Postgres client that asked for TLS and went quiet: answered, so
    // it holds its place.
    let mut pg_idle = std::net::TcpStream::connect(("127.0.0.1", world.pg_port)).unwrap();
    pg_idle.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut answer = [0u8; 1];
    std::io::Read::read_exact(&mut pg_idle, &mut answer).unwrap();
    assert_eq!(&answer, b"S");
    // A fourth is closed at once, without a banner, even with a good key.
    assert_eq!(first_words(world.ssh_port).1, "");
    assert!(!world.ssh("alice", "status").status.success());
    assert!(
        world
            .metrics()
            .contains(r#"jitgate_connections_over_source_limit_total{protocol="ssh"}"#)
    );
    // One gives up: its place is free again.
    drop(pg_idle);
    assert!(wait_until(Duration::from_secs(5), || world
        .ssh("alice", "status")
        .status
        .success()));
    drop((ssh_one, ssh_two));
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn a_login_left_to_time_out_counts_against_its_source_unless_the_target_was_slow() {
    // A target that accepts and never answers: there the gateway's own
    // login upstream is what runs out of time, which is not the client's
    // doing.
    let silent_target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent_target.local_addr().unwrap().port();
    let secrets = tempfile::tempdir().unwrap();
    let credential = secrets.path().join("orders-prod");
    jitgate::secret::write_secret_file(&credential, "managed-password").unwrap();
    let world = World::start_with(|text| {
        let text = text.replacen(
            "address = \"127.0.0.1:1\"\naccount = \"app\"",
            &format!(
                "address = \"127.0.0.1:{port}\"\naccount = \"app\"\ncredential_file = \"{}\"",
                credential.display()
            ),
            1,
        );
        format!(
            "{text}\n[ssh]\nauth_timeout = \"1s\"\n[postgres]\nauth_timeout = \"1s\"\nconnect_timeout = \"5s\"\n\
             [penalties]\nper_failure = \"10s\"\nthreshold = \"15s\"\nmax = \"20s\"\nexempt = []\n"
        )
    });
    let (_, password) = world.lease_pg("alice", "30m");
    for _ in 0..3 {
        let (_, err, ok) = world.psql_run("alice", &password, "select 1");
        assert!(!ok, "{err}");
    }
    world.ok("alice", "status");
    assert!(!world.audit_text().contains("source_penalized"));

    // An SSH client that never sends its version, and a Postgres client
    // that asks for TLS and goes quiet: two failed logins once their time
    // is up, which shut the source out.
    let (_ssh_quiet, banner) = first_words(world.ssh_port);
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    let mut pg_quiet = std::net::TcpStream::connect(("127.0.0.1", world.pg_port)).unwrap();
    pg_quiet.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    wait_for_shut_out(&world);
    let out = world.ssh("alice", "status");
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        world
            .metric("jitgate_postgres_startup_timeouts_total")
            .is_some_and(|n| n >= 4.0),
        "{}",
        world.metrics()
    );
}

/// Connects to the Postgres port, sends `bytes`, reads until it closes.
fn pg_send(world: &World, bytes: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", world.pg_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    answer
}

#[test]
fn connections_that_never_try_to_log_in_cost_a_little_and_leaving_at_the_password_prompt_nothing() {
    let world = World::start_with(|text| {
        format!(
            "{text}\n[penalties]\nper_failure = \"10s\"\nper_no_login = \"6s\"\nthreshold = \"15s\"\nmax = \"30s\"\nexempt = []\n"
        )
    });
    // psql without a password leaves when asked for one (it would prompt
    // and connect again): no cost, however often.
    for _ in 0..4 {
        let out = world
            .psql("alice", "orders-prod", "")
            .env_remove("PGPASSWORD")
            .args(["-w", "-c", "select 1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no password supplied"), "{err}");
    }
    world.ok("alice", "status");

    // Garbage on the Postgres port and an SSH connection that leaves
    // after the banner: 12 s, not yet shut out.
    let answer = pg_send(&world, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));
    let (ssh_scan, banner) = first_words(world.ssh_port);
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    drop(ssh_scan);
    world.ok("alice", "status");
    // A TLS handshake given up: 18 s, shut out.
    let mut tls = std::net::TcpStream::connect(("127.0.0.1", world.pg_port)).unwrap();
    tls.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut answer = [0u8; 1];
    std::io::Read::read_exact(&mut tls, &mut answer).unwrap();
    assert_eq!(&answer, b"S");
    drop(tls);
    wait_for_shut_out(&world);
    assert!(!world.ssh("alice", "status").status.success());
}
