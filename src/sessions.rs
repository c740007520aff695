//! Live sessions, for `sessions`, for auditors following along, and for
//! an administrator ending one (`terminate`).

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::Protocol;

#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub protocol: Protocol,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub remote: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// What a live recording holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingKind {
    /// An SSH terminal session, asciicast v2.
    Asciicast,
    /// A Postgres query log, JSON lines.
    QueryLog,
    /// An SFTP channel's file log, JSON lines.
    FileLog,
}

/// A recording being written, for auditors to follow.
#[derive(Clone)]
pub struct LiveRecording {
    pub path: std::path::PathBuf,
    pub events: tokio::sync::broadcast::Sender<crate::ssh::LiveEvent>,
    pub kind: RecordingKind,
    /// Pushes buffered lines to the file, so a follower that subscribed
    /// first and reads the file second misses nothing.
    pub flush: Option<Flush>,
}

pub type Flush = Arc<dyn Fn() + Send + Sync>;

/// What a live session is doing, as `sessions` shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Activity {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Postgres: statements sent so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<u64>,
    /// Postgres: the statement the session waits on, and for how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
    /// Postgres: a transaction is open (its locks are held meanwhile).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_transaction: bool,
    /// Postgres: the client went away while its statement runs on; the
    /// session lasts until the backend has answered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_gone: bool,
    /// SSH: each open channel, e.g. `shell (pty)`, `exec: make`, `sftp`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Seconds since the last byte either way (against the protocol's
    /// idle_timeout).
    pub idle_seconds: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Running {
    pub statement: String,
    pub seconds: u64,
}

/// Asks a session what it is doing. It holds the session weakly: the
/// registry must not keep a finished session alive.
pub type ActivityProbe = Arc<dyn Fn() -> Option<Activity> + Send + Sync>;

/// An administrator's request to end one session, and what it tells the
/// user. The session's own lease stays: its holder may connect again.
#[derive(Clone, Default)]
pub struct Termination {
    token: CancellationToken,
    message: Arc<Mutex<Option<String>>>,
}

impl Termination {
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// What the user is told, once requested.
    pub fn message(&self) -> Option<String> {
        self.message.lock().clone()
    }

    fn request(&self, message: String) {
        self.message.lock().get_or_insert(message);
        self.token.cancel();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    #[error("no live session {0:?} (see `sessions`)")]
    NoSuchSession(String),
    #[error(
        "{0} is a control-plane session, which holds no access: revoke the user's requests instead"
    )]
    ControlSession(String),
}

#[derive(Default)]
pub struct SessionRegistry {
    live: DashMap<String, SessionInfo>,
    recordings: DashMap<String, LiveRecording>,
    terminations: DashMap<String, Termination>,
    probes: DashMap<String, ActivityProbe>,
}

/// Removes its session from the registry when dropped, however the
/// session ends.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    id: String,
    termination: Termination,
}

impl SessionRegistry {
    pub fn register(
        self: &Arc<Self>,
        protocol: Protocol,
        user: &str,
        resource: Option<&str>,
        remote: &str,
    ) -> SessionGuard {
        let id = new_session_id();
        let info = SessionInfo {
            id: id.clone(),
            protocol,
            user: user.to_string(),
            resource: resource.map(String::from),
            remote: remote.to_string(),
            started_at: chrono::Utc::now(),
        };
        let termination = Termination::default();
        self.live.insert(id.clone(), info);
        self.terminations.insert(id.clone(), termination.clone());
        metrics::gauge!("jitgate_sessions", "protocol" => protocol.name()).increment(1.0);
        SessionGuard {
            registry: self.clone(),
            id,
            termination,
        }
    }

    /// Asks session `id` on a resource to end, telling its user `message`;
    /// returns what the session was.
    pub fn terminate(&self, id: &str, message: String) -> Result<SessionInfo, TerminateError> {
        let info = self
            .live
            .get(id)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| TerminateError::NoSuchSession(id.to_string()))?;
        if info.resource.is_none() {
            return Err(TerminateError::ControlSession(id.to_string()));
        }
        let termination = self
            .terminations
            .get(id)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| TerminateError::NoSuchSession(id.to_string()))?;
        termination.request(message);
        Ok(info)
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = self.live.iter().map(|e| e.value().clone()).collect();
        sessions.sort_by_key(|s| s.started_at);
        sessions
    }
}

impl SessionRegistry {
    /// Publishes the first recording of `session` for `follow`.
    pub fn add_recording(&self, session: &str, recording: LiveRecording) {
        self.recordings
            .entry(session.to_string())
            .or_insert(recording);
    }

    pub fn recording(&self, session: &str) -> Option<LiveRecording> {
        self.recordings.get(session).map(|r| r.value().clone())
    }

    /// What session `id` is doing now, if it tells.
    pub fn activity(&self, id: &str) -> Option<Activity> {
        let probe = self.probes.get(id).map(|p| p.value().clone())?;
        probe()
    }
}

impl SessionGuard {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn termination(&self) -> &Termination {
        &self.termination
    }

    /// Lets `sessions` ask this session what it is doing.
    pub fn report_activity(&self, probe: ActivityProbe) {
        self.registry.probes.insert(self.id.clone(), probe);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.recordings.remove(&self.id);
        self.registry.terminations.remove(&self.id);
        self.registry.probes.remove(&self.id);
        if let Some((_, info)) = self.registry.live.remove(&self.id) {
            metrics::gauge!("jitgate_sessions", "protocol" => info.protocol.name()).decrement(1.0);
        }
    }
}

/// `s-` and 12 random hex digits: short enough to type after `follow`.
pub fn new_session_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("s-{}", hex::encode(bytes))
}
