//! The SSH data plane's channel features with stock OpenSSH: window changes,
//! signals, exit signals, git, several channels on one connection, and
//! clients that misbehave.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, assert_success, wait_until, wait_until_stalled};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

#[test]
fn a_window_change_reaches_the_remote_pty_and_the_recording() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    tcsetwinsize(&slave, winsize(24, 80)).unwrap();
    let child = world
        .target_ssh("alice", "web-01")
        .arg("-tt")
        .arg("stty size; sleep 2; stty size")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut terminal = std::fs::File::from(master);
    let reader = {
        let mut terminal = terminal.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut output = Vec::new();
            let mut chunk = [0u8; 4096];
            // EIO once the ssh process (the last slave holder) exits.
            while let Ok(n) = terminal.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&output).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    tcsetwinsize(&terminal, winsize(50, 132)).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::WINCH,
    )
    .unwrap();
    let _ = terminal.flush();
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let output = reader.join().unwrap();
    assert!(output.contains("24 80"), "{output:?}");
    assert!(output.contains("50 132"), "{output:?}");
    let recording = std::fs::read_dir(world.path("recordings"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(recording.contains(r#""r","132x50""#), "{recording}");
}

/// Runs `command` on web-01 directly with the managed key (before any
/// rotation), for comparison with the gateway.
fn direct(world: &World, command: &str) -> std::process::Output {
    let key = &world.ssh_target.as_ref().unwrap().key;
    world.direct_ssh(key).arg(command).output().unwrap()
}

#[test]
fn ctrl_c_interrupts_the_remote_process_and_exit_signals_match_openssh() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let mut shell = world
        .target_ssh("alice", "web-01")
        .arg("-tt")
        .arg("trap 'echo got-INT; exit 3' INT; echo ready; sleep 30 & wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(shell.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("ready"), "{ready}");
    let sent = Instant::now();
    shell.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = shell.wait().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(rest.iter().any(|l| l.contains("got-INT")), "{rest:?}");
    assert_eq!(status.code(), Some(3));

    // A remote process killed by a signal ends the client as OpenSSH does.
    let through = world
        .target_ssh("alice", "web-01")
        .arg("kill -TERM $$")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let reference = direct(&world, "kill -TERM $$");
    assert_eq!(through.status.code(), reference.status.code());
}

/// One OpenSSH connection to alice+web-01 shared by clients through a
/// control socket (ControlMaster), as `ssh -o ControlMaster=auto` users have.
struct SharedConnection {
    master: Child,
    socket: PathBuf,
}

impl SharedConnection {
    fn open(world: &World, socket_name: &str) -> Self {
        let socket = world.path(socket_name);
        let master = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {} -M -S {} -N alice+web-01@127.0.0.1",
                world.ssh_options("alice"),
                socket.display()
            ))
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || socket.exists()));
        Self { master, socket }
    }

    /// A client running `remote_command` over the shared connection.
    fn command(&self, remote_command: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-S")
            .arg(&self.socket)
            .arg("alice+web-01@127.0.0.1")
            .arg(remote_command);
        command
    }
}

impl Drop for SharedConnection {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// A command that closes its output and exits a moment later: the target
/// sends EOF first and the exit status after. A connection-sharing OpenSSH
/// client (ControlMaster) closes a channel as soon as both directions are at
/// EOF, and russh answers a close at once, so the gateway must not pass the
/// EOF on before the exit status (sshd itself holds its close back).
#[test]
fn the_exit_status_arrives_even_when_output_ends_before_the_command() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let shared = SharedConnection::open(&world, "exit.sock");
    let command = "echo partial; exec >&- 2>&-; sleep 1; exit 7";
    let through = shared
        .command(command)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    drop(shared);
    assert_eq!(
        through.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&through.stdout), "partial\n");
    assert_eq!(direct(&world, command).status.code(), Some(7));
}

#[test]
fn git_clone_and_push_over_the_gateway_work_unchanged() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let out = world
        .target_ssh("alice", "web-01")
        .arg("rm -rf repo.git && git init -q --bare repo.git")
        .output()
        .unwrap();
    assert_success(&out);
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=alice",
                "-c",
                "user.email=alice@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", world.ssh_options("alice"))
            .output()
            .expect("git must be installed: scripts/install-deps");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let work = world.path("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("README"), "through the gateway\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(
        &work,
        &[
            "push",
            "-q",
            "alice+web-01@127.0.0.1:repo.git",
            "HEAD:refs/heads/main",
        ],
    );
    git(
        world.dir.path(),
        &["clone", "-q", "alice+web-01@127.0.0.1:repo.git", "clone"],
    );
    assert_eq!(
        std::fs::read_to_string(world.path("clone/README")).unwrap(),
        "through the gateway\n"
    );
}

