//! How late after the deadline a session really ends: a Postgres client in
//! the middle of `select pg_sleep(600)` and an SSH client in the middle of
//! a bulk download, each on a lease of a few seconds. Prints the time from
//! the lease's window end to the client process exiting (target: 100 ms).
//!
//! `cargo bench --bench sever_latency` runs five rounds of each; under
//! `cargo test` one round.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;

use chrono::{DateTime, Utc};
use common::World;

fn main() {
    let rounds = if std::env::args().any(|a| a == "--bench") {
        5
    } else {
        1
    };
    let world = World::with_both_targets(&[], |text| {
        text.replace("single_user = true", "single_user = false")
    });
    let mut postgres = Vec::new();
    let mut ssh = Vec::new();
    for round in 0..rounds {
        // A fresh TOTP step per round: codes cannot be replayed.
        if round > 0 {
            std::thread::sleep(std::time::Duration::from_secs(
                31 - (Utc::now().timestamp() % 30) as u64,
            ));
        }
        postgres.push(postgres_round(&world));
        ssh.push(ssh_round(&world));
    }
    report("postgres, mid pg_sleep(600)", &postgres);
    report("ssh, mid bulk download", &ssh);
}

fn window_end(json: &serde_json::Value) -> DateTime<Utc> {
    json["window_end"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("checkout prints window_end")
}

fn postgres_round(world: &World) -> f64 {
    let id = world.request("alice", "orders-prod --for 3s --reason bench");
    world.ok("bob", &format!("approve {id}"));
    world.ok("dave", &format!("approve {id}"));
    let out = world.json(
        "alice",
        &format!("checkout {id} --totp {}", world.totp("alice")),
    );
    let end = window_end(&out);
    let status = world
        .psql("alice", "orders-prod", out["password"].as_str().unwrap())
        .args(["-c", "select pg_sleep(600)"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    (Utc::now() - end).num_microseconds().unwrap() as f64 / 1000.0
}

fn ssh_round(world: &World) -> f64 {
    let id = world.request("alice", "web-01 --for 3s --reason bench");
    world.ok("bob", &format!("approve {id}"));
    let out = world.json("alice", &format!("checkout {id}"));
    let end = window_end(&out);
    let status = world
        .target_ssh("alice", "web-01")
        .arg("cat /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    (Utc::now() - end).num_microseconds().unwrap() as f64 / 1000.0
}

fn report(label: &str, late_ms: &[f64]) {
    let max = late_ms.iter().cloned().fold(f64::MIN, f64::max);
    let mean = late_ms.iter().sum::<f64>() / late_ms.len() as f64;
    println!(
        "{label:<32} client gone {mean:>7.1} ms after the deadline on average, {max:>7.1} ms at worst ({} rounds; target 100 ms)",
        late_ms.len()
    );
}
