//! The SSH data plane end to end: stock ssh/scp/sftp/rsync through the real
//! gateway binary to a real sshd, with the gateway's injected key.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, assert_success, exits_within, stderr_of, wait_until};
use sha2::{Digest, Sha256};

#[test]
fn exec_relays_stdout_stderr_and_exit_codes_as_the_managed_account() {
    // The full path: approval, then a checkout with a real TOTP code.
    let world =
        World::with_ssh_target(|t| t.replacen("mfa_required = false", "mfa_required = true", 1));
    let id = world.request("alice", "web-01 --for 10m --reason test");
    world.ok("bob", &format!("approve {id}"));
    let refused = world
        .refused("alice", &format!("checkout {id}"))
        .to_lowercase();
    assert!(
        refused.contains("totp") || refused.contains("mfa"),
        "{refused}"
    );
    world.ok(
        "alice",
        &format!("checkout {id} --totp {}", world.totp("alice")),
    );
    let account = world.ssh_target.as_ref().unwrap().sshd.account.clone();
    let out = world
        .target_ssh("alice", "web-01")
        .arg("whoami; printf 'to stderr' >&2; exit 42")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), account);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to stderr");
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""exit_status":42"#)));
    let audit = world.audit_text();
    assert!(audit.contains(r#""command":"whoami; printf 'to stderr' >&2; exit 42""#));
    assert!(audit.contains("session_started") && audit.contains("recorded on first contact"));
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains("session_ended")));
}

#[test]
fn a_sessions_records_name_whose_it_is_and_audit_tail_picks_them_out() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    for command in ["echo first", "echo second"] {
        let out = world
            .target_ssh("alice", "web-01")
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let records = |args: &str| -> Vec<serde_json::Value> {
        world
            .ok("carol", &format!("audit tail -n 1000 --json {args}"))
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let ended = |all: &[serde_json::Value]| {
        all.iter()
            .filter(|r| r["event"]["type"] == "session_ended")
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || ended(&records("")) == 2));
    let first = records("")
        .iter()
        .find(|r| r["event"]["type"] == "session_started")
        .map(|r| r["event"]["session"].as_str().unwrap().to_string())
        .unwrap();
    let of_first = records(&format!("--session {first}"));
    let types: Vec<&str> = of_first
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["session_started", "channel_ended", "session_ended"],
        "{of_first:?}"
    );
    // The end of a session and of each channel say whose and on what.
    for record in &of_first[1..] {
        assert_eq!(record["event"]["user"], "alice", "{record}");
        assert_eq!(record["event"]["resource"], "web-01", "{record}");
    }
    let text = world.ok("carol", &format!("audit tail --session {first}"));
    assert!(
        text.contains(&format!("session {first} of alice on web-01 ended after")),
        "{text}"
    );
    assert_eq!(ended(&records("--user alice --resource web-01")), 2);
    assert_eq!(ended(&records("--resource orders-prod")), 0);
}

/// Writes `mebibytes` distinct pseudo-random MiB blocks, returning their hash.
fn write_blocks(mut to: impl Write, mebibytes: u64) -> impl AsRef<[u8]> {
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    for round in 0..mebibytes {
        // Every block differs, so a misordered block changes the hash.
        block[..8].copy_from_slice(&round.to_le_bytes());
        hasher.update(&block);
        to.write_all(&block).unwrap();
    }
    hasher.finalize()
}

/// Reads to EOF, returning the byte count and hash.
fn read_all(mut from: impl Read) -> (u64, impl AsRef<[u8]>) {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
    }
    (total, hasher.finalize())
}

/// Pipes `mebibytes` through `cat` on web-01 and back; the reader starts
/// after `reader_delay`. Returns whether it all came back intact in time.
fn echo_through_cat(world: &World, mebibytes: u64, reader_delay: Duration) -> bool {
    let mut child = world
        .target_ssh("alice", "web-01")
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || write_blocks(stdin, mebibytes).as_ref().to_vec());
    let stdout = child.stdout.take().unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        std::thread::sleep(reader_delay);
        let (total, hash) = read_all(stdout);
        let _ = done.send((total, hash.as_ref().to_vec()));
    });
    let Ok((total, received)) = result.recv_timeout(Duration::from_secs(180)) else {
        let _ = child.kill();
        let _ = child.wait();
        return false;
    };
    let sent = writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(total, mebibytes << 20);
    assert_eq!(received, sent);
    true
}