/// An OpenSSH master connection (ControlMaster) to web-01 as alice, and
/// the socket its commands go through.
fn shared_connection(world: &World) -> (Child, PathBuf) {
    connection_shared_as(world, "alice", "alice+web-01")
}

/// An OpenSSH ControlMaster logged in as `login` with `user`'s key.
fn connection_shared_as(world: &World, user: &str, login: &str) -> (Child, PathBuf) {
    let socket = world.path(&format!("mux-{user}.sock"));
    let options = world.ssh_options(user);
    let master = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {options} -M -S {} -N {login}@127.0.0.1",
            socket.display()
        ))
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    (master, socket)
}

/// `command` over the shared connection behind `socket`.
fn over_shared(socket: &std::path::Path, command: &str) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-S")
        .arg(socket)
        .arg("alice+web-01@127.0.0.1")
        .arg(command);
    ssh
}

#[test]
fn several_channels_share_one_connection_and_one_upstream() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let (mut master, socket) = shared_connection(&world);
    let runs: Vec<_> = (0..4)
        .map(|i| {
            over_shared(&socket, &format!("sleep 1; echo channel-{i}-$((i=6*7))"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("channel-{i}-42")
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the channels ran one after another"
    );
    let sessions = world.json("carol", "sessions");
    let ssh_sessions = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["protocol"] == "ssh")
        .count();
    assert_eq!(ssh_sessions, 1, "{sessions}");
    // Each channel ends (and is audited) when it closes, not when the
    // shared connection does.
    let channels_ended = || world.audit_text().matches("\"channel_ended\"").count();
    assert!(
        wait_until(Duration::from_secs(5), || channels_ended() == 4),
        "{} of 4 channels ended while the connection stays",
        channels_ended()
    );
    // So one connection serves any number of commands one after another
    // (OpenSSH's ControlPersist keeps it for hours), not just as many as
    // it may hold open at once.
    for i in 0..24 {
        let status = over_shared(&socket, "true").status().unwrap();
        assert!(
            status.success(),
            "command {i} over the shared connection failed"
        );
    }
    let _ = master.kill();
    let _ = master.wait();
}

#[test]
fn misbehaving_clients_are_closed_cleanly_and_others_are_unaffected() {
    let world = World::with_ssh_target(|text| {
        text.replace("[roles]", "[ssh]\nauth_timeout = \"2s\"\n[roles]")
    });
    world.lease_web("alice", "10m");
    // A client that never authenticates is cut off by the auth timeout.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", world.ssh_port)).unwrap();
    silent.write_all(b"SSH-2.0-silent\r\n").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = silent.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Garbage instead of a version line, and a client that vanishes.
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x00\xff\x00\xff"] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", world.ssh_port)).unwrap();
        let _ = stream.write_all(garbage);
        drop(stream);
    }
    // A client that asks for strict key exchange, then breaks it.
    let mut strict = std::net::TcpStream::connect(("127.0.0.1", world.ssh_port)).unwrap();
    strict
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ignore = [2, 0, 0, 0, 0];
    let hello = [
        &b"SSH-2.0-strict\r\n"[..],
        &ssh_packet(&strict_kexinit()),
        &ssh_packet(&ignore),
    ]
    .concat();
    strict.write_all(&hello).unwrap();
    let mut answer = Vec::new();
    let _ = strict.read_to_end(&mut answer);
    assert!(answer.starts_with(b"SSH-2.0-"), "{answer:?}");
    // An unknown subsystem is refused; the connection's other work is not.
    let out = world
        .target_ssh("alice", "web-01")
        .args(["-s", "no-such-subsystem"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = world
        .target_ssh("alice", "web-01")
        .arg("echo fine")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fine");
    // Every connection's task ended with it: none is left behind.
    assert!(
        wait_until(Duration::from_secs(10), || world.open_connections("ssh")
            == Some(0.0)),
        "{:?} SSH connections still open",
        world.open_connections("ssh")
    );
    assert!(!world.log().contains("panicked"), "{}", world.log());
    // Misbehaving clients are no warning in the log: anyone can connect.
    assert!(!world.log().contains("WARN"), "{}", world.log());
}

/// An SSH binary packet as sent before the first key exchange (no cipher,
/// no MAC; padded to 8 bytes).
fn ssh_packet(payload: &[u8]) -> Vec<u8> {
    let mut padding = 8 - (5 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    let length = (1 + payload.len() + padding) as u32;
    let mut packet = length.to_be_bytes().to_vec();
    packet.push(padding as u8);
    packet.extend_from_slice(payload);
    packet.extend(std::iter::repeat_n(0, padding));
    packet
}

/// A client's KEXINIT that asks for strict key exchange.
fn strict_kexinit() -> Vec<u8> {
    let mut payload = vec![20];
    payload.extend([7; 16]);
    for list in [
        "curve25519-sha256,kex-strict-c-v00@openssh.com",
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ] {
        payload.extend((list.len() as u32).to_be_bytes());
        payload.extend(list.as_bytes());
    }
    payload.extend([0; 5]);
    payload
}

/// Live SSH sessions on the gateway, as an auditor sees them.
fn live_ssh_sessions(world: &World) -> usize {
    world.json("carol", "sessions")["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["protocol"] == "ssh")
        .count()
}

/// The target's sshd session processes for the managed account.
fn target_sessions(world: &World) -> usize {
    let account = &world.ssh_target.as_ref().unwrap().sshd.account;
    let out = Command::new("pgrep")
        .args(["-c", "-u", account, "-f", "^sshd.*@(notty|pts)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Sessions whose start is in the audit log and whose end is not.
fn unended_sessions(world: &World) -> Vec<String> {
    let mut open = std::collections::BTreeSet::new();
    for line in world.audit_text().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let event = &record["event"];
        let session = event["session"].as_str().unwrap_or_default().to_string();
        match event["type"].as_str() {
            Some("session_started") => open.insert(session),
            Some("session_ended") => open.remove(&session),
            _ => false,
        };
    }
    open.into_iter().collect()
}

#[test]
fn a_client_that_leaves_ends_its_session_on_the_target() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let gone = |world: &World| live_ssh_sessions(world) == 0 && target_sessions(world) == 0;

    // Killed in the middle of a command (a pty shell, and a plain exec).
    for args in [&["-tt", "bash"][..], &["sleep 600"][..]] {
        let mut client = world
            .target_ssh("alice", "web-01")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || live_ssh_sessions(&world) == 1
                && target_sessions(&world) == 1),
            "{args:?} never started"
        );
        client.kill().unwrap();
        client.wait().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || gone(&world)),
            "{args:?}: {} gateway sessions and {} target sessions left after the client died",
            live_ssh_sessions(&world),
            target_sessions(&world)
        );
    }

    // Gone while its channel is being opened: OpenSSH leaves at once when
    // the remote forward it asked for alongside is refused.
    for _ in 0..3 {
        assert!(!world.remote_forward_attempt("alice").status.success());
    }
    assert!(
        wait_until(Duration::from_secs(10), || gone(&world)),
        "{} gateway sessions and {} target sessions left by clients that left early",
        live_ssh_sessions(&world),
        target_sessions(&world)
    );
    // Each of those sessions has its end on record.
    assert!(
        wait_until(Duration::from_secs(10), || unended_sessions(&world)
            .is_empty()),
        "sessions without an end on record: {:?}",
        unended_sessions(&world)
    );
}

