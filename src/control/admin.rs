//! Administrators' commands: revoke access, rotate a credential, end one
//! session.

use std::sync::Arc;

use serde_json::json;

use crate::config::Permission;
use crate::gateway::{Command, Gateway};
use crate::workflow::{Event, RequestId};

use super::commands::{execute, simple};
use super::format::said;
use super::{ControlError, Reply, blocking};

/// `revoke ID` ends one lease; `revoke --user USER` all of a user's.
pub(super) async fn revoke(
    gateway: &Arc<Gateway>,
    user: &str,
    (id, whose): (Option<RequestId>, Option<String>),
    why: Option<String>,
) -> Result<Reply, ControlError> {
    // The permission is what is wrong, whatever the reason says.
    require_admin(gateway, user)?;
    let why = told_reason(why)?;
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
/// or their driver's error: printable text only; one too long for that is
/// refused, not cut.
fn told_reason(reason: Option<String>) -> Result<Option<String>, ControlError> {
    let Some(reason) = reason
        .map(|r| r.replace('\t', " ").trim().to_string())
        .filter(|r| !r.is_empty())
    else {
        return Ok(None);
    };
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(ControlError::Refused(format!(
            "the reason is too long ({chars} characters, at most {MAX_REASON_CHARS}): the user reads it as their access ends"
        )));
    }
    Ok(Some(crate::audit::printable(&reason, MAX_REASON_CHARS)))
}

pub(super) async fn terminate(
    gateway: &Arc<Gateway>,
    user: &str,
    session: &str,
    reason: Option<String>,
) -> Result<Reply, ControlError> {
    require_admin(gateway, user)?;
    let reason = told_reason(reason)?;
    let message = format!("session {session} terminated by {user}{}", said(&reason));
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
        let told = |text: &str| told_reason(Some(text.into())).unwrap();
        assert_eq!(told_reason(None).unwrap(), None);
        assert_eq!(told("  \t "), None);
        assert_eq!(told("laptop\tstolen").as_deref(), Some("laptop stolen"));
        assert_eq!(told(&"x".repeat(200)).map(|r| r.len()), Some(200));
        let refused = told_reason(Some("x".repeat(201))).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("too long (201 characters, at most 200)"),
            "{refused}"
        );
    }
}
