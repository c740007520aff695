//! Test harness: a real `jitgate serve` process on free loopback ports, real
//! OpenSSH keys and the real `ssh` client. Everything lives in a temporary
//! directory and the gateway is stopped when the harness is dropped.
#![allow(dead_code)]

pub mod pg_raw;

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_jitgate");

/// The users every test world has, and their roles.
pub const USERS: &[(&str, &str)] = &[
    ("alice", "engineer"),
    ("zoe", "engineer"),
    ("bob", "approver"),
    ("erin", "approver"),
    ("dave", "security"),
    ("carol", "auditor"),
    ("root", "admin"),
];

/// A loopback port nobody is listening on. Ports come from below the
/// kernel's ephemeral range (32768 and up), so neither a `bind(0)` of a
/// parallel test nor an outgoing connection's source port can take one
/// between now and the moment the gateway or a target binds it; within the
/// process no port is handed out twice, and the start is spread by pid so
/// test binaries running at once do not walk the same sequence.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 15000;
    const SPAN: u32 = 17000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + step) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// A real sshd serving a fresh Unix account, with the gateway's managed key.
pub struct SshTarget {
    pub sshd: jitgate::targets::sshd::Sshd,
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
}

impl SshTarget {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("managed");
        jitgate::targets::ensure_ssh_key(&key, "managed").unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let account = unique_account_name();
        let sshd = jitgate::targets::sshd::Sshd::start(
            &dir.path().join("sshd"),
            free_port(),
            &account,
            &public,
        )
        .expect("start sshd target (needs root and openssh-server: scripts/install-deps)");
        Self { sshd, dir, key }
    }
}

/// Unique across the tests of one process (counter) and across test
/// binaries running at once (pid), so no two targets share an account.
fn unique_account_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("jg{:x}x{n}", std::process::id())
}

impl Drop for SshTarget {
    fn drop(&mut self) {
        self.sshd.stop();
        // Whatever a test left running as the account goes with it.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.sshd.account])
            .status();
        jitgate::targets::sshd::remove_account(&self.sshd.account);
    }
}

/// A real PostgreSQL cluster with the managed role `orders_app` owning
/// database `orders`, and the gateway's credential file for it.
pub struct PgTarget {
    pub server: jitgate::targets::postgres::Postgres,
    pub dir: tempfile::TempDir,
    pub password: String,
}

impl PgTarget {
    pub fn start(settings: &[&str]) -> Self {
        let server = jitgate::targets::postgres::Postgres::start(free_port(), settings)
            .expect("start PostgreSQL (needs postgresql: scripts/install-deps)");
        let password = format!("managed-{}", unique_account_name());
        server
            .sql(
                "postgres",
                &format!("CREATE ROLE orders_app LOGIN PASSWORD '{password}'"),
            )
            .unwrap();
        server
            .sql("postgres", "CREATE DATABASE orders OWNER orders_app")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        jitgate::secret::write_secret_file(&dir.path().join("orders-prod"), &password).unwrap();
        Self {
            server,
            dir,
            password,
        }
    }

    pub fn credential(&self) -> PathBuf {
        self.dir.path().join("orders-prod")
    }

    /// Backends of the managed role, as the superuser sees them.
    pub fn managed_backends(&self) -> usize {
        self.server
            .sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'orders_app'",
            )
            .unwrap()
            .parse()
            .unwrap()
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub ssh_port: u16,
    pub http_port: u16,
    pub pg_port: u16,
    pub process: Option<Child>,
    pub ssh_target: Option<SshTarget>,
    pub pg_target: Option<PgTarget>,
}

