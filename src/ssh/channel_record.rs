//! What a relayed channel leaves on record: the asciicast recording of a
//! shell (and of exec channels when configured) and the file log of an
//! SFTP or legacy SCP channel, started when the channel starts to run and fed by both
//! directions of the relay.

use std::sync::Arc;

use parking_lot::Mutex;

use super::channel_use::Shared;
use super::dataplane::DataPlane;
use super::recording::Recorder;
use super::sftp::{FileLog, ScpCommand};

/// Starts recording a pty session once it runs a shell or command (and a
/// shell without a pty), and the file log of an SFTP channel. False when
/// what must be recorded cannot be.
pub(super) fn start_records(
    plane: &DataPlane,
    shared: &Shared,
    kind: &'static str,
    command: Option<String>,
    config: &crate::config::Config,
) -> bool {
    match start_recording(plane, shared, kind, command, config) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(session = plane.session_id(), error = %e, "cannot record a channel; it is refused");
            false
        }
    }
}

fn start_recording(
    plane: &DataPlane,
    shared: &Shared,
    kind: &'static str,
    command: Option<String>,
    config: &crate::config::Config,
) -> std::io::Result<()> {
    let mut used = shared.lock();
    used.kind = Some(kind);
    used.command = command;
    let name = plane.next_recording_name();
    let scp = (kind == "exec")
        .then(|| used.command.as_deref().and_then(ScpCommand::parse))
        .flatten();
    let file_log = match (kind, used.command.as_deref(), scp) {
        ("subsystem", Some("sftp"), _) => Some(FileLog::sftp(&config.recordings_dir, &name)?),
        (_, _, Some(scp)) => Some(FileLog::scp(&config.recordings_dir, &name, scp)?),
        _ => None,
    };
    if let Some(log) = file_log {
        plane
            .gateway
            .sessions()
            .add_recording(plane.session_id(), log.live());
        used.file_log = Some(Arc::new(Mutex::new(log)));
    }
    // A shell without a pty (`ssh -T`) is as interactive as one with a
    // pty; exec channels without one also carry pipelines (rsync, git), so
    // they are recorded only so far (record_exec_bytes), and not at all
    // when their file log says what they moved (legacy scp).
    let (term, cols, rows) = match used.pty.clone() {
        Some(pty) => pty,
        None if kind == "shell" || (recorded_exec(kind, config) && used.file_log.is_none()) => {
            ("dumb".to_string(), 80, 24)
        }
        None => return Ok(()),
    };
    let limit = (used.pty.is_none() && kind == "exec").then_some(config.record_exec_bytes);
    let mut recorder = Recorder::create(
        &config.recordings_dir,
        &name,
        cols,
        rows,
        &term,
        config.record_input,
    )?;
    if let Some(bytes) = limit {
        recorder = recorder.limited_to(bytes);
    }
    plane
        .gateway
        .sessions()
        .add_recording(plane.session_id(), recorder.live());
    used.recorder = Some(Arc::new(Mutex::new(recorder)));
    Ok(())
}

/// Exec channels without a pty are recorded (up to `record_exec_bytes`)
/// unless that is zero.
fn recorded_exec(kind: &str, config: &crate::config::Config) -> bool {
    kind == "exec" && config.record_exec_bytes > 0
}

/// Passes relayed bytes to the channel's recording and file log, if it
/// has them; false once either failed to reach its file.
pub(super) fn keep(
    shared: &Shared,
    record: impl FnOnce(&mut Recorder),
    log_files: impl FnOnce(&mut FileLog),
) -> bool {
    let (recorder, file_log) = {
        let used = shared.lock();
        (used.recorder.clone(), used.file_log.clone())
    };
    let mut kept = true;
    if let Some(recorder) = recorder {
        let mut recorder = recorder.lock();
        record(&mut recorder);
        kept &= !recorder.failed();
    }
    if let Some(log) = file_log {
        let mut log = log.lock();
        log_files(&mut log);
        kept &= !log.failed();
    }
    kept
}
