//! One client connection to a resource (`alice+web-01@GW`): its lease, its
//! single upstream connection shared by all channels, and the sever watch
//! that ends everything the moment the lease ends (or once the connection
//! has been idle for `ssh.idle_timeout`, see `idle_clock`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use russh::client::Handle;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AuditEvent, Protocol};
use crate::config::Resource;
use crate::control::Caller;
use crate::gateway::Gateway;
use crate::lease::Lease;
use crate::sessions::{Activity, SessionGuard};

use super::channel_use::{ChannelUse, Shared};
use super::idle_clock::IdleClock;
use super::upstream::{self, KnownHosts, UpstreamError, UpstreamHandler};

/// How long channels get to tell their users why before the disconnect.
const SEVER_NOTICE: Duration = Duration::from_millis(200);

pub struct DataPlane {
    pub gateway: Arc<Gateway>,
    pub resource: Resource,
    pub lease: Arc<Lease>,
    pub session: SessionGuard,
    pub channels: TaskTracker,
    pub bytes_from_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
    /// Cancelled when the client connection ends for any reason.
    pub closed: CancellationToken,
    /// Cancelled when the session must end: its lease ended, or an
    /// administrator terminated it. Every relay loop selects on it.
    pub ends: CancellationToken,
    severed: AtomicBool,
    started: Instant,
    pub(super) idle_clock: Arc<IdleClock>,
    idle_timeout: Duration,
    /// Why the gateway closed the connection without severing it with its
    /// access (idleness, a shutdown), once it did.
    closed_why: OnceLock<String>,
    upstream: OnceCell<Arc<Handle<UpstreamHandler>>>,
    known_hosts: Arc<KnownHosts>,
    /// The session channels opened, for `sessions` (closed ones drop out).
    channel_uses: Mutex<Vec<Weak<Mutex<ChannelUse>>>>,
    /// How many recordings and file logs the session's channels made.
    recordings_named: AtomicU64,
}

impl DataPlane {
    pub fn new(
        gateway: Arc<Gateway>,
        caller: Caller,
        resource: Resource,
        lease: Arc<Lease>,
        known_hosts: Arc<KnownHosts>,
        login: AuditEvent,
        connection_gone: &CancellationToken,
    ) -> Arc<Self> {
        let session = gateway.sessions().register(
            Protocol::Ssh,
            &caller.user,
            Some(&resource.name),
            &caller.remote,
        );
        // The login and the session's start, on disk (one fsync) before
        // anything reaches the target.
        let started = AuditEvent::SessionStarted {
            session: session.id().to_string(),
            protocol: Protocol::Ssh,
            user: caller.user.clone(),
            resource: resource.name.clone(),
            request_id: lease.request_id,
        };
        gateway.audit_all_in_place(vec![login, started]);
        let idle_timeout = gateway.config().ssh_idle_timeout;
        let plane = Arc::new(Self {
            gateway,
            resource,
            ends: lease.token.child_token(),
            lease,
            session,
            channels: TaskTracker::new(),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            closed: connection_gone.child_token(),
            severed: AtomicBool::new(false),
            started: Instant::now(),
            idle_clock: IdleClock::new(),
            idle_timeout,
            closed_why: OnceLock::new(),
            upstream: OnceCell::new(),
            known_hosts,
            channel_uses: Mutex::new(Vec::new()),
            recordings_named: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&plane);
        plane
            .session
            .report_activity(Arc::new(move || weak.upgrade().map(|p| p.activity())));
        plane
    }

    /// A name for the next channel's recording or file log: the session
    /// and the channel's place in it, so no two are ever the same (a
    /// shared connection runs thousands of channels).
    pub(super) fn next_recording_name(&self) -> String {
        let n = self.recordings_named.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.session_id())
    }

    pub(super) fn channel_opened(&self, used: &Shared) {
        let mut uses = self.channel_uses.lock();
        uses.retain(|used| used.strong_count() > 0);
        uses.push(Arc::downgrade(used));
    }

