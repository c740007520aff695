//! `requests`: the caller's requests and those awaiting their approval;
//! `requests --everyone`: every user's, for security teams.

use std::sync::Arc;

use serde_json::json;

use crate::config::Permission;
use crate::gateway::Gateway;
use crate::workflow::{Context, Request, RequestState};

use super::commands::state_name;
use super::format::{age, asked_for, dated, grounds, hhmm, remaining, said, waiting_on};
use super::views::require;
use super::{ControlError, Reply};

/// The caller's requests, and those waiting for their approval; with
/// `all`, their finished ones too.
pub fn requests(gateway: &Arc<Gateway>, user: &str, all: bool) -> Reply {
    let config = gateway.config();
    let ctx = Context::of(&config, chrono::Utc::now());
    let (mine, to_approve): (Vec<Request>, Vec<Request>) = gateway.read(|engine| {
        let mine = engine
            .requests()
            .filter(|r| r.requester == user && (all || !r.state.is_final()))
            .cloned()
            .collect();
        let waiting = engine
            .requests()
            .filter(|r| engine.awaits_approval_from(&ctx, r.id, user))
            .cloned()
            .collect();
        (mine, waiting)
    });
    let mut text = String::new();
    if mine.is_empty() && to_approve.is_empty() {
        text.push_str("no open requests\n");
    }
    if !mine.is_empty() {
        text.push_str("MY REQUESTS\n  ID  STATE       RESOURCE         AGE    NOTE\n");
        for r in &mine {
            text.push_str(&format!(
                "  {:<3} {:<11} {:<16} {:<6} {}\n",
                r.id,
                state_name(r.state),
                r.resource,
                age(&r.created_at),
                note(gateway, r)
            ));
        }
    }
    if !to_approve.is_empty() {
        text.push_str(
            "WAITING FOR MY APPROVAL\n  ID  REQUESTER   RESOURCE         AGE    FOR     REASON\n",
        );
        for r in &to_approve {
            let reason = grounds(r);
            text.push_str(&format!(
                "  {:<3} {:<11} {:<16} {:<6} {:<7} {reason}\n",
                r.id,
                r.requester,
                r.resource,
                age(&r.created_at),
                asked_for(r),
            ));
        }
    }
    let json = json!({
        "mine": mine.iter().map(|r| request_json(gateway, r)).collect::<Vec<_>>(),
        "to_approve": to_approve.iter().map(|r| request_json(gateway, r)).collect::<Vec<_>>(),
    });
    Reply { text, json }
}

fn note(gateway: &Gateway, r: &Request) -> String {
    match (r.state, &r.window_end, &r.extension) {
        (RequestState::Pending, _, _) => waiting_on(gateway, r),
        (RequestState::Approved, _, _) => format!("check out with: checkout {}", r.id),
        (RequestState::Active, Some(end), Some(_)) => {
            format!(
                "until {}; {} {}",
                hhmm(end),
                asked_for(r),
                waiting_on(gateway, r)
            )
        }
        (RequestState::Active, Some(end), None) => {
            format!("until {} ({} left)", hhmm(end), remaining(end))
        }
        (state, _, _) if state.is_final() => how_it_ended(r),
        _ => String::new(),
    }
}

/// A finished request's end, by whom and what they said: "revoked by
/// erin at 10:12 UTC: incident 7", "denied by bob at 09:40 UTC: not
/// tonight"; who is left out where the requester ended it themselves.
fn how_it_ended(r: &Request) -> String {
    let by = r
        .ended_by
        .as_ref()
        .filter(|by| **by != r.requester)
        .map(|by| format!(" by {by}"))
        .unwrap_or_default();
    let at = r
        .ended_at
        .map(|at| format!(" at {}", dated(&at, chrono::Utc::now().date_naive())))
        .unwrap_or_default();
    format!("{}{by}{at}{}", r.state.name(), said(&r.ended_why))
}

fn request_json(gateway: &Gateway, r: &Request) -> serde_json::Value {
    json!({
        "id": r.id,
        "requester": r.requester,
        "resource": r.resource,
        "state": state_name(r.state),
        "duration_secs": r.duration_secs + r.extended_secs,
        "reason": r.reason,
        "ticket": r.ticket,
        "created_at": r.created_at,
        "window_end": r.window_end,
        "approvals": r.round.approvals,
        "ended_at": r.ended_at,
        "ended_by": r.ended_by,
        "ended_why": r.ended_why,
        "note": note(gateway, r),
        "extension": r.extension.as_ref().map(|e| json!({
            "duration_secs": e.duration_secs,
            "reason": e.reason,
            "approvals": e.round.approvals,
        })),
    })
}

/// Which of everyone's requests an auditor asked for.
pub struct Wanted {
    /// Finished requests too.
    pub all: bool,
    pub requester: Option<String>,
    pub resource: Option<String>,
}

impl Wanted {
    fn matches(&self, r: &Request) -> bool {
        (self.all || !r.state.is_final())
            && self.requester.as_ref().is_none_or(|u| *u == r.requester)
            && self.resource.as_ref().is_none_or(|res| *res == r.resource)
    }
}

/// Every user's open requests (with `all`, finished ones too), each with
/// what it waits on: who is asked for access, and whose approval is slow.
pub fn everyone(
    gateway: &Arc<Gateway>,
    user: &str,
    wanted: &Wanted,
) -> Result<Reply, ControlError> {
    require(gateway, user, Permission::Audit)?;
    let listed: Vec<Request> = gateway.read(|engine| {
        engine
            .requests()
            .filter(|r| wanted.matches(r))
            .cloned()
            .collect()
    });
    let mut text = String::new();
    if listed.is_empty() {
        text.push_str(if wanted.all {
            "no requests\n"
        } else {
            "no open requests\n"
        });
    } else {
        text.push_str("REQUESTS\n  ID  REQUESTER   STATE       RESOURCE         AGE    NOTE\n");
    }
    for r in &listed {
        let line = format!(
            "  {:<3} {:<11} {:<11} {:<16} {:<6} {}",
            r.id,
            r.requester,
            state_name(r.state),
            r.resource,
            age(&r.created_at),
            note(gateway, r)
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let json =
        json!({ "requests": listed.iter().map(|r| request_json(gateway, r)).collect::<Vec<_>>() });
    Ok(Reply { text, json })
}
