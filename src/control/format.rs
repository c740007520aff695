//! Human-readable renderings of times, requests and connect commands.

use crate::config::{ClientAuth, Config, HumanDuration, ResourceKind};

use super::Caller;
use crate::workflow::{Request, Time};

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

/// ", reason: TEXT", or nothing without a reason.
pub fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(", reason: {r}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conninfo_value_is_quoted_only_when_libpq_needs_it() {
        assert_eq!(conninfo_value("/etc/ssl/ca.pem"), "/etc/ssl/ca.pem");
        assert_eq!(
            conninfo_value("/home/a b/it's\\ca.pem"),
            r"'/home/a b/it\'s\\ca.pem'"
        );
        assert_eq!(conninfo_value(""), "''");
    }
}
