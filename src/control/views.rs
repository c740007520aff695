//! Read-only commands: status, sessions, workflow show; the prompt greeting and the no-lease hint.

use std::sync::Arc;

use serde_json::json;

use crate::config::{HumanDuration, Permission};
use crate::gateway::Gateway;
use crate::sessions::Activity;
use crate::workflow::{Context, Request, RequestState};

use super::format::{age, connect_command, hhmm, remaining, waiting_on};
use super::{Caller, ControlError, Reply};

pub(super) fn require(
    gateway: &Gateway,
    user: &str,
    permission: Permission,
) -> Result<(), ControlError> {
    if gateway.config().directory.has(user, permission) {
        Ok(())
    } else {
        Err(ControlError::Refused(format!(
            "permission denied: this needs the {} permission",
            permission.name()
        )))
    }
}

/// What the interactive prompt says under its greeting: the requests
/// waiting for `user`'s approval and the leases they hold, so the first
/// thing typed can act on them.
pub fn greeting(gateway: &Gateway, user: &str) -> String {
    let config = gateway.config();
    let ctx = Context::of(&config, chrono::Utc::now());
    let (waiting, held) = gateway.read(|engine| {
        let waiting = engine
            .requests()
            .filter(|r| engine.awaits_approval_from(&ctx, r.id, user))
            .count();
        let held: Vec<String> = engine
            .active_requests()
            .filter(|r| r.requester == user)
            .filter_map(|r| {
                let end = r.window_end?;
                Some(format!(
                    "{} until {} (request {})",
                    r.resource,
                    hhmm(&end),
                    r.id
                ))
            })
            .collect();
        (waiting, held)
    });
    let mut text = String::new();
    match waiting {
        0 => {}
        1 => text.push_str("1 request awaits your approval: `requests` shows it.\n"),
        n => text.push_str(&format!(
            "{n} requests await your approval: `requests` shows them.\n"
        )),
    }
    if !held.is_empty() {
        text.push_str(&format!("You hold {}.\n", held.join(", ")));
    }
    if text.is_empty() {
        text.push_str("`resources` lists what you can request.\n");
    }
    text
}

/// Why `caller` has no access to `resource` yet and the command that moves
/// them on: check out an approved request, wait for a pending one, or ask.
/// Only for callers who proved who they are (it tells of their requests).
pub fn no_lease_yet(gateway: &Gateway, caller: &Caller, resource: &str) -> String {
    let open = gateway.read(|engine| engine.open_request_of(&caller.user, resource).cloned());
    let port = gateway.config().listen.ssh.port();
    let control = format!("ssh -p {port} {}@{}", caller.user, caller.host);
    match open {
        Some(r) if r.state == RequestState::Approved => format!(
            "no active lease for {resource}: request {} is approved — {control} checkout {}",
            r.id, r.id
        ),
        Some(r) if r.state == RequestState::Pending => format!(
            "no active lease for {resource}: request {} {}",
            r.id,
            waiting_on(gateway, &r)
        ),
        _ => format!("no active lease for {resource} — {control} request {resource}"),
    }
}

