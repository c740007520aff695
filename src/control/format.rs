//! Human-readable renderings of times, requests and connect commands.

use crate::config::{ClientAuth, Config, HumanDuration, Principal, ResourceKind};

use super::Caller;
use crate::gateway::Gateway;
use crate::workflow::{ApprovalRound, Context, Request, Time, describe_waiting};

/// The libpq connection string for `user` on the Postgres `resource`
/// through this gateway, as reached at `host`. It verifies the gateway's
/// certificate when `[tls]` says how clients can (the password then goes
/// only to the gateway); else it only encrypts.
/// The command that uses `caller`'s lease on `resource`: `ssh` to a
/// machine, `psql` (asking for the lease password) to a database.
pub fn connect_command(config: &Config, caller: &Caller, resource: &str) -> String {
    let kind = config.resource(resource).map(|r| r.kind);
    if kind == Some(ResourceKind::Postgres) {
        let conn = psql_conninfo(config, &caller.host, &caller.user, resource);
        return format!("psql \"{conn}\"");
    }
    format!(
        "ssh -p {} {}+{resource}@{}",
        config.listen.ssh.port(),
        caller.user,
        caller.host
    )
}

pub fn psql_conninfo(config: &Config, host: &str, user: &str, resource: &str) -> String {
    let port = config.listen.postgres.port();
    let tls = config.tls.as_ref();
    let (host, security) = match tls.and_then(|tls| tls.client_root_cert.as_deref()) {
        Some(root) => (
            tls.and_then(|tls| tls.client_host.as_deref())
                .unwrap_or(host),
            format!("sslmode=verify-full sslrootcert={}", conninfo_value(root)),
        ),
        None => (host, "sslmode=require".to_string()),
    };
    // Without it libpq would also answer a man in the middle asking for
    // the password in cleartext.
    let binding = match config.postgres.client_auth {
        ClientAuth::ScramSha256 => " channel_binding=require",
        ClientAuth::Password => "",
    };
    format!(
        "host={} port={port} user={user} dbname={resource} {security}{binding}",
        conninfo_value(host)
    )
}

/// A value as libpq reads it in a connection string: quoted when it holds
/// a space, a quote or a backslash.
fn conninfo_value(value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        value.to_string()
    }
}

/// What an approval would grant: the window asked for, or "+15m" for an
/// extension of an active one.
pub fn asked_for(r: &Request) -> String {
    match &r.extension {
        Some(extension) => format!("+{}", HumanDuration::from_secs(extension.duration_secs)),
        None => HumanDuration::from_secs(r.duration_secs).to_string(),
    }
}

/// Why an approval is asked for: while an extension waits, its own reason
/// beside the request's.
pub fn why_asked(r: &Request) -> Option<String> {
    let extension_reason = r.extension.as_ref().and_then(|e| e.reason.as_ref());
    match (extension_reason, &r.reason) {
        (Some(more), Some(first)) => Some(format!("{more} (request: {first})")),
        (Some(more), None) => Some(more.clone()),
        (None, first) => first.clone(),
    }
}

pub fn hhmm(time: &Time) -> String {
    time.format("%H:%M UTC").to_string()
}

