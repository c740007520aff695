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
mod console;
mod dataplane;
mod end_warnings;
mod flow;
mod forward;
mod handler;
mod hostkey;
mod idle_clock;
mod killable;
mod login_names;
mod login_state;
mod recording;
mod relay;
pub(crate) mod sftp;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::Config;
use crate::serve::Runtime;

pub use hostkey::load as read_host_key;
pub(crate) use login_names::{printable as printable_username, split_username};
pub use recording::{LiveEvent, read_events};
pub use upstream::KnownHosts;

/// Most session channels one connection may open at once.
const MAX_CHANNELS: usize = 16;
/// How long a connection whose login a reload withdrew waits for its
/// lease's severing (notices, then a disconnect with the lease's reason)
/// before it is cut with the login's reason.
const LEASE_SEVERING_FIRST: Duration = Duration::from_millis(500);
/// How long a client has to take its disconnect before its socket is cut.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

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
                let accepted = Accepted {
                    stream,
                    remote,
                    pending,
                };
                runtime.tracker.spawn(serve_connection(
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

/// Counts a connection that ends without a successful login against its
/// source (`[penalties]`), however the connection ends: as a failed login
/// after a refused key or user or when its time to log in ran out, else
/// (it never tried: a scanner, a client that stopped at the host key
/// question) as a connection without a login. A login to a resource that
/// never asked for a channel goes on record as it ends (nothing else
/// would record it: a resource login is audited with its lease check).
struct LoginOutcome {
    runtime: Runtime,
    remote: SocketAddr,
    login: Arc<login_state::LoginState>,
}

impl Drop for LoginOutcome {
    fn drop(&mut self) {
        if let Some(event) = self.login.unused_resource_login(&self.remote.to_string()) {
            let gateway = self.runtime.gateway.clone();
            self.spawn_blocking(move || gateway.audit(event));
        }
        if self.login.authenticated() {
            return;
        }
        let failed = self.login.failed();
        let (gateway, address) = (self.runtime.gateway.clone(), self.remote.ip());
        let count = move || match failed {
            true => gateway.login_failed(address),
            false => gateway.left_without_login(address),
        };
        self.spawn_blocking(count);
    }
}

impl LoginOutcome {
    /// Audit writes fsync: off the async workers. A connection dropped as
    /// the runtime shuts down has no runtime to hand them to.
    fn spawn_blocking(&self, write: impl FnOnce() + Send + 'static) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.runtime.tracker.spawn_blocking(write);
        } else {
            write();
        }
    }
}

/// A connection just accepted, with its place among its source's pending
/// logins.
struct Accepted {
    stream: TcpStream,
    remote: SocketAddr,
    pending: crate::gateway::PendingLogin,
}

/// No Nagle delay (interactive keystrokes), and a bound on how long the
/// client may leave data unread.
fn tune_socket(stream: &TcpStream, config: &russh::server::Config) {
    let _ = stream.set_nodelay(true);
    if let Some(after) = unresponsive_after(config) {
        let _ = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(after));
    }
}

/// After a reload: a key or user taken out of the file ends the
/// connections that logged in with it.
async fn end_if_withdrawn(
    runtime: &Runtime,
    login: &login_state::LoginState,
    remote: SocketAddr,
    sever: &dataplane::Sever,
) {
    let Some(withdrawn) = login.withdrawn(&runtime.gateway.config()) else {
        return;
    };
    tracing::info!(reason = %withdrawn.reason, "login withdrawn by a reload");
    let reason = withdrawn.reason.clone();
    let gateway = runtime.gateway.clone();
    let event = withdrawn.into_event(remote.to_string());
    // Audit writes fsync: off the async workers.
    let _ = tokio::task::spawn_blocking(move || gateway.audit(event)).await;
    // The same reload may have ended the connection's lease: that
    // severing tells the user more, so it goes first.
    let sever = sever.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LEASE_SEVERING_FIRST).await;
        sever.trigger(reason);
    });
}

/// How long a client may leave what the gateway sends unread, or its
/// keepalives unanswered, before its connection is dropped. Keepalives
/// cannot tell while the connection is blocked writing to a client that
/// stopped reading its socket (frozen, its network gone: its receive
/// window closed), so the kernel bounds that wait (TCP_USER_TIMEOUT) to
/// the same time: every stream to it, `follow` and `audit tail -f`
/// included, ends then, not at the inactivity backstop.
fn unresponsive_after(config: &russh::server::Config) -> Option<Duration> {
    let interval = config.keepalive_interval?;
    Some(interval * config.keepalive_max.max(1) as u32)
}

