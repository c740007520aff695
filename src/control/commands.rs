//! Workflow commands: each runs one gateway command and describes the result.

use std::sync::Arc;

use serde_json::json;

use crate::config::{HumanDuration, ResourceKind};
use crate::gateway::{Command, Gateway, Outcome};
use crate::workflow::{Event, ExtendSpec, RequestId, RequestSpec, RequestState};

use super::format::{connect_command, hhmm, remaining, waiting_on};
use super::parse::{ControlCommand, WorkflowCommand, free_text};
use super::{
    Caller, ControlError, Reply, Terminal, admin, blocking, catalog, request_list, settings, views,
};

pub async fn run<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    command: ControlCommand,
) -> Result<Reply, ControlError> {
    let user = caller.user.clone();
    match command {
        ControlCommand::Request {
            resource,
            duration,
            reason,
            ticket,
        } => {
            let duration = duration.map(|d| parse_duration(&d)).transpose()?;
            let spec = RequestSpec {
                resource,
                duration,
                reason: free_text(reason),
                ticket,
            };
            request(gateway, &user, spec).await
        }
        ControlCommand::Approve { id, comment } => {
            let comment = free_text(comment);
            let outcome = execute(gateway, &user, Command::Approve { id, comment }).await?;
            Ok(describe_approval(gateway, id, &outcome))
        }
        ControlCommand::Deny { id, reason } => deny(gateway, &user, id, free_text(reason)).await,
        ControlCommand::Cancel { id, reason } => {
            let why = free_text(reason);
            execute(gateway, &user, Command::Cancel { id, why }).await?;
            Ok(simple(format!("cancelled request {id}"), id, "cancelled"))
        }
        ControlCommand::Checkin { id } => {
            execute(gateway, &user, Command::Checkin { id }).await?;
            Ok(simple(
                format!("checked in request {id}: access ended, live sessions closed"),
                id,
                "checked_in",
            ))
        }
        ControlCommand::Revoke {
            id,
            user: whose,
            reason,
        } => admin::revoke(gateway, &user, (id, whose), free_text(reason)).await,
        ControlCommand::Extend {
            id,
            duration,
            reason,
        } => {
            let by = parse_duration(&duration)?;
            let reason = free_text(reason);
            extend(gateway, &user, ExtendSpec { id, by, reason }).await
        }
        ControlCommand::Delegate {
            to,
            resources,
            until,
            revoke,
        } => settings::delegate(gateway, &user, to, resources, until, revoke).await,
        ControlCommand::Checkout { id, totp } => checkout(gateway, caller, term, id, totp).await,
        ControlCommand::Password { id, totp } => {
            new_password(gateway, caller, term, id, totp).await
        }
        ControlCommand::Resources => Ok(catalog::resources(gateway, caller)),
        ControlCommand::Requests {
            all,
            everyone: true,
            user: requester,
            resource,
        } => {
            let wanted = request_list::Wanted {
                all,
                requester,
                resource,
            };
            request_list::everyone(gateway, &user, &wanted)
        }
        ControlCommand::Requests { all, .. } => Ok(request_list::requests(gateway, &user, all)),
        ControlCommand::Status { all } => views::status(gateway, caller, all),
        ControlCommand::Sessions => views::sessions(gateway, &user),
        ControlCommand::Rotate { resource } => admin::rotate(gateway, &user, &resource).await,
        ControlCommand::Terminate { session, reason } => {
            admin::terminate(gateway, &user, &session, free_text(reason)).await
        }
        ControlCommand::Workflow {
            command: WorkflowCommand::Show { resource },
        } => views::workflow_show(gateway, &resource),
        ControlCommand::Workflow {
            command:
                WorkflowCommand::Set {
                    resource,
                    assignments,
                },
        } => settings::workflow_set(gateway, &user, resource, assignments).await,
        ControlCommand::Watch
        | ControlCommand::Follow { .. }
        | ControlCommand::Replay { .. }
        | ControlCommand::Audit { .. } => {
            Err(ControlError::Usage("streams are handled elsewhere".into()))
        }
    }
}

async fn request(
    gateway: &Arc<Gateway>,
    user: &str,
    spec: RequestSpec,
) -> Result<Reply, ControlError> {
    let outcome = execute(gateway, user, Command::Request(spec)).await?;
    Ok(describe_request_filed(gateway, &outcome))
}

