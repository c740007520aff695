//! SSH implementations other than OpenSSH on either side of the gateway:
//! PuTTY's tools (what Windows users and WinSCP speak) as clients, and
//! Dropbear (small machines, appliances, containers) as the target.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{SshTarget, World, exits_within, wait_until};

/// PuTTY's command-line tools logging in to the gateway as one user, with
/// the user's key converted to PuTTY's format and the gateway's host key
/// pinned by fingerprint (as a first connection's prompt would).
struct Putty {
    key: PathBuf,
    host_key: String,
    port: u16,
}

impl Putty {
    fn new(world: &World, user: &str) -> Self {
        let key = world.path(&format!("{user}.ppk"));
        let converted = Command::new("puttygen")
            .arg(world.path("keys").join(user))
            .args(["-O", "private", "-o"])
            .arg(&key)
            .status()
            .expect("puttygen (putty-tools) must be installed: run scripts/install-deps");
        assert!(converted.success());
        Self {
            key,
            host_key: fingerprint(&world.path("state/ssh_host_ed25519_key")),
            port: world.ssh_port,
        }
    }

    /// `program` (plink, pscp, psftp) with the login options; never prompts.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .args(["-batch", "-noagent", "-i"])
            .arg(&self.key)
            .args(["-hostkey", &self.host_key, "-P", &self.port.to_string()])
            .stdin(Stdio::null());
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().unwrap();
        eprintln!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The SHA-256 fingerprint of the key pair whose private half is `key`.
fn fingerprint(key: &Path) -> String {
    let listed = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// Every file log's name and lines, for a failure's message.
fn file_logs(world: &World) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(world.path("recordings")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            (entry.file_name().to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn random_file(path: &Path, bytes: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    std::fs::write(path, &data).unwrap();
    data
}

fn target_home(world: &World) -> PathBuf {
    world.ssh_target.as_ref().unwrap().sshd.home.clone()
}

#[test]
fn putty_plink_pscp_and_psftp_work_through_the_gateway() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let putty = Putty::new(&world, "alice");
    let at = "alice+web-01@127.0.0.1";
    let account = world.ssh_target.as_ref().unwrap().sshd.account.clone();

    let exec = putty.run("plink", &[at, "echo via-putty $(whoami); exit 7"]);
    assert_eq!(exec.status.code(), Some(7), "the exit status comes back");
    let said = String::from_utf8_lossy(&exec.stdout).to_string();
    assert_eq!(said.trim(), format!("via-putty {account}"));

    let pty = putty.run("plink", &["-t", at, "tty"]);
    assert!(String::from_utf8_lossy(&pty.stdout).contains("/dev/pts/"));

    // pscp speaks SFTP by default, SCP with -scp.
    let data = random_file(&world.path("up.bin"), 3 << 20);
    let up = world.path("up.bin").display().to_string();
    assert!(
        putty
            .run("pscp", &[&up, &format!("{at}:up.bin")])
            .status
            .success()
    );
    assert!(std::fs::read(target_home(&world).join("up.bin")).unwrap() == data);
    for (how, name) in [("-sftp", "down-sftp.bin"), ("-scp", "down-scp.bin")] {
        let down = world.path(name).display().to_string();
        let copied = putty.run("pscp", &[how, &format!("{at}:up.bin"), &down]);
        assert!(copied.status.success(), "pscp {how}");
        assert!(std::fs::read(&down).unwrap() == data, "pscp {how} copy");
    }
    // The legacy SCP download (`scp -v -f up.bin`) kept a file log too.
    let sent = format!(
        r#""op":"open","path":"up.bin","mode":"read","read_bytes":{},"written_bytes":0,"outcome":"ok""#,
        data.len()
    );
    let scp_logged = || {
        file_logs(&world)
            .iter()
            .any(|(name, text)| name.ends_with(".scp.jsonl") && text.contains(&sent))
    };
    assert!(
        wait_until(Duration::from_secs(5), scp_logged),
        "no SCP file log entry for the download: {:?}",
        file_logs(&world)
    );

    let script = world.path("psftp.batch");
    std::fs::write(
        &script,
        format!("mkdir dir\nput {up} dir/again.bin\nls dir\n"),
    )
    .unwrap();
    let sftp = putty.run("psftp", &[at, "-b", &script.display().to_string()]);
    assert!(sftp.status.success());
    assert!(String::from_utf8_lossy(&sftp.stdout).contains("again.bin"));
    assert!(std::fs::read(target_home(&world).join("dir/again.bin")).unwrap() == data);

    // PuTTY's own channel requests are refused as routine, not logged
    // as a warning for every Windows user's session.
    let log = world.log();
    assert!(!log.contains("unknown channel request"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

/// Dropbear serving the account of an `SshTarget` whose sshd was stopped.
struct Dropbear {
    child: Child,
}

impl Dropbear {
    fn replace_sshd(target: &mut SshTarget) -> Self {
        target.sshd.stop();
        let dir = target.dir.path();
        let host_key = dir.join("dropbear_host_key");
        let made = Command::new("dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(&host_key)
            .stdout(Stdio::null())
            .status()
            .expect("dropbearkey (dropbear-bin) must be installed: run scripts/install-deps");
        assert!(made.success());
        let port = common::free_port();
        let log_path = dir.join("dropbear.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // -F foreground, -E log to stderr, -s no password logins.
        let child = Command::new("/usr/sbin/dropbear")
            .args(["-F", "-E", "-s", "-p", &format!("127.0.0.1:{port}"), "-r"])
            .arg(&host_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let within = Duration::from_secs(15);
        jitgate::targets::wait_listening("dropbear", port, within, &log_path).unwrap();
        // The harness's direct logins go where the target now listens.
        target.sshd.port = port;
        Self { child }
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn processes_of(account: &str, pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-u", account, "-f", pattern])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn a_dropbear_target_serves_a_window_which_ends_with_its_key_rotated() {
    let mut target = SshTarget::start();
    let _dropbear = Dropbear::replace_sshd(&mut target);
    let old_key = target.key.clone();
    let account = target.sshd.account.clone();
    let world = World::on_ssh_target(target, |t| t);
    let id = world.lease_web("alice", "10m");

    let exec = world.on_target("alice", &["whoami; exit 3"], b"");
    assert_eq!(exec.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), account);
    let data = random_file(&world.path("up.bin"), 2 << 20);
    let up = world.path("up.bin").display().to_string();
    assert!(world.scp("alice", &up, "web-01:up.bin"));
    assert!(std::fs::read(target_home(&world).join("up.bin")).unwrap() == data);
    let down = world.path("down.bin").display().to_string();
    assert!(world.scp("alice", "web-01:up.bin", &down));
    assert!(std::fs::read(&down).unwrap() == data);

    // A shell that leaves a process behind, open when the window ends.
    let mut shell = world.pty_shell("alice", b"sleep 777 &\n");
    assert!(wait_until(Duration::from_secs(10), || processes_of(
        &account,
        "sleep 777"
    )));
    world.ok("alice", &format!("checkin {id}"));
    assert!(exits_within(&mut shell, Duration::from_secs(10)));
    let mut said = String::new();
    shell
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(said.contains("access window for web-01 ended"), "{said}");

    let rotated = || {
        world
            .audit_text()
            .contains(r#""resource":"web-01","type":"rotation_succeeded""#)
    };
    assert!(wait_until(Duration::from_secs(30), rotated));
    assert!(!processes_of(&account, "sleep 777"), "left running");
    let before = world.direct_ssh(&old_key).arg("true").output().unwrap();
    assert!(!before.status.success(), "the old managed key still works");

    // The next window logs in with the new key.
    world.lease_web("alice", "10m");
    let exec = world.on_target("alice", &["whoami"], b"");
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), account);
}

/// Unmounts a FUSE mount left behind by a failed test.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg("-z")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn sshfs_mounts_a_resource_until_its_window_ends() {
    let world = World::with_ssh_target(|t| t);
    let id = world.lease_web("alice", "10m");
    let home = target_home(&world);
    let mount = world.path("mnt");
    std::fs::create_dir(&mount).unwrap();
    let key = world.path("keys").join("alice");
    let options = format!(
        "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes",
        key.display()
    );
    let mounted = Command::new("sshfs")
        .args(["-p", &world.ssh_port.to_string(), "-o", &options])
        .arg(format!("alice+web-01@127.0.0.1:{}", home.display()))
        .arg(&mount)
        .status()
        .expect("sshfs must be installed: run scripts/install-deps");
    assert!(mounted.success());
    let _unmount = Mounted(mount.clone());

    let data = random_file(&world.path("local.bin"), 1 << 20);
    std::fs::write(mount.join("via-sshfs.bin"), &data).unwrap();
    assert!(std::fs::read(home.join("via-sshfs.bin")).unwrap() == data);
    std::fs::write(home.join("from-target.txt"), "on the target\n").unwrap();
    let read = std::fs::read_to_string(mount.join("from-target.txt")).unwrap();
    assert_eq!(read, "on the target\n");

    // The window's end takes the mount with it: nothing is served from
    // the target any more.
    world.ok("alice", &format!("checkin {id}"));
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read(
            mount.join("from-target.txt")
        )
        .is_err()),
        "the mount still serves the target after the window ended"
    );
}

#[test]
fn ansible_runs_a_playbook_through_the_gateway_with_pipelining_and_control_persist() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let home = target_home(&world);
    let account = world.ssh_target.as_ref().unwrap().sshd.account.clone();
    let key = world.path("keys").join("alice");
    let inventory = world.path("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "web-01 ansible_host=127.0.0.1 ansible_port={} ansible_user=alice+web-01 \
             ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3\n",
            world.ssh_port,
            key.display()
        ),
    )
    .unwrap();
    // `~` would expand as ~alice+web-01 (see the README): absolute paths.
    let settings = world.path("ansible.cfg");
    std::fs::write(
        &settings,
        format!(
            "[defaults]\nremote_tmp = {home}/.ansible/tmp\nhost_key_checking = False\n\
             [ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=30s \
             -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no\n",
            home = home.display(),
            cp = world.path("cp").display(),
        ),
    )
    .unwrap();
    let fetched = world.path("fetched.txt");
    let playbook = world.path("play.yml");
    std::fs::write(
        &playbook,
        format!(
            r#"- hosts: web-01
  gather_facts: true
  tasks:
    - command: whoami
      register: who
    - assert: {{ that: ["who.stdout == '{account}'"] }}
    - copy: {{ content: "written by ansible\n", dest: "{home}/from-ansible.txt" }}
    - lineinfile: {{ path: "{home}/from-ansible.txt", line: "second line" }}
    - fetch: {{ src: "{home}/from-ansible.txt", dest: "{fetched}", flat: true }}
    - shell: "echo a b c | wc -w"
      register: words
    - assert: {{ that: ["words.stdout == '3'"] }}
"#,
            home = home.display(),
            fetched = fetched.display(),
        ),
    )
    .unwrap();
    let run = Command::new("ansible-playbook")
        .arg("-i")
        .arg(&inventory)
        .arg(&playbook)
        .env("ANSIBLE_CONFIG", &settings)
        .env("ANSIBLE_LOCAL_TEMP", world.path("ansible-local"))
        .stdin(Stdio::null())
        .output()
        .expect("ansible-playbook (ansible-core) must be installed: run scripts/install-deps");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}");
    assert!(said.contains("failed=0"), "{said}");
    let written = "written by ansible\nsecond line\n";
    assert_eq!(
        std::fs::read_to_string(home.join("from-ansible.txt")).unwrap(),
        written
    );
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), written);
    assert!(!home.join("~alice+web-01").exists());
}