/// The caller's active leases, each with the command that uses it; with
/// `all` (auditors), everyone's.
pub fn status(gateway: &Arc<Gateway>, caller: &Caller, all: bool) -> Result<Reply, ControlError> {
    let user = caller.user.as_str();
    if all {
        require(gateway, user, Permission::Audit)?;
    }
    let active: Vec<Request> = gateway.read(|engine| {
        engine
            .active_requests()
            .filter(|r| all || r.requester == user)
            .cloned()
            .collect()
    });
    let config = gateway.config();
    // Only the holder's own command is worth printing: it names them.
    let connect = |r: &Request| (!all).then(|| connect_command(&config, caller, &r.resource));
    let mut text = String::new();
    if active.is_empty() {
        text.push_str("no active leases\n");
    } else if all {
        text.push_str("ACTIVE LEASES\n  ID  USER        RESOURCE         UNTIL\n");
    } else {
        text.push_str(
            "MY ACTIVE LEASES\n  ID  RESOURCE         UNTIL                        CONNECT WITH\n",
        );
    }
    for r in &active {
        let end = r.window_end.unwrap_or_else(chrono::Utc::now);
        let holder = if all {
            format!("{:<11} ", r.requester)
        } else {
            String::new()
        };
        let until = format!("{} ({} left)", hhmm(&end), remaining(&end));
        let command = connect(r).unwrap_or_default();
        let line = format!(
            "  {:<3} {holder}{:<16} {until:<28} {command}",
            r.id, r.resource
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if let Some(database) = active.iter().find(|r| !all && is_database(&config, r)) {
        text.push_str(&format!(
            "psql asks for the password checkout showed; lost it? `password {}` gives a new one\n",
            database.id
        ));
    }
    let leases: Vec<_> = active
        .iter()
        .map(|r| {
            let left = r.window_end.map(|end| (end - chrono::Utc::now()).num_seconds().max(0));
            let mut lease = json!({ "id": r.id, "user": r.requester, "resource": r.resource, "window_end": r.window_end, "seconds_left": left, "mfa": r.mfa_passed });
            if let Some(command) = connect(r) {
                lease["connect"] = command.into();
            }
            lease
        })
        .collect();
    Ok(Reply {
        text,
        json: json!({ "leases": leases }),
    })
}

fn is_database(config: &crate::config::Config, request: &Request) -> bool {
    config
        .resource(&request.resource)
        .is_some_and(|r| r.kind == crate::config::ResourceKind::Postgres)
}

/// Live sessions: everyone's for an auditor; for anyone else their own,
/// so a user can see what they left open before checking in.
pub fn sessions(gateway: &Arc<Gateway>, user: &str) -> Result<Reply, ControlError> {
    let everyone = gateway.config().directory.has(user, Permission::Audit);
    let mut live = gateway.sessions().list();
    live.retain(|s| everyone || s.user == user);
    let mut text = String::from(
        "SESSION          PROTOCOL  USER        RESOURCE         FROM                  AGE    UNTIL      NOW\n",
    );
    let mut listed = Vec::new();
    for s in &live {
        // The lease a session on a resource runs on: when it will be severed.
        let lease = s
            .resource
            .as_deref()
            .and_then(|resource| gateway.leases().lookup(&s.user, resource));
        let activity = gateway.sessions().activity(&s.id);
        text.push_str(&format!(
            "{:<16} {:<9} {:<11} {:<16} {:<21} {:<6} {:<10} {}\n",
            s.id,
            format!("{:?}", s.protocol).to_lowercase(),
            s.user,
            s.resource.as_deref().unwrap_or("-"),
            s.remote,
            age(&s.started_at),
            lease.as_ref().map_or("-".into(), |l| hhmm(&l.window_end)),
            activity.as_ref().map_or("-".into(), doing),
        ));
        let mut session = serde_json::to_value(s).unwrap_or_default();
        if let Some(fields) = session.as_object_mut() {
            if let Some(lease) = &lease {
                fields.insert("request_id".into(), lease.request_id.into());
                fields.insert("window_end".into(), json!(lease.window_end));
            }
            if let Some(activity) = &activity {
                fields.insert("activity".into(), json!(activity));
            }
        }
        listed.push(session);
    }
    Ok(Reply {
        text,
        json: json!({ "sessions": listed }),
    })
}

/// Longest text the NOW column shows of a statement or command.
const DOING_CHARS: usize = 60;

/// Idle time shown from this long on: shorter pauses are typing.
const SHOWN_IDLE_SECONDS: u64 = 60;

/// What a session is doing, in a few words: the statement a Postgres
/// session waits on (or how many it ran), the channels of an SSH one,
/// and for how long it has been idle, once that is a minute or more.
fn doing(activity: &Activity) -> String {
    let idle = (activity.idle_seconds >= SHOWN_IDLE_SECONDS)
        .then(|| HumanDuration::from_secs(activity.idle_seconds));
    let mut text = match (&activity.running, activity.statements) {
        (Some(running), _) => format!(
            "running {}: {}",
            HumanDuration::from_secs(running.seconds),
            running
                .statement
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ),
        (None, Some(statements)) => {
            let plural = if statements == 1 { "" } else { "s" };
            let idle = idle.map(|d| format!(" {d}")).unwrap_or_default();
            let within = if activity.in_transaction {
                " in transaction"
            } else {
                ""
            };
            format!("idle{idle}{within} ({statements} statement{plural})")
        }
        (None, None) => {
            let idle = idle.map(|d| format!("idle {d}"));
            let mut parts = activity.channels.clone();
            parts.extend(idle);
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(", ")
            }
        }
    };
    if activity.client_gone {
        text = format!("client gone, {text}");
    }
    match text.char_indices().nth(DOING_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

pub fn workflow_show(gateway: &Arc<Gateway>, resource: &str) -> Result<Reply, ControlError> {
    let config = gateway.config();
    let file = config.resource(resource).map(|r| r.workflow.clone());
    let runtime = gateway.read(|engine| engine.workflow_override(resource).cloned());
    let changed = runtime.is_some();
    let settings = runtime.or(file).ok_or_else(|| {
        ControlError::Refused(format!(
            "unknown resource {resource:?}: `resources` lists them"
        ))
    })?;
    let json = serde_json::to_value(&settings).unwrap_or_default();
    let body = toml::to_string(&settings).unwrap_or_default();
    let origin = if changed {
        "changed at runtime"
    } else {
        "from the config file"
    };
    Ok(Reply {
        text: format!("# workflow of {resource} ({origin})\n{body}"),
        json: json!({ "resource": resource, "changed_at_runtime": changed, "settings": json }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Running;

    #[test]
    fn a_session_says_what_it_does_in_a_few_words() {
        let postgres = |running: Option<(&str, u64)>, statements| Activity {
            statements: Some(statements),
            running: running.map(|(statement, seconds)| Running {
                statement: statement.into(),
                seconds,
            }),
            ..Activity::default()
        };
        assert_eq!(doing(&postgres(None, 1)), "idle (1 statement)");
        assert_eq!(doing(&postgres(None, 7)), "idle (7 statements)");
        let open = Activity {
            in_transaction: true,
            ..postgres(None, 2)
        };
        assert_eq!(doing(&open), "idle in transaction (2 statements)");
        assert_eq!(
            doing(&postgres(Some(("select\n  pg_sleep(600)", 75)), 7)),
            "running 1m15s: select pg_sleep(600)"
        );
        let long = doing(&postgres(Some((&"x".repeat(500), 1)), 1));
        assert_eq!(long.chars().count(), DOING_CHARS + 1, "{long}");
        assert!(long.ends_with('…'));
        let ssh = Activity {
            channels: vec!["shell (pty)".into(), "exec: make".into()],
            ..Activity::default()
        };
        assert_eq!(doing(&ssh), "shell (pty), exec: make");
        let left = Activity {
            client_gone: true,
            ..postgres(Some(("select pg_sleep(600)", 5)), 1)
        };
        assert_eq!(
            doing(&left),
            "client gone, running 5s: select pg_sleep(600)"
        );
        assert_eq!(doing(&Activity::default()), "-");
    }

    fn ssh(channels: &[&str], idle_seconds: u64) -> Activity {
        Activity {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            idle_seconds,
            ..Activity::default()
        }
    }

    #[test]
    fn sessions_say_how_long_they_have_been_idle_from_a_minute_on() {
        assert_eq!(doing(&ssh(&["shell (pty)"], 59)), "shell (pty)");
        assert_eq!(doing(&ssh(&["shell (pty)"], 300)), "shell (pty), idle 5m");
        assert_eq!(doing(&ssh(&[], 5)), "-");
        assert_eq!(doing(&ssh(&[], 7200)), "idle 2h");
        let postgres = |in_transaction, idle_seconds| Activity {
            statements: Some(4),
            in_transaction,
            idle_seconds,
            ..Activity::default()
        };
        assert_eq!(doing(&postgres(false, 3)), "idle (4 statements)");
        assert_eq!(
            doing(&postgres(true, 90)),
            "idle 1m30s in transaction (4 statements)"
        );
    }
}