#[test]
fn a_quarter_gigabyte_through_stdin_and_back_is_byte_exact() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    assert!(echo_through_cat(&world, 256, Duration::ZERO));
}

/// A reader that pauses while the client keeps sending fills every buffer
/// in both directions at once. Each channel's SSH window must then hold the
/// sender back, so that once the reader resumes everything flows again.
#[test]
fn an_echo_to_a_reader_that_pauses_resumes_when_it_reads_again() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    assert!(
        echo_through_cat(&world, 384, Duration::from_secs(10)),
        "the echo stalled for good after the reader paused"
    );
}

#[test]
fn sftp_scp_and_rsync_work_unchanged_with_checksums() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let local = world.path("payload");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let target = "alice+web-01@127.0.0.1";
    let port = world.ssh_port.to_string();

    let mut sftp = world.sftp_batch("alice");
    write!(
        sftp.stdin.take().unwrap(),
        "put {} up.bin\nget up.bin {}\n",
        local.display(),
        world.path("down-sftp").display()
    )
    .unwrap();
    assert!(sftp.wait().unwrap().success());
    assert_eq!(std::fs::read(world.path("down-sftp")).unwrap(), data);

    assert!(world.scp("alice", &local.display().to_string(), "web-01:scp.bin"));
    let down = world.path("down-scp").display().to_string();
    assert!(world.scp("alice", "web-01:scp.bin", &down));
    assert_eq!(std::fs::read(world.path("down-scp")).unwrap(), data);

    let rsh = format!("ssh {} -p {port}", world.client_options("alice").join(" "));
    let status = Command::new("rsync")
        .args(["-a", "-e", &rsh])
        .arg(&local)
        .arg(format!("{target}:rsync.bin"))
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("rsync")
        .args(["-a", "-e", &rsh])
        .arg(format!("{target}:rsync.bin"))
        .arg(world.path("down-rsync"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(world.path("down-rsync")).unwrap(), data);
}

#[test]
fn a_pty_session_is_recorded_as_asciicast() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let shell = world.pty_shell("alice", b"echo recorded-$((6*7)); exit 7\n");
    let out = shell.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("recorded-42"));
    let recordings: Vec<_> = std::fs::read_dir(world.path("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recordings.len(), 1);
    let text = std::fs::read_to_string(&recordings[0]).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let mut output = String::new();
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event[0].is_f64() || event[0].is_u64());
        if event[1] == "o" {
            output.push_str(event[2].as_str().unwrap());
        }
    }
    assert!(output.contains("recorded-42"), "{output}");
    // And asciinema itself reads it (it insists on a terminal: `script`
    // gives it one).
    let played = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat {}", recordings[0].display()))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) and asciinema must be installed: scripts/install-deps");
    assert_success(&played);
    assert!(String::from_utf8_lossy(&played.stdout).contains("recorded-42"));
}

