//! The daemon's contract: config checks, systemd readiness, reload,
//! graceful shutdown, crash durability, expiry, audit verification, metrics.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, World, assert_success, wait_until};

fn jitgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn check_config_accepts_the_example_and_names_mistakes_with_exit_64() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jitgate.example.toml");
    let out = jitgate(&["check-config", example]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[listen]\nssh = \"nowhere\"\n").unwrap();
    let out = jitgate(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("listen.ssh") && err.contains("not an IP:PORT"),
        "{err}"
    );

    let out = jitgate(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "serve refuses to start on a bad config"
    );

    // A reconcile account's key that is missing or no key at all.
    let text = std::fs::read_to_string(example).unwrap();
    let admin_key = dir.path().join("web-01-admin");
    let with_reconcile = text.replacen(
        "# reconcile_account = \"root\"\n# reconcile_credential_file = \"/etc/jitgate/credentials/web-01-admin\"",
        &format!(
            "reconcile_account = \"root\"\nreconcile_credential_file = \"{}\"",
            admin_key.display()
        ),
        1,
    );
    assert_ne!(text, with_reconcile);
    let config = dir.path().join("reconcile.toml");
    std::fs::write(&config, with_reconcile).unwrap();
    for (content, problem) in [
        (None, "No such file"),
        (Some("not a key"), "not an unencrypted OpenSSH private key"),
    ] {
        if let Some(content) = content {
            jitgate::secret::write_secret_file(&admin_key, content).unwrap();
        }
        let out = jitgate(&["check-config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("resource \"web-01\" reconcile_credential_file") && err.contains(problem),
            "{err}"
        );
    }

    // A [tls] pair that does not load (a reload would refuse it too).
    let cert = dir.path().join("gateway.crt");
    let key = dir.path().join("gateway.key");
    let (_, server) = jitgate::postgres::tls::generate::ca_and_server(&["gw".into()]).unwrap();
    jitgate::postgres::tls::write_pair(&server, &cert, &key).unwrap();
    let config = dir.path().join("tls.toml");
    let tls = format!(
        "{text}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    std::fs::write(&config, tls).unwrap();
    let out = jitgate(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::write(&key, "not a key").unwrap();
    let out = jitgate(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls") && err.contains("cannot read TLS key"),
        "{err}"
    );

    // SCRAM logins with a certificate that cannot bind channels (Ed25519):
    // the printed psql command, which insists on binding, could not work.
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let params = rcgen::CertificateParams::new(vec!["gw".to_string()]).unwrap();
    std::fs::write(&cert, params.self_signed(&ed25519).unwrap().pem()).unwrap();
    std::fs::write(&key, ed25519.serialize_pem()).unwrap();
    let scram = format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        text.replacen(
            "client_auth = \"password\"",
            "client_auth = \"scram-sha-256\"",
            1
        ),
        cert.display(),
        key.display()
    );
    std::fs::write(&config, &scram).unwrap();
    let out = jitgate(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a certificate signed with RSA or ECDSA"),
        "{err}"
    );
    // The same certificate is fine for cleartext logins.
    std::fs::write(
        &config,
        scram.replacen(
            "client_auth = \"scram-sha-256\"",
            "client_auth = \"password\"",
            1,
        ),
    )
    .unwrap();
    let out = jitgate(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn readiness_is_notified_only_once_listeners_are_bound() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (ssh, http, pg) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = dir.path().join("jitgate.toml");
    std::fs::write(
        &config,
        common::base_config(ssh, http, pg).replace("ssh_key_files", "# ssh_key_files"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 256];
    let len = socket.recv(&mut buffer).unwrap();
    let message = String::from_utf8_lossy(&buffer[..len]).to_string();
    let ssh_open = std::net::TcpStream::connect(("127.0.0.1", ssh)).is_ok();
    let http_open = std::net::TcpStream::connect(("127.0.0.1", http)).is_ok();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(message.contains("READY=1"), "{message}");
    assert!(
        ssh_open && http_open,
        "READY=1 before the listeners were bound"
    );
    assert!(status.success());
    let len = socket.recv(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..len]).contains("STOPPING=1"));
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let world = World::start();
    let config = world.config_path();
    let original = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, "this is not toml [").unwrap();
    world.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""ok":false"#)));
    world.ok("alice", "status");
    assert!(world.log().contains("new configuration refused"));

    // A good new config takes effect without a restart: web-01's maximum shrinks.
    world
        .reload_applied(|_| original.replacen("max_duration = \"8h\"", "max_duration = \"1h\"", 1));
    assert!(
        world
            .refused("alice", "request web-01 --for 2h")
            .contains("maximum of 1h")
    );
}