/// Disconnects the client, saying why. A client that does not take it
/// within a second (frozen, or its network gone, it stopped reading) has
/// its socket cut, which ends the session task and everything it holds.
async fn disconnect(
    handle: &russh::server::Handle,
    session: std::pin::Pin<&mut russh::server::RunningSession<handler::Connection>>,
    kill: &tokio_util::sync::CancellationToken,
    reason: String,
) {
    let said = tokio::time::timeout(
        DISCONNECT_GRACE,
        handle.disconnect(russh::Disconnect::ByApplication, reason, String::new()),
    )
    .await;
    if said.is_err()
        || tokio::time::timeout(DISCONNECT_GRACE, session)
            .await
            .is_err()
    {
        kill.cancel();
    }
}

async fn serve_connection(
    runtime: Runtime,
    accepted: Accepted,
    listening: Listening,
    known_hosts: Arc<KnownHosts>,
) {
    let Accepted {
        stream,
        remote,
        pending,
    } = accepted;
    let Listening {
        server: config,
        auth_timeout,
    } = listening;
    let _open = crate::metrics::OpenConnection::new("ssh");
    tune_socket(&stream, &config);
    let host = stream
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "GW".into());
    let sever = dataplane::Sever::default();
    let handler = handler::Connection::new(
        runtime.clone(),
        remote,
        host,
        known_hosts,
        sever.clone(),
        pending,
    );
    let login = handler.login_state();
    let _counted = LoginOutcome {
        runtime: runtime.clone(),
        remote,
        login: login.clone(),
    };
    let span = tracing::info_span!("ssh", %remote);
    let kill = tokio_util::sync::CancellationToken::new();
    let stream = killable::Killable::new(stream, kill.clone());
    // A client that never sends its version line must not hold a task.
    let started = tokio::time::timeout(
        auth_timeout,
        russh::server::run_stream(config, stream, handler),
    )
    .await;
    let session = match started {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            tracing::debug!(parent: &span, error = %e, "SSH handshake failed");
            return;
        }
        Err(_) => {
            login.ran_out_of_time();
            tracing::debug!(parent: &span, "SSH handshake timed out");
            return;
        }
    };
    let handle = session.handle();
    let mut reloads = runtime.gateway.reloads();
    let auth_deadline = tokio::time::sleep(auth_timeout);
    let idle_timeout = runtime.gateway.config().ssh_idle_timeout;
    let unused_deadline = tokio::time::sleep(idle_timeout);
    tokio::pin!(session, auth_deadline, unused_deadline);
    let mut auth_checked = false;
    let mut unused_checked = false;
    loop {
        tokio::select! {
            result = &mut session => {
                if let Err(e) = result {
                    tracing::debug!(parent: &span, error = %e, "SSH session ended with an error");
                }
                return;
            }
            () = &mut auth_deadline, if !auth_checked => {
                auth_checked = true;
                if !login.authenticated() {
                    login.ran_out_of_time();
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "authentication timed out".into(), String::new()).await;
                    // Before key exchange completes the disconnect cannot be
                    // sent; cutting the socket ends the session task anyway.
                    if tokio::time::timeout(Duration::from_secs(1), &mut session).await.is_err() {
                        kill.cancel();
                    }
                    tracing::debug!(parent: &span, "authentication timed out");
                    return;
                }
            }
            // A connection's data plane closes it once idle; one that never
            // asked for a channel has none, and is closed here.
            () = &mut unused_deadline, if !unused_checked => {
                unused_checked = true;
                if login.unused() {
                    let limit = crate::config::HumanDuration(idle_timeout);
                    let reason = format!("closed after {limit} without activity (ssh.idle_timeout)");
                    return disconnect(&handle, session, &kill, reason).await;
                }
            }
            Ok(()) = reloads.changed() => {
                end_if_withdrawn(&runtime, &login, remote, &sever)
                    .instrument(span.clone())
                    .await;
            }
            reason = sever.requested() => {
                return disconnect(&handle, session, &kill, reason).await;
            }
            () = runtime.sessions.cancelled() => {
                return disconnect(&handle, session, &kill, "jitgate is shutting down".into()).await;
            }
        }
    }
}
