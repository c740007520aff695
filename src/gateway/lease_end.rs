//! What a severed session's user reads: when their access ended and why.

use crate::lease::Lease;
use crate::workflow::{RequestState, Time};

use super::Gateway;

/// How a request's lease ended, as the engine recorded it.
struct Ending<'a> {
    state: RequestState,
    at: Option<Time>,
    by: Option<&'a str>,
    /// The revoking administrator's reason, if they gave one.
    why: Option<&'a str>,
}

impl Gateway {
    /// "access window for web-01 ended at 14:32 UTC", with why when it
    /// ended before its time (checked in, revoked).
    pub fn lease_end_message(&self, lease: &Lease) -> String {
        let request = self.request(lease.request_id);
        let ending = request.as_ref().map(|r| Ending {
            state: r.state,
            at: r.ended_at,
            by: r.ended_by.as_deref(),
            why: r.ended_why.as_deref(),
        });
        // The request's window, not the lease's: an extension moved it.
        let window_end = request
            .as_ref()
            .and_then(|r| r.window_end)
            .unwrap_or(lease.window_end);
        end_message(&lease.resource, window_end, ending)
    }
}

fn end_message(resource: &str, window_end: Time, ending: Option<Ending>) -> String {
    let ended_at = ending
        .as_ref()
        .and_then(|e| e.at)
        .unwrap_or_else(chrono::Utc::now)
        .min(window_end);
    let why = match ending.map(|e| (e.state, e.by, e.why)) {
        Some((RequestState::CheckedIn, _, _)) => ": checked in".to_string(),
        Some((RequestState::Revoked, Some(by), why)) => {
            let said = why.map(|why| format!(": {why}")).unwrap_or_default();
            format!(": revoked by {by}{said}")
        }
        Some((RequestState::Revoked, None, _)) => {
            ": revoked by the gateway, whose configuration no longer allows it".to_string()
        }
        _ => String::new(),
    };
    format!(
        "access window for {resource} ended at {}{why}",
        ended_at.format("%H:%M UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(state: RequestState, at: &str, by: Option<&str>) -> String {
        explained(state, at, by, None)
    }

    fn explained(state: RequestState, at: &str, by: Option<&str>, why: Option<&str>) -> String {
        let window_end: Time = "2026-11-29T13:00:00Z".parse().unwrap();
        let at = Some(at.parse().unwrap());
        end_message("web-01", window_end, Some(Ending { state, at, by, why }))
    }

    #[test]
    fn says_when_access_ended_and_why_it_ended_early() {
        assert_eq!(
            message(RequestState::Expired, "2026-11-29T13:00:00.004Z", None),
            "access window for web-01 ended at 13:00 UTC"
        );
        assert_eq!(
            message(
                RequestState::CheckedIn,
                "2026-11-29T12:20:00Z",
                Some("alice")
            ),
            "access window for web-01 ended at 12:20 UTC: checked in"
        );
        assert_eq!(
            message(RequestState::Revoked, "2026-11-29T12:31:00Z", Some("root")),
            "access window for web-01 ended at 12:31 UTC: revoked by root"
        );
        assert_eq!(
            explained(
                RequestState::Revoked,
                "2026-11-29T12:31:00Z",
                Some("root"),
                Some("incident 7")
            ),
            "access window for web-01 ended at 12:31 UTC: revoked by root: incident 7"
        );
        assert!(
            message(RequestState::Revoked, "2026-11-29T12:31:00Z", None)
                .ends_with("revoked by the gateway, whose configuration no longer allows it")
        );
    }
}