pub fn base_config(ssh_port: u16, http_port: u16, pg_port: u16) -> String {
    let mut text = format!(
        r#"
[gateway]
shutdown_grace = "3s"
[listen]
ssh = "127.0.0.1:{ssh_port}"
http = "127.0.0.1:{http_port}"
postgres = "127.0.0.1:{pg_port}"
[roles]
engineer = ["request"]
approver = ["request", "approve"]
security = ["request", "approve", "audit"]
auditor = ["audit", "manage_workflow"]
admin = ["admin"]
[groups.sre-leads]
roles = ["approver"]
[groups.security]
roles = ["security"]
"#
    );
    for (user, role) in USERS {
        let group = match *role {
            "approver" => "\ngroups = [\"sre-leads\"]",
            "security" => "\ngroups = [\"security\"]",
            _ => "",
        };
        let roles = if matches!(*role, "approver" | "security") {
            String::new()
        } else {
            format!("\nroles = [\"{role}\"]")
        };
        text.push_str(&format!(
            "[[user]]\nname = \"{user}\"{group}{roles}\nssh_key_files = [\"keys/{user}.pub\"]\ntotp_secret_file = \"totp/{user}\"\n"
        ));
    }
    text.push_str(
        r#"
[[resource]]
name = "web-01"
kind = "ssh"
address = "127.0.0.1:1"
account = "deploy"
[resource.workflow]
mfa_required = false
max_duration = "8h"
approval_levels = [{ approvers = ["group:sre-leads"] }]

[[resource]]
name = "orders-prod"
kind = "postgres"
address = "127.0.0.1:1"
account = "app"
database = "orders"
[resource.workflow]
single_user = true
mfa_required = true
require_reason = true
approval_levels = [{ approvers = ["group:sre-leads"] }, { approvers = ["group:security"] }]
"#,
    );
    text
}

impl World {
    /// A gateway with the standard users and resources.
    pub fn start() -> Self {
        Self::start_with(|text| text)
    }

    /// A gateway whose config text is adjusted by `edit` first.
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        for (user, _) in USERS {
            let key = dir.path().join("keys").join(user);
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", user, "-f"])
                .arg(&key)
                .status()
                .expect("ssh-keygen (openssh-client) must be installed: run scripts/install-deps");
            assert!(status.success());
        }
        let (ssh_port, http_port, pg_port) = (free_port(), free_port(), free_port());
        let text = edit(base_config(ssh_port, http_port, pg_port));
        std::fs::write(dir.path().join("jitgate.toml"), text).unwrap();
        for (user, _) in USERS {
            let out = Command::new(BIN)
                .args(["totp", "enroll", user, "--config"])
                .arg(dir.path().join("jitgate.toml"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "enroll: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut world = Self {
            dir,
            ssh_port,
            http_port,
            pg_port,
            process: None,
            ssh_target: None,
            pg_target: None,
        };
        world.launch_first();
        world
    }

    /// The first start. A listen port can still be taken between choosing
    /// and binding it (by a process outside this harness); then the
    /// gateway refuses to start, and the world moves to fresh ports.
    fn launch_first(&mut self) {
        for _ in 0..3 {
            self.spawn(None);
            match self.wait_until_healthy() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => self.move_listeners(),
                Err(log) => panic!("jitgate did not become healthy:\n{log}"),
            }
        }
        panic!("jitgate could not bind its listeners:\n{}", self.log());
    }

    fn move_listeners(&mut self) {
        let mut text = std::fs::read_to_string(self.config_path()).unwrap();
        for port in [&mut self.ssh_port, &mut self.http_port, &mut self.pg_port] {
            let fresh = free_port();
            text = text.replacen(
                &format!("\"127.0.0.1:{port}\""),
                &format!("\"127.0.0.1:{fresh}\""),
                1,
            );
            *port = fresh;
        }
        std::fs::write(self.config_path(), text).unwrap();
        std::fs::write(self.path("serve.log"), "").unwrap();
    }

    /// A gateway whose web-01 is a real sshd; `edit` adjusts the config.
    pub fn with_ssh_target(edit: impl FnOnce(String) -> String) -> Self {
        Self::on_ssh_target(SshTarget::start(), edit)
    }

    /// A gateway whose web-01 is `target`; `edit` adjusts the config.
    pub fn on_ssh_target(target: SshTarget, edit: impl FnOnce(String) -> String) -> Self {
        let port = target.sshd.port;
        let key = target.key.display().to_string();
        let account = target.sshd.account.clone();
        let mut world = Self::start_with(move |text| {
            let text = text.replacen(
                "address = \"127.0.0.1:1\"\naccount = \"deploy\"",
                &format!("address = \"127.0.0.1:{port}\"\naccount = \"{account}\"\ncredential_file = \"{key}\""),
                1,
            );
            edit(text)
        });
        world.ssh_target = Some(target);
        world
    }