async fn extend(
    gateway: &Arc<Gateway>,
    user: &str,
    spec: ExtendSpec,
) -> Result<Reply, ControlError> {
    let id = spec.id;
    let outcome = execute(gateway, user, Command::Extend(spec)).await?;
    Ok(describe_extension(gateway, &outcome, id))
}

/// `deny ID`: a request, or the extension an active lease waits on.
async fn deny(
    gateway: &Arc<Gateway>,
    user: &str,
    id: RequestId,
    reason: Option<String>,
) -> Result<Reply, ControlError> {
    let outcome = execute(gateway, user, Command::Deny { id, reason }).await?;
    if !matches!(
        outcome.events.first(),
        Some(Event::Denied {
            extension: true,
            ..
        })
    ) {
        return Ok(simple(format!("denied request {id}"), id, "denied"));
    }
    let end = gateway.request(id).and_then(|r| r.window_end);
    let until = end.map_or_else(|| "the end of its window".to_string(), |end| hhmm(&end));
    Ok(Reply {
        text: format!("denied the extension of request {id}; its access still ends at {until}\n"),
        json: json!({ "id": id, "state": "extension_denied", "window_end": end }),
    })
}

pub(super) async fn execute(
    gateway: &Arc<Gateway>,
    user: &str,
    command: Command,
) -> Result<Outcome, ControlError> {
    let user = user.to_string();
    blocking(gateway, move |g| g.execute(&user, command)).await
}

fn parse_duration(text: &str) -> Result<std::time::Duration, ControlError> {
    HumanDuration::parse(text)
        .map(HumanDuration::as_duration)
        .map_err(|e| ControlError::Usage(e.to_string()))
}

pub(super) fn simple(text: String, id: u64, state: &str) -> Reply {
    Reply {
        text: format!("{text}\n"),
        json: json!({ "id": id, "state": state }),
    }
}

fn describe_request_filed(gateway: &Gateway, outcome: &Outcome) -> Reply {
    let Some(id) = outcome.events.first().and_then(Event::request_id) else {
        return Reply {
            text: "request filed\n".into(),
            json: json!({}),
        };
    };
    let Some(request) = gateway.request(id) else {
        return simple(format!("request {id} filed"), id, "pending");
    };
    let duration = HumanDuration::from_secs(request.duration_secs);
    let waiting = waiting_on(gateway, &request);
    let text = if request.state == RequestState::Approved {
        format!(
            "request {id} for {} ({duration}) approved: no approvals needed\ncheck out with: checkout {id}\n",
            request.resource
        )
    } else {
        format!(
            "request {id} for {} ({duration}) filed: {waiting}\n",
            request.resource
        )
    };
    let json = json!({
        "id": id,
        "resource": request.resource,
        "duration": duration.to_string(),
        "state": state_name(request.state),
        "waiting_for": waiting,
    });
    Reply { text, json }
}

fn describe_approval(gateway: &Gateway, id: u64, outcome: &Outcome) -> Reply {
    let request = gateway.request(id);
    let requester = request.as_ref().map_or("the requester", |r| &r.requester);
    let finished = outcome.events.iter().find_map(|e| match e {
        Event::Granted { .. } => Some(format!("{requester} may check out now")),
        Event::Extended { window_end, .. } => {
            Some(format!("access now ends at {}", hhmm(window_end)))
        }
        _ => None,
    });
    let on_behalf = outcome.events.iter().find_map(|e| match e {
        Event::Approved { approval, .. } => approval.on_behalf_of.clone(),
        _ => None,
    });
    let extension = outcome.events.iter().any(|e| {
        matches!(
            e,
            Event::Approved {
                extension: true,
                ..
            }
        )
    });
    let what = if extension {
        "the extension of request"
    } else {
        "request"
    };
    let status = finished.unwrap_or_else(|| match &request {
        Some(r) => waiting_on(gateway, r),
        None => String::new(),
    });
    let behalf = on_behalf
        .as_ref()
        .map(|x| format!(" (for {x})"))
        .unwrap_or_default();
    Reply {
        text: format!("approved {what} {id}{behalf}: {status}\n"),
        json: json!({ "id": id, "on_behalf_of": on_behalf, "state": request.map(|r| state_name(r.state)), "status": status }),
    }
}

