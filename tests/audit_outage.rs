//! Fail closed when the record of access cannot be kept: while the audit
//! log cannot be written, nobody new gets in and no access is granted, but
//! what ends access still works and nothing it records is lost, a crash
//! meanwhile included (the log's reserve keeps the records); while the
//! journal cannot be written, a revocation still severs at once, is kept
//! in the journal's reserve (a full disk included) and journaled once the
//! disk takes writes again; a channel
//! whose recording cannot be created does not run, and a channel or
//! Postgres session whose recording or query log stops taking writes ends.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, World, wait_until};

const REFUSED: &str = "cannot write its audit log";

/// Makes `file` refuse every write (ext4's immutable flag applies to
/// files already open too), or takes that away.
fn set_immutable(file: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let status = Command::new("chattr")
        .arg(flag)
        .arg(file)
        .status()
        .expect("chattr (e2fsprogs: scripts/install-deps)");
    assert!(
        status.success(),
        "chattr {flag} on the test directory's file system"
    );
}

/// A file made immutable until this is dropped, even when an assertion
/// fails, so the test directory can go.
struct Immutable(PathBuf);

impl Immutable {
    fn new(file: PathBuf) -> Self {
        set_immutable(&file, true);
        Self(file)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        set_immutable(&self.0, false);
    }
}

/// The only file in `dir`, once there is one.
fn only_file(dir: &Path) -> PathBuf {
    let mut found = None;
    assert!(wait_until(Duration::from_secs(10), || {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found = (files.len() == 1).then(|| files[0].clone());
        found.is_some()
    }));
    found.unwrap()
}

