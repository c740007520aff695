//! One session channel relayed between the client and the target.
//!
//! Two loops run side by side, one per direction, each owning the write
//! half it sends on. Writes wait for the receiver's SSH window.
//!
//! Each direction reads from a [`flow::Inbox`]; see `flow` for how a slow
//! reader holds back only its own channel's sender.

use std::sync::Arc;

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

/// What the client reads when its channel's recording or file log cannot
/// be created: what it asked for never runs.
const CANNOT_RECORD: &str = "jitgate: this session cannot be recorded, so it does not run; the administrators have the details\r\n";
/// ... or stops taking writes: the channel ends there.
const RECORDING_FAILED: &str = "jitgate: this session's recording cannot be written, so it is ended; the administrators have the details\r\n";

use crate::audit::AuditEvent;

use super::channel_record::{keep, start_records};
use super::channel_use::{ChannelUse, Shared};
use super::dataplane::DataPlane;
use super::end_warnings::EndWarnings;
use super::flow::{Inbox, SessionMsg, both_directions, drain, notice, unless_stopped};

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
    let text = Bytes::from(format!("jitgate: {message}\r\n"));
    let _ = notice(client.extended_data_bytes(1, text)).await;
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
    let shared: Shared = Arc::new(Mutex::new(ChannelUse {
        stopped: plane.ends.child_token(),
        ..ChannelUse::default()
    }));
    plane.channel_opened(&shared);
    let stopped = shared.lock().stopped.clone();
    let inbound = client_to_target(
        &plane,
        drain(client_rx, client_tx.clone()),
        (upstream_tx.clone(), client_tx.clone()),
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
    let ((bytes_in, _), (bytes_out, exit_status)) =
        both_directions(inbound, outbound, &stopped).await;
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
            user: Some(plane.lease.user.clone()),
            resource: Some(plane.lease.resource.clone()),
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

/// Client → target: requests, stdin, EOF. Returns bytes relayed. What
/// cannot be recorded does not run: the client is told so instead.
async fn client_to_target(
    plane: &DataPlane,
    mut from: Inbox<server::Msg>,
    (to, client): (
        Arc<ChannelWriteHalf<client::Msg>>,
        Arc<ChannelWriteHalf<server::Msg>>,
    ),
    shared: Shared,
) -> (u64, ()) {
    let mut bytes = 0u64;
    let config = plane.gateway.config();
    let mut stop: Option<&str> = None;
    let stopped = shared.lock().stopped.clone();
    loop {
        let message = tokio::select! {
            message = from.next() => message,
            () = plane.ends.cancelled() => break,
            () = stopped.cancelled() => break,
        };
        let Some((message, _budget)) = message else {
            break;
        };
        let sent = match message {
            ChannelMsg::Data { data } => {
                plane.count_from_client(&mut bytes, data.len());
                if !keep(&shared, |r| r.input(&data), |log| log.client_sent(&data)) {
                    stop = Some(RECORDING_FAILED);
                    break;
                }
                let sent = unless_stopped(&stopped, to.data_bytes(data.clone())).await;
                passed_on(&from, sent, &data).await
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
                if !start_records(plane, &shared, "shell", None, &config) {
                    stop = Some(CANNOT_RECORD);
                    break;
                }
                to.request_shell(true).await
            }
            ChannelMsg::Exec { command, .. } => {
                let text = String::from_utf8_lossy(&command).into_owned();
                if !start_records(plane, &shared, "exec", Some(text), &config) {
                    stop = Some(CANNOT_RECORD);
                    break;
                }
                {
                    let mut used = shared.lock();
                    if used.pty.is_none() {
                        used.running = Some(plane.idle_clock.command_running());
                    }
                }
                to.exec(true, command).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                if !start_records(plane, &shared, "subsystem", Some(name.clone()), &config) {
                    stop = Some(CANNOT_RECORD);
                    break;
                }
                to.request_subsystem(true, &name).await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                keep(&shared, |r| r.resize(col_width, row_height), |_| {});
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
    if let Some(message) = stop {
        stop_channel(&client, &shared, message).await;
    }
    let _ = to.eof().await;
    let _ = to.close().await;
    (bytes, ())
}

/// Tells the client why the gateway stops its channel, and stops both
/// directions.
async fn stop_channel(
    client: &ChannelWriteHalf<server::Msg>,
    shared: &Shared,
    message: &'static str,
) {
    let _ = notice(client.extended_data_bytes(1, Bytes::from(message))).await;
    let _ = client.exit_status(1).await;
    shared.lock().stopped.cancel();
}

/// Target → client: output, exit status, EOF, close; warnings before the
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
    let mut target_eof = false;
    let mut warnings = EndWarnings::new(plane);
    let stopped = shared.lock().stopped.clone();
    loop {
        let message = tokio::select! {
            message = from.next() => message,
            () = plane.ends.cancelled() => break,
            () = stopped.cancelled() => break,
            () = sleep_until_or_never(warnings.next_at()) => {
                if let Some(warning) = warnings.fire(plane) {
                    let pty = shared.lock().pty.is_some();
                    // Nothing may follow the end of the target's output.
                    if pty || !(target_eof || exited) {
                        warn(&to, pty, &warning).await;
                    }
                }
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
                plane.count_to_client(&mut bytes, data.len());
                if !keep(&shared, |r| r.output(&data), |log| log.target_sent(&data)) {
                    stop_channel(&to, &shared, RECORDING_FAILED).await;
                    break;
                }
                let sent = unless_stopped(&stopped, to.data_bytes(data.clone())).await;
                passed_on(&from, sent, &data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                plane.count_to_client(&mut bytes, data.len());
                let written = to.extended_data_bytes(ext, data.clone());
                let sent = unless_stopped(&stopped, written).await;
                passed_on(&from, sent, &data).await
            }
            ChannelMsg::Eof if exited => {
                target_eof = true;
                to.eof().await
            }
            ChannelMsg::Eof => {
                target_eof = true;
                held_eof = Some(tokio::time::Instant::now() + EOF_HOLD);
                Ok(())
            }
            ChannelMsg::ExitStatus {
                exit_status: status,
            } => {
                exit_status = Some(status);
                exited = true;
                shared.lock().running = None;
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
                shared.lock().running = None;
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
    // However the loop ended, a severed user is told why: on the terminal
    // of a pty, on stderr otherwise (stdout may carry scp's or rsync's
    // protocol). The target side may have closed first, racing the
    // cancellation.
    if plane.ends.is_cancelled() {
        let sent = if shared.lock().pty.is_some() {
            let text = format!(
                "\r\n[jitgate] {} — session closed\r\n",
                plane.ended_message()
            );
            notice(to.data_bytes(Bytes::from(text))).await
        } else {
            let text = format!("jitgate: {} — session closed\n", plane.ended_message());
            notice(to.extended_data_bytes(1, Bytes::from(text))).await
        };
        tracing::debug!(ok = sent.is_ok(), "sever notice written");
        let _ = to.exit_status(255).await;
    }
    let _ = release_eof(&mut held_eof, &to, Ok(())).await;
    let _ = to.close().await;
    (bytes, exit_status)
}

/// Tells the user their window is about to end: on the terminal of a pty,
/// on stderr otherwise, where ssh shows it whatever runs over the channel
/// (rsync, git, sftp), while stdout carries the channel's own protocol.
async fn warn(to: &ChannelWriteHalf<server::Msg>, pty: bool, warning: &str) {
    let sent = if pty {
        let text = format!("\r\n[jitgate] {warning}\r\n");
        notice(to.data_bytes(Bytes::from(text))).await
    } else {
        let text = format!("jitgate: {warning}\n");
        notice(to.extended_data_bytes(1, Bytes::from(text))).await
    };
    tracing::debug!(ok = sent.is_ok(), "end warning written");
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
