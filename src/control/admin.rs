//! Administrators' commands: revoke access, rotate a credential, end one
//! session.

use std::sync::Arc;

use serde_json::json;

use crate::config::Permission;
use crate::gateway::{Command, Gateway};
use crate::workflow::{Event, RequestId};

use super::commands::{execute, simple};
use super::{ControlError, Reply, blocking};

/// `revoke ID` ends one lease; `revoke --user USER` all of a user's.
pub(super) async fn revoke(
    gateway: &Arc<Gateway>,
    user: &str,
    (id, whose): (Option<RequestId>, Option<String>),
    why: Option<String>,
) -> Result<Reply, ControlError> {
    let why = told_reason(why);
    match (id, whose) {
        (Some(id), _) => {
            execute(gateway, user, Command::Revoke { id, why }).await?;
            Ok(simple(format!("revoked request {id}"), id, "revoked"))
        }
        (None, Some(whose)) => {
            let command = Command::RevokeUser {
                user: whose.clone(),
                why,
            };
            let outcome = execute(gateway, user, command).await?;
            Ok(describe_user_revoked(&whose, &outcome.events))
        }
        (None, None) => Err(ControlError::Refused(
            "revoke needs a request id or --user USER".into(),
        )),
    }
}

fn require_admin(gateway: &Gateway, user: &str) -> Result<(), ControlError> {
    if gateway.config().directory.has(user, Permission::Admin) {
        return Ok(());
    }
    Err(ControlError::Refused(
        "permission denied: this needs the admin permission".into(),
    ))
}

pub(super) async fn rotate(
    gateway: &Arc<Gateway>,
    user: &str,
    resource: &str,
) -> Result<Reply, ControlError> {
    require_admin(gateway, user)?;
    let rotator = crate::rotation::Rotator::new(gateway.clone());
    let version = rotator
        .rotate(resource, &format!("requested by {user}"))
        .await
        .map_err(|e| ControlError::Refused(format!("rotation of {resource} failed: {e}")))?;
    Ok(Reply {
        text: format!("rotated the credential of {resource} (now version {version})\n"),
        json: json!({ "resource": resource, "version": version, "rotated": true }),
    })
}

/// Longest reason passed on to the user whose session or access ends.
const MAX_REASON_CHARS: usize = 200;

/// An administrator's reason as the user will read it, in their terminal
/// or their driver's error: printable text only, and not too long.
fn told_reason(reason: Option<String>) -> Option<String> {
    reason
        .map(|r| crate::audit::printable(&r.replace('\t', " "), MAX_REASON_CHARS))
        .filter(|r| !r.trim().is_empty())
}

pub(super) async fn terminate(
    gateway: &Arc<Gateway>,
    user: &str,
    session: &str,
    reason: Option<String>,
) -> Result<Reply, ControlError> {
    require_admin(gateway, user)?;
    let reason = told_reason(reason);
    let message = format!(
        "session {session} terminated by {user}{}",
        reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let info = gateway
        .sessions()
        .terminate(session, message)
        .map_err(|e| ControlError::Refused(e.to_string()))?;
    let resource = info.resource.unwrap_or_default();
    let event = crate::audit::AuditEvent::SessionTerminated {
        session: session.to_string(),
        user: info.user.clone(),
        resource: resource.clone(),
        by: user.to_string(),
        reason,
    };
    blocking(gateway, move |g| {
        g.audit(event);
        Ok(())
    })
    .await?;
    Ok(Reply {
        text: format!(
            "terminated {session} ({} on {resource}); the lease stays: revoke it to end the access\n",
            info.user
        ),
        json: json!({ "session": session, "user": info.user, "resource": resource, "terminated": true }),
    })
}

/// What `revoke --user` ended: leases revoked, requests cancelled.
fn describe_user_revoked(user: &str, events: &[Event]) -> Reply {
    let ids = |revoked: bool| -> Vec<u64> {
        events
            .iter()
            .filter(|e| matches!(e, Event::Ended { .. }) == revoked)
            .filter_map(Event::request_id)
            .collect()
    };
    let (ended, cancelled) = (ids(true), ids(false));
    let list = |ids: &[u64]| {
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = match (ended.is_empty(), cancelled.is_empty()) {
        (true, true) => format!("{user} holds no lease and no open request\n"),
        (false, true) => format!("revoked {user}'s leases: {}\n", list(&ended)),
        (true, false) => format!("cancelled {user}'s requests: {}\n", list(&cancelled)),
        (false, false) => format!(
            "revoked {user}'s leases: {}; cancelled their requests: {}\n",
            list(&ended),
            list(&cancelled)
        ),
    };
    Reply {
        text,
        json: json!({ "user": user, "revoked": ended, "cancelled": cancelled }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_told_to_a_user_is_printable_and_bounded() {
        assert_eq!(told_reason(None), None);
        assert_eq!(told_reason(Some("  \t ".into())), None);
        assert_eq!(
            told_reason(Some("laptop\tstolen".into())).as_deref(),
            Some("laptop stolen")
        );
        let long = told_reason(Some("x".repeat(500))).unwrap_or_default();
        assert_eq!(long.chars().count(), MAX_REASON_CHARS);
    }
}
