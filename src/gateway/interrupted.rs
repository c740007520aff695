//! Sessions the last run never ended: the gateway was killed or crashed
//! while they ran, so no `session_ended` record closes them or vouches for
//! their recordings and query logs. At the next start each is audited as
//! `session_interrupted`, with the digests of the files it left as they
//! are then: the log shows the session did not end cleanly, and the chain
//! vouches for what it recorded from then on.

use std::collections::HashSet;
use std::path::Path;

use crate::audit::{AuditEvent, EvidenceFile, EvidenceKind, digest_file, records_after};
use crate::config::Config;

/// Records read at a time, walking back from the newest.
const WINDOW: u64 = 4096;
/// How far back the walk goes at most: a run that wrote more records than
/// this since its start has sessions older than that left unreported
/// rather than a start delayed by minutes.
const FURTHEST: u64 = 2_000_000;

/// A session whose start is on record and whose end is not.
#[derive(Debug, PartialEq)]
pub struct Unended {
    pub session: String,
    pub user: String,
    pub resource: String,
}

/// Sessions started and never ended since the gateway last started or
/// stopped cleanly (at a clean stop every session is ended first), newest
/// first. Walks back from `head` only as far as that start or stop.
pub fn unended_sessions(log: &Path, head: u64) -> std::io::Result<Vec<Unended>> {
    unended_in_windows(log, head, WINDOW)
}

fn unended_in_windows(log: &Path, head: u64, window: u64) -> std::io::Result<Vec<Unended>> {
    let mut ended = HashSet::new();
    let mut unended = Vec::new();
    let mut upto = head;
    let furthest = head.saturating_sub(FURTHEST);
    while upto > 0 {
        if upto <= furthest {
            tracing::warn!(
                records = FURTHEST,
                "looked back this far for sessions the last run left open; older ones are not reported"
            );
            break;
        }
        let from = upto.saturating_sub(window);
        let records = records_after(log, from, (upto - from) as usize)?;
        for record in records.iter().rev() {
            match &record.event {
                AuditEvent::GatewayStarted { .. } | AuditEvent::GatewayStopped => {
                    return Ok(unended);
                }
                AuditEvent::SessionEnded { session, .. } => {
                    ended.insert(session.clone());
                }
                AuditEvent::SessionStarted {
                    session,
                    user,
                    resource,
                    ..
                } if !ended.remove(session) => {
                    unended.push(Unended {
                        session: session.clone(),
                        user: user.clone(),
                        resource: resource.clone(),
                    });
                }
                _ => {}
            }
        }
        upto = from;
    }
    Ok(unended)
}

/// The `session_interrupted` record of each of `sessions`, with the
/// recordings (`SESSION-N.cast`), file logs (`SESSION-N.sftp.jsonl`,
/// `SESSION-N.scp.jsonl`)
/// and query log (`SESSION.jsonl`) it left.
pub fn interruption_records(config: &Config, sessions: &[Unended]) -> Vec<AuditEvent> {
    if sessions.is_empty() {
        // The usual start: no directory listing.
        return Vec::new();
    }
    let recordings: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&config.recordings_dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
                .collect()
        })
        .unwrap_or_default();
    sessions
        .iter()
        .map(|unended| {
            let session = &unended.session;
            let prefix = format!("{session}-");
            let mut found: Vec<(EvidenceKind, &Path)> = recordings
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .filter_map(|(name, path)| {
                    let kind = if name.ends_with(".sftp.jsonl") || name.ends_with(".scp.jsonl") {
                        EvidenceKind::FileLog
                    } else if name.ends_with(".cast") {
                        EvidenceKind::Recording
                    } else {
                        return None;
                    };
                    Some((kind, path.as_path()))
                })
                .collect();
            let query_log = config
                .postgres
                .query_log_dir
                .join(format!("{session}.jsonl"));
            found.push((EvidenceKind::QueryLog, &query_log));
            AuditEvent::SessionInterrupted {
                session: session.clone(),
                user: Some(unended.user.clone()),
                resource: Some(unended.resource.clone()),
                files: found
                    .into_iter()
                    .filter_map(|(kind, path)| evidence_file(kind, path))
                    .collect(),
            }
        })
        .collect()
}

fn evidence_file(kind: EvidenceKind, path: &Path) -> Option<EvidenceFile> {
    match digest_file(path) {
        Ok(digest) => Some(EvidenceFile {
            kind,
            path: path.display().to_string(),
            digest,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot digest an interrupted session's file");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Protocol};

    fn started(session: &str) -> AuditEvent {
        AuditEvent::SessionStarted {
            session: session.into(),
            protocol: Protocol::Ssh,
            user: "alice".into(),
            resource: "web-01".into(),
            request_id: 1,
        }
    }

    fn ended(session: &str) -> AuditEvent {
        AuditEvent::SessionEnded {
            session: session.into(),
            user: None,
            resource: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration_ms: 0,
            statements: None,
            severed: None,
            closed_by_gateway: None,
            query_log: None,
            query_log_digest: None,
        }
    }

    #[test]
    fn sessions_left_open_by_the_last_run_are_found_across_windows_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Small files: the walk crosses rotations.
        let (mut log, _) = AuditLog::open(&path, 600).unwrap();
        let version = || AuditEvent::GatewayStarted {
            version: "0".into(),
        };
        // An earlier run that stopped cleanly, then one that was killed.
        for event in [version(), started("s-old"), AuditEvent::GatewayStopped] {
            log.append(event).unwrap();
        }
        for event in [version(), started("s-a"), started("s-b"), started("s-c")] {
            log.append(event).unwrap();
        }
        for event in [ended("s-a"), AuditEvent::GatewayStopped] {
            log.append(event.clone()).unwrap();
        }
        let stopped = log.head().unwrap().seq;
        log.append(started("s-d")).unwrap();
        log.append(ended("s-c")).unwrap();
        let head = log.head().unwrap().seq;
        assert!(crate::audit::chain_files(&path).unwrap().len() > 1);

        // Killed after s-d started: only it is open (the walk stops at the
        // clean stop before it).
        let sessions = |head, window| -> Vec<String> {
            unended_in_windows(&path, head, window)
                .unwrap()
                .into_iter()
                .map(|u| u.session)
                .collect()
        };
        for window in [1, 2, 3, 100] {
            assert_eq!(sessions(head, window), ["s-d"], "window {window}");
        }
        assert_eq!(
            unended_in_windows(&path, head, 2).unwrap(),
            [Unended {
                session: "s-d".into(),
                user: "alice".into(),
                resource: "web-01".into(),
            }]
        );
        // Had it been killed before the clean stop: s-b is open, s-c too
        // (its end came later).
        assert_eq!(sessions(stopped - 1, 2), ["s-c", "s-b"]);
        assert!(unended_in_windows(&path, stopped, 2).unwrap().is_empty());
    }
}
