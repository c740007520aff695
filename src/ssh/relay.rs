//! One session channel relayed between the client and the target.
//!
//! Two loops run side by side, one per direction (`inbound`: client →
//! target, `outbound`: target → client), each owning the write half it
//! sends on. Writes wait for the receiver's SSH window.
//!
//! Each direction reads from a [`flow::Inbox`]; see `flow` for how a slow
//! reader holds back only its own channel's sender.

mod inbound;
mod outbound;

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use russh::{Channel, ChannelWriteHalf, client, server};

/// What the client reads when its channel's recording or file log cannot
/// be created: what it asked for never runs.
const CANNOT_RECORD: &str = "jitgate: this session cannot be recorded, so it does not run; the administrators have the details\r\n";
/// ... or stops taking writes: the channel ends there.
const RECORDING_FAILED: &str = "jitgate: this session's recording cannot be written, so it is ended; the administrators have the details\r\n";

use crate::audit::AuditEvent;

use super::channel_use::{ChannelUse, Shared};
use super::dataplane::DataPlane;
use super::flow::{Inbox, SessionMsg, both_directions, drain, notice};
use inbound::Inbound;
use outbound::Outbound;

/// What a direction does after a message: go on, or end the channel
/// (telling the client why, when the gateway ends it).
enum Next {
    Continue,
    Stop(Option<&'static str>),
}

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
    let inbound = Inbound::new(
        &plane,
        upstream_tx.clone(),
        client_tx.clone(),
        shared.clone(),
    )
    .run(drain(client_rx, client_tx.clone()));
    let outbound = Outbound::new(&plane, client_tx, client_id, server, shared.clone())
        .run(drain(upstream_rx, upstream_tx));
    let ((bytes_in, _), (bytes_out, exit_status)) =
        both_directions(inbound, outbound, &stopped).await;
    let ended = channel_ended(&plane, &shared.lock(), (bytes_in, bytes_out), exit_status);
    audit_later(&plane, ended);
}

/// The record of a channel's end: what it ran, its bytes each way and
/// exit status, and the recording or file log it left with their digests.
fn channel_ended(
    plane: &DataPlane,
    used: &ChannelUse,
    (bytes_from_client, bytes_to_client): (u64, u64),
    exit_status: Option<u32>,
) -> AuditEvent {
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
    AuditEvent::ChannelEnded {
        session: plane.session_id().to_string(),
        user: Some(plane.lease.user.clone()),
        resource: Some(plane.lease.resource.clone()),
        kind: used.kind.unwrap_or("none").to_string(),
        command: used.command.clone(),
        exit_status,
        bytes_from_client,
        bytes_to_client,
        recording,
        recording_digest,
        file_log,
        file_log_digest,
    }
}

pub fn env_allowed(allow: &[String], name: &str) -> bool {
    allow.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    })
}

/// Whether a direction goes on after `next`; a channel the gateway stops
/// is explained to its client first.
async fn goes_on(
    next: Result<Next, russh::Error>,
    client: &ChannelWriteHalf<server::Msg>,
    shared: &Shared,
) -> bool {
    match next {
        Ok(Next::Continue) => true,
        Ok(Next::Stop(Some(message))) => {
            stop_channel(client, shared, message).await;
            false
        }
        Ok(Next::Stop(None)) | Err(_) => false,
    }
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
