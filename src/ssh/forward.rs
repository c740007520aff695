//! `ssh -L` / `-W` (direct-tcpip) channels: plain bytes both ways, with
//! the same per-channel flow control and lease cancellation as sessions,
//! and their byte counts audited when they end.

use std::sync::Arc;

use russh::{Channel, ChannelMsg, ChannelWriteHalf, client, server};

use crate::audit::AuditEvent;

use super::dataplane::DataPlane;
use super::flow::{Inbox, SessionMsg, both_directions, drain, unless_stopped};
use super::relay::{audit_later, passed_on};

/// A bulk TCP relay for `ssh -L` (direct-tcpip) channels.
pub async fn relay_forward(
    plane: Arc<DataPlane>,
    client: Channel<server::Msg>,
    upstream: Channel<client::Msg>,
    target: String,
) {
    let (client_rx, client_tx) = client.split();
    let (upstream_rx, upstream_tx) = upstream.split();
    let (client_tx, upstream_tx) = (Arc::new(client_tx), Arc::new(upstream_tx));
    // Ends with the lease, or with either side's close.
    let stop = plane.ends.child_token();
    let (bytes_in, bytes_out) = both_directions(
        pipe(
            drain(client_rx, client_tx.clone()),
            upstream_tx.clone(),
            &stop,
            |bytes, n| plane.count_from_client(bytes, n),
        ),
        pipe(
            drain(upstream_rx, upstream_tx),
            client_tx,
            &stop,
            |bytes, n| plane.count_to_client(bytes, n),
        ),
        &stop,
    )
    .await;
    audit_later(
        &plane,
        AuditEvent::ChannelEnded {
            session: plane.session_id().to_string(),
            user: Some(plane.lease.user.clone()),
            resource: Some(plane.lease.resource.clone()),
            kind: "direct-tcpip".into(),
            command: Some(target),
            exit_status: None,
            bytes_from_client: bytes_in,
            bytes_to_client: bytes_out,
            recording: None,
            recording_digest: None,
            file_log: None,
            file_log_digest: None,
        },
    );
}

/// Copies data one way until close, the other side's close or the end of
/// the lease (`stop`); an EOF is passed on and the other way carries on.
/// Each chunk is `counted` (into the channel's total and the
/// connection's) as it passes.
async fn pipe<R: SessionMsg, S: SessionMsg>(
    mut from: Inbox<R>,
    to: Arc<ChannelWriteHalf<S>>,
    token: &tokio_util::sync::CancellationToken,
    counted: impl Fn(&mut u64, usize),
) -> u64 {
    let mut bytes = 0u64;
    loop {
        let message = tokio::select! {
            message = from.next() => message.map(|(m, _)| m),
            () = token.cancelled() => None,
        };
        match message {
            Some(ChannelMsg::Data { data }) => {
                counted(&mut bytes, data.len());
                let sent = unless_stopped(token, to.data_bytes(data.clone())).await;
                if passed_on(&from, sent, &data).await.is_err() {
                    break;
                }
            }
            Some(ChannelMsg::Eof) => {
                let _ = to.eof().await;
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    let _ = to.eof().await;
    let _ = to.close().await;
    bytes
}
