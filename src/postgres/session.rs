//! One Postgres session through the gateway: its lease, its upstream
//! backend, its query log, and how and why it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::Frontend;
use super::cancel::{CancelGuard, UpstreamKey, cancel_upstream};
use super::querylog::{QueryLogWriter, Statement, StatementTracker};
use super::wire::sqlstate;
use crate::audit::{AuditEvent, Protocol};
use crate::config::Resource;
use crate::lease::Lease;
use crate::sessions::{Activity, Running, SessionGuard};

/// How often a session's query log is flushed to its file. Followers get
/// each line at once over the live channel; the file lags by at most this.
const LOG_FLUSH: Duration = Duration::from_millis(200);

/// An expiry warning: the window end it is for, and how long before it.
type Warning = (crate::workflow::Time, Duration);

/// Why the gateway ends a session, told to the client as a FATAL error.
#[derive(Clone, Debug)]
pub struct Ending {
    pub code: &'static str,
    pub message: String,
    /// The lease ended (as opposed to idling out or a protocol error).
    pub severed: bool,
}

pub struct QueryLog {
    pub tracker: StatementTracker,
    pub writer: QueryLogWriter,
    /// A line could not be written: the session must not go on unlogged.
    failed: bool,
}

impl QueryLog {
    pub fn write_all(&mut self, statements: &[Statement]) {
        for statement in statements {
            if let Err(e) = self.writer.write(statement) {
                self.failed(&e);
            }
        }
    }

    /// Writes out what is buffered; false once anything failed to reach
    /// the file.
    pub fn flushed(&mut self) -> bool {
        if let Err(e) = self.writer.flush() {
            self.failed(&e);
        }
        !self.failed
    }

    fn failed(&mut self, error: &std::io::Error) {
        metrics::counter!("jitgate_query_log_write_failures_total").increment(1);
        if !self.failed {
            tracing::error!(error = %error, path = %self.writer.path.display(), "query log write failed; the session is ended");
        }
        self.failed = true;
    }
}

pub struct PgSession {
    pub frontend: Arc<Frontend>,
    pub user: String,
    pub resource: Resource,
    pub lease: Arc<Lease>,
    pub registration: SessionGuard,
    pub cancel_key: CancelGuard,
    pub upstream_key: UpstreamKey,
    pub log: Mutex<QueryLog>,
    pub bytes_from_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last byte either way.
    last_activity: AtomicU64,
    /// Queries and syncs sent and not yet answered by ReadyForQuery: a
    /// session waiting on a long query is busy, not idle.
    outstanding: AtomicU64,
    /// The client went away while a statement ran: the session lasts
    /// until the backend has answered (see `relay`).
    client_gone: AtomicBool,
    /// Cancelled when the session must end; `ending` says why.
    pub end: CancellationToken,
    ending: Mutex<Option<Ending>>,
    /// The gateway address the client reached, for the command the expiry
    /// warnings suggest.
    gateway_host: std::net::IpAddr,
    _connection_slot: super::UserSlot,
}

pub struct NewSession {
    pub frontend: Arc<Frontend>,
    pub user: String,
    pub remote: String,
    /// The gateway address the client reached.
    pub gateway_host: std::net::IpAddr,
    pub resource: Resource,
    pub lease: Arc<Lease>,
    pub upstream_key: UpstreamKey,
    pub slot: super::UserSlot,
}

impl PgSession {
    pub fn open(new: NewSession) -> std::io::Result<Arc<Self>> {
        let gateway = &new.frontend.runtime.gateway;
        let registration = gateway.sessions().register(
            Protocol::Postgres,
            &new.user,
            Some(&new.resource.name),
            &new.remote,
        );
        let config = gateway.config();
        let (live, _) = tokio::sync::broadcast::channel(1024);
        let writer = QueryLogWriter::create(
            &config.postgres.query_log_dir,
            registration.id(),
            &new.user,
            &new.resource.name,
            live.clone(),
        )?;
        gateway.sessions().add_recording(
            registration.id(),
            crate::sessions::LiveRecording {
                path: writer.path.clone(),
                events: live,
                kind: crate::sessions::RecordingKind::QueryLog,
                flush: Some(writer.flusher()),
            },
        );
        let cancel_key = new.frontend.cancels.issue(new.upstream_key.clone());
        let session = Arc::new(Self {
            user: new.user,
            resource: new.resource,
            lease: new.lease,
            registration,
            cancel_key,
            upstream_key: new.upstream_key,
            log: Mutex::new(QueryLog {
                tracker: StatementTracker::new(config.postgres.log_parameters),
                writer,
                failed: false,
            }),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            client_gone: AtomicBool::new(false),
            end: CancellationToken::new(),
            ending: Mutex::new(None),
            gateway_host: new.gateway_host,
            _connection_slot: new.slot,
            frontend: new.frontend,
        });
        let weak = Arc::downgrade(&session);
        session
            .registration
            .report_activity(Arc::new(move || weak.upgrade().map(|s| s.activity())));
        Ok(session)
    }

