//! Client → target for one relayed session channel: requests, stdin, EOF.
//! What cannot be recorded does not run: the client is told so instead.

use std::sync::Arc;

use russh::{ChannelMsg, ChannelWriteHalf, client, server};
use tokio_util::sync::CancellationToken;

use super::super::channel_record::{keep, start_records};
use super::super::channel_use::Shared;
use super::super::dataplane::DataPlane;
use super::super::flow::{Inbox, unless_stopped};
use super::{CANNOT_RECORD, Next, RECORDING_FAILED, env_allowed, goes_on, passed_on};

pub(super) struct Inbound<'a> {
    plane: &'a DataPlane,
    to: Arc<ChannelWriteHalf<client::Msg>>,
    client: Arc<ChannelWriteHalf<server::Msg>>,
    shared: Shared,
    stopped: CancellationToken,
    config: Arc<crate::config::Config>,
    bytes: u64,
}

impl<'a> Inbound<'a> {
    pub(super) fn new(
        plane: &'a DataPlane,
        to: Arc<ChannelWriteHalf<client::Msg>>,
        client: Arc<ChannelWriteHalf<server::Msg>>,
        shared: Shared,
    ) -> Self {
        let stopped = shared.lock().stopped.clone();
        Self {
            plane,
            to,
            client,
            shared,
            stopped,
            config: plane.gateway.config(),
            bytes: 0,
        }
    }

    /// Relays until either side or the session ends the channel; returns
    /// the bytes relayed.
    pub(super) async fn run(mut self, mut from: Inbox<server::Msg>) -> (u64, ()) {
        loop {
            let message = tokio::select! {
                message = from.next() => message,
                () = self.plane.ends.cancelled() => break,
                () = self.stopped.cancelled() => break,
            };
            let Some((message, _budget)) = message else {
                break;
            };
            let next = self.pass_on(&from, message).await;
            if !goes_on(next, &self.client, &self.shared).await {
                break;
            }
        }
        let _ = self.to.eof().await;
        let _ = self.to.close().await;
        (self.bytes, ())
    }

    async fn pass_on(
        &mut self,
        from: &Inbox<server::Msg>,
        message: ChannelMsg,
    ) -> Result<Next, russh::Error> {
        let to = &self.to;
        match message {
            ChannelMsg::Data { data } => return self.pass_data(from, data).await,
            ChannelMsg::Eof => to.eof().await?,
            ChannelMsg::Close => return Ok(Next::Stop(None)),
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                let size = (col_width, row_height, pix_width, pix_height);
                self.pass_pty(&term, size, &terminal_modes).await?;
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if env_allowed(&self.config.env_allow, &variable_name) => {
                to.set_env(false, variable_name, variable_value).await?;
            }
            ChannelMsg::RequestShell { .. } => {
                if !self.start("shell", None) {
                    return Ok(Next::Stop(Some(CANNOT_RECORD)));
                }
                self.to.request_shell(true).await?;
            }
            ChannelMsg::Exec { command, .. } => {
                let text = String::from_utf8_lossy(&command).into_owned();
                if !self.start("exec", Some(text)) {
                    return Ok(Next::Stop(Some(CANNOT_RECORD)));
                }
                self.command_running();
                self.to.exec(true, command).await?;
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                if !self.start("subsystem", Some(name.clone())) {
                    return Ok(Next::Stop(Some(CANNOT_RECORD)));
                }
                self.to.request_subsystem(true, &name).await?;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                keep(&self.shared, |r| r.resize(col_width, row_height), |_| {});
                to.window_change(col_width, row_height, pix_width, pix_height)
                    .await?;
            }
            ChannelMsg::Signal { signal } => to.signal(signal).await?,
            _ => {}
        }
        Ok(Next::Continue)
    }

    /// Records and passes on what the client typed or sent; stops the
    /// channel when it cannot be recorded.
    async fn pass_data(
        &mut self,
        from: &Inbox<server::Msg>,
        data: bytes::Bytes,
    ) -> Result<Next, russh::Error> {
        self.plane.count_from_client(&mut self.bytes, data.len());
        if !keep(
            &self.shared,
            |r| r.input(&data),
            |log| log.client_sent(&data),
        ) {
            return Ok(Next::Stop(Some(RECORDING_FAILED)));
        }
        let sent = unless_stopped(&self.stopped, self.to.data_bytes(data.clone())).await;
        passed_on(from, sent, &data).await?;
        Ok(Next::Continue)
    }

    /// Asks the target for the client's pty, with a sane size, and keeps
    /// its terminal and size for the recording.
    async fn pass_pty(
        &self,
        term: &str,
        (cols, rows, pix_width, pix_height): (u32, u32, u32, u32),
        modes: &[(russh::Pty, u32)],
    ) -> Result<(), russh::Error> {
        let (cols, rows) = (cols.clamp(1, 10_000), rows.clamp(1, 10_000));
        self.shared.lock().pty = Some((term.to_string(), cols, rows));
        self.to
            .request_pty(false, term, cols, rows, pix_width, pix_height, modes)
            .await
    }

    /// Sets up the channel's recording or file log for what the client
    /// asked to run; whether it may run.
    fn start(&self, kind: &'static str, command: Option<String>) -> bool {
        start_records(self.plane, &self.shared, kind, command, &self.config)
    }

    /// A command without a pty keeps the connection busy until it exits
    /// (see `idle_clock`).
    fn command_running(&self) {
        let mut used = self.shared.lock();
        if used.pty.is_none() {
            used.running = Some(self.plane.idle_clock.command_running());
        }
    }
}