    /// A gateway whose orders-prod is a real PostgreSQL; `settings` are
    /// server settings, `edit` adjusts the config.
    pub fn with_pg_target(settings: &[&str], edit: impl FnOnce(String) -> String) -> Self {
        let target = PgTarget::start(settings);
        let port = target.server.port;
        let credential = target.credential().display().to_string();
        let mut world = Self::start_with(move |text| {
            let text = text.replacen(
                "address = \"127.0.0.1:1\"\naccount = \"app\"",
                &format!("address = \"127.0.0.1:{port}\"\naccount = \"orders_app\"\ncredential_file = \"{credential}\""),
                1,
            );
            edit(text)
        });
        world.pg_target = Some(target);
        world
    }

    /// A gateway whose web-01 is a real sshd and orders-prod a real
    /// PostgreSQL (with `settings`).
    pub fn with_both_targets(settings: &[&str], edit: impl FnOnce(String) -> String) -> Self {
        let pg = PgTarget::start(settings);
        let (port, credential) = (pg.server.port, pg.credential().display().to_string());
        let mut world = Self::with_ssh_target(move |text| {
            let text = text.replacen(
                "address = \"127.0.0.1:1\"\naccount = \"app\"",
                &format!("address = \"127.0.0.1:{port}\"\naccount = \"orders_app\"\ncredential_file = \"{credential}\""),
                1,
            );
            edit(text)
        });
        world.pg_target = Some(pg);
        world
    }

