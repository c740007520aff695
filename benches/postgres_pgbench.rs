//! pgbench through jitgate, through pgbouncer and direct, side by side.
//!
//! `cargo bench --bench postgres_pgbench` starts a throwaway PostgreSQL, a
//! jitgate (with a real lease: request, two approvals, TOTP checkout) and a
//! pgbouncer (session mode, client TLS required, SCRAM) in front of it, then
//! runs `pgbench -S -M extended` at 1, 4 and 16 clients and with `-C` (a new
//! connection per transaction) against each, printing TPS and the ratios
//! jitgate/pgbouncer and jitgate/direct. Both proxies terminate client TLS;
//! the direct runs use plain TCP, the best a client can do.
//!
//! It also prints what bounds the comparison on the machine it runs on: the
//! proxies' CPU time per transaction, how idle the machine was, and the
//! ratio to pgbouncer that a proxy costing no CPU at all would reach when
//! pgbench, PostgreSQL and the proxy share the same cores: the machine's
//! whole capacity (busy and idle) during the pgbouncer run over the CPU
//! time everything but pgbouncer used in it.
//!
//! Under `cargo test` it runs a one-second smoke version of each, so the
//! harness itself stays tested.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{World, free_port, wait_until};

struct Target {
    name: &'static str,
    /// The proxy's process, whose CPU time per transaction is reported.
    proxy_pid: Option<u32>,
    port: u16,
    user: String,
    database: String,
    password: String,
    sslmode: &'static str,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Full runs interleave the three targets over several rounds and report
    // medians: on a shared VM one round alone swings by a third.
    let (seconds, rounds) = if full { (5, 5) } else { (1, 1) };
    let world = World::with_pg_target(&["max_connections=200"], |t| t);
    let (_, lease_password) = world.lease_pg("alice", "2h");
    let pg = world.pg();
    pgbench_init(pg.server.port, &pg.password, if full { 10 } else { 1 });
    let bouncer = Bouncer::start(pg.server.port, &pg.password);
    let targets = [
        Target {
            name: "jitgate",
            proxy_pid: Some(world.pid()),
            port: world.pg_port,
            user: "alice".into(),
            database: "orders-prod".into(),
            password: lease_password,
            sslmode: "require",
        },
        Target {
            name: "pgbouncer",
            proxy_pid: Some(bouncer.child.id()),
            port: bouncer.port,
            user: "alice".into(),
            database: "orders".into(),
            password: BOUNCER_PASSWORD.into(),
            sslmode: "require",
        },
        Target {
            name: "direct",
            proxy_pid: None,
            port: pg.server.port,
            user: "orders_app".into(),
            database: "orders".into(),
            password: pg.password.clone(),
            sslmode: "disable",
        },
    ];
    let runs: &[(&str, &[&str])] = &[
        ("-S -M extended, 1 client", &["-c", "1", "-j", "1"]),
        ("-S -M extended, 4 clients", &["-c", "4", "-j", "2"]),
        ("-S -M extended, 16 clients", &["-c", "16", "-j", "2"]),
        (
            "-S -C (connect per transaction), 4 clients",
            &["-c", "4", "-j", "2", "-C"],
        ),
    ];
    println!(
        "pgbench, median of {rounds} interleaved rounds of {seconds}s (TPS; higher is better)"
    );
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>10} {:>10} {:>16} {:>12} {:>10}",
        "run",
        "jitgate",
        "pgbouncer",
        "direct",
        "jg/pgb",
        "jg/direct",
        "proxy us/tx jg|pgb",
        "idle% jg|pgb",
        "0-CPU bound"
    );
    // `JITGATE_BENCH_RUNS=0,1` picks runs by position, for quick iterations
    // (4: the SCRAM row).
    let chosen: Option<Vec<usize>> = std::env::var("JITGATE_BENCH_RUNS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    for (index, (label, args)) in runs.iter().enumerate() {
        if chosen.as_ref().is_some_and(|c| !c.contains(&index)) {
            continue;
        }
        print_row(label, &interleaved(&targets, args, seconds, rounds));
    }
    // Last, new connections again with jitgate's clients logging in with
    // SCRAM, as pgbouncer's do: both sides' clients then run PBKDF2.
    if chosen.as_ref().is_none_or(|c| c.contains(&runs.len())) {
        use_scram_client_logins(&world);
        let (_, args) = runs[runs.len() - 1];
        let label = "-S -C, 4 clients, SCRAM client logins";
        print_row(label, &interleaved(&targets, args, seconds, rounds));
    }
}

fn print_row(label: &str, results: &[Sample]) {
    let shown = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.0}"));
    let (jitgate, bouncer, direct) = (&results[0], &results[1], &results[2]);
    println!(
        "{label:<46} {:>10.0} {:>10.0} {:>10.0} {:>9.2}x {:>9.2}x {:>16} {:>12} {:>10}",
        jitgate.tps,
        bouncer.tps,
        direct.tps,
        jitgate.tps / bouncer.tps,
        jitgate.tps / direct.tps,
        format!("{}|{}", shown(jitgate.proxy_us), shown(bouncer.proxy_us)),
        format!(
            "{}|{}",
            shown(jitgate.idle.map(|i| i * 100.0)),
            shown(bouncer.idle.map(|i| i * 100.0))
        ),
        bouncer
            .zero_cpu_bound()
            .map_or("-".to_string(), |b| format!("{b:.2}x")),
    );
}

/// Switches the gateway to SCRAM client logins (a reload; the lease's
/// password stays good: its SCRAM verifier was kept at checkout).
fn use_scram_client_logins(world: &World) {
    let config = world.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    let reloads = |text: &str| {
        text.matches(r#""ok":true,"type":"config_reloaded""#)
            .count()
    };
    let before = reloads(&world.audit_text());
    std::fs::write(
        &config,
        format!("{text}\n[postgres]\nclient_auth = \"scram-sha-256\"\n"),
    )
    .unwrap();
    world.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || reloads(&world.audit_text())
            > before),
        "the gateway took the SCRAM setting"
    );
}