#[test]
fn a_client_that_leaves_with_its_download_stalled_ends_its_session() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let mut client = stalled_download(&world);
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || live_ssh_sessions(&world) == 0
            && target_sessions(&world) == 0
            && unended_sessions(&world).is_empty()),
        "{} gateway sessions, {} target sessions and {:?} without an end on record",
        live_ssh_sessions(&world),
        target_sessions(&world),
        unended_sessions(&world)
    );
}

/// alice's pty session on web-01 printing as fast as it can, for
/// followers; with its session id.
fn busy_pty_session(world: &World) -> (Child, String) {
    let busy = world
        .target_ssh("alice", "web-01")
        .args(["-tt", "base64 /dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (busy, world.live_session("ssh"))
}

#[test]
fn a_follower_that_stops_reading_and_leaves_holds_nothing_up() {
    let mut world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let (mut busy, session) = busy_pty_session(&world);
    // Nobody reads the follower's output: its channel's window closes and
    // the gateway's writes to it wait.
    let mut follower = world
        .ssh_command("carol", "carol")
        .arg(format!("follow {session}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    follower.kill().unwrap();
    follower.wait().unwrap();
    busy.kill().unwrap();
    busy.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || live_ssh_sessions(
        &world
    ) == 0));
    // Nothing of theirs is left for a shutdown to wait for: every SSH
    // connection, the follower's too, has ended on its own.
    assert!(wait_until(Duration::from_secs(10), || world
        .open_connections("ssh")
        == Some(0.0)));
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!world.log().contains("draining"), "{}", world.log());
}

/// Established TCP connections whose local port is `port` (the server's
/// side of connections to it), from /proc/net/tcp.
fn established_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|row| {
                    let fields: Vec<&str> = row.split_whitespace().collect();
                    let local_port = fields[1].rsplit(':').next().unwrap();
                    u16::from_str_radix(local_port, 16) == Ok(port) && fields[3] == "01"
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .count()
}

/// Downloads through the gateway into a pipe nobody reads, until the
/// gateway's writes to the client wait for window.
fn stalled_download(world: &World) -> Child {
    let client = world
        .target_ssh("alice", "web-01")
        .arg("cat /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until_stalled(|| world.bytes_to_client("ssh")),
        "the download never stalled"
    );
    client
}

#[test]
fn a_client_that_stopped_reading_is_still_cut_off_when_its_window_ends() {
    let world = World::with_ssh_target(|t| t);
    let id = world.lease_web("alice", "10m");
    let mut client = stalled_download(&world);
    // Frozen (a laptop's lid closed): it stops reading its socket too.
    let status = Command::new("kill")
        .args(["-STOP", &client.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(established_on(world.ssh_port), 1);
    world.ok("alice", &format!("checkin {id}"));
    assert!(
        wait_until(Duration::from_secs(5), || established_on(world.ssh_port)
            == 0),
        "the client's connection outlived its window"
    );
    assert!(
        wait_until(Duration::from_secs(5), || unended_sessions(&world)
            .is_empty()),
        "the frozen client's session never ended"
    );
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_frozen_client_that_leaves_its_streams_unread_is_dropped() {
    let world = World::with_ssh_target(|t| {
        format!("[ssh]\nclient_alive_interval = \"1s\"\nclient_alive_count_max = 2\n{t}")
    });
    world.lease_web("alice", "10m");
    let (mut busy, session) = busy_pty_session(&world);
    // Enough followers over one connection that their windows hold more
    // than the socket buffers: once the client freezes, the gateway's
    // writes to it block, and its keepalives with them.
    let (mut master, socket) = connection_shared_as(&world, "carol", "carol");
    let followers: Vec<Child> = (0..8)
        .map(|_| {
            Command::new("ssh")
                .arg("-S")
                .arg(&socket)
                .arg("carol@127.0.0.1")
                .arg(format!("follow {session}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(established_on(world.ssh_port), 2);
    let status = Command::new("kill")
        .args(["-STOP", &master.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Dropped after about two seconds of nothing read ([ssh]
    // client_alive_*), not at the five-minute inactivity backstop.
    assert!(
        wait_until(Duration::from_secs(15), || established_on(world.ssh_port)
            == 1),
        "the frozen client's connection is still there"
    );
    for mut follower in followers {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    let _ = master.kill();
    let _ = master.wait();
    busy.kill().unwrap();
    busy.wait().unwrap();
}

#[test]
fn a_connection_idle_for_the_idle_timeout_is_closed_and_a_busy_one_or_a_silent_command_is_not() {
    let world = World::with_ssh_target(|t| format!("[ssh]\nidle_timeout = \"3s\"\n{t}"));
    world.lease_web("alice", "10m");
    let run = |command: &str| {
        world
            .target_ssh("alice", "web-01")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Output every half second for six seconds: never idle for three.
    let busy = run("for i in $(seq 12); do echo tick-$i; sleep 0.5; done");
    // A connection that never asks for a channel (`ssh -N`) is closed too.
    let unused = world
        .target_ssh("alice", "web-01")
        .arg("-N")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command without a pty that prints nothing for twice the timeout
    // is work left to run, not idleness.
    let silent = run("sleep 6; echo done");
    // On a pty, nothing either way for thirty seconds is a person gone.
    let started = Instant::now();
    let quiet = world
        .target_ssh("alice", "web-01")
        .args(["-tt", "sleep 30; echo never"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let quiet = quiet.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&quiet.stdout),
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert!(!quiet.status.success());
    assert!(
        said.contains("closed after 3s without activity (ssh.idle_timeout)"),
        "{said}"
    );
    assert!(!said.contains("never"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let unused = unused.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&unused.stderr);
    assert!(
        said.contains("closed after 3s without activity (ssh.idle_timeout)"),
        "{said}"
    );
    let busy = busy.wait_with_output().unwrap();
    assert!(busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stdout).contains("tick-12"));
    let silent = silent.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&silent.stderr);
    assert!(silent.status.success(), "{said}");
    assert_eq!(String::from_utf8_lossy(&silent.stdout), "done\n");

    // Audited as closed by the gateway, not as severed with the window.
    assert!(wait_until(Duration::from_secs(5), || world
        .audit_events("session_ended")
        .len()
        == 3));
    let ended = world.audit_events("session_ended");
    let closed: Vec<_> = ended
        .iter()
        .filter(|event| event["closed_by_gateway"].is_string())
        .collect();
    assert_eq!(closed.len(), 1, "{ended:?}");
    assert!(closed[0]["severed"].is_null());
    // The unused login is on record too, as giving no access.
    let refused_logins = || {
        let logins = world.audit_events("login");
        logins
            .into_iter()
            .filter(|login| login["accepted"] == false)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(5), || !refused_logins().is_empty()));
    let (unused, logins) = (refused_logins(), world.audit_events("login"));
    assert_eq!(unused.len(), 1, "{logins:?}");
    assert_eq!(unused[0]["resource"], "web-01");
    assert_eq!(unused[0]["user"], "alice");
    assert!(
        unused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("never asked for a shell"),
        "{logins:?}"
    );
    assert_eq!(
        world.metric("jitgate_sessions_severed_total{protocol=\"ssh\"}"),
        Some(0.0)
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_stalled_reader_does_not_pile_the_download_up_in_gateway_memory() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let before = rss_kib(world.pid());
    let mut download = world
        .target_ssh("alice", "web-01")
        .arg("head -c 1G /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The client reads nothing for a while: the target could produce
    // gigabytes meanwhile; the gateway must hold only bounded buffers.
    let mut peak = before;
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(rss_kib(world.pid()));
    }
    let mut stdout = download.stdout.take().unwrap();
    let mut total = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(download.wait().unwrap().success());
    assert_eq!(total, 1 << 30);
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("gateway RSS grew by {growth_mib} MiB with a stalled reader");
    assert!(
        growth_mib < 40,
        "gateway RSS grew by {growth_mib} MiB while the reader stalled"
    );
}

/// A reader that stalls on one channel holds back that channel's sender
/// only: the target gets no more window for it, and every other channel on
/// the same connection (here a ControlMaster's) keeps working.
#[test]
fn a_stalled_reader_holds_back_only_its_own_channel() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let shared = SharedConnection::open(&world, "stall.sock");
    let mut stalled = shared
        .command("head -c 1G /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough for the target to fill every buffer on the way.
    std::thread::sleep(Duration::from_secs(3));
    let mut neighbour = shared
        .command("echo neighbour")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_until(Duration::from_secs(20), || {
        neighbour.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = neighbour.kill();
        let _ = stalled.kill();
    }
    let out = neighbour.wait_with_output().unwrap();
    assert!(finished, "a channel waited on its stalled neighbour");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "neighbour\n");
    // The stalled download is intact once its reader reads.
    let mut stdout = stalled.stdout.take().unwrap();
    let total = std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    assert!(stalled.wait().unwrap().success());
    assert_eq!(total, 1 << 30);
}

#[test]
fn hundreds_of_channels_on_one_connection_are_served_or_refused_cleanly() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let shared = SharedConnection::open(&world, "many.sock");
    let runs: Vec<_> = (0..150)
        .map(|_| {
            shared
                .command("sleep 1; echo ok")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut served = 0;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
            served += 1;
        } else {
            // The target caps sessions per connection (sshd MaxSessions):
            // the gateway refuses the channel open as the target did, the
            // client says so, nothing hangs.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("open refused"),
                "a refused channel says why: {err} ({:?}, stdout {:?})",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    assert!(served >= 10, "only {served} channels were served");
    drop(shared);
    let out = world
        .target_ssh("alice", "web-01")
        .arg("echo after")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "after");
    assert!(!world.log().contains("panicked"));
}

#[test]
fn a_shared_connection_runs_command_after_command_without_growing() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let (mut master, socket) = shared_connection(&world);
    let run = |commands: usize| {
        for _ in 0..commands {
            let status = over_shared(&socket, "true").status().unwrap();
            assert!(status.success());
        }
    };
    run(100);
    // Each channel once left about 4 KiB behind for the connection's life
    // (OpenSSH's ControlPersist, as Ansible uses it, runs thousands): that
    // shows in every stretch of 600, while a one-off rise (an allocator
    // arena warming up) shows in one at most.
    let mut grown = Vec::new();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(world.pid());
        run(600);
        std::thread::sleep(Duration::from_millis(500));
        grown.push(rss_kib(world.pid()).saturating_sub(before));
    }
    assert!(
        grown.iter().min() < Some(&1024),
        "the gateway grew {grown:?} KiB over two stretches of 600 channels"
    );
    let _ = master.kill();
    let _ = master.wait();
}
