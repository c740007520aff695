//! Live sessions, for `sessions` and for auditors following along.

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

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

#[derive(Default)]
pub struct SessionRegistry {
    live: DashMap<String, SessionInfo>,
    recordings: DashMap<String, LiveRecording>,
}

/// Removes its session from the registry when dropped, however the
/// session ends.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    id: String,
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
        self.live.insert(id.clone(), info);
        metrics::gauge!("jitgate_sessions", "protocol" => protocol_name(protocol)).increment(1.0);
        SessionGuard {
            registry: self.clone(),
            id,
        }
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
}

impl SessionGuard {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.recordings.remove(&self.id);
        if let Some((_, info)) = self.registry.live.remove(&self.id) {
            metrics::gauge!("jitgate_sessions", "protocol" => protocol_name(info.protocol))
                .decrement(1.0);
        }
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Ssh => "ssh",
        Protocol::Postgres => "postgres",
        Protocol::Control => "control",
    }
}

/// `s-` and 12 random hex digits: short enough to type after `follow`.
pub fn new_session_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("s-{}", hex::encode(bytes))
}
