//! Configuration: TOML on disk → parsed (`file`) → validated typed [`Config`].
//!
//! Loading never half-succeeds: any mistake is one [`ConfigError`] naming the
//! file, the key and the problem, and the gateway refuses to start.

pub mod duration;
mod file;
pub mod penalties;
mod resource;
mod validate;
pub mod webhook;
pub use validate::{is_valid_name, normalize_public_key, validate_workflow};
pub mod workflow_settings;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use duration::{DurationError, HumanDuration};
pub use workflow_settings::{ApprovalLevel, ClockStart, Principal, WorkflowSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// What a role may do. `Admin` implies every other permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Request,
    Approve,
    ManageWorkflow,
    Audit,
    Admin,
}

impl Permission {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "request" => Self::Request,
            "approve" => Self::Approve,
            "manage_workflow" => Self::ManageWorkflow,
            "audit" => Self::Audit,
            "admin" => Self::Admin,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Approve => "approve",
            Self::ManageWorkflow => "manage_workflow",
            Self::Audit => "audit",
            Self::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: BTreeSet<String>,
    pub permissions: BTreeSet<Permission>,
    /// OpenSSH public keys, `TYPE BASE64` (comments stripped).
    pub ssh_keys: Vec<String>,
    pub totp_secret_file: Option<PathBuf>,
}

impl User {
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission) || self.permissions.contains(&Permission::Admin)
    }
}

/// Users with their resolved groups and permissions.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub users: BTreeMap<String, User>,
    /// Every group named in `[groups]` or by a user.
    pub groups: BTreeSet<String>,
}

impl Directory {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn has(&self, user: &str, permission: Permission) -> bool {
        self.user(user).is_some_and(|u| u.has(permission))
    }

    /// Whether `user` is, or belongs to, `principal`.
    pub fn matches(&self, user: &str, principal: &Principal) -> bool {
        match principal {
            Principal::User(name) => name == user,
            Principal::Group(group) => self.user(user).is_some_and(|u| u.groups.contains(group)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Ssh,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    pub kind: ResourceKind,
    /// `host:port` of the target.
    pub address: String,
    /// The managed account the gateway logs in as.
    pub account: String,
    /// Postgres only: the database on the target.
    pub database: Option<String>,
    pub credential_file: Option<PathBuf>,
    pub allow_port_forwarding: bool,
    /// SSH only: the pinned host key of the target, `TYPE BASE64`. Without
    /// one, the key seen on first contact is recorded and required after.
    pub host_key: Option<String>,
    /// Postgres only: TLS to the target, verified against this CA file.
    pub upstream_tls_ca: Option<PathBuf>,
    /// Scheduled rotation of the managed credential.
    pub rotation_interval: Option<Duration>,
    /// At a rotation with no window open, processes of the managed account
    /// still running on an SSH target (started inside a window with
    /// `nohup`, `setsid`, ...), or sessions of the managed role still
    /// connected to a Postgres target past the gateway, are ended, so no
    /// shell or session outlives its window. Off for an account that also
    /// runs services.
    pub end_leftover_processes: bool,
    /// An administrative account that resets the managed account's
    /// credential when the account's own is refused: a Postgres role with
    /// CREATEROLE, or an SSH login that is root or may `sudo -u` the
    /// managed account.
    pub reconcile: Option<Reconcile>,
    pub workflow: WorkflowSettings,
}

/// The account a rotation falls back on when the managed account's
/// credential was changed on the target behind the gateway's back (a user
/// inside a window can `ALTER ROLE` their own session's role, or rewrite
/// `authorized_keys`): without it that credential would outlive the window.
#[derive(Clone, Debug)]
pub struct Reconcile {
    pub account: String,
    /// Its password or OpenSSH private key (mode 0600), read when needed.
    pub credential_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Listen {
    pub ssh: SocketAddr,
    pub postgres: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How clients verify the certificate, for the psql line `checkout`
    /// prints: the CA file as clients have it (not read here), and the
    /// name the certificate is for (else the address the client reached).
    pub client_root_cert: Option<String>,
    pub client_host: Option<String>,
}

/// How a Postgres client shows the gateway its lease password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum ClientAuth {
    /// Sent in cleartext inside TLS (libpq's `password` method): every
    /// client and driver can, and it costs the client nothing.
    #[serde(rename = "password")]
    Password,
    /// SCRAM-SHA-256, with channel binding (SCRAM-SHA-256-PLUS) where the
    /// certificate allows: the password never crosses the wire, and bound
    /// to the gateway's own TLS connection a proof is no use to a man in
    /// the middle. Clients run PBKDF2 (4096 rounds) at every connection.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

/// The Postgres data plane's logs and limits.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    pub client_auth: ClientAuth,
    /// Per-session query logs (JSON lines) are written here.
    pub query_log_dir: PathBuf,
    /// Log Bind parameter values (off: they may hold personal data).
    pub log_parameters: bool,
    pub max_connections_per_user: u32,
    pub idle_timeout: Duration,
    pub auth_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Mfa {
    pub issuer: String,
    pub max_failures: u32,
    pub lockout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub audit_rotate_bytes: u64,
    pub shutdown_grace: Duration,
    pub journal_compact_records: u64,
    pub listen: Listen,
    pub ssh_host_key: PathBuf,
    pub ssh_auth_timeout: Duration,
    /// How often a quiet SSH client is asked whether it is alive, and how
    /// many questions it may leave unanswered (sshd's ClientAliveInterval
    /// and ClientAliveCountMax); read at start.
    pub ssh_client_alive_interval: Duration,
    pub ssh_client_alive_count_max: u32,
    /// A connection to a resource with no channel data either way for
    /// this long, and no command without a pty running, is closed.
    pub ssh_idle_timeout: Duration,
    /// Where SSH session recordings (asciicast v2) are written.
    pub recordings_dir: PathBuf,
    pub record_input: bool,
    /// Exec channels are recorded up to this many bytes (0: not at all).
    pub record_exec_bytes: u64,
    /// Environment variables a client may pass to targets (`LC_*` globs).
    pub env_allow: Vec<String>,
    /// When to warn live sessions that their window is ending.
    pub warn_before: Vec<Duration>,
    pub tls: Option<Tls>,
    pub postgres: PostgresSettings,
    /// The encrypted credential store.
    pub vault_path: PathBuf,
    /// Explicit master key file; see `vault::resolve_master_key` otherwise.
    pub vault_master_key_file: Option<PathBuf>,
    pub mfa: Mfa,
    pub directory: Directory,
    pub resources: BTreeMap<String, Resource>,
    /// Where audit records are POSTed as they happen.
    pub webhooks: Vec<webhook::Webhook>,
    /// Sources whose logins keep failing are shut out for a while.
    pub penalties: penalties::Penalties,
}

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside the file are
    /// taken relative to the file's own directory, so a config and its key
    /// files can move together.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parsed: file::ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        validate::validate(path, parsed)
    }

    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }
}

#[cfg(test)]
mod tests;
