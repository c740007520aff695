//! `jitgate serve`: open state, bind listeners, tell systemd, handle signals.
//!
//! Shutdown is a drain: SIGTERM stops the listeners, lets live sessions end
//! for up to `shutdown_grace`, then severs the rest. A second SIGTERM exits
//! at once. SIGHUP reloads the config; a bad file is refused and the running
//! config kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::http;

/// Everything a listener needs to accept and track connections.
#[derive(Clone)]
pub struct Runtime {
    pub gateway: Arc<Gateway>,
    /// Cancelled when the gateway stops accepting new connections.
    pub accepting: CancellationToken,
    /// Cancelled when live sessions must end (after the drain).
    pub sessions: CancellationToken,
    pub tracker: TaskTracker,
}

/// What SIGHUP means: the daemon reloads its configuration (as daemons
/// do); a demo in a terminal stops with it, so closing the terminal does
/// not leave the gateway and its targets running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hangup {
    Reload,
    Stop,
}

/// Signal streams, registered before readiness is announced so that a
/// SIGTERM arriving right after READY=1 is handled, not fatal.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    on_hangup: Hangup,
}

impl Signals {
    fn new(on_hangup: Hangup) -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            on_hangup,
        })
    }

    /// The next signal that stops the gateway; SIGHUPs that reload are
    /// left to `wait_for_stop`.
    async fn stop(&mut self) {
        let hangup_stops = self.on_hangup == Hangup::Stop;
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
            _ = self.hangup.recv(), if hangup_stops => {}
        }
    }
}

/// Runs the gateway until SIGTERM/SIGINT (or SIGHUP, with `Hangup::Stop`);
/// `on_ready` runs once it listens.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    on_hangup: Hangup,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let mut signals = Signals::new(on_hangup)?;
    let root = CancellationToken::new();
    let metrics = http::install_metrics(root.clone())?;
    crate::metrics::describe();
    let (gateway, expired) =
        Gateway::open(config.clone()).context("cannot open the gateway state")?;
    let runtime = Runtime {
        gateway: gateway.clone(),
        accepting: CancellationToken::new(),
        sessions: root.child_token(),
        tracker: TaskTracker::new(),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let http_listener = bind(config.listen.http, "listen.http").await?;
    tokio::spawn(http::serve(
        http_listener,
        metrics,
        ready.clone(),
        root.clone(),
    ));
    tokio::spawn(gateway.clone().run_housekeeping(expired, root.clone()));
    tokio::spawn(gateway.clone().run_audit_anchor(root.clone()));
    tokio::spawn(crate::rotation::Rotator::new(gateway.clone()).run(root.clone()));
    let webhooks = crate::notify::start(&gateway, root.clone())?;
    start_data_planes(&runtime, &config).await?;

    ready.store(true, Ordering::Release);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(ssh = %config.listen.ssh, http = %config.listen.http, "jitgate ready");
    on_ready();

    wait_for_stop(&mut signals, &config_path, &gateway).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    drain(&mut signals, &runtime, &config).await;
    gateway.audit(AuditEvent::GatewayStopped);
    gateway.log_held_journal_records();
    gateway.log_held_audit_records();
    gateway.sync_audit_anchor();
    root.cancel();
    // Each webhook saves how far it got; records after that are sent
    // after the next start.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), webhooks.wait()).await;
    Ok(())
}

pub async fn bind(address: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {key} = {address}"))
}

/// Binds and starts the SSH control plane and both data planes.
async fn start_data_planes(runtime: &Runtime, config: &Config) -> anyhow::Result<()> {
    let ssh = bind(config.listen.ssh, "listen.ssh").await?;
    let postgres = bind(config.listen.postgres, "listen.postgres").await?;
    crate::postgres::start(runtime.clone(), postgres)?;
    crate::ssh::start(runtime.clone(), ssh, config).await
}

/// Waits for a signal that stops the gateway, reloading the config on
/// SIGHUP meanwhile when that is what SIGHUP means.
async fn wait_for_stop(signals: &mut Signals, config_path: &Path, gateway: &Gateway) {
    if signals.on_hangup == Hangup::Stop {
        return signals.stop().await;
    }
    loop {
        tokio::select! {
            _ = signals.hangup.recv() => reload(config_path, gateway),
            _ = signals.terminate.recv() => return,
            _ = signals.interrupt.recv() => return,
        }
    }
}

fn reload(config_path: &Path, gateway: &Gateway) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    apply_reload(config_path, gateway);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Loads the file and swaps it in, or refuses it (logged and audited).
fn apply_reload(config_path: &Path, gateway: &Gateway) {
    match Config::load(config_path) {
        Ok(config) => {
            let running = gateway.config();
            if config.listen.ssh != running.listen.ssh
                || config.listen.postgres != running.listen.postgres
                || config.listen.http != running.listen.http
                || config.state_dir != running.state_dir
            {
                tracing::warn!("listen addresses and state_dir change only on restart");
            }
            // The gateway would not start with them: refuse the reload too.
            let usable = crate::notify::prepare(&config.webhooks)
                .map_err(|e| e.to_string())
                .and_then(|_| crate::postgres::tls::acceptor(&config).map_err(|e| e.to_string()))
                .and_then(|_| {
                    crate::ssh::read_host_key(&config.ssh_host_key).map_err(|e| e.to_string())
                });
            if let Err(e) = usable {
                tracing::error!(error = %e, "new configuration refused; keeping the running one");
                gateway.audit(AuditEvent::ConfigReloaded {
                    ok: false,
                    error: Some(e),
                });
                return;
            }
            match gateway.reload(config) {
                Ok(()) => tracing::info!(config = %config_path.display(), "configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "new configuration refused; keeping the running one")
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "new configuration refused; keeping the running one");
            gateway.audit(AuditEvent::ConfigReloaded {
                ok: false,
                error: Some(e.to_string()),
            });
        }
    }
}

/// Stops accepting, waits up to the grace period for sessions to finish
/// (a second signal cuts it short), then severs what is left.
async fn drain(signals: &mut Signals, runtime: &Runtime, config: &Config) {
    runtime.accepting.cancel();
    runtime.tracker.close();
    let live = runtime.tracker.len();
    if live > 0 {
        tracing::info!(sessions = live, grace = ?config.shutdown_grace, "draining; send SIGTERM again to stop now");
    }
    tokio::select! {
        () = runtime.tracker.wait() => {}
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!("grace period over; severing remaining sessions"),
        () = signals.stop() => {}
    }
    runtime.sessions.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), runtime.tracker.wait()).await;
}
