//! SFTP channels (stock `sftp`, and `scp`, which speaks SFTP) keep a file
//! log: each file opened with its mode and the bytes moved, each directory
//! listed with the names it gave, each change with the target's answer, vouched for by the record ending the channel.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{World, wait_until};
use serde_json::Value;

/// The file log entries of every SFTP channel, in the order the channels
/// ended (their `channel_ended` records).
fn file_logs(world: &World) -> Vec<Vec<Value>> {
    world
        .audit_text()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|record| record["event"]["file_log"].as_str().map(String::from))
        .map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        })
        .collect()
}

/// What `jitgate audit verify --recordings` says of the world's log.
fn verify_recordings(world: &World) -> String {
    let out = Command::new(common::BIN)
        .args(["audit", "verify", "--recordings"])
        .arg(world.path("audit/audit.log"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn entry<'a>(entries: &'a [Value], op: &str, path: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["op"] == op && e["path"].as_str().is_some_and(|p| p.ends_with(path)))
        .unwrap_or_else(|| panic!("no {op} {path} in {entries:?}"))
}

#[test]
fn sftp_and_scp_file_operations_are_logged_with_bytes_and_outcomes() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let local = world.path("payload");
    std::fs::write(&local, vec![42u8; 300_000]).unwrap();

    let mut sftp = world.sftp_batch("alice");
    // `-` before a command lets the batch go on when it fails.
    write!(
        sftp.stdin.take().unwrap(),
        "put {} up.bin\nget up.bin {}\nrename up.bin moved.bin\ncopy moved.bin copied.bin\nmkdir d1\nput {} d1/x\nput {} d1/y\nls d1\nmkdir d2\nchmod 000 d2\n-ls d2\nrmdir d2\nrm d1/x\nrm d1/y\nrmdir d1\nrm moved.bin\nrm copied.bin\n-rm missing.bin\n",
        local.display(),
        world.path("down").display(),
        local.display(),
        local.display()
    )
    .unwrap();
    assert!(sftp.wait().unwrap().success());
    assert!(world.scp("alice", &local.display().to_string(), "web-01:scp.bin"));
    assert!(wait_until(Duration::from_secs(5), || file_logs(&world)
        .len()
        == 2));

    let logs = file_logs(&world);
    let sftp = &logs[0];
    let upload = entry(sftp, "open", "up.bin");
    assert_eq!(
        (
            &upload["mode"],
            &upload["written_bytes"],
            &upload["outcome"]
        ),
        (
            &"write,create,truncate".into(),
            &300_000.into(),
            &"ok".into()
        ),
        "{upload}"
    );
    assert!(
        sftp.iter()
            .any(|e| e["op"] == "open" && e["mode"] == "read" && e["read_bytes"] == 300_000),
        "{sftp:?}"
    );
    assert!(
        entry(sftp, "rename", "up.bin")["target"]
            .as_str()
            .unwrap()
            .ends_with("moved.bin")
    );
    // A server-side copy (OpenSSH 9.0+) moves no data past the gateway.
    let copy = entry(sftp, "copy", "moved.bin");
    assert!(
        copy["target"].as_str().unwrap().ends_with("copied.bin") && copy["outcome"] == "ok",
        "{copy}"
    );
    assert_eq!(entry(sftp, "mkdir", "d1")["outcome"], "ok");
    // A listing gives its names (`.` and `..` among them).
    let listing = entry(sftp, "list", "d1/");
    assert_eq!(
        (&listing["names"], &listing["outcome"]),
        (&4.into(), &"ok".into()),
        "{listing}"
    );
    assert_eq!(entry(sftp, "list", "/d2/")["outcome"], "permission denied");
    assert_eq!(entry(sftp, "rmdir", "d1")["outcome"], "ok");
    assert_eq!(entry(sftp, "remove", "moved.bin")["outcome"], "ok");
    assert_eq!(
        entry(sftp, "remove", "missing.bin")["outcome"],
        "no such file"
    );
    let scp = entry(&logs[1], "open", "scp.bin");
    assert_eq!(scp["written_bytes"], 300_000, "{scp}");

    // Auditors read it back; the chain vouches for it.
    let session = world
        .audit_text()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|record| record["event"]["file_log"].is_string())
        .map(|record| record["event"]["session"].as_str().unwrap().to_string())
        .unwrap();
    let shown = world.ok("carol", &format!("replay {session}"));
    assert!(
        shown.contains("rename ") && shown.contains("moved.bin: ok"),
        "{shown}"
    );
    assert!(
        shown.contains("[write,create,truncate, read 0, wrote 300000]: ok"),
        "{shown}"
    );
    assert!(shown.contains("/d1/ [4 names]: ok"), "{shown}");
    let text = verify_recordings(&world);
    assert!(text.contains("OK: 2 recording(s)"), "{text}");
}

