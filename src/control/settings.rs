//! Commands that change how approvals work rather than a request:
//! delegating one's approvals, and a resource's workflow settings.

use std::sync::Arc;

use serde_json::json;

use crate::config::{DurationError, HumanDuration, Permission, WorkflowSettings};
use crate::gateway::{Command, Gateway};
use crate::workflow::Time;

use super::commands::execute;
use super::{ControlError, Reply, views};

pub(super) async fn delegate(
    gateway: &Arc<Gateway>,
    user: &str,
    to: Option<String>,
    resources: Vec<String>,
    until: Option<String>,
    revoke: bool,
) -> Result<Reply, ControlError> {
    if revoke {
        execute(gateway, user, Command::RevokeDelegation).await?;
        return Ok(Reply {
            text: "delegation revoked\n".into(),
            json: json!({ "delegation": null }),
        });
    }
    let to = to.ok_or_else(|| ControlError::Usage("delegate needs --to USER".into()))?;
    let until = until.map(|u| parse_time(&u)).transpose()?;
    let command = Command::Delegate {
        to: to.clone(),
        resources: resources.clone(),
        until,
    };
    execute(gateway, user, command).await?;
    let scope = if resources.is_empty() {
        "all resources".to_string()
    } else {
        resources.join(", ")
    };
    let end = until
        .map(|u| format!(" until {}", u.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    Ok(Reply {
        text: format!("{to} may now approve for you on {scope}{end}\n"),
        json: json!({ "to": to, "resources": resources, "until": until }),
    })
}

/// A duration from now (`8h`) or an RFC 3339 time.
fn parse_time(text: &str) -> Result<Time, ControlError> {
    match HumanDuration::parse(text) {
        Ok(duration) => {
            let offset = chrono::Duration::from_std(duration.as_duration())
                .map_err(|e| ControlError::Usage(e.to_string()))?;
            return Ok(chrono::Utc::now() + offset);
        }
        // A duration, only too long: say so, not that it is no duration.
        Err(too_long @ DurationError::TooLong(_)) => {
            return Err(ControlError::Usage(too_long.to_string()));
        }
        Err(_) => {}
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            ControlError::Usage(format!(
                "{text:?} is neither a duration (8h) nor an RFC 3339 time"
            ))
        })
}

/// Applies `KEY=VALUE` assignments in order; the first bad one is the error.
fn assign_all(settings: &mut WorkflowSettings, assignments: &[String]) -> Result<(), ControlError> {
    for assignment in assignments {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| ControlError::Usage(format!("{assignment:?} is not KEY=VALUE")))?;
        settings
            .assign(key.trim(), value.trim())
            .map_err(ControlError::Usage)?;
    }
    Ok(())
}

pub(super) async fn workflow_set(
    gateway: &Arc<Gateway>,
    user: &str,
    resource: String,
    assignments: Vec<String>,
) -> Result<Reply, ControlError> {
    // Without the permission neither the resource nor the values are
    // looked at: the engine refuses the change as such (and audits it).
    let may_manage = gateway
        .config()
        .directory
        .has(user, Permission::ManageWorkflow);
    let current = {
        let config = gateway.config();
        let file = config.resource(&resource).map(|r| r.workflow.clone());
        gateway
            .read(|engine| engine.workflow_override(&resource).cloned())
            .or(file)
    };
    let settings = if may_manage {
        let mut settings = current.ok_or_else(|| {
            ControlError::Refused(format!(
                "unknown resource {resource:?}: `resources` lists them"
            ))
        })?;
        assign_all(&mut settings, &assignments)?;
        settings
    } else {
        current.unwrap_or_default()
    };
    execute(
        gateway,
        user,
        Command::SetWorkflow {
            resource: resource.clone(),
            settings,
        },
    )
    .await?;
    let mut reply = views::workflow_show(gateway, &resource)?;
    reply.text = format!("workflow of {resource} updated\n{}", reply.text);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        match parse_time(text) {
            Err(ControlError::Usage(message)) => message,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn times_are_durations_from_now_or_rfc3339_and_refusals_say_which_rule_broke() {
        let in_eight_hours = parse_time("8h").unwrap() - chrono::Utc::now();
        assert!((in_eight_hours.num_seconds() - 8 * 3600).abs() < 5);
        assert_eq!(
            parse_time("2099-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2099-01-01T00:00:00+00:00"
        );
        assert!(
            refusal("99999d").contains("too long"),
            "{}",
            refusal("99999d")
        );
        assert!(refusal("tomorrow").contains("neither a duration"));
    }
}
