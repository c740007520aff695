//! Audit records and workflow changes told as sentences, for `audit
//! tail`, `watch` and the replies that quote them.

use crate::audit::{AuditEvent, AuditRecord};
use crate::config::HumanDuration;
use crate::workflow::{EndReason, Event};

use super::format::{hhmm, reason_suffix, said, ticket_suffix};

pub fn record_line(record: &AuditRecord) -> String {
    format!(
        "{} #{} {}\n",
        record.ts,
        record.seq,
        describe(&record.event)
    )
}

pub fn describe(event: &AuditEvent) -> String {
    match event {
        AuditEvent::GatewayStarted { version } => format!("gateway started (version {version})"),
        AuditEvent::GatewayStopped => "gateway stopped".into(),
        AuditEvent::ConfigReloaded { ok: true, .. } => "configuration reloaded".into(),
        AuditEvent::ConfigReloaded { error, .. } => format!(
            "configuration reload refused: {}",
            error.as_deref().unwrap_or("")
        ),
        AuditEvent::AuditTampered { anchor, problem } => {
            format!("AUDIT LOG TAMPERED (saved head {anchor}): {problem}")
        }
        AuditEvent::TornTailDropped { file, bytes } => {
            format!("dropped {bytes} torn bytes at the end of {file}")
        }
        AuditEvent::AuditRecordsLost { count, first, last } => format!(
            "AUDIT RECORDS LOST: {count} record(s) from {first} to {last} could not be written"
        ),
        AuditEvent::Workflow { actor, change } => describe_change(actor.as_deref(), change),
        AuditEvent::Refused {
            actor,
            command,
            reason,
        } => format!("refused {actor}: {command}: {reason}"),
        AuditEvent::MfaFailure { user, reason } => format!("MFA failure for {user}: {reason}"),
        AuditEvent::MfaLocked { user, seconds } => format!("MFA locked for {user} for {seconds}s"),
        AuditEvent::Login {
            protocol,
            user,
            resource,
            remote,
            key,
            accepted,
            reason,
        } => {
            let verdict = if *accepted { "accepted" } else { "refused" };
            let target = resource
                .as_ref()
                .map(|r| format!(" to {r}"))
                .unwrap_or_default();
            let with = key
                .as_ref()
                .map(|k| format!(" with key {k}"))
                .unwrap_or_default();
            let why = said(reason);
            let protocol = protocol.name();
            format!("{protocol} login of {user}{target} from {remote}{with} {verdict}{why}")
        }
        AuditEvent::LoginWithdrawn {
            user,
            remote,
            reason,
            ..
        } => format!("connection of {user} from {remote} cut: {reason}"),
        AuditEvent::SourcePenalized { source, seconds } => {
            format!("logins from {source} keep failing: its connections are refused for {seconds}s")
        }
        AuditEvent::SessionStarted {
            session,
            protocol,
            user,
            resource,
            ..
        } => {
            let protocol = protocol.title();
            format!("session {session} started: {user} on {resource} ({protocol})")
        }
        AuditEvent::ChannelEnded {
            session,
            user,
            resource,
            kind,
            command,
            exit_status,
            bytes_from_client,
            bytes_to_client,
            ..
        } => {
            let session = session_of(session, user, resource);
            let what = command
                .as_ref()
                .map(|c| format!(" {c:?}"))
                .unwrap_or_default();
            let status = exit_status
                .map(|s| format!(", exit {s}"))
                .unwrap_or_default();
            format!(
                "{session}: {kind}{what} ended ({bytes_from_client} bytes in, {bytes_to_client} out{status})"
            )
        }
        AuditEvent::TargetHostKey {
            resource,
            fingerprint,
            accepted,
            reason,
        } => {
            let verdict = if *accepted { "accepted" } else { "REFUSED" };
            format!("host key {fingerprint} of {resource} {verdict}: {reason}")
        }
        AuditEvent::CredentialImported { resource } => {
            format!("credential of {resource} imported into the vault")
        }
        AuditEvent::RotationStarted { resource, reason } => {
            format!("rotating the credential of {resource} ({reason})")
        }
        AuditEvent::RotationSucceeded { resource, version } => {
            format!("credential of {resource} rotated (version {version})")
        }
        AuditEvent::RotationFailed { resource, error } => {
            format!("ROTATION FAILED for {resource}: {error}")
        }
        AuditEvent::PlantedKeyRemoved {
            resource,
            fingerprint,
        } => format!("planted key removed from {resource}: {fingerprint}"),
        AuditEvent::LeftoverProcessesEnded {
            resource,
            ended,
            remaining,
        } => {
            let mut outcomes = Vec::new();
            if !ended.is_empty() {
                outcomes.push(format!("ended {}", ended.join(", ")));
            }
            if !remaining.is_empty() {
                outcomes.push(format!("COULD NOT END {}", remaining.join(", ")));
            }
            format!(
                "processes left running on {resource} after its windows: {}",
                outcomes.join("; ")
            )
        }
        AuditEvent::StartupFilesChanged { resource, files } => format!(
            "startup files of {resource}'s managed account changed since the gateway last looked (they run at every login; read them): {}",
            files.join(", ")
        ),
        AuditEvent::RolesChanged { resource, roles } => format!(
            "roles on {resource}'s target changed since the gateway last looked (a window may have left a login or setting behind; review them): {}",
            roles.join(", ")
        ),
        AuditEvent::AccountCheckFailed {
            resource,
            check,
            error,
        } => format!("COULD NOT CHECK {check} of {resource}: {error}"),
        AuditEvent::CredentialReconciled { resource, account } => format!(
            "credential of {resource} was changed on the target outside jitgate; reset by {account}"
        ),
        AuditEvent::SessionTerminated {
            session,
            user,
            resource,
            by,
            reason,
        } => format!(
            "session {session} of {user} on {resource} terminated by {by}{}",
            said(reason)
        ),
        AuditEvent::SessionInterrupted {
            session,
            user,
            resource,
            files,
        } => format!(
            "{} was cut off: the gateway stopped without ending it ({} recording(s) and log(s) kept as they were then)",
            session_of(session, user, resource),
            files.len()
        ),
        AuditEvent::SessionEnded {
            session,
            user,
            resource,
            bytes_from_client,
            bytes_to_client,
            duration_ms,
            statements,
            severed,
            closed_by_gateway,
            ..
        } => {
            let severed = severed.as_ref().map(|s| format!(", severed: {s}"));
            let closed = closed_by_gateway.as_ref().map(|s| format!(", {s}"));
            let how = severed.or(closed).unwrap_or_default();
            let statements = statements
                .map(|n| format!(", {n} statement{}", if n == 1 { "" } else { "s" }))
                .unwrap_or_default();
            format!(
                "{} ended after {} ({bytes_from_client} bytes in, {bytes_to_client} out{statements}{how})",
                session_of(session, user, resource),
                lasted(*duration_ms)
            )
        }
    }
}

