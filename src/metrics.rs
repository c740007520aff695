//! The gateway's metrics, described once so `/metrics` lists every series
//! from the first scrape (a counter nobody has incremented yet reads 0).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::workflow::{Engine, RequestState};

/// The data planes, as the `protocol` label names them.
const PROTOCOLS: [&str; 2] = ["ssh", "postgres"];

const STATES: [RequestState; 9] = [
    RequestState::Pending,
    RequestState::Approved,
    RequestState::Active,
    RequestState::CheckedIn,
    RequestState::Expired,
    RequestState::Revoked,
    RequestState::Denied,
    RequestState::Cancelled,
    RequestState::TimedOut,
];

/// Which series of a counter exist before anything increments it.
#[derive(Clone, Copy)]
enum Zero {
    /// The counter has no labels: its one series starts at 0.
    Unlabelled,
    /// One series per protocol, each starting at 0.
    ByProtocol,
    /// Its labels (event, outcome) are many: each series appears with its
    /// first increment.
    FirstUse,
}

/// Counters, with their help text and the series that start at 0, so
/// they are scraped from the first request on.
const COUNTERS: [(&str, &str, Zero); 14] = [
    (
        "jitgate_workflow_events_total",
        "Workflow state changes, by event",
        Zero::FirstUse,
    ),
    (
        "jitgate_lease_expiries_total",
        "Leases ended by their timer",
        Zero::Unlabelled,
    ),
    (
        "jitgate_sessions_severed_total",
        "Sessions severed because their lease ended",
        Zero::ByProtocol,
    ),
    (
        "jitgate_mfa_failures_total",
        "Failed TOTP verifications",
        Zero::Unlabelled,
    ),
    (
        "jitgate_commands_refused_total",
        "Control commands refused",
        Zero::Unlabelled,
    ),
    (
        "jitgate_ssh_auth_failures_total",
        "Refused SSH authentications",
        Zero::Unlabelled,
    ),
    (
        "jitgate_audit_write_failures_total",
        "Attempts to write the audit log that failed",
        Zero::Unlabelled,
    ),
    (
        "jitgate_event_subscribers_dropped_total",
        "Live streams dropped for falling behind",
        Zero::Unlabelled,
    ),
    (
        "jitgate_rotations_total",
        "Credential rotations, by outcome",
        Zero::FirstUse,
    ),
    (
        "jitgate_query_log_write_failures_total",
        "Postgres query log lines that could not be written",
        Zero::Unlabelled,
    ),
    (
        "jitgate_postgres_startup_timeouts_total",
        "Postgres connections that did not finish TLS and login in time",
        Zero::Unlabelled,
    ),
    (
        "jitgate_connections_penalized_total",
        "Connections closed at once because their source's logins kept failing, by protocol",
        Zero::ByProtocol,
    ),
    (
        "jitgate_connections_over_source_limit_total",
        "Connections closed at once because their source held penalties.max_pending_logins connections still logging in, by protocol",
        Zero::ByProtocol,
    ),
    (
        "jitgate_penalty_sources_untracked_total",
        "Failed logins not counted against their source because the penalty table was full",
        Zero::Unlabelled,
    ),
];

pub fn describe() {
    describe_gauge!(
        "jitgate_requests",
        "Requests known to the gateway, by state"
    );
    describe_gauge!("jitgate_active_leases", "Leases currently active");
    describe_gauge!(
        "jitgate_audit_records_held",
        "Audit records waiting in memory for the audit log to take them (no new access is granted while above 0)"
    );
    describe_gauge!(
        "jitgate_journal_held_records",
        "Changes that end or narrow access, made while the journal could not be written, waiting in memory to be recorded (new access is refused meanwhile)"
    );
    describe_counter!(
        "jitgate_audit_tampering_detected_total",
        "Starts at which the audit log no longer held the head saved before"
    );
    describe_gauge!(
        "jitgate_audit_head_seq",
        "Sequence number of the newest audit record (a drop means records were cut off)"
    );
    describe_gauge!(
        "jitgate_webhook_cursor_seq",
        "Sequence number of the newest audit record each webhook has been sent or passed over, by webhook origin (behind jitgate_audit_head_seq while it catches up)"
    );
    describe_gauge!("jitgate_sessions", "Live sessions, by protocol");
    for protocol in ["ssh", "postgres", "control"] {
        metrics::gauge!("jitgate_sessions", "protocol" => protocol).set(0.0);
    }
    describe_gauge!(
        "jitgate_open_connections",
        "Client connections being served (from accept to the end of their task), by protocol"
    );
    for protocol in PROTOCOLS {
        metrics::gauge!("jitgate_open_connections", "protocol" => protocol).set(0.0);
    }
    describe_gauge!(
        "jitgate_rotation_pending",
        "1 while a resource's credential rotation is failing and being retried"
    );
    describe_gauge!(
        "jitgate_rotation_mark",
        "1 while a resource must rotate again for a reason kept across restarts: credential_refused, or processes_left_running (a single-user resource is not handed out meanwhile)"
    );
    describe_histogram!(
        "jitgate_journal_fsync_seconds",
        Unit::Seconds,
        "Journal append latency including fsync"
    );
    describe_histogram!(
        "jitgate_sever_seconds",
        Unit::Seconds,
        "From a lease's end (its deadline, check-in or revocation) to a session on it having its client disconnected, by protocol"
    );
    for (name, help, zero) in COUNTERS {
        describe_counter!(name, help);
        match zero {
            Zero::Unlabelled => metrics::counter!(name).absolute(0),
            Zero::ByProtocol => {
                for protocol in PROTOCOLS {
                    metrics::counter!(name, "protocol" => protocol).absolute(0);
                }
            }
            Zero::FirstUse => {}
        }
    }
    metrics::gauge!("jitgate_active_leases").set(0.0);
}

/// Refreshes the requests-by-state gauges from the engine.
pub fn record_request_states(engine: &Engine) {
    let mut counts = [0u64; STATES.len()];
    for request in engine.requests() {
        if let Some(index) = STATES.iter().position(|s| *s == request.state) {
            counts[index] += 1;
        }
    }
    for (state, count) in STATES.iter().zip(counts) {
        metrics::gauge!("jitgate_requests", "state" => state.name().replace(' ', "_"))
            .set(count as f64);
    }
}

/// Counts a client connection as open for as long as it lives, so the
/// `jitgate_open_connections` gauge falls back only when the connection's
/// task has really ended: a task that leaks shows there.
pub struct OpenConnection(&'static str);

impl OpenConnection {
    pub fn new(protocol: &'static str) -> Self {
        metrics::gauge!("jitgate_open_connections", "protocol" => protocol).increment(1.0);
        Self(protocol)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("jitgate_open_connections", "protocol" => self.0).decrement(1.0);
    }
}

/// A session severed because its lease ended has had its client
/// disconnected: how long after the end that took.
pub fn severed_after(protocol: crate::audit::Protocol, lease_ended: tokio::time::Instant) {
    let took = tokio::time::Instant::now().saturating_duration_since(lease_ended);
    metrics::histogram!("jitgate_sever_seconds", "protocol" => protocol.name())
        .record(took.as_secs_f64());
}