/// The recordings of `world`, their text.
fn recordings(world: &World) -> Vec<String> {
    std::fs::read_dir(world.path("recordings"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn exec_channels_are_recorded_by_default() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    // Commands fed to a shell on stdin: what they print is on record.
    let out = world.on_target(
        "alice",
        &["bash"],
        b"echo piped-$((6*7))
",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("piped-42"));
    let recordings = recordings(&world);
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert!(recordings[0].contains("piped-42"), "{}", recordings[0]);
    // Not what was typed: record_input is off by default.
    assert!(!recordings[0].contains("$((6*7))"), "{}", recordings[0]);
}

#[test]
fn a_shell_without_a_pty_is_recorded_and_exec_is_not_with_record_exec_bytes_0() {
    let world = World::with_ssh_target(|t| format!("{t}\n[ssh]\nrecord_exec_bytes = 0\n"));
    world.lease_web("alice", "10m");
    let out = world.on_target("alice", &["-T"], b"echo no-pty-$((6*7))\nexit\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no-pty-42"));
    let out = world
        .target_ssh("alice", "web-01")
        .arg("echo exec-$((6*7))")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("exec-42"));
    let recordings = recordings(&world);
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert!(recordings[0].contains("no-pty-42"), "{}", recordings[0]);
}

#[test]
fn exec_channels_are_recorded_up_to_record_exec_bytes() {
    let world = World::with_ssh_target(|t| {
        format!("{t}\n[ssh]\nrecord_exec_bytes = 300\nrecord_input = true\n")
    });
    world.lease_web("alice", "10m");
    let out = world.on_target("alice", &["bash"], b"echo exec-$((6*7))\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("exec-42"));
    let out = world
        .target_ssh("alice", "web-01")
        .arg("head -c 100000 /dev/zero | tr '\\0' x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 100_000);
    let mut recordings = recordings(&world);
    recordings.sort_by_key(|text| text.len());
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    let bash = recordings.iter().find(|r| r.contains("exec-42")).unwrap();
    assert!(bash.contains(r#""i","echo exec-$((6*7))\n"]"#), "{bash}");
    let bulk = recordings.iter().find(|r| r.contains("xxxx")).unwrap();
    assert!(bulk.contains("recording stopped after 300 bytes"), "{bulk}");
    assert!(bulk.len() < 2000, "{}", bulk.len());
}

#[test]
fn auditors_follow_a_live_session() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let mut shell = world
        .target_ssh("alice", "web-01")
        .arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    shell
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"echo before-follow\n")
        .unwrap();
    let session = world.live_session("ssh");
    // `sessions` says what the connection's channels run.
    let mut listed = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            listed = world.ok("carol", "sessions");
            listed
                .lines()
                .any(|l| l.starts_with(&session) && l.trim_end().ends_with("shell (pty)"))
        }),
        "{listed}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (mut follower, mut lines) = world.follow("carol", &session);
    std::thread::sleep(Duration::from_millis(300));
    shell
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"echo live-$((40+2))\n")
        .unwrap();
    let mut saw_catch_up = false;
    let mut saw_live = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !saw_live {
        let Some(Ok(line)) = lines.next() else { break };
        saw_catch_up |= line.contains("before-follow");
        saw_live |= line.contains("live-42");
    }
    assert!(
        saw_catch_up && saw_live,
        "catch-up {saw_catch_up}, live {saw_live}"
    );
    shell.stdin.as_mut().unwrap().write_all(b"exit\n").unwrap();
    shell.wait().unwrap();
    World::follow_ended(&mut follower);
}

/// A world whose web-01 allows local port forwarding.
fn world_allowing_port_forwarding() -> World {
    World::with_ssh_target(|t| {
        t.replacen(
            "account = \"jg",
            "allow_port_forwarding = true\naccount = \"jg",
            1,
        )
    })
}

/// `ssh -L` as alice to web-01 whose one forwarded connection the gateway
/// refuses: what ssh said of it.
fn refused_local_forward(world: &World, port: u16) -> String {
    let local_port = common::free_port();
    // At the default log level (the first -o wins), where ssh reports a
    // refused forward.
    let mut forward = Command::new("ssh")
        .args(["-o", "LogLevel=INFO"])
        .args(world.client_options("alice"))
        .args(["-p", &world.ssh_port.to_string(), "alice+web-01@127.0.0.1"])
        .args(["-N", "-L", &format!("{local_port}:127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The listener is up once a connection gets through to it; the
    // refused channel then closes that connection.
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", local_port))
            .is_ok_and(|stream| BufReader::new(stream).read_line(&mut String::new()).is_ok())
    }));
    std::thread::sleep(Duration::from_millis(300));
    let _ = forward.kill();
    let _ = forward.wait();
    common::stderr_of(&mut forward)
}

