//! Target → client for one relayed session channel: output, exit status,
//! EOF and close; warnings before the window ends and the notice when it
//! has.

use std::sync::Arc;

use bytes::Bytes;
use russh::{ChannelId, ChannelMsg, ChannelWriteHalf, client, server};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::channel_record::keep;
use super::super::channel_use::Shared;
use super::super::dataplane::DataPlane;
use super::super::end_warnings::EndWarnings;
use super::super::flow::{Inbox, notice, unless_stopped};
use super::{Next, RECORDING_FAILED, goes_on, passed_on};

/// How long the target's EOF is held back waiting for its exit status.
/// A connection-sharing OpenSSH client closes a channel as soon as both
/// directions are at EOF, and russh answers a close at once (sshd holds its
/// close back until the exit status is out), so an EOF passed on early can
/// lose the exit status. Commands exit right after closing their output;
/// the bound only matters for one that closes its output and runs on.
const EOF_HOLD: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct Outbound<'a> {
    plane: &'a DataPlane,
    to: Arc<ChannelWriteHalf<server::Msg>>,
    client_id: ChannelId,
    server: server::Handle,
    shared: Shared,
    stopped: CancellationToken,
    bytes: u64,
    exit_status: Option<u32>,
    /// The command exited (a status or a signal came).
    exited: bool,
    /// When a target EOF held back for the exit status goes out anyway.
    held_eof: Option<Instant>,
    target_eof: bool,
}

impl<'a> Outbound<'a> {
    pub(super) fn new(
        plane: &'a DataPlane,
        to: Arc<ChannelWriteHalf<server::Msg>>,
        client_id: ChannelId,
        server: server::Handle,
        shared: Shared,
    ) -> Self {
        let stopped = shared.lock().stopped.clone();
        Self {
            plane,
            to,
            client_id,
            server,
            shared,
            stopped,
            bytes: 0,
            exit_status: None,
            exited: false,
            held_eof: None,
            target_eof: false,
        }
    }

    /// Relays until either side or the session ends the channel. Returns
    /// the bytes relayed and the exit status.
    pub(super) async fn run(mut self, mut from: Inbox<client::Msg>) -> (u64, Option<u32>) {
        let mut warnings = EndWarnings::new(self.plane);
        loop {
            let message = tokio::select! {
                message = from.next() => message,
                () = self.plane.ends.cancelled() => break,
                () = self.stopped.cancelled() => break,
                () = sleep_until_or_never(warnings.next_at()) => {
                    if let Some(warning) = warnings.fire(self.plane) {
                        self.warn(&warning).await;
                    }
                    continue;
                }
                () = sleep_until_or_never(self.held_eof) => {
                    self.held_eof = None;
                    if self.to.eof().await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some((message, _budget)) = message else {
                break;
            };
            let next = self.pass_on(&from, message).await;
            if !goes_on(next, &self.to, &self.shared).await {
                break;
            }
        }
        self.finish().await
    }

    async fn pass_on(
        &mut self,
        from: &Inbox<client::Msg>,
        message: ChannelMsg,
    ) -> Result<Next, russh::Error> {
        match message {
            ChannelMsg::Data { data } => {
                self.plane.count_to_client(&mut self.bytes, data.len());
                if !keep(
                    &self.shared,
                    |r| r.output(&data),
                    |log| log.target_sent(&data),
                ) {
                    return Ok(Next::Stop(Some(RECORDING_FAILED)));
                }
                let sent = unless_stopped(&self.stopped, self.to.data_bytes(data.clone())).await;
                passed_on(from, sent, &data).await?;
            }
            ChannelMsg::ExtendedData { data, ext } => {
                self.plane.count_to_client(&mut self.bytes, data.len());
                let written = self.to.extended_data_bytes(ext, data.clone());
                let sent = unless_stopped(&self.stopped, written).await;
                passed_on(from, sent, &data).await?;
            }
            ChannelMsg::Eof => {
                self.target_eof = true;
                if self.exited {
                    self.to.eof().await?;
                } else {
                    self.held_eof = Some(Instant::now() + EOF_HOLD);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.exit_status = Some(exit_status);
                self.command_exited();
                let sent = self.to.exit_status(exit_status).await;
                self.release_eof(sent).await?;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                self.command_exited();
                let sent = self
                    .server
                    .exit_signal_request(
                        self.client_id,
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    )
                    .await
                    .map_err(|_| russh::Error::SendError);
                self.release_eof(sent).await?;
            }
            ChannelMsg::Close => return Ok(Next::Stop(None)),
            // Only shell, exec and subsystem requests want a reply: the
            // target refused what the client asked to run (an unknown
            // subsystem, say). The client was told "success" already, so
            // it learns it this way instead of waiting forever.
            ChannelMsg::Failure => {
                let name = &self.plane.resource.name;
                let message = format!("jitgate: {name} refused the request\r\n");
                let _ = self.to.extended_data_bytes(1, Bytes::from(message)).await;
                let _ = self.to.exit_status(1).await;
                return Ok(Next::Stop(None));
            }
            _ => {}
        }
        Ok(Next::Continue)
    }

    fn command_exited(&mut self) {
        self.exited = true;
        // The connection's idle time counts from here.
        self.shared.lock().running = None;
    }

    /// Passes on a held-back EOF once the exit status went out before it.
    async fn release_eof(&mut self, sent: Result<(), russh::Error>) -> Result<(), russh::Error> {
        sent?;
        match self.held_eof.take() {
            Some(_) => self.to.eof().await,
            None => Ok(()),
        }
    }

    /// Tells the user their window is about to end: on the terminal of a
    /// pty, on stderr otherwise, where ssh shows it whatever runs over the
    /// channel (rsync, git, sftp), while stdout carries the channel's own
    /// protocol. Nothing may follow the end of the target's output there.
    async fn warn(&self, warning: &str) {
        let pty = self.shared.lock().pty.is_some();
        let sent = if pty {
            let text = format!("\r\n[jitgate] {warning}\r\n");
            notice(self.to.data_bytes(Bytes::from(text))).await
        } else if !(self.target_eof || self.exited) {
            let text = format!("jitgate: {warning}\n");
            notice(self.to.extended_data_bytes(1, Bytes::from(text))).await
        } else {
            return;
        };
        tracing::debug!(ok = sent.is_ok(), "end warning written");
    }

    /// However the loop ended, a severed user is told why: on the
    /// terminal of a pty, on stderr otherwise (stdout may carry scp's or
    /// rsync's protocol). The target side may have closed first, racing
    /// the cancellation.
    async fn finish(mut self) -> (u64, Option<u32>) {
        if self.plane.ends.is_cancelled() {
            let ended = self.plane.ended_message();
            let sent = if self.shared.lock().pty.is_some() {
                let text = format!("\r\n[jitgate] {ended} — session closed\r\n");
                notice(self.to.data_bytes(Bytes::from(text))).await
            } else {
                let text = format!("jitgate: {ended} — session closed\n");
                notice(self.to.extended_data_bytes(1, Bytes::from(text))).await
            };
            tracing::debug!(ok = sent.is_ok(), "sever notice written");
            let _ = self.to.exit_status(255).await;
        }
        let _ = self.release_eof(Ok(())).await;
        let _ = self.to.close().await;
        (self.bytes, self.exit_status)
    }
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
