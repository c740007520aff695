//! `watch`: a user's notifications — requests awaiting their approval,
//! what happens to their own requests, expiry warnings for their leases,
//! and a held resource coming free.

use std::collections::HashSet;
use std::sync::Arc;

use crate::audit::{AuditEvent, AuditRecord};
use crate::events::ChainReader;
use crate::gateway::Gateway;
use crate::workflow::{
    Context, Event, Request, RequestId, RequestState, SUGGESTED_EXTENSION_SECS, Time,
};

use super::format::{asked_for, hhmm, reason_suffix, ticket_suffix, waiting_on, why_asked};
use super::narrate::describe_change;
use super::{Caller, ControlError, EXIT_OK, Terminal, fail};

pub async fn watch<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    json: bool,
) -> u32 {
    // From the newest record on; a watcher slower than the records reads
    // on from disk instead of missing some.
    let (log, head) = gateway.audit_position();
    let mut chain = ChainReader::new(gateway.bus().clone(), log, head);
    if !json {
        term.out(&format!(
            "watching events for {} (Ctrl-C to stop)\n",
            caller.user
        ))
        .await;
    }
    let mut warned: HashSet<Warning> = HashSet::new();
    let mut asked: HashSet<RequestId> = HashSet::new();
    loop {
        let next_warning = next_warning(gateway, &caller.user, &warned);
        let sleep = async {
            match next_warning {
                Some((at, _)) => {
                    tokio::time::sleep((at - chrono::Utc::now()).to_std().unwrap_or_default()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = chain.next() => match received {
                Ok(record) => {
                    if let Some(line) = notification(gateway, &caller.user, &mut asked, &record, json) {
                        term.out(&line).await;
                    }
                }
                Err(error) => return fail(term, json, &ControlError::Refused(error.to_string())).await,
            },
            () = sleep => {
                if let Some((_, (id, _, _))) = next_warning {
                    mark_due_warnings(gateway, &caller.user, &mut warned, id);
                    if let Some(request) = gateway.request(id) {
                        let end = request.window_end.unwrap_or_else(chrono::Utc::now);
                        let line = if json {
                            format!("{}\n", serde_json::json!({ "type": "expiry_warning", "id": id, "resource": request.resource, "window_end": end }))
                        } else {
                            format!("[{}] warning: access to {} (request {id}) ends at {} — extend with: {}\n", now_hms(), request.resource, hhmm(&end), request.extend_command(SUGGESTED_EXTENSION_SECS))
                        };
                        term.out(&line).await;
                    }
                }
            }
            () = term.interrupted() => return EXIT_OK,
        }
    }
}

/// An expiry warning: the request, the window end it is for (an extension
/// moves it, and its warnings are given again) and how many seconds before.
type Warning = (RequestId, Time, i64);

/// The earliest expiry warning still to give for `user`'s active leases,
/// and when.
fn next_warning(
    gateway: &Gateway,
    user: &str,
    warned: &HashSet<Warning>,
) -> Option<(Time, Warning)> {
    warnings_to_give(gateway, user, warned).into_iter().min()
}

/// Marks every warning of request `id` that is due now as given: a
/// watcher that starts (or wakes) after several of them passed gets one
/// line, not one per warning.
fn mark_due_warnings(gateway: &Gateway, user: &str, warned: &mut HashSet<Warning>, id: RequestId) {
    let now = chrono::Utc::now();
    let due: Vec<Warning> = warnings_to_give(gateway, user, warned)
        .into_iter()
        .filter(|(at, (warned_id, _, _))| *at <= now && *warned_id == id)
        .map(|(_, which)| which)
        .collect();
    warned.extend(due);
}

/// The expiry warnings not yet given for `user`'s active leases, each
/// with when it is due.
fn warnings_to_give(
    gateway: &Gateway,
    user: &str,
    warned: &HashSet<Warning>,
) -> Vec<(Time, Warning)> {
    let now = chrono::Utc::now();
    // The same moments at which live sessions are warned ([gateway] warn_before).
    let warn_before: Vec<i64> = gateway
        .config()
        .warn_before
        .iter()
        .map(|before| i64::try_from(before.as_secs()).unwrap_or(i64::MAX))
        .collect();
    gateway.read(|engine| {
        engine
            .active_requests()
            .filter(|r| r.requester == user)
            .filter_map(|r| r.window_end.map(|end| (r.id, end)))
            .flat_map(|(id, end)| {
                warn_before.iter().filter_map(move |before| {
                    let at = chrono::Duration::try_seconds(*before)
                        .and_then(|d| end.checked_sub_signed(d))?;
                    Some((at, id, *before, end))
                })
            })
            .filter(|(_, id, before, end)| !warned.contains(&(*id, *end, *before)) && *end > now)
            .map(|(at, id, before, end)| (at, (id, end, before)))
            .collect()
    })
}

fn now_hms() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

/// What `user` should see of `record`, if anything: events on their own
/// requests, requests they can approve now (kept in `asked`) and the end
/// of that, by someone else's hand, and delegations to them.
fn notification(
    gateway: &Gateway,
    user: &str,
    asked: &mut HashSet<RequestId>,
    record: &AuditRecord,
    json: bool,
) -> Option<String> {
    let AuditEvent::Workflow { actor, change } = &record.event else {
        return None;
    };
    let text = match change.request_id() {
        Some(id) => {
            let request = gateway.request(id)?;
            let config = gateway.config();
            let ctx = Context::of(&config, chrono::Utc::now());
            let can_approve = gateway.read(|engine| engine.awaits_approval_from(&ctx, id, user));
            let approvable = matches!(
                change,
                Event::Requested { .. }
                    | Event::Approved { .. }
                    | Event::Escalated { .. }
                    | Event::ExtensionRequested { .. }
            );
            if can_approve && approvable {
                asked.insert(id);
                let why = reason_suffix(&why_asked(&request)) + &ticket_suffix(&request.ticket);
                format!(
                    "request {id} from {} for {} ({}){why} awaits your approval: approve {id} | deny {id}",
                    request.requester,
                    request.resource,
                    asked_for(&request)
                )
            } else if request.requester == user {
                describe_change(actor.as_deref(), change)
                    + &next_for_requester(gateway, &request, change)
            } else if !can_approve && asked.remove(&id) {
                // Their own approval needs no news; another's hand does.
                if actor.as_deref() == Some(user) {
                    return None;
                }
                format!(
                    "request {id} no longer awaits your approval: {}",
                    describe_change(actor.as_deref(), change)
                )
            } else if let Event::Ended { .. } = change {
                freed_for(gateway, user, &request)?
            } else {
                return None;
            }
        }
        None => match change {
            Event::DelegationGranted { delegation, .. } if delegation.to == user => {
                describe_change(actor.as_deref(), change)
            }
            _ => return None,
        },
    };
    Some(if json {
        format!(
            "{}\n",
            serde_json::json!({ "seq": record.seq, "ts": record.ts, "message": text, "event": change })
        )
    } else {
        format!("[{}] {text}\n", now_hms())
    })
}

/// What a requester does or waits for next, after `change` to their
/// request: whose approval is still needed, or the checkout.
fn next_for_requester(gateway: &Gateway, request: &Request, change: &Event) -> String {
    match change {
        Event::Requested { .. } | Event::Approved { .. } | Event::Escalated { .. }
            if request.open_round().is_some() =>
        {
            format!("; {}", waiting_on(gateway, request))
        }
        Event::Granted { .. } if request.state == RequestState::Approved => {
            format!(": checkout {}", request.id)
        }
        _ => String::new(),
    }
}

/// When `ended` held a single-user resource that `user` waits to check
/// out (their request on it is approved): that they can now.
fn freed_for(gateway: &Gateway, user: &str, ended: &Request) -> Option<String> {
    if !ended.settings.single_user {
        return None;
    }
    let waiting = gateway.read(|engine| {
        engine
            .open_request_of(user, &ended.resource)
            .filter(|r| r.state == RequestState::Approved)
            .map(|r| r.id)
    })?;
    Some(format!(
        "{} is free now: checkout {waiting}",
        ended.resource
    ))
}