    /// Bytes and what each open channel runs, for `sessions`.
    fn activity(&self) -> Activity {
        let channels = self
            .channel_uses
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|used| used.lock().summary())
            .collect();
        Activity {
            bytes_in: self.bytes_from_client.load(Ordering::Relaxed),
            bytes_out: self.bytes_to_client.load(Ordering::Relaxed),
            channels,
            idle_seconds: self.idle_clock.idle_for().as_secs(),
            ..Activity::default()
        }
    }

    /// Counts `bytes` the client sent on a channel (`channel` is its own
    /// count): the connection is not idle.
    pub fn count_from_client(&self, channel: &mut u64, bytes: usize) {
        *channel += bytes as u64;
        self.bytes_from_client
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.idle_clock.touch();
    }

    /// Counts `bytes` the target sent on a channel, as `count_from_client`.
    pub fn count_to_client(&self, channel: &mut u64, bytes: usize) {
        *channel += bytes as u64;
        self.bytes_to_client
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.idle_clock.touch();
    }

    pub fn session_id(&self) -> &str {
        self.session.id()
    }

    /// The message a user sees when the session is severed: why it was
    /// terminated or closed for idleness, or when the window closed.
    pub fn ended_message(&self) -> String {
        if let Some(message) = self.session.termination().message() {
            return message;
        }
        if let Some(message) = self.closed_why.get() {
            return message.clone();
        }
        self.gateway.lease_end_message(&self.lease)
    }

    /// The upstream connection, opened on first use and shared after.
    pub async fn upstream(&self) -> Result<Arc<Handle<UpstreamHandler>>, UpstreamError> {
        self.upstream
            .get_or_try_init(|| async {
                let vault = self.gateway.vault();
                let credential = vault.current(&self.resource.name);
                let mut result =
                    upstream::connect(&self.resource, &self.known_hosts, credential).await;
                // Mid-rotation the target may already hold the pending key.
                if let (Err(UpstreamError::Refused { .. }), Some(pending)) =
                    (&result, vault.pending(&self.resource.name))
                {
                    result =
                        upstream::connect(&self.resource, &self.known_hosts, Some(pending)).await;
                }
                if let Err(UpstreamError::Refused { .. }) = &result {
                    self.gateway.credential_refused(&self.resource.name);
                }
                self.audit_host_key(&result);
                result.map(Arc::new)
            })
            .await
            .cloned()
    }

    /// A refused host key is audited here; a key recorded on first contact
    /// is audited by the hook the gateway set on `KnownHosts`, whoever made
    /// the contact.
    fn audit_host_key(&self, result: &Result<Handle<UpstreamHandler>, UpstreamError>) {
        let Err(UpstreamError::HostKeyMismatch {
            presented,
            expected,
            ..
        }) = result
        else {
            return;
        };
        self.gateway
            .audit_all_in_place(vec![AuditEvent::TargetHostKey {
                resource: self.resource.name.clone(),
                fingerprint: presented.clone(),
                accepted: false,
                reason: format!("does not match {expected}"),
            }]);
    }

    /// Ends the connection when the lease ends, an administrator
    /// terminates the session or it has been idle for `idle_timeout`:
    /// channels first get a moment to tell their
    /// users, then `sever` asks the connection to disconnect the client
    /// (with the reason) and the target is disconnected. When the client
    /// leaves first, the target is disconnected at once; at `shutdown` the
    /// connection disconnects its client itself. Holds no session handle,
    /// so it never keeps a finished connection alive.
    pub async fn watch_lease(self: Arc<Self>, sever: Sever, shutdown: CancellationToken) {
        tokio::select! {
            () = self.ends.cancelled() => {}
            () = self.session.termination().requested() => self.ends.cancel(),
            () = self.idle_clock.idle(self.idle_timeout) => {
                let limit = crate::config::HumanDuration(self.idle_timeout);
                let _ = self
                    .closed_why
                    .set(format!("closed after {limit} without activity (ssh.idle_timeout)"));
                self.ends.cancel();
            }
            () = shutdown.cancelled() => {
                let why = "jitgate is shutting down";
                let _ = self.closed_why.set(why.into());
                self.closed.cancelled().await;
                return self.disconnect_upstream(why).await;
            }
            () = self.closed.cancelled() => {
                // The client left: its target session ends with it, as it
                // would have without the gateway in between.
                return self.disconnect_upstream("the client disconnected").await;
            }
        }
        self.severed.store(true, Ordering::Release);
        if self.closed_why.get().is_none() {
            metrics::counter!("jitgate_sessions_severed_total", "protocol" => "ssh").increment(1);
        }
        self.channels.close();
        let _ = tokio::time::timeout(SEVER_NOTICE, self.channels.wait()).await;
        // The connection's disconnect waits for the client to have shown
        // the notices (`Watch::disconnect` in connection.rs).
        let message = self.ended_message();
        sever.trigger(message.clone());
        self.disconnect_upstream(&message).await;
        // Timed from the lease's end (a termination leaves the lease live)
        // to the client gone, whoever closed the connection first.
        if let Some(ended) = self.lease.ended_at() {
            self.closed.cancelled().await;
            crate::metrics::severed_after(crate::audit::Protocol::Ssh, ended);
        }
    }

    async fn disconnect_upstream(&self, message: &str) {
        if let Some(upstream) = self.upstream.get() {
            let _ = upstream
                .disconnect(russh::Disconnect::ByApplication, message, "")
                .await;
        }
    }
}

/// Asks a connection to disconnect its client, saying why.
#[derive(Clone, Default)]
pub struct Sever {
    token: CancellationToken,
    reason: Arc<parking_lot::Mutex<String>>,
}

impl Sever {
    /// The first reason given is the one the client reads.
    pub fn trigger(&self, reason: String) {
        let mut held = self.reason.lock();
        if !self.token.is_cancelled() {
            *held = reason;
            self.token.cancel();
        }
    }

    pub async fn requested(&self) -> String {
        self.token.cancelled().await;
        self.reason.lock().clone()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.closed.cancel();
        let event = AuditEvent::SessionEnded {
            session: self.session.id().to_string(),
            user: Some(self.lease.user.clone()),
            resource: Some(self.lease.resource.clone()),
            bytes_from_client: self.bytes_from_client.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
            duration_ms: self.started.elapsed().as_millis() as u64,
            statements: None,
            severed: (self.severed.load(Ordering::Acquire) && self.closed_why.get().is_none())
                .then(|| self.ended_message()),
            closed_by_gateway: self.closed_why.get().cloned(),
            query_log: None,
            query_log_digest: None,
        };
        let gateway = self.gateway.clone();
        // Audit writes fsync: keep them off the async workers.
        tokio::task::spawn_blocking(move || gateway.audit(event));
    }
}