    /// `ssh` straight to the SSH target (bypassing the gateway) with the
    /// private key file `key`, as its managed account.
    pub fn direct_ssh(&self, key: &std::path::Path) -> Command {
        let target = self
            .ssh_target
            .as_ref()
            .expect("a world with an SSH target");
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(key)
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "LogLevel=ERROR", "-p", &target.sshd.port.to_string()])
            .arg(format!("{}@127.0.0.1", target.sshd.account))
            .stdin(Stdio::null());
        command
    }

    /// The vault as it is on disk now (the running gateway keeps its lock).
    pub fn vault(&self) -> jitgate::vault::Vault {
        let key = jitgate::vault::read_master_key(&self.path("state/vault.key")).unwrap();
        jitgate::vault::Vault::open(&self.path("state/vault.json"), key).unwrap()
    }

    pub fn pg(&self) -> &PgTarget {
        self.pg_target
            .as_ref()
            .expect("a world with a Postgres target")
    }

    /// Requests orders-prod for `user`, has bob and dave approve, checks
    /// out with a real TOTP code; returns (request id, lease password).
    pub fn lease_pg(&self, user: &str, duration: &str) -> (u64, String) {
        let out = self.checkout_pg(user, duration);
        let id = out["id"].as_u64().unwrap();
        (id, out["password"].as_str().unwrap().to_string())
    }

    /// As `lease_pg`; returns what `checkout --json` printed.
    pub fn checkout_pg(&self, user: &str, duration: &str) -> serde_json::Value {
        let id = self.request(user, &format!("orders-prod --for {duration} --reason test"));
        self.ok("bob", &format!("approve {id}"));
        self.ok("dave", &format!("approve {id}"));
        self.json(user, &format!("checkout {id} --totp {}", self.totp(user)))
    }

    /// `psql` against the gateway's Postgres port as `user` on `resource`.
    pub fn psql(&self, user: &str, resource: &str, password: &str) -> Command {
        let mut command = Command::new("psql");
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args(["-U", user, "-d", resource])
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "require")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }

    /// Runs `sql` through the gateway; (stdout, stderr, success).
    pub fn psql_run(&self, user: &str, password: &str, sql: &str) -> (String, String, bool) {
        let out = self
            .psql(user, "orders-prod", password)
            .args(["-c", sql])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
            out.status.success(),
        )
    }

    /// All query log lines written so far.
    pub fn query_logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.path("querylogs")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Requests, approves and checks out web-01 for `user`; returns the id.
    pub fn lease_web(&self, user: &str, duration: &str) -> u64 {
        let id = self.request(user, &format!("web-01 --for {duration} --reason test"));
        self.ok("bob", &format!("approve {id}"));
        self.ok(user, &format!("checkout {id}"));
        id
    }

    /// `ssh -tt` to web-01 through the gateway as `user`, typing `input`.
    pub fn pty_shell(&self, user: &str, input: &[u8]) -> std::process::Child {
        let mut shell = self
            .target_ssh(user, "web-01")
            .arg("-tt")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        shell.stdin.as_mut().unwrap().write_all(input).unwrap();
        shell
    }

    /// `ssh ARGS` to web-01 through the gateway as `user`, with `input` on
    /// stdin; waits for it.
    pub fn on_target(&self, user: &str, args: &[&str], input: &[u8]) -> Output {
        let mut ssh = self
            .target_ssh(user, "web-01")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        ssh.stdin.take().unwrap().write_all(input).unwrap();
        ssh.wait_with_output().unwrap()
    }

    /// `scp FROM TO` through the gateway as `user`; `web-01:PATH` names a
    /// file on web-01. Whether it succeeded.
    pub fn scp(&self, user: &str, from: &str, to: &str) -> bool {
        let remote = |spec: &str| match spec.strip_prefix("web-01:") {
            Some(path) => format!("{user}+web-01@127.0.0.1:{path}"),
            None => spec.to_string(),
        };
        Command::new("scp")
            .args(self.client_options(user))
            .args(["-P", &self.ssh_port.to_string()])
            .args([remote(from), remote(to)])
            .status()
            .unwrap()
            .success()
    }

    /// `sftp -b -` to web-01 through the gateway as `user`: batch commands
    /// go to its stdin.
    pub fn sftp_batch(&self, user: &str) -> Child {
        Command::new("sftp")
            .args(self.client_options(user))
            .args(["-P", &self.ssh_port.to_string(), "-b", "-"])
            .arg(format!("{user}+web-01@127.0.0.1"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `ssh AUDITOR@GW follow SESSION`, and its output line by line (its
    /// stdin stays open: the stream runs until the session ends or it is
    /// killed; its stderr is piped for `follow_ended`).
    pub fn follow(&self, auditor: &str, session: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut follower = self
            .ssh_command(auditor, auditor)
            .arg(format!("follow {session}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(follower.stdout.take().unwrap()).lines();
        (follower, lines)
    }

    /// Asserts that a `follow` stream ended by itself, successfully and
    /// saying so, within a few seconds of its session's end.
    pub fn follow_ended(follower: &mut Child) {
        let mut status = None;
        wait_until(Duration::from_secs(5), || {
            status = follower.try_wait().unwrap();
            status.is_some()
        });
        let Some(status) = status else {
            let _ = follower.kill();
            panic!("the follower went on after its session ended");
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(follower.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("[jitgate] session ended"), "{stderr}");
    }

    /// `ssh -R` to web-01 as `user`, leaving as soon as the remote forward
    /// is refused (which the gateway always does).
    pub fn remote_forward_attempt(&self, user: &str) -> Output {
        self.target_ssh(user, "web-01")
            .args(["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"])
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ssh` to the resource through the gateway: `user+resource@GW`.
    pub fn target_ssh(&self, user: &str, resource: &str) -> Command {
        self.ssh_command(&format!("{user}+{resource}"), user)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A long-lived control connection of `user` (logged in with `key`'s
    /// key): `watch`, read past its banner.
    pub fn watching(&self, user: &str, key: &str) -> Child {
        let mut watcher = self
            .ssh_command(user, key)
            .arg("watch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        BufReader::new(watcher.stdout.as_mut().unwrap())
            .read_line(&mut banner)
            .unwrap();
        assert!(
            banner.contains(&format!("watching events for {user}")),
            "{banner}"
        );
        watcher
    }

    /// Whether any recording or SFTP file log written so far holds `text`.
    pub fn recorded(&self, text: &str) -> bool {
        std::fs::read_dir(self.path("recordings")).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                std::fs::read_to_string(entry.path()).is_ok_and(|held| held.contains(text))
            })
        })
    }

    /// The SHA256 fingerprint of the public key `keys/KEY.pub`, as the
    /// audit log names keys.
    pub fn key_fingerprint(&self, key: &str) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path("keys").join(format!("{key}.pub")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let fingerprint = text.split_whitespace().nth(1).unwrap_or_default();
        assert!(fingerprint.starts_with("SHA256:"), "{text}");
        fingerprint.to_string()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("jitgate.toml")
    }

    /// Rewrites the config file with `edit`, which must change it, and asks
    /// the running gateway to reload it (SIGHUP).
    pub fn reload_with(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let edited = edit(&text);
        assert_ne!(text, edited, "the edit left the config as it was");
        std::fs::write(self.config_path(), edited).unwrap();
        self.signal("HUP");
    }

    /// Like `reload_with`, and waits for the gateway to record that it
    /// applied the new config.
    pub fn reload_applied(&self, edit: impl FnOnce(&str) -> String) {
        let applied = r#""ok":true,"type":"config_reloaded""#;
        let before = self.audit_text().matches(applied).count();
        self.reload_with(edit);
        assert!(
            wait_until(Duration::from_secs(10), || {
                self.audit_text().matches(applied).count() > before
            }),
            "the new config was not applied: {}",
            self.log()
        );
    }

    /// Runs `jitgate serve` in the foreground with this world's config, for
    /// a start that is expected to be refused: its exit status and output.
    /// A start that is not refused is stopped after a while (and so reads
    /// as a failed run), rather than hanging the test.
    pub fn serve_once(&self) -> std::process::Output {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let exited = wait_until(Duration::from_secs(20), || {
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        let mut output = child.wait_with_output().unwrap();
        if !exited {
            output.stderr.extend_from_slice(
                b"\n(jitgate serve still ran after 20 s: the start was not refused)",
            );
        }
        output
    }

    /// Starts `jitgate serve` and waits until /healthz answers.
    pub fn launch(&mut self) {
        self.launch_with_fault(None);
    }

    /// Starts the gateway with `JITGATE_FAULT` set (crash injection in
    /// debug builds: the fault fires when the test triggers it). The log is
    /// appended to across restarts.
    pub fn launch_with_fault(&mut self, fault: Option<&str>) {
        self.spawn(fault);
        self.wait_healthy();
    }

    fn spawn(&mut self, fault: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("serve.log"))
            .unwrap();
        let mut command = Command::new(BIN);
        if let Some(fault) = fault {
            command.env("JITGATE_FAULT", fault);
        }
        let child = command
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("JITGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(child);
    }

    pub fn wait_healthy(&mut self) {
        if let Err(log) = self.wait_until_healthy() {
            panic!("jitgate did not become healthy:\n{log}");
        }
    }

    /// Waits for /healthz; on failure returns the gateway's log.
    fn wait_until_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.process.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.process = None;
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if http_get(self.http_port, "/healthz").is_some_and(|body| body.contains("200 OK")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not healthy after 20 s:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().unwrap().id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the gateway process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.process.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.process = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn ssh_command(&self, user: &str, key_of: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-p", &self.ssh_port.to_string(), "-i"])
            .arg(self.path("keys").join(key_of))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{user}@127.0.0.1"));
        command
    }

    /// The ssh options of `ssh_command` as one string, without the
    /// destination: for GIT_SSH_COMMAND, rsync -e and ControlMaster use.
    /// Options for `ssh`, `scp` and `sftp` as `user` (their key), without
    /// the port (`-p` or `-P`).
    pub fn client_options(&self, user: &str) -> Vec<String> {
        let key = self.path("keys").join(user).display().to_string();
        let mut options = vec!["-F".to_string(), "/dev/null".into(), "-i".into(), key];
        for option in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            options.extend(["-o".to_string(), option.to_string()]);
        }
        options
    }

    pub fn ssh_options(&self, key_of: &str) -> String {
        format!(
            "ssh -F /dev/null -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10",
            self.ssh_port,
            self.path("keys").join(key_of).display()
        )
    }

    /// Runs a control command as `user` (with their own key).
    pub fn ssh(&self, user: &str, args: &str) -> Output {
        self.ssh_command(user, user)
            .arg(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, user: &str, args: &str) -> String {
        let out = self.ssh(user, args);
        assert!(
            out.status.success(),
            "{user}: {args} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn refused(&self, user: &str, args: &str) -> String {
        let out = self.ssh(user, args);
        assert!(
            !out.status.success(),
            "{user}: {args} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, user: &str, args: &str) -> serde_json::Value {
        let text = self.ok(user, &format!("{args} --json"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args}: not JSON ({e}): {text}"))
    }

    pub fn totp(&self, user: &str) -> String {
        self.totp_at(user, 0)
    }

    /// The code of the next TOTP step, which the gateway's one-step skew
    /// accepts now: a second MFA check by the same user within one step
    /// needs it, as the current code is refused as a replay.
    pub fn totp_next(&self, user: &str) -> String {
        self.totp_at(user, 30)
    }

    fn totp_at(&self, user: &str, ahead_seconds: u64) -> String {
        let secret = std::fs::read_to_string(self.path("totp").join(user)).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        jitgate::mfa::current_code(
            &jitgate::secret::Secret::new(secret.trim().to_string()),
            now + ahead_seconds,
        )
        .unwrap()
    }

    /// Files a request and returns its id.
    pub fn request(&self, user: &str, args: &str) -> u64 {
        self.json(user, &format!("request {args}"))["id"]
            .as_u64()
            .unwrap()
    }

    /// Bytes sent to the client of the live session of `protocol` so far
    /// (0 without one), as an auditor sees it.
    pub fn bytes_to_client(&self, protocol: &str) -> u64 {
        self.json("carol", "sessions")["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["protocol"] == protocol)
            .and_then(|s| s["activity"]["bytes_out"].as_u64())
            .unwrap_or(0)
    }

    /// The id of the live session of `protocol`, as an auditor sees it.
    pub fn live_session(&self, protocol: &str) -> String {
        let mut id = None;
        assert!(wait_until(Duration::from_secs(10), || {
            id = self.json("carol", "sessions")["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["protocol"] == protocol)
                .map(|s| s["id"].as_str().unwrap().to_string());
            id.is_some()
        }));
        id.unwrap()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.path("audit/audit.log")).unwrap_or_default()
    }

    /// The events of the audit records of type `kind` (`session_ended`).
    pub fn audit_events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|record| record["event"].clone())
            .filter(|event| event["type"] == kind)
            .collect()
    }

    pub fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics").unwrap_or_default()
    }

    /// The `jitgate_open_connections` gauge for `protocol`.
    pub fn open_connections(&self, protocol: &str) -> Option<f64> {
        self.metric(&format!(
            "jitgate_open_connections{{protocol=\"{protocol}\"}}"
        ))
    }

    /// Operators see how long severing took: one session of `protocol`
    /// severed by its lease's end, counted in `jitgate_sever_seconds`, well
    /// within the largest bucket.
    pub fn assert_one_sever_timed(&self, protocol: &str) {
        let count = format!("jitgate_sever_seconds_count{{protocol=\"{protocol}\"}}");
        let counted = wait_until(Duration::from_secs(5), || self.metric(&count) == Some(1.0));
        assert!(counted, "{}", self.metrics());
        let within = format!("jitgate_sever_seconds_bucket{{protocol=\"{protocol}\",le=\"5\"}}");
        assert_eq!(self.metric(&within), Some(1.0), "{}", self.metrics());
    }

    /// The value of one series, named with its labels as /metrics shows it.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let series = format!("{series} ");
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET; returns the whole response.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits until a byte count stops growing (above zero): a relay whose
/// reader stopped reading has filled every window and buffer on the way.
pub fn wait_until_stalled(mut bytes: impl FnMut() -> u64) -> bool {
    let mut last = 0;
    wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = bytes();
        let stalled = now > 0 && now == last;
        last = now;
        stalled
    })
}

/// Asserts that a finished program succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{} failed: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `child` exits within `within`.
pub fn exits_within(child: &mut Child, within: Duration) -> bool {
    wait_until(within, || child.try_wait().unwrap().is_some())
}

/// All `child` wrote to its piped stderr; for a child that has exited.
pub fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