#[test]
fn sigterm_drains_sessions_and_a_second_sigterm_stops_at_once() {
    let mut world = World::start();
    let mut watcher = world
        .ssh_command("alice", "alice")
        .arg("watch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    world.signal("TERM");
    // Draining: the live session keeps the process up (grace is 3s)...
    assert_eq!(
        world.wait_exit(Duration::from_millis(1000)),
        None,
        "exited without draining"
    );
    // ...new connections are no longer accepted...
    let refused = std::net::TcpStream::connect(("127.0.0.1", world.ssh_port));
    assert!(refused.is_err(), "still accepting during the drain");
    // ...and a second SIGTERM ends it at once.
    let stopping = Instant::now();
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(3));
    let _ = watcher.wait();
    assert!(world.audit_text().contains("gateway_stopped"));
}

#[test]
fn sessions_left_when_the_grace_period_ends_are_told_and_audited_as_closed_by_the_gateway() {
    let mut world = World::with_both_targets(&[], |text| text);
    world.lease_web("alice", "10m");
    let (_, password) = world.lease_pg("alice", "10m");
    let ssh = world
        .target_ssh("alice", "web-01")
        .arg("sleep 60")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let psql = world
        .psql("alice", "orders-prod", &password)
        .args(["-c", "select pg_sleep(60)"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .managed_backends()
        == 1));
    world.signal("TERM");
    // The grace period (3 s) passes, then both are closed, saying why.
    assert_eq!(world.wait_exit(Duration::from_secs(15)), Some(0));
    let ssh = ssh.wait_with_output().unwrap();
    let psql = psql.wait_with_output().unwrap();
    for (what, out) in [("ssh", &ssh), ("psql", &psql)] {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}");
        assert!(said.contains("jitgate is shutting down"), "{what}: {said}");
    }
    let ended = world.audit_events("session_ended");
    let closed = ended
        .iter()
        .filter(|event| event["closed_by_gateway"] == "jitgate is shutting down");
    assert_eq!(closed.count(), 2, "{ended:?}");
}