fn on_web(world: &World, user: &str, command: &str) -> Output {
    world
        .target_ssh(user, "web-01")
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for the housekeeping retry to journal what waited (within a
/// second or so of the disk taking writes), then kills the gateway hard
/// and starts it again.
fn crash_once_journaled(world: &mut World) {
    assert!(wait_until(Duration::from_secs(5), || world
        .metric("jitgate_journal_held_records")
        == Some(0.0)));
    world.kill_hard();
    world.launch();
}

#[test]
fn while_the_audit_log_cannot_be_written_nobody_gets_in_and_nothing_it_holds_is_lost() {
    let mut world = World::with_both_targets(&[], |text| text);
    let web = world.lease_web("alice", "10m");
    let (_, password) = world.lease_pg("alice", "10m");
    let pending = world.request("erin", "web-01 --for 10m --reason outage");
    let home = world.ssh_target.as_ref().unwrap().sshd.home.clone();
    assert!(on_web(&world, "alice", "true").status.success());

    let guard = Immutable::new(world.path("audit/audit.log"));
    let out = on_web(&world, "alice", "touch ran-during-outage");
    assert!(!out.status.success());
    assert!(text(&out).contains(REFUSED), "{}", text(&out));
    assert!(!home.join("ran-during-outage").exists());
    let (_, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(!ok);
    assert!(err.contains(REFUSED), "{err}");

    // Nothing that grants access changes; what ends access does.
    let refused = world.refused("bob", &format!("approve {pending}"));
    assert!(
        refused.contains(REFUSED) && refused.contains("nothing was changed"),
        "{refused}"
    );
    world.ok("alice", &format!("checkin {web}"));
    assert!(
        wait_until(Duration::from_secs(5), || world
            .log()
            .contains("audit write failed")),
        "{}",
        world.log()
    );
    assert!(world.metric("jitgate_audit_records_held").unwrap_or(0.0) >= 3.0);

    // The gateway dies while they wait: they are in the log's reserve.
    // Writable again, the next start writes them first, in order, and
    // access resumes.
    world.kill_hard();
    drop(guard);
    world.launch();
    let mut answer = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (out, err, ok) = world.psql_run("alice", &password, "select 'back-' || 1");
            answer = format!("{out}{err}");
            ok
        }),
        "{answer}"
    );
    assert_eq!(answer, "back-1");
    // Approved once, now: the refused approval left the request as it was.
    world.ok("bob", &format!("approve {pending}"));

    let audit = world.audit_text();
    let at = |needle: &str| {
        audit
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the audit log:\n{audit}"))
    };
    let refused_login = at(&format!(
        "\"reason\":\"{}",
        jitgate::gateway::AUDIT_UNAVAILABLE
    ));
    let checked_in = at("\"reason\":\"checked_in\"");
    let refused_approval = at("\"command\":\"approve");
    assert!(refused_login < refused_approval && refused_approval < checked_in);
    let verified = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(world.path("audit/audit.log"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
}

#[test]
fn while_the_journal_and_its_reserve_cannot_be_written_a_revocation_still_severs_and_is_recorded_later()
 {
    let mut world = World::with_ssh_target(|text| text);
    let web = world.lease_web("alice", "10m");
    let shell = world.pty_shell("alice", b"echo in-$((1+1))\n");
    assert!(wait_until(Duration::from_secs(10), || world.recorded("in-2")));

    let guard = Immutable::new(world.path("state/journal.log"));
    let reserve_guard = Immutable::new(world.path("state/journal.reserve"));
    let refused = world.refused("zoe", "request web-01 --for 10m --reason outage");
    assert!(
        refused.contains("not recorded (storage error)"),
        "{refused}"
    );
    let out = world.ssh("root", &format!("revoke {web}"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("took effect at once") && text(&out).contains("not yet recorded"),
        "{}",
        text(&out)
    );
    // Severed at once, though the journal does not have it yet.
    let severed = shell.wait_with_output().unwrap();
    assert!(
        text(&severed).contains("revoked by root"),
        "{}",
        text(&severed)
    );
    assert_eq!(world.metric("jitgate_journal_held_records"), Some(1.0));
    let out = on_web(&world, "alice", "true");
    assert!(!out.status.success());

    // Writable again: the housekeeping retry records it within a second
    // or so, and a crash then loses nothing.
    drop((guard, reserve_guard));
    crash_once_journaled(&mut world);
    let shown = world.ok("alice", "requests --all");
    let line = format!("  {web:<3} revoked ");
    assert!(shown.contains(&line), "{shown}");
    assert!(!on_web(&world, "alice", "true").status.success());
    assert!(!world.audit_text().contains("\"command\":\"revoke"));
}

#[test]
fn a_channel_whose_recording_cannot_be_created_does_not_run() {
    let world = World::with_ssh_target(|text| text);
    world.lease_web("alice", "10m");
    let home = world.ssh_target.as_ref().unwrap().sshd.home.clone();
    let recordings = world.path("recordings");
    let _ = std::fs::remove_dir_all(&recordings);
    std::fs::write(&recordings, "not a directory").unwrap();

    let out = world
        .target_ssh("alice", "web-01")
        .args(["-tt", "touch ran-unrecorded"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("this session cannot be recorded"),
        "{}",
        text(&out)
    );
    let sftp = world.sftp_batch("alice").wait_with_output().unwrap();
    assert!(!sftp.status.success());
    assert!(!home.join("ran-unrecorded").exists());

    // Exec channels are recorded too (record_exec_bytes), so they do not
    // run either.
    let out = on_web(&world, "alice", "touch ran-as-exec");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("this session cannot be recorded"),
        "{}",
        text(&out)
    );
    assert!(!home.join("ran-as-exec").exists());
}

#[test]
fn a_pty_session_whose_recording_stops_taking_writes_is_ended() {
    let world = World::with_ssh_target(|text| text);
    world.lease_web("alice", "10m");
    let mut shell = world.pty_shell("alice", b"echo one-$((2-1))\n");
    let recording = only_file(&world.path("recordings"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&recording).is_ok_and(|text| text.contains("one-1"))
    }));

    let _immutable = Immutable::new(recording.clone());
    let input = shell.stdin.as_mut().unwrap();
    input.write_all(b"echo two-$((1+1))\n").unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("recording cannot be written, so it is ended"),
        "{text}"
    );
    assert!(!text.contains("two-2"), "{text}");
}