#[test]
fn auditors_follow_an_sftp_session_live() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let mut sftp = world.sftp_batch("alice");
    let mut commands = sftp.stdin.take().unwrap();
    commands.write_all(b"mkdir before-follow\n").unwrap();
    let session = world.live_session("ssh");
    assert!(wait_until(Duration::from_secs(10), || world.recorded("before-follow")));
    let (mut follower, mut lines) = world.follow("carol", &session);
    let mut next_line = || lines.next().and_then(Result::ok).unwrap_or_default();
    let caught_up = next_line();
    assert!(
        caught_up.contains("mkdir ") && caught_up.contains("before-follow: ok"),
        "{caught_up}"
    );
    commands.write_all(b"mkdir live-42\n").unwrap();
    let live = next_line();
    assert!(live.contains("live-42: ok"), "{live}");
    drop(commands);
    assert!(sftp.wait().unwrap().success());
    World::follow_ended(&mut follower);
}

/// `scp -O` (the legacy SCP protocol, as PuTTY's `pscp -scp` and WinSCP
/// in SCP mode speak it) through the gateway as `user`.
fn legacy_scp(world: &World, user: &str, args: &[&str]) -> bool {
    Command::new("scp")
        .args(world.client_options(user))
        .args(["-O", "-q", "-P", &world.ssh_port.to_string()])
        .args(args)
        .status()
        .unwrap()
        .success()
}

#[test]
fn legacy_scp_transfers_are_logged_file_by_file() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let tree = world.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), vec![b'a'; 1000]).unwrap();
    std::fs::write(tree.join("sub/b.txt"), vec![b'b'; 2000]).unwrap();
    let remote = |path: &str| format!("alice+web-01@127.0.0.1:{path}");

    assert!(legacy_scp(
        &world,
        "alice",
        &["-r", tree.to_str().unwrap(), &remote("")]
    ));
    let local = world.path("b-again.txt");
    assert!(legacy_scp(
        &world,
        "alice",
        &[&remote("tree/sub/b.txt"), local.to_str().unwrap()]
    ));
    assert_eq!(std::fs::read(&local).unwrap(), vec![b'b'; 2000]);
    let missing = world.path("never.txt");
    assert!(!legacy_scp(
        &world,
        "alice",
        &[&remote("missing.txt"), missing.to_str().unwrap()]
    ));
    assert!(wait_until(Duration::from_secs(5), || file_logs(&world)
        .len()
        == 3));

    let logs = file_logs(&world);
    let upload = &logs[0];
    assert_eq!(
        entry(upload, "mkdir", "/tree")["outcome"],
        "ok",
        "{upload:?}"
    );
    assert_eq!(
        entry(upload, "mkdir", "/tree/sub")["outcome"],
        "ok",
        "{upload:?}"
    );
    let a = entry(upload, "open", "/tree/a.txt");
    assert_eq!(
        (&a["written_bytes"], &a["outcome"]),
        (&1000.into(), &"ok".into()),
        "{a}"
    );
    let b = entry(upload, "open", "/tree/sub/b.txt");
    assert_eq!(
        (&b["written_bytes"], &b["outcome"]),
        (&2000.into(), &"ok".into()),
        "{b}"
    );
    let download = entry(&logs[1], "open", "tree/sub/b.txt");
    assert_eq!(
        (
            &download["mode"],
            &download["read_bytes"],
            &download["outcome"]
        ),
        (&"read".into(), &2000.into(), &"ok".into()),
        "{download}"
    );
    let refused = entry(&logs[2], "open", "missing.txt");
    assert!(
        refused["outcome"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{refused}"
    );
    // The chain vouches for them as for SFTP logs.
    let text = verify_recordings(&world);
    assert!(text.contains("OK: 3 recording(s)"), "{text}");
}