#[test]
fn port_forwarding_follows_the_resource_setting() {
    let refused = World::with_ssh_target(|t| t);
    refused.lease_web("alice", "10m");
    let sshd_port = refused.ssh_target.as_ref().unwrap().sshd.port;
    let out = refused
        .target_ssh("alice", "web-01")
        .args(["-W", &format!("127.0.0.1:{sshd_port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    // `ssh -L` shows why, as the gateway put it.
    let stderr = refused_local_forward(&refused, sshd_port);
    assert!(
        stderr.contains(
            "open failed: administratively prohibited: port forwarding is not allowed on web-01"
        ),
        "{stderr}"
    );
    assert!(
        refused
            .audit_text()
            .contains("port forwarding to 127.0.0.1")
    );

    let allowed = world_allowing_port_forwarding();
    let sshd_port = allowed.ssh_target.as_ref().unwrap().sshd.port;
    // Without a lease, the client is told so.
    let stderr = refused_local_forward(&allowed, sshd_port);
    assert!(stderr.contains("no active lease for web-01"), "{stderr}");
    allowed.lease_web("alice", "10m");
    let mut tunnel = allowed
        .target_ssh("alice", "web-01")
        .args(["-W", &format!("127.0.0.1:{sshd_port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(tunnel.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    let forwards_ended = || allowed.audit_text().matches("\"direct-tcpip\"").count();
    assert!(wait_until(Duration::from_secs(5), || forwards_ended() == 1));

    // `ssh -L`, the same channel type behind a local listener.
    let local_port = common::free_port();
    let mut forward = allowed
        .target_ssh("alice", "web-01")
        .args(["-N", "-L", &format!("{local_port}:127.0.0.1:{sshd_port}")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let connected = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", local_port))
            .map(|stream| BufReader::new(stream).read_line(&mut banner).is_ok())
            .unwrap_or(false)
    });
    // The forwarded connection, closed, ends its channel while the
    // forwarding connection stays up.
    let channel_ended = wait_until(Duration::from_secs(5), || forwards_ended() == 2);
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(
        connected && banner.starts_with("SSH-2.0-OpenSSH"),
        "{banner}"
    );
    assert!(
        channel_ended,
        "the forwarded connection's channel never ended"
    );
}

/// Remote forwarding (`-R`) and agent forwarding (`-A`) are refused, even
/// on a resource that allows local forwarding: the target must not reach
/// back into the user's machine or agent.
#[test]
fn remote_and_agent_forwarding_are_refused() {
    let world = world_allowing_port_forwarding();
    world.lease_web("alice", "10m");
    let out = world.remote_forward_attempt("alice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("remote port forwarding failed"), "{stderr}");

    let agent_socket = world.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || agent_socket.exists()));
    let show_agent = "echo \"agent:${SSH_AUTH_SOCK:-none}\"";
    let run_with_agent = |mut command: Command| {
        let out = command
            .arg("-A")
            .arg(show_agent)
            .env("SSH_AUTH_SOCK", &agent_socket)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The target itself would forward it; through the gateway it is not.
    let direct = run_with_agent(world.direct_ssh(&world.ssh_target.as_ref().unwrap().key));
    let through = run_with_agent(world.target_ssh("alice", "web-01"));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(direct.starts_with("agent:/"), "{direct}");
    assert_eq!(through, "agent:none");

    // X11 too (OpenSSH asks for it with any DISPLAY; no X server needed).
    let x11 = world
        .target_ssh("alice", "web-01")
        .arg("-X")
        .arg("echo \"display:${DISPLAY:-none}\"")
        .env("DISPLAY", "127.0.0.1:99")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&x11.stdout).trim(), "display:none");
    let audit = world.audit_text();
    for refused in [
        "remote port forwarding from",
        "agent forwarding",
        "X11 forwarding",
    ] {
        assert!(
            audit.contains(&format!(r#""actor":"alice","command":"{refused}"#)),
            "{refused} not audited"
        );
    }
}

#[test]
fn logins_without_a_valid_lease_are_refused_with_what_to_do() {
    let world = World::with_ssh_target(|t| t);
    let refuse = |user: &str, resource: &str| {
        let out = world
            .target_ssh(user, resource)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(refuse("alice", "web-01").contains("no active lease for web-01"));
    world.lease_web("zoe", "10m");
    assert!(
        refuse("alice", "web-01").contains("no active lease for web-01"),
        "another user's lease"
    );
    assert!(refuse("alice", "db-99").contains("unknown resource db-99"));
    let id = world.lease_web("alice", "10m");
    world.ok("alice", &format!("checkin {id}"));
    assert!(
        refuse("alice", "web-01").contains("no active lease"),
        "ended lease"
    );
    // The refusal's record names the key that logged in.
    let key = world.key_fingerprint("alice");
    let refusals: Vec<_> = world
        .audit_events("login")
        .into_iter()
        .filter(|e| e["accepted"] == false && e["resource"] == "web-01")
        .collect();
    assert!(!refusals.is_empty());
    assert!(
        refusals.iter().all(|e| e["key"] == key.as_str()),
        "{refusals:?}"
    );
    // sftp and scp (which speaks SFTP too) are told why as well.
    let copied = world.path("copied");
    for client in ["sftp", "scp"] {
        let mut command = Command::new(client);
        command
            .args(world.client_options("alice"))
            .args(["-P", &world.ssh_port.to_string()]);
        if client == "sftp" {
            command.args(["-b", "-", "alice+web-01@127.0.0.1"]);
        } else {
            command
                .arg("alice+web-01@127.0.0.1:/etc/hostname")
                .arg(&copied);
        }
        let out = command.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{client}: {stderr}");
        assert!(
            stderr.contains("jitgate: no active lease for web-01"),
            "{client}: {stderr}"
        );
    }
    assert!(!copied.exists());
    // A lease on a database is no way into it over SSH, and no session
    // starts: the user is pointed at psql.
    world.lease_pg("alice", "10m");
    let refused = refuse("alice", "orders-prod");
    assert!(
        refused.contains("orders-prod is a PostgreSQL database")
            && refused.contains("dbname=orders-prod sslmode=require"),
        "{refused}"
    );
    assert!(!world.audit_text().contains("session_started"));
}

#[test]
fn a_target_host_key_mismatch_refuses_the_session_and_is_audited() {
    let world = World::with_ssh_target(|t| {
        t.replacen(
            "account = \"jg",
            "host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJLqJLvC2gPfeJMacyvwtxuLaFZLUxGqog6j5lQy+0FB\"\naccount = \"jg",
            1,
        )
    });
    world.lease_web("alice", "10m");
    let out = world
        .target_ssh("alice", "web-01")
        .arg("whoami")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host key of web-01 does not match"));
    assert!(
        world
            .audit_text()
            .contains(r#""accepted":false,"fingerprint""#)
            || world.audit_text().contains("target_host_key")
    );
}

#[test]
fn a_damaged_record_of_target_host_keys_refuses_to_start_instead_of_trusting_anew() {
    let mut world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let out = world
        .target_ssh("alice", "web-01")
        .arg("true")
        .output()
        .unwrap();
    assert_success(&out);
    let record = world.path("state/target_host_keys.json");
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(
        text.contains("web-01"),
        "first contact recorded the key: {text}"
    );
    world.signal("TERM");
    world.wait_exit(Duration::from_secs(10));
    std::fs::write(&record, &text[..text.len() / 2]).unwrap();
    let out = world.serve_once();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target_host_keys.json") && err.contains("pin each target's host_key"),
        "{err}"
    );
}

#[test]
fn a_pty_session_is_severed_when_the_window_ends() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "4s");
    let started = Instant::now();
    let shell = world.pty_shell("alice", b"sleep 600\n");
    let out = shell.wait_with_output().unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[jitgate] access window for web-01 ended at"),
        "{text}"
    );
    assert!(took < Duration::from_secs(6), "severed only after {took:?}");
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""severed":"access window for web-01 ended"#)));
    world.assert_one_sever_timed("ssh");
}

#[test]
fn a_bulk_transfer_is_severed_when_the_window_ends() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "5s");
    let started = Instant::now();
    let mut download = world
        .target_ssh("alice", "web-01")
        .arg("cat /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = download.stdout.take().unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    while let Ok(n) = stdout.read(&mut buffer) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = download.wait().unwrap();
    let mut stderr = String::new();
    download
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "the transfer ended cleanly: {stderr}");
    assert!(
        total > 1 << 20,
        "the transfer never ran ({total} bytes): {stderr}"
    );
    // Generous: a loaded CI machine runs many tests at once.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "severed only after {:?}",
        started.elapsed()
    );
    // The reason travels in the SSH disconnect message, which OpenSSH may
    // or may not print mid-transfer; the audit log always has it.
    let _ = stderr;
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(r#""severed":"access window for web-01 ended"#)));
}

#[test]
fn pty_users_are_warned_before_the_end_and_an_extension_moves_the_warning() {
    let world = World::with_ssh_target(|text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"5s\"]",
        )
    });
    // Due 3 s after checkout, were the window not extended at once by 8 s:
    // then it is due at 11 s, and the window ends at 16 s.
    let id = world.lease_web("alice", "8s");
    let checked_out = Instant::now();
    let mut shell = world.pty_shell("alice", b"echo shell-$((40+2)); sleep 600\n");
    // Extended once the session runs on the lease as checked out.
    assert!(wait_until(Duration::from_secs(3), || world.recorded("shell-42")));
    world.ok("alice", &format!("extend {id} --for 8s"));
    world.ok("bob", &format!("approve {id}"));
    let extended = checked_out.elapsed();
    assert!(
        extended < Duration::from_secs(3),
        "extended only after {extended:?}"
    );
    // Output as it comes, with when it came.
    let mut stdout = shell.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let _ = tx.send((Instant::now(), buffer[..n].to_vec()));
        }
    });
    let mut seen = String::new();
    let mut warned_at = None;
    while let Ok((at, bytes)) = rx.recv_timeout(Duration::from_secs(30)) {
        seen.push_str(&String::from_utf8_lossy(&bytes));
        if warned_at.is_none() && seen.contains("[jitgate] access to web-01 ends in") {
            warned_at = Some(at.duration_since(checked_out));
        }
    }
    let _ = shell.wait();
    let warned_at = warned_at.unwrap_or_else(|| panic!("no warning: {seen}"));
    assert!(
        warned_at > Duration::from_secs(8),
        "warned at {warned_at:?}, as if the window had not been extended: {seen}"
    );
    assert!(
        seen.contains(&format!("extend it with `extend {id} --for 15m`")),
        "{seen}"
    );
    assert!(
        seen.contains("[jitgate] access window for web-01 ended at"),
        "{seen}"
    );
}

