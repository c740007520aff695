//! The gateway's metrics, described once so `/metrics` lists every series
//! from the first scrape (a counter nobody has incremented yet reads 0).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::workflow::{Engine, RequestState};

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

pub fn describe() {
    describe_gauge!(
        "jitgate_requests",
        "Requests known to the gateway, by state"
    );
    describe_gauge!("jitgate_active_leases", "Leases currently active");
    describe_gauge!("jitgate_sessions", "Live sessions, by protocol");
    describe_counter!(
        "jitgate_workflow_events_total",
        "Workflow state changes, by event"
    );
    describe_counter!(
        "jitgate_lease_expiries_total",
        "Leases ended by their timer"
    );
    describe_counter!(
        "jitgate_sessions_severed_total",
        "Sessions severed because their lease ended"
    );
    describe_counter!("jitgate_mfa_failures_total", "Failed TOTP verifications");
    describe_counter!("jitgate_commands_refused_total", "Control commands refused");
    describe_counter!(
        "jitgate_ssh_auth_failures_total",
        "Refused SSH authentications"
    );
    describe_counter!(
        "jitgate_audit_write_failures_total",
        "Audit records that could not be written"
    );
    describe_counter!(
        "jitgate_event_subscribers_dropped_total",
        "Live streams dropped for falling behind"
    );
    describe_histogram!(
        "jitgate_journal_fsync_seconds",
        Unit::Seconds,
        "Journal append latency including fsync"
    );
    for counter in [
        "jitgate_lease_expiries_total",
        "jitgate_sessions_severed_total",
        "jitgate_mfa_failures_total",
        "jitgate_commands_refused_total",
        "jitgate_ssh_auth_failures_total",
        "jitgate_audit_write_failures_total",
        "jitgate_event_subscribers_dropped_total",
    ] {
        metrics::counter!(counter).absolute(0);
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