fn describe_extension(gateway: &Gateway, outcome: &Outcome, id: u64) -> Reply {
    if let Some(Event::Extended { window_end, .. }) = outcome.events.first() {
        return Reply {
            text: format!(
                "request {id} extended: access now ends at {}\n",
                hhmm(window_end)
            ),
            json: json!({ "id": id, "state": "extended", "window_end": window_end }),
        };
    }
    // The approvers were notified; the requester learns whose approval the
    // extension waits for, and that the window is unchanged meanwhile.
    let request = gateway.request(id);
    let status = request
        .as_ref()
        .map(|r| waiting_on(gateway, r))
        .unwrap_or_default();
    let end = request.as_ref().and_then(|r| r.window_end);
    let until = end.map_or_else(|| "the end of its window".to_string(), |end| hhmm(&end));
    Reply {
        text: format!(
            "extension of request {id} filed: {status}; access still ends at {until} meanwhile\n"
        ),
        json: json!({ "id": id, "state": "extension_pending", "status": status, "window_end": end }),
    }
}

pub fn state_name(state: RequestState) -> &'static str {
    match state {
        RequestState::Pending => "pending",
        RequestState::Approved => "approved",
        RequestState::Active => "active",
        RequestState::CheckedIn => "checked_in",
        RequestState::Expired => "expired",
        RequestState::Revoked => "revoked",
        RequestState::Denied => "denied",
        RequestState::Cancelled => "cancelled",
        RequestState::TimedOut => "timed_out",
    }
}

/// The TOTP code for a command on request `id`: as given, or asked for
/// (unechoed) on a terminal when the request needs MFA.
async fn totp_code<T: Terminal>(
    gateway: &Gateway,
    caller: &Caller,
    term: &mut T,
    id: u64,
    given: Option<String>,
    command: &str,
) -> Result<Option<String>, ControlError> {
    let needs_mfa = gateway
        .request(id)
        .is_some_and(|r| r.settings.mfa_required && r.requester == caller.user);
    if given.is_some() || !needs_mfa || !term.has_pty() {
        return Ok(given);
    }
    term.out("TOTP code: ").await;
    let code = term.read_line(false).await;
    term.out("\n").await;
    code.map(Some)
        .ok_or_else(|| ControlError::Refused(format!("{command} cancelled")))
}

/// `password ID`: a new connection password for an active database lease.
async fn new_password<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    id: u64,
    totp: Option<String>,
) -> Result<Reply, ControlError> {
    let totp = totp_code(gateway, caller, term, id, totp, "password").await?;
    let outcome = execute(gateway, &caller.user, Command::NewPassword { id, totp }).await?;
    let password = outcome
        .lease_password
        .ok_or_else(|| ControlError::Refused(format!("request {id} got no password")))?;
    let resource = gateway.request(id).map(|r| r.resource).unwrap_or_default();
    let psql = connect_command(&gateway.config(), caller, &resource);
    Ok(Reply {
        text: format!(
            "new connection password for {resource} (shown once; the old one no longer works, live sessions go on): {}\n{psql}\n",
            password.expose()
        ),
        json: json!({ "id": id, "resource": resource, "password": password.expose(), "psql": psql }),
    })
}

async fn checkout<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    id: u64,
    totp: Option<String>,
) -> Result<Reply, ControlError> {
    let totp = totp_code(gateway, caller, term, id, totp, "checkout").await?;
    let outcome = execute(gateway, &caller.user, Command::Checkout { id, totp }).await?;
    let request = gateway
        .request(id)
        .ok_or_else(|| ControlError::Refused(format!("request {id} vanished")))?;
    let end = request.window_end.unwrap_or_else(chrono::Utc::now);
    let mut text = format!(
        "checked out {}: access until {} ({} left)\n",
        request.resource,
        hhmm(&end),
        remaining(&end)
    );
    let config = gateway.config();
    let kind = config.resource(&request.resource).map(|r| r.kind);
    let mut json =
        json!({ "id": id, "resource": request.resource, "window_end": end, "state": "active" });
    match (kind, &outcome.lease_password) {
        (Some(ResourceKind::Postgres), Some(password)) => {
            let psql = connect_command(&config, caller, &request.resource);
            text.push_str(&format!(
                "connection password (shown once, valid only for this window): {}\n{psql}\n",
                password.expose()
            ));
            json["password"] = password.expose().into();
            json["psql"] = psql.into();
        }
        _ => {
            let ssh = connect_command(&config, caller, &request.resource);
            text.push_str(&format!("connect with: {ssh}\n"));
            json["ssh"] = ssh.into();
        }
    }
    Ok(Reply { text, json })
}