#[test]
fn a_postgres_session_whose_query_log_stops_taking_writes_is_ended() {
    let world = World::with_pg_target(&[], |text| text);
    let (_, password) = world.lease_pg("alice", "10m");
    let mut psql = world
        .psql("alice", "orders-prod", &password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = psql.stdin.as_mut().unwrap();
    input.write_all(b"select 'one-' || 1;\n").unwrap();
    input.flush().unwrap();
    let query_log = only_file(&world.path("querylogs"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&query_log).is_ok_and(|text| text.contains("one-"))
    }));

    let _immutable = Immutable::new(query_log.clone());
    input.write_all(b"select 'two-' || 2;\n").unwrap();
    input.flush().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let _ = input.write_all(b"select 'three-' || 3;\n");
    drop(psql.stdin.take());
    let out = psql.wait_with_output().unwrap();
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot write this session's query log, so the session is ended"),
        "{text}"
    );
    assert!(
        text.contains("one-1") && !text.contains("three-3"),
        "{text}"
    );
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .status()
            .expect("mount (the tests run as root)");
        assert!(status.success(), "mounting a tmpfs (the tests run as root)");
        Self { _dir: dir, mount }
    }

    /// Fills the disk up to its last byte; returns the file that does it.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        for _ in 0..4096 {
            if file.write_all(&[0]).is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn on_a_full_disk_a_revocation_is_acknowledged_from_the_journal_reserve_and_survives_a_crash() {
    let disk = SmallDisk::new("16m");
    let state = disk.mount.join("state");
    let mut world = World::with_ssh_target(|text| {
        text.replacen(
            "[gateway]\n",
            &format!("[gateway]\nstate_dir = \"{}\"\n", state.display()),
            1,
        )
    });
    let web = world.lease_web("alice", "10m");
    let shell = world.pty_shell("alice", b"echo in-$((1+1))\n");
    assert!(wait_until(Duration::from_secs(10), || world.recorded("in-2")));

    let filler = disk.fill();
    // The journal's last page has room left still; requests (each
    // withdrawn again) use it up until one is refused.
    let reason = "x".repeat(190);
    let refused = (0..40).find_map(|_| {
        let out = world.ssh(
            "zoe",
            &format!("request web-01 --for 10m --reason {reason}"),
        );
        if !out.status.success() {
            return Some(text(&out));
        }
        let filed = text(&out);
        let id = filed.split_whitespace().nth(1).unwrap();
        world.ssh("zoe", &format!("cancel {id}"));
        None
    });
    let refused = refused.expect("requests kept being recorded on a full disk");
    assert!(
        refused.contains("not recorded (storage error)"),
        "{refused}"
    );
    // The reserve's blocks were the file's own before the disk filled up:
    // the revocation is on disk, acknowledged as usual, and severs at once.
    let revoked = world.ok("root", &format!("revoke {web}"));
    assert!(!revoked.contains("not yet recorded"), "{revoked}");
    let severed = shell.wait_with_output().unwrap();
    assert!(
        text(&severed).contains("revoked by root"),
        "{}",
        text(&severed)
    );
    // (A withdrawal may have been the first record the journal refused.)
    assert!(world.metric("jitgate_journal_held_records") >= Some(1.0));

    // A crash with the disk still full: the next start takes the change
    // back from the reserve, the journal taking it or not.
    world.kill_hard();
    world.launch();
    let line = format!("  {web:<3} revoked ");
    let shown = world.ok("alice", "requests --all");
    assert!(shown.contains(&line), "{shown}");
    assert!(!on_web(&world, "alice", "true").status.success());

    // Room again: the journal takes it; a crash then replays it from there.
    std::fs::remove_file(filler).unwrap();
    crash_once_journaled(&mut world);
    let shown = world.ok("alice", "requests --all");
    assert!(shown.contains(&line), "{shown}");
}
