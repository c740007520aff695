use std::time::Duration;

use super::*;

fn lease(id: RequestId, user: &str, resource: &str, after: Duration) -> Lease {
    Lease {
        request_id: id,
        user: user.into(),
        resource: resource.into(),
        window_end: chrono::Utc::now(),
        deadline: Instant::now() + after,
        mfa_passed: true,
        secret_hash: None,
        token: CancellationToken::new(),
        ended: Arc::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn lease_ends_at_its_deadline_and_cancels_its_token() {
    let (table, mut expired) = LeaseTable::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(table.clone().run_expiry(shutdown.clone()));
    let started = Instant::now();
    let live = table.upsert(lease(1, "alice", "web-01", Duration::from_secs(1800)));
    assert!(table.lookup("alice", "web-01").is_some());

    tokio::time::sleep(Duration::from_secs(1799)).await;
    assert!(!live.token.is_cancelled());
    assert!(table.lookup("alice", "web-01").is_some());

    assert_eq!(expired.recv().await, Some(1));
    assert_eq!(Instant::now() - started, Duration::from_secs(1800));
    assert!(live.token.is_cancelled());
    assert_eq!(live.ended_at(), Some(started + Duration::from_secs(1800)));
    assert!(table.lookup("alice", "web-01").is_none());
    assert!(table.is_empty());
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_earlier_lease_inserted_later_wakes_the_timer() {
    let (table, mut expired) = LeaseTable::new();
    tokio::spawn(table.clone().run_expiry(CancellationToken::new()));
    table.upsert(lease(1, "alice", "web-01", Duration::from_secs(3600)));
    tokio::task::yield_now().await;
    let started = Instant::now();
    table.upsert(lease(2, "bob", "web-01", Duration::from_secs(5)));
    assert_eq!(expired.recv().await, Some(2));
    assert_eq!(Instant::now() - started, Duration::from_secs(5));
    assert_eq!(table.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn extension_moves_the_deadline_and_keeps_the_token() {
    let (table, mut expired) = LeaseTable::new();
    tokio::spawn(table.clone().run_expiry(CancellationToken::new()));
    let first = table.upsert(lease(1, "alice", "web-01", Duration::from_secs(10)));
    let started = Instant::now();
    let extended = table.upsert(lease(1, "alice", "web-01", Duration::from_secs(20)));
    assert!(first.token.is_cancelled() == extended.token.is_cancelled());
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(!first.token.is_cancelled(), "the old deadline is stale");
    assert_eq!(expired.recv().await, Some(1));
    assert_eq!(Instant::now() - started, Duration::from_secs(20));
    assert!(first.token.is_cancelled(), "sessions hold the same token");
    let end = started + Duration::from_secs(20);
    assert_eq!(first.ended_at(), Some(end), "and learn when it ended");
}

#[tokio::test]
async fn ending_a_lease_cancels_it_once() {
    let (table, _expired) = LeaseTable::new();
    let live = table.upsert(lease(7, "alice", "db", Duration::from_secs(60)));
    assert!(
        table.end("alice", "db", 8).is_none(),
        "another request's end is ignored"
    );
    assert_eq!(live.ended_at(), None);
    let before = Instant::now();
    assert!(table.end("alice", "db", 7).is_some());
    assert!(live.token.is_cancelled());
    let ended = live.ended_at().unwrap();
    assert!(
        ended >= before && ended <= Instant::now(),
        "ended when ended"
    );
    assert!(table.end("alice", "db", 7).is_none());
    assert_eq!(live.ended_at(), Some(ended));
}

/// Virtual time: checks that the timer logic ends every one of 10,000 leases
/// exactly at its deadline. Wall-clock latency is measured in benches/.
#[tokio::test(start_paused = true)]
async fn ten_thousand_leases_each_end_at_their_deadline() {
    let (table, mut expired) = LeaseTable::new();
    tokio::spawn(table.clone().run_expiry(CancellationToken::new()));
    let base = Instant::now();
    for i in 0..10_000u64 {
        // Spread over 100 ms..600 ms, so the set is busy while they expire.
        let after = Duration::from_millis(100 + i % 500);
        table.upsert(lease(i, &format!("user{i}"), "web-01", after));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..10_000 {
        let id = expired.recv().await.unwrap();
        let deadline = base + Duration::from_millis(100 + id % 500);
        worst = worst.max(Instant::now().saturating_duration_since(deadline));
    }
    assert!(
        worst < Duration::from_millis(50),
        "a lease ended {worst:?} late"
    );
}

#[tokio::test(start_paused = true)]
async fn a_warning_says_the_time_left_to_the_nearest_second_and_the_end() {
    let mut warned = lease(1, "alice", "web-01", Duration::from_millis(59_700));
    warned.window_end = "2026-11-30T14:32:40Z".parse().unwrap();
    assert_eq!(warned.ends_in(Instant::now()), "1m (at 14:32 UTC)");
    assert_eq!(
        warned.ends_in(Instant::now() + Duration::from_secs(30)),
        "30s (at 14:32 UTC)"
    );
    // Past the end (a warning raced the expiry) it never says zero.
    assert_eq!(
        warned.ends_in(Instant::now() + Duration::from_secs(90)),
        "1s (at 14:32 UTC)"
    );
}
