//! One SSH connection from accept to close: the handshake under the
//! login time limit, then a watch over what ends a connection from outside
//! its channels (the login time running out, a connection never used, a
//! reload withdrawing its key, its lease ending, shutdown).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Handle, RunningSession};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::handler::Connection;
use super::login_state::LoginState;
use super::{KnownHosts, Listening, dataplane, killable};
use crate::serve::Runtime;

/// How long a connection whose login a reload withdrew waits for its
/// lease's severing (notices, then a disconnect with the lease's reason)
/// before it is cut with the login's reason.
const LEASE_SEVERING_FIRST: Duration = Duration::from_millis(500);
/// How long a client has to take its disconnect before its socket is cut.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// How long a client has to show the channel notices sent before its
/// disconnect (the answer to a keepalive sent after them).
const NOTICES_SHOWN: Duration = Duration::from_millis(300);

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
    login: Arc<LoginState>,
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
pub(super) struct Accepted {
    pub(super) stream: TcpStream,
    pub(super) remote: SocketAddr,
    pub(super) pending: crate::gateway::PendingLogin,
}

/// No Nagle delay (interactive keystrokes), and a bound on how long the
/// client may leave data unread.
fn tune_socket(stream: &TcpStream, config: &russh::server::Config) {
    let _ = stream.set_nodelay(true);
    if let Some(after) = unresponsive_after(config) {
        let _ = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(after));
    }
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

pub(super) async fn serve_connection(
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
    let _open = crate::metrics::OpenConnection::new("ssh");
    tune_socket(&stream, &listening.server);
    let host = stream
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "GW".into());
    let sever = dataplane::Sever::default();
    let handler = Connection::new(
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
    let watch = Watch {
        runtime,
        remote,
        login,
        sever,
        kill: CancellationToken::new(),
        span: tracing::info_span!("ssh", %remote),
        auth_timeout: listening.auth_timeout,
    };
    let stream = killable::Killable::new(stream, watch.kill.clone());
    if let Some(session) = watch.handshake(listening.server, stream, handler).await {
        watch.run(session).await;
    }
}

type Session = RunningSession<Connection>;

/// What ends an established connection from outside its channels.
struct Watch {
    runtime: Runtime,
    remote: SocketAddr,
    login: Arc<LoginState>,
    sever: dataplane::Sever,
    /// Cuts the socket under a client that does not take its disconnect.
    kill: CancellationToken,
    span: Span,
    auth_timeout: Duration,
}

impl Watch {
    /// The version exchange and key exchange. A client that never sends
    /// its version line must not hold a task.
    async fn handshake(
        &self,
        config: Arc<russh::server::Config>,
        stream: killable::Killable,
        handler: Connection,
    ) -> Option<Session> {
        let started = tokio::time::timeout(
            self.auth_timeout,
            russh::server::run_stream(config, stream, handler),
        )
        .await;
        match started {
            Ok(Ok(session)) => Some(session),
            Ok(Err(e)) => {
                tracing::debug!(parent: &self.span, error = %e, "SSH handshake failed");
                None
            }
            Err(_) => {
                self.login.ran_out_of_time();
                tracing::debug!(parent: &self.span, "SSH handshake timed out");
                None
            }
        }
    }

    async fn run(self, session: Session) {
        let handle = session.handle();
        let mut reloads = self.runtime.gateway.reloads();
        let auth_deadline = tokio::time::sleep(self.auth_timeout);
        let idle_timeout = self.runtime.gateway.config().ssh_idle_timeout;
        let unused_deadline = tokio::time::sleep(idle_timeout);
        tokio::pin!(session, auth_deadline, unused_deadline);
        let mut auth_checked = false;
        let mut unused_checked = false;
        let reason = loop {
            tokio::select! {
                result = &mut session => {
                    if let Err(e) = result {
                        tracing::debug!(parent: &self.span, error = %e, "SSH session ended with an error");
                    }
                    return;
                }
                () = &mut auth_deadline, if !auth_checked => {
                    auth_checked = true;
                    if !self.login.authenticated() {
                        self.login.ran_out_of_time();
                        tracing::debug!(parent: &self.span, "authentication timed out");
                        break "authentication timed out".to_string();
                    }
                }
                // A connection's data plane closes it once idle; one that never
                // asked for a channel has none, and is closed here.
                () = &mut unused_deadline, if !unused_checked => {
                    unused_checked = true;
                    if self.login.unused() {
                        let limit = crate::config::HumanDuration(idle_timeout);
                        break format!("closed after {limit} without activity (ssh.idle_timeout)");
                    }
                }
                Ok(()) = reloads.changed() => self.end_if_withdrawn().instrument(self.span.clone()).await,
                reason = self.sever.requested() => break reason,
                () = self.runtime.sessions.cancelled() => break "jitgate is shutting down".to_string(),
            }
        };
        self.disconnect(&handle, session, reason).await;
    }

    /// Disconnects the client, saying why. A client that does not take it
    /// within a second (frozen, or its network gone, it stopped reading;
    /// or still before key exchange, when no message can be sent) has its
    /// socket cut, which ends the session task and everything it holds.
    async fn disconnect(&self, handle: &Handle, session: Pin<&mut Session>, reason: String) {
        // Notices written to channels just before (why a session was
        // severed) reach the user's terminal first: a client acting on the
        // disconnect at once may drop output it has not written out yet.
        let _ = tokio::time::timeout(NOTICES_SHOWN, handle.ping()).await;
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
            self.kill.cancel();
        }
    }

    /// After a reload: a key or user taken out of the file ends the
    /// connection if it logged in with it.
    async fn end_if_withdrawn(&self) {
        let Some(withdrawn) = self.login.withdrawn(&self.runtime.gateway.config()) else {
            return;
        };
        tracing::info!(reason = %withdrawn.reason, "login withdrawn by a reload");
        let reason = withdrawn.reason.clone();
        let gateway = self.runtime.gateway.clone();
        let event = withdrawn.into_event(self.remote.to_string());
        // Audit writes fsync: off the async workers.
        let _ = tokio::task::spawn_blocking(move || gateway.audit(event)).await;
        // The same reload may have ended the connection's lease: that
        // severing tells the user more, so it goes first.
        let sever = self.sever.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LEASE_SEVERING_FIRST).await;
            sever.trigger(reason);
        });
    }
}
