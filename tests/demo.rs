//! `jitgate demo` brings up real targets and a working gateway, tears it all
//! down on SIGTERM (and SIGHUP), and runs again on the same directory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

struct DemoRun {
    child: Child,
    dir: std::path::PathBuf,
    output: Vec<String>,
}

fn start_demo(dir: &std::path::Path) -> DemoRun {
    let mut child = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut output = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "demo never became ready: {output:?}"
        );
        let Some(Ok(line)) = lines.next() else {
            panic!("demo exited early: {output:?}")
        };
        let ready = line == "jitgate demo ready";
        output.push(line);
        if ready {
            break;
        }
    }
    DemoRun {
        child,
        dir: dir.to_path_buf(),
        output,
    }
}

impl DemoRun {
    fn port(&self, key: &str) -> u16 {
        let config = std::fs::read_to_string(self.dir.join("config.toml")).unwrap();
        let value: toml::Value = toml::from_str(&config).unwrap();
        let address = value["listen"][key].as_str().unwrap();
        address.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    fn target_port(&self, resource: usize) -> u16 {
        let config = std::fs::read_to_string(self.dir.join("config.toml")).unwrap();
        let value: toml::Value = toml::from_str(&config).unwrap();
        let address = value["resource"][resource]["address"].as_str().unwrap();
        address.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    fn gw(&self, user: &str, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &self.port("ssh").to_string(), "-i"])
            .arg(self.dir.join("keys").join(user))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, user: &str, command: &str) -> String {
        let out = self.gw(user, command);
        assert!(
            out.status.success(),
            "{user}: {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn totp(&self, user: &str) -> String {
        let secret = std::fs::read_to_string(self.dir.join("totp").join(user)).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        jitgate::mfa::current_code(&jitgate::secret::Secret::new(secret.trim().into()), now)
            .unwrap()
    }

    /// Stops the demo with `signal` (TERM, or HUP as when its terminal
    /// closes) and waits for it to exit cleanly.
    fn stop(&mut self, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "demo exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("demo did not stop on SIG{signal}");
    }
}

impl Drop for DemoRun {
    /// A failed assertion must not leave the demo (and its targets) running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn demo_runs_the_whole_workflow_against_real_targets_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path());
    // One demo at a time: a second would take over the first's SSH target.
    let elsewhere = tempfile::tempdir().unwrap();
    let second = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("another jitgate demo is running"),
        "{err}"
    );
    let text = demo.output.join("\n");
    assert!(
        text.contains("/keys/")
            && text.contains("oathtool --totp -b")
            && text.contains("gw alice request web-01"),
        "{text}"
    );
    for file in [
        "keys/alice",
        "keys/alice.pub",
        "keys/bob",
        "keys/dave",
        "keys/carol",
        "keys/erin",
        "totp/alice",
        "config.toml",
    ] {
        assert!(demo.dir.join(file).exists(), "{file} missing");
    }
    let check = Command::new(BIN)
        .args(["check-config"])
        .arg(demo.dir.join("config.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the demo config is an ordinary config"
    );

    let listed = demo.ok("alice", "resources");
    assert!(
        listed.contains("orders-prod") && listed.contains("web-01"),
        "{listed}"
    );
    // web-01: one approval from bob.
    let web = demo.ok("alice", "request web-01 --for 5m --reason demo --json");
    let web: serde_json::Value = serde_json::from_str(&web).unwrap();
    let web_id = web["id"].as_u64().unwrap();
    // bob is named by the workflow itself: not named again as who may approve.
    let mine = demo.ok("alice", "requests");
    assert!(mine.contains("needs 1 approval from bob\n"), "{mine}");
    demo.ok("bob", &format!("approve {web_id}"));
    demo.ok(
        "alice",
        &format!("checkout {web_id} --totp {}", demo.totp("alice")),
    );
    // The printed data-plane command, as a user would paste it.
    let printed = demo
        .output
        .iter()
        .find(|line| line.contains("alice+web-01@"))
        .expect("the demo shows how to reach web-01");
    let command = printed.split('#').next().unwrap().trim().replacen(
        "ssh ",
        "ssh -o BatchMode=yes -o LogLevel=ERROR ",
        1,
    );
    let through = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} whoami"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&through.stdout).trim(),
        "jgdemo",
        "{command}: {}",
        String::from_utf8_lossy(&through.stderr)
    );

    // orders-prod: bob then dave, MFA, prints a psql connection string.
    let db = demo.ok(
        "alice",
        "request orders-prod --for 10m --reason report --json",
    );
    let db: serde_json::Value = serde_json::from_str(&db).unwrap();
    let db_id = db["id"].as_u64().unwrap();
    assert!(
        !demo
            .gw("dave", &format!("approve {db_id}"))
            .status
            .success(),
        "dave before bob"
    );
    demo.ok("bob", &format!("approve {db_id}"));
    demo.ok("dave", &format!("approve {db_id}"));
    // The replay floor is per user: wait for the next TOTP step if needed.
    std::thread::sleep(Duration::from_secs(
        30 - (chrono::Utc::now().timestamp() % 30) as u64 + 1,
    ));
    let out = demo.ok(
        "alice",
        &format!("checkout {db_id} --totp {}", demo.totp("alice")),
    );
    assert!(
        out.contains("psql \"host=") && out.contains("dbname=orders-prod"),
        "{out}"
    );
    // Stock psql through the gateway, as checkout printed it: verifying
    // the gateway's certificate against the demo CA.
    let printed = out
        .lines()
        .find_map(|l| l.strip_prefix("psql \"")?.strip_suffix('"'))
        .expect("checkout prints a psql command")
        .to_string();
    assert!(printed.contains("sslmode=verify-full"), "{printed}");
    let lease_password = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("connection password (shown once, valid only for this window): ")
        })
        .expect("the lease password is printed once")
        .to_string();
    let through = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "select count(*) from orders"])
        .arg(&printed)
        .env("PGPASSWORD", &lease_password)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&through.stdout).trim(),
        "100",
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    // More time, as the demo suggests: orders-prod asks its approvers
    // again, and wants a reason.
    let more = format!("extend {db_id} --for 15m --reason 'report still running'");
    let asked = demo.ok("alice", &more);
    let told = "needs 1 approval from bob, then 1 approval from dave; access still ends at";
    assert!(asked.contains(told), "{asked}");
    let status = demo.ok("alice", "status");
    assert!(
        status.contains("web-01") && status.contains("orders-prod"),
        "{status}"
    );
    demo.ok("alice", &format!("checkin {web_id}"));
    assert!(
        demo.ok("carol", "audit tail -n 50")
            .contains("checked in request")
    );
    // The finished sessions, as the demo suggests finding them to replay.
    let finished = demo.ok("carol", "audit tail --type session_ended");
    assert!(
        finished.lines().all(|l| l.contains(" ended after "))
            && finished.contains("of alice on web-01"),
        "{finished}"
    );

    // The targets are real: the managed credentials work directly.
    let pg_port = demo.target_port(1);
    let password = std::fs::read_to_string(demo.dir.join("credentials/orders-prod")).unwrap();
    let count = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port.to_string(),
            "-U",
            "orders_app",
            "-d",
            "orders",
            "-c",
            "select count(*) from orders",
        ])
        .env("PGPASSWORD", password.trim())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "100");
    // web-01 was checked in, so its key was rotated: the key the demo
    // started with is refused, the vault's new one works.
    let ssh_port = demo.target_port(0);
    let ssh_as = |key: &std::path::Path| {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &ssh_port.to_string(), "-i"])
            .arg(key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "jgdemo@127.0.0.1",
                "whoami",
            ])
            .output()
            .unwrap()
    };
    let rotated = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(demo.dir.join("audit/audit.log"))
            .unwrap_or_default()
            .contains(r#""resource":"web-01","type":"rotation_succeeded""#)
    });
    assert!(rotated, "web-01 was not rotated after check-in");
    assert!(
        !ssh_as(&demo.dir.join("credentials/web-01"))
            .status
            .success()
    );
    let vault = jitgate::vault::Vault::open(
        &demo.dir.join("state/vault.json"),
        jitgate::vault::read_master_key(&demo.dir.join("state/vault.key")).unwrap(),
    )
    .unwrap();
    let current = demo.dir.join("current-web-01-key");
    jitgate::secret::write_secret_file(&current, vault.current("web-01").unwrap().expose())
        .unwrap();
    let whoami = Command::new("ssh")
        .args(["-F", "/dev/null", "-p", &ssh_port.to_string(), "-i"])
        .arg(&current)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "jgdemo@127.0.0.1",
            "whoami",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "jgdemo");

    let gateway_port = demo.port("ssh");
    let dir_path = demo.dir.clone();
    let mut demo = demo;
    demo.stop("TERM");
    assert!(!listening(gateway_port), "gateway still listening");
    assert!(!listening(pg_port), "PostgreSQL target left running");
    assert!(!listening(ssh_port), "sshd target left running");

    // Running it again on the same directory works and keeps the state.
    let mut again = start_demo(&dir_path);
    let status = again.ok("alice", "status");
    assert!(status.contains("orders-prod"), "{status}");
    // The demo's administrator ends that access.
    again.ok("erin", &format!("revoke {db_id}"));
    assert!(!again.ok("alice", "status").contains("orders-prod"));
    // Closing the demo's terminal (SIGHUP) tears it all down too.
    let (pg_port, ssh_port) = (again.target_port(1), again.target_port(0));
    again.stop("HUP");
    assert!(
        !listening(gateway_port),
        "gateway still listening after SIGHUP"
    );
    assert!(
        !listening(pg_port),
        "PostgreSQL target left running after SIGHUP"
    );
    assert!(
        !listening(ssh_port),
        "sshd target left running after SIGHUP"
    );
}