#[test]
fn exec_users_are_warned_on_stderr_and_stdout_stays_the_commands() {
    let world = World::with_ssh_target(|text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"4s\"]",
        )
    });
    let id = world.lease_web("alice", "8s");
    let checked_out = Instant::now();
    // rsync, git and sftp run like this: their protocol on stdout, what
    // the user should read on stderr.
    let mut exec = world
        .target_ssh("alice", "web-01")
        .arg("echo out; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(exec.stderr.take().unwrap());
    let mut warned_at = None;
    let mut told = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap_or(0) > 0 {
        if warned_at.is_none() && line.starts_with("jitgate: access to web-01 ends in") {
            warned_at = Some(checked_out.elapsed());
        }
        told.push_str(&line);
        line.clear();
    }
    let output = exec.wait_with_output().unwrap();
    let warned_at = warned_at.unwrap_or_else(|| panic!("no warning on stderr: {told}"));
    assert!(
        warned_at > Duration::from_secs(3) && warned_at < Duration::from_secs(8),
        "warned at {warned_at:?}: {told}"
    );
    assert!(told.contains(&format!("`extend {id} --for 15m`")), "{told}");
    assert!(
        told.contains("jitgate: access window for web-01 ended at"),
        "{told}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
}

#[test]
fn a_checkin_severs_with_the_time_and_the_reason() {
    let world = World::with_ssh_target(|t| t);
    let id = world.lease_web("alice", "1h");
    let shell = world.pty_shell("alice", b"echo shell-$((40+2)); sleep 600\n");
    // Check in once the shell runs (its output is on record).
    assert!(wait_until(Duration::from_secs(10), || world.recorded("shell-42")));
    let minute = || chrono::Utc::now().format("%H:%M UTC").to_string();
    let before = minute();
    world.ok("alice", &format!("checkin {id}"));
    let text = String::from_utf8_lossy(&shell.wait_with_output().unwrap().stdout).to_string();
    let after = minute();
    // When it ended, not when the window would have (in an hour).
    let ended = text
        .split("[jitgate] access window for web-01 ended at ")
        .nth(1)
        .unwrap_or_default();
    assert!(
        ended.starts_with(&before) || ended.starts_with(&after),
        "{text}"
    );
    assert!(ended.contains(": checked in"), "{text}");
}

#[test]
fn a_revocation_severs_with_the_administrators_reason_and_keeps_it_on_record() {
    let world = World::with_ssh_target(|t| t);
    let id = world.lease_web("alice", "1h");
    let shell = world.pty_shell("alice", b"echo shell-$((40+3)); sleep 600\n");
    assert!(wait_until(Duration::from_secs(10), || world.recorded("shell-43")));
    let essay = "x".repeat(201);
    let refused = world.refused("root", &format!("revoke {id} --reason {essay}"));
    assert!(refused.contains("at most 200"), "{refused}");
    world.ok("root", &format!("revoke {id} --reason laptop stolen"));
    let text = String::from_utf8_lossy(&shell.wait_with_output().unwrap().stdout).to_string();
    assert!(text.contains(": revoked by root: laptop stolen"), "{text}");
    let audit = world.audit_text();
    let recorded = audit.lines().any(|line| {
        let record: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let change = &record["event"]["change"];
        change["type"] == "ended" && change["id"] == id && change["why"] == "laptop stolen"
    });
    assert!(recorded, "{audit}");
    let mine = world.ok("alice", "requests --all");
    assert!(mine.contains("revoked by root at "), "{mine}");
    assert!(mine.contains(": laptop stolen"), "{mine}");
    let tail = world.ok("carol", "audit tail -n 50");
    let told = format!("root revoked request {id}: laptop stolen");
    assert!(tail.contains(&told), "{tail}");
}

#[test]
fn removing_a_user_from_the_config_ends_their_leases_and_sessions_at_once() {
    let world = World::with_ssh_target(|t| t);
    let alices = world.lease_web("alice", "1h");
    world.lease_web("zoe", "1h");
    let mut session = world
        .target_ssh("alice", "web-01")
        .arg("sleep 600")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    world.live_session("ssh");
    world.reload_with(|text| {
        let block = "[[user]]\nname = \"alice\"\n";
        let start = text.find(block).unwrap();
        let end = text[start + block.len()..]
            .find("[[user]]")
            .map_or(text.len(), |n| start + block.len() + n);
        format!("{}{}", &text[..start], &text[end..])
    });
    assert!(
        exits_within(&mut session, Duration::from_secs(10)),
        "alice's session outlived her removal"
    );
    let stderr = stderr_of(&mut session);
    assert!(
        stderr.contains("revoked by the gateway, whose configuration no longer allows it"),
        "{stderr}"
    );
    let audit = world.audit_text();
    let revoked = audit.lines().any(|line| {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let change = &record["event"]["change"];
        change["type"] == "ended" && change["id"] == alices && change["reason"] == "revoked"
    });
    assert!(revoked, "{audit}");
    // Others keep theirs.
    let zoe = world.json("zoe", "status")["leases"].clone();
    assert_eq!(zoe.as_array().map(Vec::len), Some(1), "{zoe}");
}

#[test]
fn an_administrator_terminates_one_session_and_the_lease_stays() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let shell = world.pty_shell("alice", b"sleep 600\n");
    let session = world.live_session("ssh");
    let refused = world.refused("alice", &format!("terminate {session}"));
    assert!(refused.contains("needs the admin permission"), "{refused}");
    let refused = world.refused("root", "terminate s-000000000000");
    assert!(
        refused.contains("no live session \"s-000000000000\""),
        "{refused}"
    );
    let said = world.ok(
        "root",
        &format!("terminate {session} --reason 'looks wrong'"),
    );
    assert!(said.contains("the lease stays"), "{said}");
    let started = Instant::now();
    let out = shell.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "[jitgate] session {session} terminated by root: looks wrong"
        )),
        "{text}"
    );
    let audit = world.audit_text();
    assert!(
        audit.contains(r#""type":"session_terminated""#) && audit.contains(r#""by":"root""#),
        "{audit}"
    );
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_text()
        .contains(&format!(
            r#""severed":"session {session} terminated by root: looks wrong""#
        ))));
    // Her window is still open: she may connect again.
    let again = world
        .target_ssh("alice", "web-01")
        .arg("echo again")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "again");
}
