//! Wall-clock lease expiry latency with 10,000 live leases.
//!
//! `cargo bench --bench lease_expiry` prints how late leases end after their
//! deadline (target: every lease within 50 ms). Under `cargo test` it runs a
//! small smoke version so the harness itself stays tested.

use std::time::Duration;

use jitgate::lease::{Lease, LeaseTable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count = if full { 10_000 } else { 500 };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut late = runtime.block_on(measure(count));
    late.sort();
    let pct = |p: usize| late[(late.len() * p / 100).min(late.len() - 1)];
    println!(
        "lease expiry with {count} live leases: p50 {:?}  p99 {:?}  max {:?}  (target: max < 50ms)",
        pct(50),
        pct(99),
        late[late.len() - 1]
    );
}

async fn measure(count: u64) -> Vec<Duration> {
    let (table, mut expired) = LeaseTable::new();
    tokio::spawn(table.clone().run_expiry(CancellationToken::new()));
    let base = Instant::now() + Duration::from_millis(200);
    let deadline_of = |id: u64| base + Duration::from_millis(id % 1000);
    for id in 0..count {
        table.upsert(Lease {
            request_id: id,
            user: format!("user{id}"),
            resource: "web-01".into(),
            window_end: chrono::Utc::now(),
            deadline: deadline_of(id),
            mfa_passed: true,
            secret_hash: None,
            token: CancellationToken::new(),
            ended: Default::default(),
        });
    }
    let mut late = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = expired.recv().await.expect("expiry channel open");
        late.push(Instant::now().saturating_duration_since(deadline_of(id)));
    }
    late
}