    /// Bytes, statements, and the statement it waits on, for `sessions`.
    fn activity(&self) -> Activity {
        let log = self.log.lock();
        let running = log.tracker.waiting_on().map(|(statement, sent)| Running {
            statement: statement.to_string(),
            seconds: sent.elapsed().as_secs(),
        });
        Activity {
            bytes_in: self.bytes_from_client.load(Ordering::Relaxed),
            bytes_out: self.bytes_to_client.load(Ordering::Relaxed),
            statements: Some(log.tracker.statements),
            running,
            in_transaction: log.tracker.in_transaction,
            client_gone: self.client_gone(),
            channels: Vec::new(),
            // Waiting on a statement is not idle (nor for idle_timeout).
            idle_seconds: if self.busy() {
                0
            } else {
                self.idle_for().as_secs()
            },
        }
    }

    pub fn id(&self) -> &str {
        self.registration.id()
    }

    pub fn started_event(&self) -> AuditEvent {
        AuditEvent::SessionStarted {
            session: self.id().to_string(),
            protocol: Protocol::Postgres,
            user: self.user.clone(),
            resource: self.resource.name.clone(),
            request_id: self.lease.request_id,
        }
    }

    pub fn touch(&self) {
        self.last_activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The client sent a Query or Sync.
    pub fn awaiting_reply(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// The server sent ReadyForQuery.
    pub fn answered(&self) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn busy(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) > 0
    }

    pub fn client_left(&self) {
        self.client_gone.store(true, Ordering::Relaxed);
    }

    pub fn client_gone(&self) -> bool {
        self.client_gone.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Ends the session for `ending`; the first reason given wins.
    pub fn finish(&self, ending: Option<Ending>) {
        {
            let mut slot = self.ending.lock();
            if slot.is_none() && !self.end.is_cancelled() {
                *slot = ending;
            }
        }
        self.end.cancel();
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ending.lock().clone()
    }

    /// Why a severed session ended: an administrator's termination, or
    /// the end of the window.
    pub fn ended_message(&self) -> String {
        if let Some(message) = self.registration.termination().message() {
            return message;
        }
        self.frontend.runtime.gateway.lease_end_message(&self.lease)
    }

    /// Waits for whatever ends the session first — the lease, an
    /// administrator's termination, a shutdown, idleness, or the relay
    /// itself — sending expiry warnings meanwhile.
    pub async fn watch(self: Arc<Self>, warnings: tokio::sync::mpsc::Sender<String>) {
        let shutdown = self.frontend.runtime.sessions.clone();
        let idle_timeout = self.frontend.runtime.gateway.config().postgres.idle_timeout;
        let mut warned = Vec::new();
        let mut flush = tokio::time::interval(LOG_FLUSH);
        loop {
            let warning = self.next_warning(&warned);
            let idle_left = if self.busy() {
                idle_timeout
            } else {
                idle_timeout.saturating_sub(self.idle_for())
            };
            let wake = warning.map_or(idle_left, |(at, _)| at.min(idle_left));
            tokio::select! {
                () = self.end.cancelled() => return,
                () = self.lease.token.cancelled() => {
                    self.sever();
                    return;
                }
                () = self.registration.termination().requested() => {
                    self.sever();
                    return;
                }
                () = shutdown.cancelled() => {
                    self.finish(Some(Ending { code: sqlstate::ADMIN_SHUTDOWN, message: "jitgate is shutting down".into(), severed: false }));
                    return;
                }
                () = tokio::time::sleep(wake) => {}
                _ = flush.tick() => {
                    if self.log.lock().flushed() {
                        continue;
                    }
                    self.finish(Some(Ending {
                        code: sqlstate::IO_ERROR,
                        message: "jitgate cannot write this session's query log, so the session is ended".into(),
                        severed: false,
                    }));
                    return;
                }
            }
            if !self.busy() && self.idle_for() >= idle_timeout {
                let message = format!(
                    "closed after {} without activity (postgres.idle_timeout)",
                    crate::config::HumanDuration(idle_timeout)
                );
                self.finish(Some(Ending {
                    code: sqlstate::IDLE_TIMEOUT,
                    message,
                    severed: false,
                }));
                return;
            }
            if let Some((at, which)) = warning
                && at.is_zero()
            {
                warned.push(which);
                let _ = warnings.try_send(self.warning_text());
            }
        }
    }

    /// The next configured warning still to give: (time until, which: the
    /// window end it is for and how long before it). An extension moves
    /// the end, and its warnings are given again.
    fn next_warning(&self, warned: &[Warning]) -> Option<(Duration, Warning)> {
        let lease = self
            .frontend
            .runtime
            .gateway
            .leases()
            .lookup(&self.user, &self.resource.name)?;
        let left = (lease.window_end - chrono::Utc::now()).to_std().ok()?;
        self.frontend
            .runtime
            .gateway
            .config()
            .warn_before
            .iter()
            .filter(|before| {
                !warned.contains(&(lease.window_end, **before))
                    && **before < left + Duration::from_secs(1)
            })
            .map(|before| (left.saturating_sub(*before), (lease.window_end, *before)))
            .min()
    }

    fn warning_text(&self) -> String {
        let lease = self
            .frontend
            .runtime
            .gateway
            .leases()
            .lookup(&self.user, &self.resource.name);
        let lease = lease.unwrap_or_else(|| self.lease.clone());
        let gateway = &self.frontend.runtime.gateway;
        format!(
            "jitgate: access window for {} ends in {}; extend with: {}",
            self.resource.name,
            lease.ends_in(tokio::time::Instant::now()),
            self.frontend.control_command(
                self.gateway_host,
                &self.user,
                &gateway.extend_command(self.lease.request_id),
            )
        )
    }

    /// The lease ended or an administrator terminated the session: stop
    /// the backend's work now, then end the session.
    fn sever(&self) {
        metrics::counter!("jitgate_sessions_severed_total", "protocol" => "postgres").increment(1);
        self.cancel_statement();
        self.finish(Some(Ending {
            code: sqlstate::ADMIN_SHUTDOWN,
            message: self.ended_message(),
            severed: true,
        }));
    }

    /// The client left and its statement goes on sending it output: on a
    /// direct connection PostgreSQL fails writing it and ends the session,
    /// rolling the statement back, so the gateway does the same.
    pub fn abandon(&self) {
        self.cancel_statement();
        self.finish(None);
    }

    /// Cancels what the backend runs, with the real key, in the background.
    fn cancel_statement(&self) {
        let key = self.upstream_key.clone();
        let timeout = self
            .frontend
            .runtime
            .gateway
            .config()
            .postgres
            .connect_timeout;
        tokio::spawn(async move {
            if let Err(e) = cancel_upstream(&key, timeout).await {
                tracing::warn!(error = %e, "cancelling the upstream query failed");
            }
        });
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        let (statements, query_log, query_log_digest) = {
            let mut log = self.log.lock();
            let left = log.tracker.unfinished();
            log.write_all(&left);
            let _ = log.flushed();
            (
                log.tracker.statements,
                log.writer.path.display().to_string(),
                // What the file holds, even if its last lines did not fit.
                log.writer.digest(),
            )
        };
        let (severed, closed_by_gateway) = match self.ending() {
            Some(ending) if ending.severed => (Some(ending.message), None),
            Some(ending) => (None, Some(ending.message)),
            None => (None, None),
        };
        let event = AuditEvent::SessionEnded {
            session: self.id().to_string(),
            user: Some(self.user.clone()),
            resource: Some(self.resource.name.clone()),
            bytes_from_client: self.bytes_from_client.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
            duration_ms: self.started.elapsed().as_millis() as u64,
            statements: Some(statements),
            severed,
            closed_by_gateway,
            query_log: Some(query_log),
            query_log_digest: Some(query_log_digest),
        };
        let gateway = self.frontend.runtime.gateway.clone();
        // Audit writes fsync: keep them off the event loop, and tracked so
        // a shutdown waits for the record.
        self.frontend
            .runtime
            .tracker
            .spawn_blocking(move || gateway.audit(event));
    }
}