/// One pgbench run against one target (or the median of several).
#[derive(Clone, Copy)]
struct Sample {
    tps: f64,
    /// The proxy's own CPU time per transaction, in µs.
    proxy_us: Option<f64>,
    /// CPU time of the whole machine (every process, every core) per
    /// transaction, in µs.
    machine_us: Option<f64>,
    /// The whole machine's CPU capacity (busy or idle, every core) per
    /// transaction, in µs.
    capacity_us: Option<f64>,
    /// The share of the machine's CPU time left idle during the run.
    idle: Option<f64>,
}

impl Sample {
    /// The ratio to this target's TPS that a proxy using no CPU at all could
    /// reach on this machine: everything else costs what it did, the
    /// proxy's share is freed, and the idle time is used too.
    fn zero_cpu_bound(&self) -> Option<f64> {
        let (capacity, machine, proxy) = (self.capacity_us?, self.machine_us?, self.proxy_us?);
        (machine > proxy).then(|| capacity / (machine - proxy))
    }
}

/// Each target's median TPS and median proxy CPU per transaction over
/// `rounds` rounds, each round running every target once in turn.
fn interleaved(targets: &[Target], args: &[&str], seconds: u32, rounds: usize) -> Vec<Sample> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (target, samples) in targets.iter().zip(&mut samples) {
            samples.push(pgbench(target, args, seconds));
        }
    }
    samples
        .into_iter()
        .map(|s| {
            let optional = |field: fn(&Sample) -> Option<f64>| {
                let values: Vec<f64> = s.iter().filter_map(field).collect();
                (!values.is_empty()).then(|| median(values))
            };
            Sample {
                tps: median(s.iter().map(|x| x.tps).collect()),
                proxy_us: optional(|x| x.proxy_us),
                machine_us: optional(|x| x.machine_us),
                capacity_us: optional(|x| x.capacity_us),
                idle: optional(|x| x.idle),
            }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// User + system CPU time a process has used so far, in microseconds.
fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, which is 100 on every architecture it runs.
    Some(ticks * 10_000.0)
}

/// Busy and total CPU time of the whole machine so far, all cores, in µs.
fn machine_cpu_micros() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(((total - idle) * 10_000.0, total * 10_000.0))
}

fn pgbench_init(port: u16, password: &str, scale: u32) {
    let status = Command::new("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string(), "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", "orders_app", "orders"])
        .env("PGPASSWORD", password)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("pgbench (postgresql-contrib) must be installed: scripts/install-deps");
    assert!(status.success(), "pgbench -i failed");
}

/// TPS of one pgbench run ("without initial connection time") and the CPU
/// time it cost.
fn pgbench(target: &Target, args: &[&str], seconds: u32) -> Sample {
    let cpu_before = target.proxy_pid.and_then(cpu_micros);
    let machine_before = machine_cpu_micros();
    let out = Command::new("pgbench")
        .args(["-n", "-S", "-M", "extended", "-T", &seconds.to_string()])
        .args(args)
        .args(["-h", "127.0.0.1", "-p", &target.port.to_string()])
        .args(["-U", &target.user, &target.database])
        .env("PGPASSWORD", &target.password)
        .env("PGSSLMODE", target.sslmode)
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench against {} failed: {text}{}",
        target.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let cpu_used = target
        .proxy_pid
        .and_then(cpu_micros)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let machine_used = machine_cpu_micros().zip(machine_before).map(
        |((busy, total), (busy_before, total_before))| (busy - busy_before, total - total_before),
    );
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"));
    let transactions: Option<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split_whitespace().next()?.parse().ok());
    let per_transaction = |cpu: Option<f64>| {
        cpu.zip(transactions)
            .filter(|(_, n)| *n > 0.0)
            .map(|(cpu, n)| cpu / n)
    };
    Sample {
        tps,
        proxy_us: per_transaction(cpu_used),
        machine_us: per_transaction(machine_used.map(|(busy, _)| busy)),
        capacity_us: per_transaction(machine_used.map(|(_, total)| total)),
        idle: machine_used
            .filter(|(_, total)| *total > 0.0)
            .map(|(busy, total)| 1.0 - busy / total),
    }
}

const BOUNCER_PASSWORD: &str = "bench-client-password";

/// pgbouncer in session mode: client TLS required, SCRAM both ways.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    fn start(pg_port: u16, managed_password: &str) -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer must be installed: scripts/install-deps");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pem = jitgate::postgres::tls::generate::self_signed(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("server.crt"), &pem.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &pem.key).unwrap();
        std::fs::write(
            dir.path().join("users.txt"),
            format!("\"alice\" \"{BOUNCER_PASSWORD}\"\n"),
        )
        .unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\norders = host=127.0.0.1 port={pg_port} dbname=orders user=orders_app password={managed_password}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = scram-sha-256\nauth_file = {d}/users.txt\npool_mode = session\n\
                 max_client_conn = 500\ndefault_pool_size = 40\n\
                 client_tls_sslmode = require\nclient_tls_key_file = {d}/server.key\nclient_tls_cert_file = {d}/server.crt\n\
                 logfile = {d}/pgbouncer.log\n"
            ),
        )
        .unwrap();
        // pgbouncer refuses to run as root; as root it runs as postgres.
        let root = jitgate::targets::is_root();
        if root {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let mut command = Command::new(binary);
        if root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "pgbouncer did not start: {}",
            std::fs::read_to_string(dir.path().join("pgbouncer.log")).unwrap_or_default()
        );
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
