//! Bulk SSH throughput and connection set-up: through jitgate, through an
//! OpenSSH jump host (ProxyJump via the target's own sshd) and direct.
//!
//! `cargo bench --bench ssh_throughput` moves 1 GiB down (`head -c 1G
//! /dev/zero`) and up (`cat > /dev/null`) with aes128-gcm and
//! chacha20-poly1305, and times `ssh ... true`, printing MiB/s, ms and the
//! ratios jitgate/ProxyJump and jitgate/direct. Under `cargo test` it runs
//! a small smoke version so the harness itself stays tested.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::World;

const CIPHERS: [&str; 2] = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"];

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (mib, setups) = if full { (1024, 10) } else { (16, 2) };
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "2h");
    let paths = Paths::new(&world);
    println!("SSH through jitgate vs ProxyJump vs direct ({mib} MiB per transfer)");
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "run", "jitgate", "proxyjump", "direct", "jg/pj", "jg/direct"
    );
    for cipher in CIPHERS {
        let short = cipher.split('@').next().unwrap_or(cipher);
        let down = format!("head -c {mib}M /dev/zero");
        let rates = paths.each(|ssh, dest| {
            mib as f64 / timed(&format!("{ssh} -c {cipher} {dest} '{down}' > /dev/null"))
        });
        row(&format!("download MiB/s, {short}"), rates, true);
        let rates = paths.each(|ssh, dest| {
            mib as f64
                / timed(&format!(
                    "head -c {mib}M /dev/zero | {ssh} -c {cipher} {dest} 'cat > /dev/null'"
                ))
        });
        row(&format!("upload MiB/s, {short}"), rates, true);
    }
    let times = paths.each(|ssh, dest| {
        let total: f64 = (0..setups)
            .map(|_| timed(&format!("{ssh} {dest} true")))
            .sum();
        total / setups as f64 * 1000.0
    });
    row("set-up ms (ssh ... true)", times, false);
}

/// The three ways to reach the target: (ssh with its options, destination).
struct Paths {
    jitgate: (String, String),
    proxyjump: (String, String),
    direct: (String, String),
}

impl Paths {
    fn new(world: &World) -> Self {
        let target = world.ssh_target.as_ref().expect("an SSH target");
        let key = target.key.display();
        let port = target.sshd.port;
        let account = &target.sshd.account;
        let quiet = "-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR";
        let destination = format!("{account}@127.0.0.1");
        let direct = format!("ssh {quiet} -i {key} -p {port}");
        let proxyjump = format!(
            "ssh {quiet} -i {key} -p {port} -o ProxyCommand='ssh {quiet} -i {key} -p {port} -W %h:%p {destination}'"
        );
        Self {
            jitgate: (world.ssh_options("alice"), "alice+web-01@127.0.0.1".into()),
            proxyjump: (proxyjump, destination.clone()),
            direct: (direct, destination),
        }
    }

    fn each(&self, mut measure: impl FnMut(&str, &str) -> f64) -> [f64; 3] {
        [&self.jitgate, &self.proxyjump, &self.direct].map(|(ssh, dest)| measure(ssh, dest))
    }
}

/// Runs a shell pipeline; returns its wall-clock seconds.
fn timed(script: &str) -> f64 {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

/// Prints one row; ratios read "higher is better" for rates and "lower is
/// better" for times.
fn row(label: &str, [jitgate, proxyjump, direct]: [f64; 3], higher_is_better: bool) {
    let hint = if higher_is_better {
        ""
    } else {
        "  (lower is better)"
    };
    println!(
        "{label:<44} {jitgate:>10.1} {proxyjump:>10.1} {direct:>10.1} {:>7.2}x {:>8.2}x{hint}",
        jitgate / proxyjump,
        jitgate / direct
    );
}
