//! The SSH front door (russh): one listener for the control plane
//! (`alice@GW`) and, by username, the data plane (`alice+web-01@GW`).
//!
//! - `hostkey`: the persistent host key.
//! - `handler`: authentication and channel requests for one connection
//!   (`login_names`: the usernames and keys it checks).
//! - `channel`: one session channel of the control plane (exec or prompt).
//! - `console`: a [`crate::control::Terminal`] over an SSH channel.
//! - `dataplane`, `relay`, `forward`, `flow`: a data-plane connection, its
//!   session channels and `ssh -L` channels relayed to the target with
//!   per-channel flow control; `recording` of shells (pty or not) and
//!   the `sftp` file log of SFTP channels.

mod channel;
mod channel_record;
mod channel_use;
mod connection;
mod console;
mod dataplane;
mod end_warnings;
mod flow;
mod forward;
mod handler;
mod hostkey;
mod idle_clock;
mod killable;
mod line_editor;
mod login_names;
mod login_state;
mod recording;
mod relay;
pub(crate) mod sftp;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::serve::Runtime;

pub use hostkey::load as read_host_key;
pub(crate) use login_names::{printable as printable_username, split_username};
pub use recording::{LiveEvent, read_events};
pub use upstream::KnownHosts;

/// Most session channels one connection may open at once.
const MAX_CHANNELS: usize = 16;

/// Builds the server config and starts accepting connections.
pub async fn start(runtime: Runtime, listener: TcpListener, config: &Config) -> anyhow::Result<()> {
    let key = hostkey::load_or_generate(&config.ssh_host_key)?;
    let listening = Listening::new(key, config);
    let known_hosts = runtime.gateway.known_hosts().clone();
    tokio::spawn(accept_loop(runtime, listener, listening, known_hosts));
    Ok(())
}

/// What the listener takes from the configuration for each connection it
/// accepts. A reload replaces it whole (host key included, as sshd's
/// SIGHUP does); connections already open keep what they started with.
#[derive(Clone)]
struct Listening {
    server: Arc<russh::server::Config>,
    auth_timeout: Duration,
}

impl Listening {
    fn new(key: PrivateKey, config: &Config) -> Self {
        Self {
            server: Arc::new(server_config(key, config)),
            auth_timeout: config.ssh_auth_timeout,
        }
    }

    /// The settings of the configuration now in force. The reload was
    /// refused unless its host key loaded; should the file have changed
    /// since, the running key stays.
    fn reloaded(&self, config: &Config) -> Self {
        let key = hostkey::load(&config.ssh_host_key).unwrap_or_else(|e| {
            tracing::error!(error = %e, "SSH host key not reloaded; the running one stays");
            self.server.keys[0].clone()
        });
        Self::new(key, config)
    }
}

/// russh's defaults plus aes128-gcm, which OpenSSH clients commonly pick
/// and which is the fastest cipher on CPUs with AES instructions.
pub(crate) const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

fn server_config(key: PrivateKey, config: &Config) -> russh::server::Config {
    russh::server::Config {
        keys: vec![key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        // A live client answers the keepalives, which keeps this from
        // firing however idle its session is; a backstop only (see
        // `unresponsive_after`).
        inactivity_timeout: Some(Duration::from_secs(300)),
        keepalive_interval: Some(config.ssh_client_alive_interval),
        keepalive_max: config.ssh_client_alive_count_max as usize,
        nodelay: true,
        // Each relayed channel grants window only for data passed on to the
        // target (see `flow`), so the window bounds what one client channel
        // can have queued in the gateway; 8 MiB keeps uploads from waiting
        // on window updates, as on the target side.
        window_size: 8 * 1024 * 1024,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn accept_loop(
    runtime: Runtime,
    listener: TcpListener,
    mut listening: Listening,
    known_hosts: Arc<KnownHosts>,
) {
    let mut reloads = runtime.gateway.reloads();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Ok(()) = reloads.changed() => {
                listening = listening.reloaded(&runtime.gateway.config());
                continue;
            }
            () = runtime.accepting.cancelled() => return,
        };
        match accepted {
            Ok((stream, remote)) => {
                let Some(pending) = runtime.gateway.admit_source(remote.ip(), "ssh") else {
                    // Closed before the version exchange, as sshd does.
                    drop(stream);
                    continue;
                };
                let accepted = connection::Accepted {
                    stream,
                    remote,
                    pending,
                };
                runtime.tracker.spawn(connection::serve_connection(
                    runtime.clone(),
                    accepted,
                    listening.clone(),
                    known_hosts.clone(),
                ));
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "SSH accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
