//! `replay SESSION`: what a finished session left — its SSH pty output,
//! its SFTP file operations, its Postgres statements — shown only while each file is still what
//! the audit chain vouches for, so auditors need no shell on the gateway
//! host and never read a recording changed since.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{EvidenceKind, Vouched, chain_files, read_vouched, vouched_for_session};
use crate::gateway::Gateway;
use crate::sessions::RecordingKind;

use super::stream::{render_event, require_audit};
use super::{Caller, ControlError, EXIT_OK, Terminal, fail};

/// The largest file replayed here; bigger ones are read on the host.
const REPLAY_LIMIT: u64 = 256 * 1024 * 1024;

pub async fn replay<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    session: &str,
    json: bool,
) -> u32 {
    if let Err(error) = require_audit(gateway, caller) {
        return fail(term, json, &error).await;
    }
    let (log, _) = gateway.audit_position();
    let wanted = session.to_string();
    let found =
        tokio::task::spawn_blocking(move || vouched_for_session(&chain_files(&log)?, &wanted))
            .await
            .map_err(std::io::Error::other)
            .and_then(|found| found);
    let vouched = match found {
        Ok(vouched) if vouched.is_empty() => {
            let error = ControlError::Refused(nothing_recorded(gateway, session));
            return fail(term, json, &error).await;
        }
        Ok(vouched) => vouched,
        Err(e) => {
            let error = ControlError::Refused(format!("cannot read the audit log: {e}"));
            return fail(term, json, &error).await;
        }
    };
    let config = gateway.config();
    let dirs = [
        config.recordings_dir.clone(),
        config.postgres.query_log_dir.clone(),
    ];
    for file in vouched {
        if !inside_any(&file.path, &dirs) {
            let error = ControlError::Refused(format!(
                "{} is outside the recordings and query log directories: not shown",
                file.path.display()
            ));
            return fail(term, json, &error).await;
        }
        if let Err(error) = show(term, file, json).await {
            return fail(term, json, &ControlError::Refused(error)).await;
        }
    }
    EXIT_OK
}

/// Whether `path` lies in one of `dirs`: a record naming any other file
/// (a forged or mistaken one) never has the gateway show that file.
fn inside_any(path: &Path, dirs: &[PathBuf]) -> bool {
    let Ok(path) = path.canonicalize() else {
        // Gone: reading it reports that.
        return true;
    };
    dirs.iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .any(|dir| path.starts_with(dir))
}

fn nothing_recorded(gateway: &Gateway, session: &str) -> String {
    if gateway.sessions().recording(session).is_some() {
        format!("session {session} is still live: `follow {session}` shows it")
    } else {
        format!(
            "no recording, file log or query log of session {session:?} in the audit log (exec sessions have none: see `audit tail`)"
        )
    }
}

/// Writes one file: as rendered for a terminal, or its own lines with
/// `--json` (asciicast v2, query-log and file-log JSON lines).
async fn show<T: Terminal>(term: &mut T, file: Vouched, json: bool) -> Result<(), String> {
    let kind = file.kind;
    let bytes = tokio::task::spawn_blocking(move || read_vouched(&file, REPLAY_LIMIT))
        .await
        .map_err(|e| e.to_string())??;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if kind == EvidenceKind::Recording && !json {
        // The header names the terminal, not output.
        lines.next();
    }
    for line in lines {
        if json {
            term.out(&format!("{line}\n")).await;
        } else if let Some(shown) = render(kind, line) {
            term.out(&shown).await;
        }
    }
    Ok(())
}

fn render(kind: EvidenceKind, line: &str) -> Option<String> {
    let kind = match kind {
        EvidenceKind::Recording => RecordingKind::Asciicast,
        EvidenceKind::QueryLog => RecordingKind::QueryLog,
        EvidenceKind::FileLog => RecordingKind::FileLog,
    };
    render_event(kind, line)
}
