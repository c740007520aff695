//! One session channel relayed between the client and the target.
//!
//! Two loops run side by side, one per direction, each owning the write
//! half it sends on. Writes wait for the receiver's SSH window.
//!
//! Each direction reads from a [`flow::Inbox`]; see `flow` for how a slow
//! reader holds back only its own channel's sender.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use parking_lot::Mutex;
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, client, server};

/// How long the target's EOF is held back waiting for its exit status.
/// A connection-sharing OpenSSH client closes a channel as soon as both
/// directions are at EOF, and russh answers a close at once (sshd holds its
/// close back until the exit status is out), so an EOF passed on early can
/// lose the exit status. Commands exit right after closing their output;
/// the bound only matters for one that closes its output and runs on.
const EOF_HOLD: std::time::Duration = std::time::Duration::from_secs(3);

use crate::audit::AuditEvent;

use super::dataplane::DataPlane;
use super::flow::{Inbox, SessionMsg, drain};
use super::recording::Recorder;
use super::sftp::FileLog;

/// What the client asked the channel to run.
#[derive(Default)]
struct ChannelUse {
    kind: Option<&'static str>,
    command: Option<String>,
    pty: Option<(String, u32, u32)>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    file_log: Option<Arc<Mutex<FileLog>>>,
}

type Shared = Arc<Mutex<ChannelUse>>;

/// Opens the target's session channel before answering the client's
/// channel open, then relays. A channel the target refuses (sshd's
/// MaxSessions on the shared upstream connection) is refused to the client
/// with the target's reason, so the client reports it itself instead of
/// seeing a channel that opens and dies.
pub async fn open_and_relay(
    plane: Arc<DataPlane>,
    client: Channel<server::Msg>,
    reply: server::ChannelOpenHandle,
    server: server::Handle,
) {
    let handle = match plane.upstream().await {
        Ok(handle) => handle,
        Err(error) => {
            // Unreachable or refusing target: accept, so the user reads why.
            reply.accept().await;
            return explain_and_close(client, &error.to_string()).await;
        }
    };
    match handle.channel_open_session().await {
        Ok(upstream) => {
            reply.accept().await;
            relay(plane, client, upstream, server).await;
        }
        Err(russh::Error::ChannelOpenFailure(reason)) => reply.reject(reason).await,
        Err(error) => {
            reply.accept().await;
            let message = format!("cannot open a session on {}: {error}", plane.resource.name);
            explain_and_close(client, &message).await;
        }
    }
}

async fn explain_and_close(client: Channel<server::Msg>, message: &str) {
    let _ = client
        .extended_data_bytes(1, Bytes::from(format!("jitgate: {message}\r\n")))
        .await;
    let _ = client.exit_status(1).await;
    let _ = client.close().await;
}

async fn relay(
    plane: Arc<DataPlane>,
    client: Channel<server::Msg>,
    upstream: Channel<client::Msg>,
    server: server::Handle,
) {
    let client_id = client.id();
    let (client_rx, client_tx) = client.split();
    let (upstream_rx, upstream_tx) = upstream.split();
    let (client_tx, upstream_tx) = (Arc::new(client_tx), Arc::new(upstream_tx));
    let shared: Shared = Arc::default();
    let inbound = client_to_target(
        &plane,
        drain(client_rx, client_tx.clone()),
        upstream_tx.clone(),
        shared.clone(),
    );
    let outbound = target_to_client(
        &plane,
        drain(upstream_rx, upstream_tx),
        client_tx,
        client_id,
        server,
        shared.clone(),
    );
    let ((bytes_in, _), (bytes_out, exit_status)) = tokio::join!(inbound, outbound);
    let used = shared.lock();
    let (recording, recording_digest) = match &used.recorder {
        Some(recorder) => {
            let recorder = recorder.lock();
            (
                Some(recorder.path().display().to_string()),
                Some(recorder.digest()),
            )
        }
        None => (None, None),
    };
    let (file_log, file_log_digest) = match &used.file_log {
        Some(log) => {
            let mut log = log.lock();
            let digest = log.finish();
            (Some(log.path().display().to_string()), Some(digest))
        }
        None => (None, None),
    };
    audit_later(
        &plane,
        AuditEvent::ChannelEnded {
            session: plane.session_id().to_string(),
            kind: used.kind.unwrap_or("none").to_string(),
            command: used.command.clone(),
            exit_status,
            bytes_from_client: bytes_in,
            bytes_to_client: bytes_out,
            recording,
            recording_digest,
            file_log,
            file_log_digest,
        },
    );
}

pub fn env_allowed(allow: &[String], name: &str) -> bool {
    allow.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    })
}