#[test]
fn sigterm_with_no_sessions_exits_promptly_and_cleanly() {
    let mut world = World::start();
    world.ok("alice", "status");
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn acknowledged_changes_survive_a_crash() {
    let mut world = World::start();
    let id = world.request("alice", "web-01 --for 1h");
    world.ok("bob", &format!("approve {id}"));
    world.ok("alice", &format!("checkout {id}"));
    world.kill_hard();
    world.launch();
    let status = world.json("alice", "status");
    assert_eq!(status["leases"][0]["id"].as_u64(), Some(id));
    assert!(
        !world.audit_text().contains("audit_tampered"),
        "a crash is not tampering"
    );
    let out = jitgate(&[
        "audit",
        "verify",
        world.path("audit/audit.log").to_str().unwrap(),
    ]);
    assert_success(&out);
}

/// The gateway's host key as `ssh-keyscan` sees it.
fn scanned_host_key(world: &World) -> String {
    let out = Command::new("ssh-keyscan")
        .args([
            "-t",
            "ed25519",
            "-p",
            &world.ssh_port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(text.contains("ssh-ed25519 "), "no host key scanned: {text}");
    text
}

#[test]
fn the_ssh_host_key_is_generated_once_private_and_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let mut world = World::start();
    let path = world.path("state/ssh_host_ed25519_key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = scanned_host_key(&world);
    let file = std::fs::read(&path).unwrap();
    world.kill_hard();
    world.launch();
    assert_eq!(
        scanned_host_key(&world),
        first,
        "clients pinned the old key"
    );
    assert_eq!(std::fs::read(&path).unwrap(), file);

    // A host key that cannot be read stops the start with a clear error
    // instead of silently replacing the key clients have pinned.
    world.kill_hard();
    std::fs::write(&path, "not a key").unwrap();
    let out = world.serve_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the SSH host key"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
}

/// How long a connection that sends nothing after the server's version
/// line stays open.
fn silent_connection_lasts(world: &World) -> Duration {
    use std::io::Read;
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", world.ssh_port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let opened = Instant::now();
    let mut buffer = [0u8; 256];
    while socket.read(&mut buffer).is_ok_and(|n| n > 0) {}
    opened.elapsed()
}

#[test]
fn a_reload_takes_in_the_ssh_ports_host_key_and_settings_for_new_connections() {
    let world = World::start();
    let path = world.path("state/ssh_host_ed25519_key");
    let old = scanned_host_key(&world);
    let mut open = world.watching("alice", "alice");

    // A replaced host key and a shorter auth_timeout.
    std::fs::remove_file(&path).unwrap();
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    world.reload_with(|text| format!("{text}\n[ssh]\nauth_timeout = \"1s\"\n"));
    assert!(
        wait_until(Duration::from_secs(10), || scanned_host_key(&world) != old),
        "the replaced host key is not offered after a reload"
    );
    let new = scanned_host_key(&world);
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let key_body = public.split_whitespace().nth(1).unwrap();
    assert!(new.contains(key_body), "{new}");
    assert!(silent_connection_lasts(&world) < Duration::from_secs(10));
    world.ok("alice", "status");
    assert!(
        open.try_wait().unwrap().is_none(),
        "an open connection was cut"
    );

    // A key that does not load refuses the whole reload: the running key
    // stays, and check-config names the problem.
    std::fs::write(&path, "not a key").unwrap();
    world.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || world
        .audit_text()
        .contains(r#""ok":false"#)));
    assert_eq!(scanned_host_key(&world), new);
    let out = jitgate(&["check-config", world.config_path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ssh.host_key") && err.contains("cannot read the SSH host key"),
        "{err}"
    );
    let _ = open.kill();
}

#[test]
fn a_lease_expires_on_time_and_the_expiry_is_audited() {
    let world = World::start();
    let id = world.request("alice", "web-01 --for 2s");
    world.ok("bob", &format!("approve {id}"));
    world.ok("alice", &format!("checkout {id}"));
    assert_eq!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""reason":"expired""#)));
    assert_eq!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let requests = world.json("alice", "requests --all");
    assert_eq!(requests["mine"][0]["state"], "expired");
}

#[test]
fn audit_verify_reports_ok_then_the_first_altered_record() {
    let world = World::start();
    world.ok("alice", "request web-01 --reason one");
    world.ok("zoe", "request web-01 --reason two");
    let log = world.path("audit/audit.log");
    let out = jitgate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.starts_with("OK:"), "{printed}");
    let head = printed
        .lines()
        .find_map(|l| l.strip_prefix("head "))
        .expect("the head is printed")
        .to_string();
    let head_seq: u64 = head.split(':').next().unwrap().parse().unwrap();
    assert!(
        world
            .metrics()
            .contains(&format!("jitgate_audit_head_seq {head_seq}")),
        "the metric shows the same head"
    );
    let anchored = |log: &std::path::Path| {
        jitgate(&["audit", "verify", log.to_str().unwrap(), "--anchor", &head])
    };
    assert!(anchored(&log).status.success());

    // The newest record cut off: the chain alone cannot tell, the anchor can.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    assert!(
        jitgate(&["audit", "verify", cut.to_str().unwrap()])
            .status
            .success()
    );
    let out = anchored(&cut);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("records {head_seq} to {head_seq} were removed")),
        "{err}"
    );
    let out = jitgate(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--anchor",
        "7:xyz",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed anchor is a usage error"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("reason\":\"one"))
        .unwrap();
    std::fs::write(&log, text.replace("reason\":\"one", "reason\":\"uno")).unwrap();
    let out = jitgate(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("audit.log:{}", line + 1)) && err.contains("altered"),
        "{err}"
    );
}