/// "14:32 UTC" for a time on `today`'s date, "2026-11-28 14:32 UTC" for
/// one on another day.
pub fn dated(time: &Time, today: chrono::NaiveDate) -> String {
    if time.date_naive() == today {
        hhmm(time)
    } else {
        time.format("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// Time left until `end`, rounded to whole seconds ("29m12s").
pub fn remaining(end: &Time) -> String {
    let secs = (*end - chrono::Utc::now()).num_seconds().max(0) as u64;
    HumanDuration::from_secs(secs).to_string()
}

/// Time since `start` ("3m", "2h5m").
pub fn age(start: &Time) -> String {
    let secs = (chrono::Utc::now() - *start).num_seconds().max(0) as u64;
    HumanDuration::from_secs(secs - secs % 60)
        .to_string()
        .replace("0s", "<1m")
}

/// ", ticket: ID", or nothing without a ticket.
pub fn ticket_suffix(ticket: &Option<String>) -> String {
    ticket
        .as_ref()
        .map(|t| format!(", ticket: {t}"))
        .unwrap_or_default()
}

/// What an approver weighs beside the window: the reason(s) and the
/// ticket, "disk full (ticket OPS-12)".
pub fn grounds(r: &Request) -> String {
    let ticket = r.ticket.as_ref().map(|t| format!("ticket {t}"));
    match (why_asked(r), ticket) {
        (Some(why), Some(ticket)) => format!("{why} ({ticket})"),
        (why, ticket) => why.or(ticket).unwrap_or_default(),
    }
}

/// ": TEXT" for what someone said when acting (a reason, a comment), or
/// nothing.
pub fn said(text: &Option<String>) -> String {
    text.as_ref().map(|t| format!(": {t}")).unwrap_or_default()
}

/// ", reason: TEXT", or nothing without a reason.
pub fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(", reason: {r}"))
        .unwrap_or_default()
}

/// What request `r` waits for and who may give it now, so a requester
/// knows whom to ask: "needs 1 approval from group:sre-leads (bob or erin
/// may approve)".
pub fn waiting_on(gateway: &Gateway, r: &Request) -> String {
    let Some(round) = r.open_round() else {
        return describe_waiting(r, &r.round);
    };
    let config = gateway.config();
    let ctx = Context::of(&config, chrono::Utc::now());
    let names = gateway.read(|engine| engine.approvers_now(&ctx, r.id));
    let text = describe_waiting(r, round);
    if named_already(r, round, &names) {
        return text;
    }
    format!("{text}{}", may_approve(&names))
}

/// Whether the level waited on lists exactly those who may approve, by
/// user name ("1 approval from bob"), so naming them again says nothing.
fn named_already(r: &Request, round: &ApprovalRound, names: &[String]) -> bool {
    let Some(level) = r.levels().get(round.level) else {
        return false;
    };
    let users: Vec<&str> = level
        .approvers
        .iter()
        .filter_map(|p| match p {
            Principal::User(user) => Some(user.as_str()),
            Principal::Group(_) => None,
        })
        .collect();
    !names.is_empty()
        && users.len() == level.approvers.len()
        && users.len() == names.len()
        && names.iter().all(|name| users.contains(&name.as_str()))
}

/// " (bob or erin may approve)"; the first few of a long list; and a
/// warning when nobody can now (an empty group, or the requester alone),
/// which waiting may not mend.
fn may_approve(names: &[String]) -> String {
    const SHOWN: usize = 4;
    match names {
        [] => " (nobody may approve it now: ask an administrator)".to_string(),
        [one] => format!(" ({one} may approve)"),
        [rest @ .., last] if names.len() <= SHOWN => {
            format!(" ({} or {last} may approve)", rest.join(", "))
        }
        _ => format!(
            " ({} and {} more may approve)",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_on_another_day_says_which() {
        let time: Time = "2026-11-28T14:32:10Z".parse().unwrap();
        let same_day = time.date_naive();
        assert_eq!(dated(&time, same_day), "14:32 UTC");
        let next_day = same_day.succ_opt().unwrap();
        assert_eq!(dated(&time, next_day), "2026-11-28 14:32 UTC");
    }

    #[test]
    fn a_conninfo_value_is_quoted_only_when_libpq_needs_it() {
        assert_eq!(conninfo_value("/etc/ssl/ca.pem"), "/etc/ssl/ca.pem");
        assert_eq!(
            conninfo_value("/home/a b/it's\\ca.pem"),
            r"'/home/a b/it\'s\\ca.pem'"
        );
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn approvers_are_named_a_few_at_a_time_and_none_is_a_warning() {
        let names = |n: &[&str]| may_approve(&n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["bob"]), " (bob may approve)");
        assert_eq!(names(&["bob", "erin"]), " (bob or erin may approve)");
        assert_eq!(names(&["a", "b", "c", "d"]), " (a, b, c or d may approve)");
        assert_eq!(
            names(&["a", "b", "c", "d", "e", "f"]),
            " (a, b, c, d and 2 more may approve)"
        );
        assert!(names(&[]).contains("nobody may approve it now"));
    }
}