/// Client → target: requests, stdin, EOF. Returns bytes relayed.
async fn client_to_target(
    plane: &DataPlane,
    mut from: Inbox<server::Msg>,
    to: Arc<ChannelWriteHalf<client::Msg>>,
    shared: Shared,
) -> (u64, ()) {
    let mut bytes = 0u64;
    let config = plane.gateway.config();
    loop {
        let message = tokio::select! {
            message = from.next() => message,
            () = plane.ends.cancelled() => break,
        };
        let Some((message, _budget)) = message else {
            break;
        };
        let sent = match message {
            ChannelMsg::Data { data } => {
                count(&mut bytes, &plane.bytes_from_client, &data);
                record(&shared, |r| r.input(&data));
                log_files(&shared, |log| log.client_sent(&data));
                passed_on(&from, to.data_bytes(data.clone()).await, &data).await
            }
            ChannelMsg::Eof => to.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                let (cols, rows) = (col_width.clamp(1, 10_000), row_height.clamp(1, 10_000));
                shared.lock().pty = Some((term.clone(), cols, rows));
                to.request_pty(
                    false,
                    &term,
                    cols,
                    rows,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if env_allowed(&config.env_allow, &variable_name) => {
                to.set_env(false, variable_name, variable_value).await
            }
            ChannelMsg::RequestShell { .. } => {
                start(plane, &shared, "shell", None, &config);
                to.request_shell(true).await
            }
            ChannelMsg::Exec { command, .. } => {
                start(
                    plane,
                    &shared,
                    "exec",
                    Some(String::from_utf8_lossy(&command).into_owned()),
                    &config,
                );
                to.exec(true, command).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                start(plane, &shared, "subsystem", Some(name.clone()), &config);
                to.request_subsystem(true, &name).await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                record(&shared, |r| r.resize(col_width, row_height));
                to.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => to.signal(signal).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = to.eof().await;
    let _ = to.close().await;
    (bytes, ())
}

/// Starts recording a pty session once it runs a shell or command (and a
/// shell without a pty), and the file log of an SFTP channel.
fn start(
    plane: &DataPlane,
    shared: &Shared,
    kind: &'static str,
    command: Option<String>,
    config: &crate::config::Config,
) {
    let mut used = shared.lock();
    used.kind = Some(kind);
    used.command = command;
    let name = format!("{}-{}", plane.session_id(), rand::random::<u16>());
    if kind == "subsystem" && used.command.as_deref() == Some("sftp") {
        match FileLog::create(&config.recordings_dir, &name) {
            Ok(log) => {
                plane
                    .gateway
                    .sessions()
                    .add_recording(plane.session_id(), log.live());
                used.file_log = Some(Arc::new(Mutex::new(log)));
            }
            Err(e) => tracing::error!(error = %e, "cannot create an SFTP file log"),
        }
    }
    // A shell without a pty (`ssh -T`) is as interactive as one with a
    // pty; exec channels without one carry pipelines (rsync, git), so they
    // are recorded only when configured, and only so far.
    let (term, cols, rows) = match used.pty.clone() {
        Some(pty) => pty,
        None if kind == "shell" || recorded_exec(kind, config) => ("dumb".to_string(), 80, 24),
        None => return,
    };
    let limit = (used.pty.is_none() && kind == "exec").then_some(config.record_exec_bytes);
    let created = Recorder::create(
        &config.recordings_dir,
        &name,
        cols,
        rows,
        &term,
        config.record_input,
    )
    .map(|recorder| match limit {
        Some(bytes) => recorder.limited_to(bytes),
        None => recorder,
    });
    match created {
        Ok(recorder) => {
            plane
                .gateway
                .sessions()
                .add_recording(plane.session_id(), recorder.live());
            used.recorder = Some(Arc::new(Mutex::new(recorder)));
        }
        Err(e) => tracing::error!(error = %e, "cannot create a session recording"),
    }
}

/// Exec channels without a pty are recorded (up to `record_exec_bytes`)
/// only when that is above zero.
fn recorded_exec(kind: &str, config: &crate::config::Config) -> bool {
    kind == "exec" && config.record_exec_bytes > 0
}

fn log_files(shared: &Shared, write: impl FnOnce(&mut FileLog)) {
    let log = shared.lock().file_log.clone();
    if let Some(log) = log {
        write(&mut log.lock());
    }
}

fn record(shared: &Shared, write: impl FnOnce(&mut Recorder)) {
    let recorder = shared.lock().recorder.clone();
    if let Some(recorder) = recorder {
        write(&mut recorder.lock());
    }
}

/// Target → client: output, exit status, EOF, close; pty warnings before the
/// window ends and the notice when it has. Returns bytes and exit status.
async fn target_to_client(
    plane: &DataPlane,
    mut from: Inbox<client::Msg>,
    to: Arc<ChannelWriteHalf<server::Msg>>,
    client_id: ChannelId,
    server: server::Handle,
    shared: Shared,
) -> (u64, Option<u32>) {
    let mut bytes = 0u64;
    let mut exit_status = None;
    let mut exited = false;
    let mut held_eof: Option<tokio::time::Instant> = None;
    let mut warnings = pending_warnings(plane);
    loop {
        let message = tokio::select! {
            message = from.next() => message,
            () = plane.ends.cancelled() => break,
            () = sleep_until_or_never(warnings.last().copied()) => {
                warnings.pop();
                warn_of_the_end(plane, &shared, &to).await;
                continue;
            }
            () = sleep_until_or_never(held_eof) => {
                held_eof = None;
                if to.eof().await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some((message, _budget)) = message else {
            break;
        };
        let sent = match message {
            ChannelMsg::Data { data } => {
                count(&mut bytes, &plane.bytes_to_client, &data);
                record(&shared, |r| r.output(&data));
                log_files(&shared, |log| log.target_sent(&data));
                passed_on(&from, to.data_bytes(data.clone()).await, &data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                count(&mut bytes, &plane.bytes_to_client, &data);
                let sent = to.extended_data_bytes(ext, data.clone()).await;
                passed_on(&from, sent, &data).await
            }
            ChannelMsg::Eof if exited => to.eof().await,
            ChannelMsg::Eof => {
                held_eof = Some(tokio::time::Instant::now() + EOF_HOLD);
                Ok(())
            }
            ChannelMsg::ExitStatus {
                exit_status: status,
            } => {
                exit_status = Some(status);
                exited = true;
                let sent = to.exit_status(status).await;
                release_eof(&mut held_eof, &to, sent).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                exited = true;
                let sent = server
                    .exit_signal_request(
                        client_id,
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    )
                    .await
                    .map_err(|_| russh::Error::SendError);
                release_eof(&mut held_eof, &to, sent).await
            }
            ChannelMsg::Close => break,
            // Only shell, exec and subsystem requests want a reply: the
            // target refused what the client asked to run (an unknown
            // subsystem, say). The client was told "success" already, so
            // it learns it this way instead of waiting forever.
            ChannelMsg::Failure => {
                let message = format!("jitgate: {} refused the request\r\n", plane.resource.name);
                let _ = to.extended_data_bytes(1, Bytes::from(message)).await;
                let _ = to.exit_status(1).await;
                break;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    // However the loop ended, a severed pty user is told why. (The target
    // side may have closed first, racing the cancellation.)
    if plane.ends.is_cancelled() {
        if shared.lock().pty.is_some() {
            let notice = format!(
                "\r\n[jitgate] {} — session closed\r\n",
                plane.ended_message()
            );
            let sent = to.data_bytes(Bytes::from(notice)).await;
            tracing::debug!(ok = sent.is_ok(), "sever notice written");
        }
        let _ = to.exit_status(255).await;
    }
    let _ = release_eof(&mut held_eof, &to, Ok(())).await;
    let _ = to.close().await;
    (bytes, exit_status)
}

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Passes on a held-back EOF once the exit status went out before it.
async fn release_eof(
    held_eof: &mut Option<tokio::time::Instant>,
    to: &ChannelWriteHalf<server::Msg>,
    sent: Result<(), russh::Error>,
) -> Result<(), russh::Error> {
    sent?;
    match held_eof.take() {
        Some(_) => to.eof().await,
        None => Ok(()),
    }
}

/// Tells a pty user that the window is about to end.
async fn warn_of_the_end(plane: &DataPlane, shared: &Shared, to: &ChannelWriteHalf<server::Msg>) {
    if shared.lock().pty.is_none() {
        return;
    }
    let left = plane
        .lease
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let notice = format!(
        "\r\n[jitgate] access to {} ends in {} (at {}): extend it with `extend {} --for 15m`\r\n",
        plane.resource.name,
        crate::config::HumanDuration::from_secs(left.as_secs().max(1)),
        plane.lease.window_end.format("%H:%M UTC"),
        plane.lease.request_id
    );
    let _ = to.data_bytes(Bytes::from(notice)).await;
}

/// Warning instants still ahead, latest first (so `pop` yields the next).
fn pending_warnings(plane: &DataPlane) -> Vec<tokio::time::Instant> {
    let now = tokio::time::Instant::now();
    let mut times: Vec<tokio::time::Instant> = plane
        .gateway
        .config()
        .warn_before
        .iter()
        .filter_map(|before| plane.lease.deadline.checked_sub(*before))
        .filter(|at| *at > now)
        .collect();
    times.sort_by(|a, b| b.cmp(a));
    times
}

/// Once `data` was written on, gives its sender the window back.
pub(super) async fn passed_on<R: SessionMsg>(
    from: &Inbox<R>,
    sent: Result<(), russh::Error>,
    data: &Bytes,
) -> Result<(), russh::Error> {
    sent?;
    from.passed_on(data).await;
    Ok(())
}

/// Audits without holding up the relay's end (the write is fsynced), so a
/// severed connection closes promptly.
pub(super) fn audit_later(plane: &DataPlane, event: AuditEvent) {
    let gateway = plane.gateway.clone();
    tokio::task::spawn_blocking(move || gateway.audit(event));
}

/// Adds a relayed chunk to the channel's and the connection's byte counts.
fn count(channel: &mut u64, connection: &std::sync::atomic::AtomicU64, data: &Bytes) {
    *channel += data.len() as u64;
    connection.fetch_add(data.len() as u64, Ordering::Relaxed);
}