#[test]
fn records_cut_off_while_the_gateway_was_down_are_reported_at_its_start() {
    let mut world = World::start();
    world.ok("alice", "request web-01 --reason one");
    world.ok("zoe", "request web-01 --reason two");
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(10)), Some(0));
    let log = world.path("audit/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept = lines.len() - 3;
    std::fs::write(&log, lines[..kept].join("\n") + "\n").unwrap();
    assert!(
        jitgate(&["audit", "verify", log.to_str().unwrap()])
            .status
            .success(),
        "what is left still chains"
    );

    world.launch();
    let audit = world.audit_text();
    let tampered = audit
        .lines()
        .position(|l| l.contains(r#""type":"audit_tampered""#))
        .expect("the cut is reported in the log itself");
    let removed = format!("records {} to {} were removed", kept + 1, kept + 3);
    assert!(
        audit.lines().nth(tampered).unwrap().contains(&removed),
        "{audit}"
    );
    let out = jitgate(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("audit.log:{}", tampered + 1)) && err.contains(&removed),
        "{err}"
    );
    assert!(
        world
            .metrics()
            .contains("jitgate_audit_tampering_detected_total 1")
    );
    assert!(world.log().contains("tampered"), "logged for operators too");
}

#[test]
fn records_cut_off_after_a_crash_are_reported_at_the_next_start() {
    let mut world = World::start();
    world.ok("alice", "request web-01 --reason one");
    world.ok("zoe", "request web-01 --reason two");
    // Killed at once: no timer tick, no shutdown save in between.
    world.kill_hard();
    let log = world.path("audit/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let newest = lines.last().unwrap().to_string();
    assert!(
        newest.contains(r#""reason":"two""#) || lines.len() > 2,
        "{text}"
    );
    let kept = lines.len() - 1;
    std::fs::write(&log, lines[..kept].join("\n") + "\n").unwrap();

    world.launch();
    let audit = world.audit_text();
    let removed = format!("records {} to {} were removed", kept + 1, kept + 1);
    assert!(
        audit
            .lines()
            .any(|l| l.contains(r#""type":"audit_tampered""#) && l.contains(&removed)),
        "{audit}"
    );
}

#[test]
fn metrics_and_health_are_served() {
    let world = World::start();
    world.ok("alice", "request web-01");
    world.refused("alice", "checkout 1");
    let metrics = world.metrics();
    for series in [
        "jitgate_requests{state=\"pending\"} 1",
        "jitgate_active_leases",
        "jitgate_workflow_events_total{event=\"requested\"} 1",
        "jitgate_sessions{protocol=\"control\"}",
        "jitgate_sessions{protocol=\"ssh\"} 0",
        "jitgate_sessions{protocol=\"postgres\"} 0",
        "jitgate_sessions_severed_total{protocol=\"ssh\"} 0",
        "jitgate_sessions_severed_total{protocol=\"postgres\"} 0",
        "jitgate_connections_penalized_total{protocol=\"ssh\"} 0",
        "jitgate_mfa_failures_total",
        "jitgate_commands_refused_total 1",
        "jitgate_journal_fsync_seconds",
        "jitgate_journal_held_records 0",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    // A counter kept by protocol has no series without one.
    for unlabelled in [
        "jitgate_sessions_severed_total ",
        "jitgate_connections_penalized_total ",
        "jitgate_connections_over_source_limit_total ",
    ] {
        assert!(
            !metrics.lines().any(|l| l.starts_with(unlabelled)),
            "{unlabelled}in\n{metrics}"
        );
    }
    assert!(
        common::http_get(world.http_port, "/healthz")
            .unwrap()
            .contains("200 OK")
    );
}

#[test]
fn totp_enroll_writes_a_private_secret_and_prints_a_uri_and_qr_code() {
    let world = World::start();
    let out = jitgate(&[
        "totp",
        "enroll",
        "alice",
        "--config",
        world.config_path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refuses to overwrite without --force"
    );
    let out = jitgate(&[
        "totp",
        "enroll",
        "alice",
        "--force",
        "--config",
        world.config_path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("otpauth://totp/jitgate:alice?secret="),
        "{text}"
    );
    assert!(text.contains('█') || text.contains('▀'), "no QR code drawn");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(world.path("totp/alice"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = jitgate(&[
        "totp",
        "enroll",
        "nobody",
        "--config",
        world.config_path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user \"nobody\""));
}
