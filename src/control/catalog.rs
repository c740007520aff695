//! `resources`: what can be asked for, on what terms, and where the caller
//! stands on each — so nobody has to read the gateway's config to find
//! the name to put after `request`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{ResourceKind, WorkflowSettings};
use crate::gateway::Gateway;
use crate::workflow::{Context, Engine, Request, RequestState, Time};

use super::format::{connect_command, hhmm};
use super::{Caller, Reply};

/// One resource as the caller sees it.
struct Entry {
    name: String,
    kind: ResourceKind,
    settings: WorkflowSettings,
    /// The caller's open request or lease on it, if any.
    mine: Option<Request>,
    /// Another user's lease on a single-user resource, and when it frees
    /// up: named, as `request` names them, so the two can talk.
    held_by: Option<(String, Time)>,
}

pub fn resources(gateway: &Arc<Gateway>, caller: &Caller) -> Reply {
    let config = gateway.config();
    let ctx = Context::of(&config, chrono::Utc::now());
    let entries: Vec<Entry> = gateway.read(|engine| {
        config
            .resources
            .values()
            .map(|resource| Entry {
                name: resource.name.clone(),
                kind: resource.kind,
                settings: engine
                    .settings_for(&ctx, &resource.name)
                    .unwrap_or(&resource.workflow)
                    .clone(),
                mine: engine
                    .open_request_of(&caller.user, &resource.name)
                    .cloned(),
                held_by: held_by(engine, &caller.user, &resource.name),
            })
            .collect()
    });
    let text = if entries.is_empty() {
        String::from("no resources are configured\n")
    } else {
        table(&entries)
    };
    let listed: Vec<Value> = entries
        .iter()
        .map(|entry| entry_json(entry, connect_command(&config, caller, &entry.name)))
        .collect();
    Reply {
        text,
        json: json!({ "resources": listed }),
    }
}

const HEADINGS: [&str; 5] = ["RESOURCE", "KIND", "WINDOW", "NEEDS", "NOW"];

/// One row per resource, each column as wide as its widest cell.
fn table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|entry| {
            [
                entry.name.clone(),
                kind_name(entry.kind).to_string(),
                window(&entry.settings),
                needs(&entry.settings),
                now(entry),
            ]
        })
        .collect();
    let headings = HEADINGS.map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&headings).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&headings).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn held_by(engine: &Engine, user: &str, resource: &str) -> Option<(String, Time)> {
    let holder = engine
        .holder(resource)
        .filter(|holder| holder.requester != user && holder.state == RequestState::Active)?;
    Some((holder.requester.clone(), holder.window_end?))
}

fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Ssh => "ssh",
        ResourceKind::Postgres => "postgres",
    }
}

/// "1h (max 4h)": what `request` gives without `--for`, and the most it
/// may ask for.
fn window(settings: &WorkflowSettings) -> String {
    format!(
        "{} (max {})",
        settings.default_duration, settings.max_duration
    )
}

/// What a request must bring and go through: reason, ticket, approvals,
/// the MFA code at checkout.
fn needs(settings: &WorkflowSettings) -> String {
    let mut parts = Vec::new();
    if settings.require_reason {
        parts.push("reason".to_string());
    }
    if settings.require_ticket {
        parts.push("ticket".to_string());
    }
    parts.push(approvals(settings));
    if settings.mfa_required {
        parts.push("MFA".to_string());
    }
    parts.join(", ")
}

fn approvals(settings: &WorkflowSettings) -> String {
    let levels = &settings.approval_levels;
    let total: u32 = levels.iter().map(|level| level.required).sum();
    let noun = if total == 1 { "approval" } else { "approvals" };
    match levels.len() {
        0 => "no approval".to_string(),
        1 => format!("{total} {noun}"),
        n => format!("{total} {noun} in {n} levels"),
    }
}

/// Where the caller stands: their own request or lease first, then whether
/// a single-user resource is free.
fn now(entry: &Entry) -> String {
    if let Some(mine) = &entry.mine {
        return match (mine.state, mine.window_end) {
            (RequestState::Active, Some(end)) => {
                format!("mine until {} (request {})", hhmm(&end), mine.id)
            }
            (RequestState::Approved, _) => {
                format!("request {} approved: checkout {}", mine.id, mine.id)
            }
            (state, _) => format!("request {} {}", mine.id, state.name()),
        };
    }
    match (entry.settings.single_user, &entry.held_by) {
        (true, Some((holder, end))) => format!("single-user, held by {holder} until {}", hhmm(end)),
        (true, None) => "single-user, free".to_string(),
        (false, _) => String::new(),
    }
}

fn entry_json(entry: &Entry, connect: String) -> Value {
    let settings = &entry.settings;
    json!({
        "name": entry.name,
        "kind": kind_name(entry.kind),
        "default_duration_secs": settings.default_duration.as_duration().as_secs(),
        "max_duration_secs": settings.max_duration.as_duration().as_secs(),
        "require_reason": settings.require_reason,
        "require_ticket": settings.require_ticket,
        "mfa_required": settings.mfa_required,
        "single_user": settings.single_user,
        "approval_levels": settings.approval_levels,
        "connect": connect,
        "mine": entry.mine.as_ref().map(|r| json!({
            "id": r.id,
            "state": r.state.name(),
            "window_end": r.window_end,
        })),
        "held_by": entry.held_by.as_ref().map(|(user, until)| json!({
            "user": user,
            "until": until,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApprovalLevel, HumanDuration, Principal};

    fn settings(levels: &[u32]) -> WorkflowSettings {
        WorkflowSettings {
            approval_levels: levels
                .iter()
                .map(|&required| ApprovalLevel {
                    approvers: vec![Principal::User("bob".into())],
                    required,
                    escalate_after: None,
                    escalate_to: Vec::new(),
                })
                .collect(),
            ..WorkflowSettings::default()
        }
    }

    #[test]
    fn needs_lists_what_a_request_must_bring_and_pass() {
        let strict = WorkflowSettings {
            require_reason: true,
            require_ticket: true,
            mfa_required: true,
            ..settings(&[1, 1])
        };
        assert_eq!(
            needs(&strict),
            "reason, ticket, 2 approvals in 2 levels, MFA"
        );
        let relaxed = WorkflowSettings {
            mfa_required: false,
            ..settings(&[])
        };
        assert_eq!(needs(&relaxed), "no approval");
        assert_eq!(approvals(&settings(&[1])), "1 approval");
        assert_eq!(approvals(&settings(&[2])), "2 approvals");
    }

    #[test]
    fn window_gives_the_default_and_the_most_that_may_be_asked() {
        let s = WorkflowSettings {
            default_duration: HumanDuration::from_secs(1800),
            max_duration: HumanDuration::from_secs(5400),
            ..settings(&[1])
        };
        assert_eq!(window(&s), "30m (max 1h30m)");
    }
}