/// "session s-… of alice on web-01"; records older than the owner
/// fields name the session alone.
fn session_of(session: &str, user: &Option<String>, resource: &Option<String>) -> String {
    match (user, resource) {
        (Some(user), Some(resource)) => format!("session {session} of {user} on {resource}"),
        _ => format!("session {session}"),
    }
}

/// How long a session lasted, in the unit that reads best: "850ms",
/// "4.2s", "1h5m".
fn lasted(duration_ms: u64) -> String {
    match duration_ms {
        0..1_000 => format!("{duration_ms}ms"),
        1_000..10_000 => format!("{:.1}s", duration_ms as f64 / 1_000.0),
        _ => HumanDuration::from_secs(duration_ms / 1_000).to_string(),
    }
}

pub fn describe_change(actor: Option<&str>, change: &Event) -> String {
    let by = actor.unwrap_or("gateway");
    match change {
        Event::Requested {
            id,
            requester,
            resource,
            duration_secs,
            reason,
            ticket,
            ..
        } => {
            let why = reason_suffix(reason) + &ticket_suffix(ticket);
            format!(
                "{requester} requested {resource} for {} (request {id}{why})",
                HumanDuration::from_secs(*duration_secs)
            )
        }
        Event::Approved {
            id,
            approval,
            extension,
        } => {
            let approver = match &approval.on_behalf_of {
                Some(x) => format!("{} for {x}", approval.approver),
                None => approval.approver.clone(),
            };
            let what = if *extension {
                "the extension of request"
            } else {
                "request"
            };
            format!(
                "{approver} approved {what} {id} at level {}",
                approval.level + 1
            )
        }
        Event::Granted { id, .. } => format!("request {id} fully approved"),
        Event::Denied {
            id,
            by,
            reason,
            extension,
            ..
        } => {
            let what = if *extension {
                "the extension of request"
            } else {
                "request"
            };
            format!("{by} denied {what} {id}{}", said(reason))
        }
        Event::Cancelled { id, by, why, .. } => {
            format!("{by} cancelled request {id}{}", said(why))
        }
        Event::TimedOut { id, .. } => format!("request {id} timed out"),
        Event::Escalated { id, level, to, .. } => format!(
            "request {id} escalated: level {} may now also be approved by {}",
            level + 1,
            to.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::CheckedOut {
            id,
            window_end,
            mfa_passed,
            ..
        } => {
            let mfa = if *mfa_passed { " with MFA" } else { "" };
            format!(
                "{by} checked out request {id}{mfa} until {}",
                hhmm(window_end)
            )
        }
        Event::Ended {
            id,
            reason: EndReason::CheckedIn,
            ..
        } => format!("{by} checked in request {id}"),
        Event::Ended {
            id,
            reason: EndReason::Expired,
            ..
        } => format!("access window of request {id} expired"),
        Event::Ended {
            id,
            reason: EndReason::Revoked,
            why,
            ..
        } => format!("{by} revoked request {id}{}", said(why)),
        Event::ExtensionRequested {
            id,
            duration_secs,
            reason,
            ..
        } => {
            format!(
                "{by} asked to extend request {id} by {}{}",
                HumanDuration::from_secs(*duration_secs),
                reason_suffix(reason)
            )
        }
        Event::Extended {
            id,
            window_end,
            reason,
            ..
        } => {
            let until = hhmm(window_end);
            format!(
                "request {id} extended until {until}{}",
                reason_suffix(reason)
            )
        }
        Event::PasswordReplaced { id, mfa_passed, .. } => {
            let mfa = if *mfa_passed { " with MFA" } else { "" };
            format!(
                "{by} replaced the connection password of request {id}{mfa}; the old one no longer works"
            )
        }
        Event::DelegationGranted { delegation, .. } => format!(
            "{} delegated approvals to {}",
            delegation.from, delegation.to
        ),
        Event::DelegationRevoked { from, .. } => format!("{from} revoked their delegation"),
        Event::WorkflowChanged { resource, by, .. } => {
            format!("{by} changed the workflow of {resource}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Protocol;

    fn ended(statements: Option<u64>) -> AuditEvent {
        AuditEvent::SessionEnded {
            session: "s-1".into(),
            user: Some("alice".into()),
            resource: Some("orders-prod".into()),
            bytes_from_client: 97,
            bytes_to_client: 99,
            duration_ms: 2,
            statements,
            severed: None,
            closed_by_gateway: None,
            query_log: None,
            query_log_digest: None,
        }
    }

    #[test]
    fn a_session_start_names_its_protocol_as_people_write_it() {
        for (protocol, name) in [(Protocol::Ssh, "(SSH)"), (Protocol::Postgres, "(Postgres)")] {
            let started = describe(&AuditEvent::SessionStarted {
                session: "s-1".into(),
                protocol,
                user: "alice".into(),
                resource: "web-01".into(),
                request_id: 1,
            });
            assert!(started.ends_with(name), "{started}");
        }
    }

    #[test]
    fn a_request_is_told_with_its_reason_and_ticket() {
        let requested = |reason: Option<&str>, ticket: Option<&str>| {
            describe_change(
                Some("alice"),
                &Event::Requested {
                    id: 3,
                    requester: "alice".into(),
                    resource: "web-01".into(),
                    duration_secs: 1800,
                    reason: reason.map(String::from),
                    ticket: ticket.map(String::from),
                    settings: crate::config::WorkflowSettings::default(),
                    at: chrono::Utc::now(),
                },
            )
        };
        assert_eq!(
            requested(Some("disk full"), Some("OPS-12")),
            "alice requested web-01 for 30m (request 3, reason: disk full, ticket: OPS-12)"
        );
        assert_eq!(
            requested(None, None),
            "alice requested web-01 for 30m (request 3)"
        );
    }

    #[test]
    fn a_session_says_how_long_it_lasted_in_the_unit_that_reads_best() {
        assert_eq!(lasted(2), "2ms");
        assert_eq!(lasted(999), "999ms");
        assert_eq!(lasted(4_250), "4.2s");
        assert_eq!(lasted(65_400), "1m5s");
        assert_eq!(lasted(3_900_000), "1h5m");
        assert!(describe(&ended(Some(1))).contains("ended after 2ms "));
    }

    #[test]
    fn a_session_end_counts_its_statements_in_words() {
        let one = describe(&ended(Some(1)));
        assert!(one.ends_with("(97 bytes in, 99 out, 1 statement)"), "{one}");
        let two = describe(&ended(Some(2)));
        assert!(two.ends_with(", 2 statements)"), "{two}");
        let ssh = describe(&ended(None));
        assert!(ssh.ends_with("(97 bytes in, 99 out)"), "{ssh}");
        let mut idle = ended(None);
        if let AuditEvent::SessionEnded {
            closed_by_gateway, ..
        } = &mut idle
        {
            *closed_by_gateway = Some("closed after 1h without activity".into());
        }
        let idle = describe(&idle);
        assert!(
            idle.ends_with("99 out, closed after 1h without activity)"),
            "{idle}"
        );
    }
}
