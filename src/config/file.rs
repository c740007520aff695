//! The config file exactly as written: serde types that mirror the TOML.
//! `validate` turns these into the typed [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::workflow_settings::WorkflowSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub listen: ListenSection,
    #[serde(default)]
    pub ssh: SshSection,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub postgres: PostgresSection,
    #[serde(default)]
    pub vault: VaultSection,
    #[serde(default)]
    pub mfa: MfaSection,
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSection>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserSection>,
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceSection>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<super::webhook::WebhookSection>,
    #[serde(default)]
    pub penalties: super::penalties::PenaltiesSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub audit_rotate_bytes: u64,
    pub shutdown_grace: HumanDuration,
    pub journal_compact_records: u64,
    pub warn_before: Vec<HumanDuration>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            state_dir: "state".into(),
            audit_log: "audit/audit.log".into(),
            audit_rotate_bytes: 64 * 1024 * 1024,
            shutdown_grace: HumanDuration::from_secs(30),
            journal_compact_records: 10_000,
            warn_before: vec![HumanDuration::from_secs(300), HumanDuration::from_secs(60)],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    pub ssh: String,
    pub postgres: String,
    pub http: String,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            ssh: "0.0.0.0:2222".into(),
            postgres: "0.0.0.0:6432".into(),
            http: "127.0.0.1:9187".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSection {
    pub host_key: PathBuf,
    pub auth_timeout: HumanDuration,
    pub recordings_dir: PathBuf,
    pub record_input: bool,
    pub record_exec_bytes: u64,
    pub env_allow: Vec<String>,
    pub client_alive_interval: HumanDuration,
    pub client_alive_count_max: u32,
    pub idle_timeout: HumanDuration,
}

/// The first MiB of each exec channel: all of what most commands print
/// (`ssh GW+host cat /etc/shadow`, or `bash` fed commands on stdin), and no
/// more than that of an rsync or tar pipeline.
pub const DEFAULT_RECORD_EXEC_BYTES: u64 = 1024 * 1024;

impl Default for SshSection {
    fn default() -> Self {
        Self {
            host_key: "state/ssh_host_ed25519_key".into(),
            auth_timeout: HumanDuration::from_secs(30),
            recordings_dir: "recordings".into(),
            record_input: false,
            record_exec_bytes: DEFAULT_RECORD_EXEC_BYTES,
            env_allow: vec!["LANG".into(), "LC_*".into(), "TZ".into()],
            client_alive_interval: HumanDuration::from_secs(30),
            client_alive_count_max: 3,
            idle_timeout: HumanDuration::from_secs(3600),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSection {
    pub path: Option<PathBuf>,
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    pub client_auth: super::ClientAuth,
    pub query_log_dir: PathBuf,
    pub log_parameters: bool,
    pub max_connections_per_user: u32,
    pub idle_timeout: HumanDuration,
    pub auth_timeout: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub max_message_bytes: u64,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            client_auth: super::ClientAuth::Password,
            query_log_dir: "querylogs".into(),
            log_parameters: false,
            max_connections_per_user: 32,
            idle_timeout: HumanDuration::from_secs(3600),
            auth_timeout: HumanDuration::from_secs(30),
            connect_timeout: HumanDuration::from_secs(10),
            max_message_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_root_cert: Option<String>,
    #[serde(default)]
    pub client_host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSection {
    pub issuer: String,
    pub max_failures: u32,
    pub lockout: HumanDuration,
}

impl Default for MfaSection {
    fn default() -> Self {
        Self {
            issuer: "jitgate".into(),
            max_failures: 5,
            lockout: HumanDuration::from_secs(300),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub ssh_key_files: Vec<PathBuf>,
    pub totp_secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSection {
    pub name: String,
    pub kind: String,
    pub address: String,
    pub account: String,
    pub database: Option<String>,
    pub credential_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_port_forwarding: bool,
    /// SSH only: the target's pinned host key (`TYPE BASE64`).
    pub host_key: Option<String>,
    /// Postgres only: connect to the target over TLS, verified against this CA.
    pub upstream_tls_ca: Option<PathBuf>,
    /// Rotate the managed credential on this schedule too.
    pub rotation_interval: Option<HumanDuration>,
    /// SSH only: end the managed account's processes left running on the
    /// target after the last window (default true).
    pub end_leftover_processes: Option<bool>,
    /// An account that may reset the managed account's credential.
    pub reconcile_account: Option<String>,
    pub reconcile_credential_file: Option<PathBuf>,
    #[serde(default)]
    pub workflow: WorkflowSettings,
}
