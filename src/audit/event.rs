//! The typed audit events. No variant carries a secret: lease passwords,
//! credentials and TOTP codes have no field to go in.

use serde::{Deserialize, Serialize};

use crate::workflow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Ssh,
    Postgres,
    Control,
}

impl Protocol {
    /// As in metrics labels and JSON: "ssh", "postgres", "control".
    pub fn name(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Postgres => "postgres",
            Self::Control => "control",
        }
    }

    /// As people write it: "SSH", "Postgres", "control".
    pub fn title(self) -> &'static str {
        match self {
            Self::Ssh => "SSH",
            Self::Postgres => "Postgres",
            Self::Control => "control",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    GatewayStarted {
        version: String,
    },
    GatewayStopped,
    ConfigReloaded {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A torn record at the end of the journal or audit log was cut off.
    TornTailDropped {
        file: String,
        bytes: u64,
    },
    /// At start, the audit log no longer held the head the gateway saved
    /// (`anchor`, SEQ:HASH): records were removed or rewritten while it was
    /// down. `audit verify` fails at this record.
    AuditTampered {
        anchor: String,
        problem: String,
    },
    /// The audit log could not take records for a while and more of them
    /// happened than the gateway holds in memory: `count` records from
    /// `first` to `last` (their times) are missing before this one.
    AuditRecordsLost {
        count: u64,
        first: String,
        last: String,
    },
    /// A workflow state change; `actor` is absent for the gateway's own
    /// decisions (expiry, timeouts).
    Workflow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
        change: workflow::Event,
    },
    /// A command refused: who tried what, and why.
    Refused {
        actor: String,
        command: String,
        reason: String,
    },
    MfaFailure {
        user: String,
        reason: String,
    },
    MfaLocked {
        user: String,
        seconds: u64,
    },
    Login {
        protocol: Protocol,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        remote: String,
        /// SSH: the SHA-256 fingerprint of the key presented.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An SSH connection cut because a reload took out the key it logged
    /// in with, or its user: its sessions end with it.
    LoginWithdrawn {
        user: String,
        remote: String,
        key: String,
        reason: String,
    },
    /// Logins from `source` (an address, or an IPv6 /64) failed so often
    /// that its new connections are closed at once for about `seconds`.
    SourcePenalized {
        source: String,
        seconds: u64,
    },
    SessionStarted {
        session: String,
        protocol: Protocol,
        user: String,
        resource: String,
        request_id: u64,
    },
    /// An administrator ended one live session on a resource (`terminate`);
    /// the lease it ran under stays.
    SessionTerminated {
        session: String,
        user: String,
        resource: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One channel of an SSH session finished: what ran, how it ended.
    ChannelEnded {
        session: String,
        /// Whose session, on what: on records from this version on, so a
        /// reader needs no join with the session's start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        /// `shell`, `exec`, `subsystem` or `direct-tcpip`.
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        bytes_from_client: u64,
        bytes_to_client: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording: Option<String>,
        /// What the recording held when the channel ended (see
        /// `evidence`): the chain vouches for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording_digest: Option<super::FileDigest>,
        /// An SFTP channel's file log (`ssh::sftp`), and what it held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_log: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_log_digest: Option<super::FileDigest>,
    },
    /// A target's SSH host key was recorded on first contact, or did not
    /// match the pinned or recorded one (the session is refused).
    TargetHostKey {
        resource: String,
        fingerprint: String,
        accepted: bool,
        reason: String,
    },
    /// A resource's `credential_file` was imported into the vault.
    CredentialImported {
        resource: String,
    },
    RotationStarted {
        resource: String,
        reason: String,
    },
    RotationSucceeded {
        resource: String,
        version: u64,
    },
    RotationFailed {
        resource: String,
        error: String,
    },
    /// A key the gateway did not put there was found in a managed account's
    /// `authorized_keys` during rotation, and removed.
    PlantedKeyRemoved {
        resource: String,
        fingerprint: String,
    },
    /// Processes of an SSH resource's managed account were still running
    /// on the target with no window open (started inside one to outlive
    /// it, with `nohup` or `setsid`), or sessions of a Postgres resource's
    /// managed role were still connected past the gateway: `ended` were
    /// ended, `remaining` could not be. Each is `NAME (PID)` (for Postgres,
    /// `APPLICATION from ADDRESS (PID)`); arguments and queries are never
    /// recorded.
    LeftoverProcessesEnded {
        resource: String,
        ended: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remaining: Vec<String>,
    },
    /// Startup files of an SSH resource's managed account (`.bashrc`,
    /// `~/.ssh/rc`, its crontab, ...) changed since the gateway last
    /// looked: they run at every later login, so someone should read them.
    StartupFilesChanged {
        resource: String,
        files: Vec<String>,
    },
    /// Roles on a Postgres resource's target (their attributes, settings
    /// or memberships) changed since the gateway last looked: a window may
    /// have left a login or a setting behind, so someone should review
    /// them.
    RolesChanged {
        resource: String,
        roles: Vec<String>,
    },
    /// A look at the managed account after a rotation (`check`: startup
    /// files, roles, leftover processes) failed; what it looks for may be
    /// there.
    AccountCheckFailed {
        resource: String,
        check: String,
        error: String,
    },
    /// The target refused the managed account's own credential (it was
    /// changed there outside the gateway) and the reconcile role reset it.
    CredentialReconciled {
        resource: String,
        account: String,
    },
    /// A session the gateway never ended: it was killed or crashed while
    /// the session ran. Found at the next start, with the recordings and
    /// query log the session left, as they were then.
    SessionInterrupted {
        session: String,
        /// Whose session, on what: on records from this version on, so a
        /// reader needs no join with the session's start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<super::EvidenceFile>,
    },
    SessionEnded {
        session: String,
        /// Whose session, on what: on records from this version on, so a
        /// reader needs no join with the session's start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        bytes_from_client: u64,
        bytes_to_client: u64,
        duration_ms: u64,
        /// Postgres: statements run in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statements: Option<u64>,
        /// Why the gateway cut the session off with its access: the
        /// window ended, or an administrator terminated it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        severed: Option<String>,
        /// Why the gateway closed a session it did not sever: idleness,
        /// a shutdown, a log it could not write, a client breaking a limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        closed_by_gateway: Option<String>,
        /// Postgres: the session's query log, and what it held at the end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query_log: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query_log_digest: Option<super::FileDigest>,
    },
}

impl AuditEvent {
    /// The users this event names: who acted, whose access or session it
    /// is. A workflow event names its requester only on the request itself
    /// (`Requested`); readers resolve the others through its request id.
    pub fn users(&self) -> Vec<&str> {
        match self {
            Self::Workflow { actor, change } => {
                let mut users: Vec<&str> = actor.iter().map(String::as_str).collect();
                match change {
                    workflow::Event::Requested { requester, .. } => users.push(requester),
                    workflow::Event::Approved { approval, .. } => {
                        users.extend(approval.on_behalf_of.as_deref());
                    }
                    workflow::Event::DelegationGranted { delegation, .. } => {
                        users.extend([delegation.from.as_str(), delegation.to.as_str()]);
                    }
                    workflow::Event::DelegationRevoked { from, .. } => users.push(from),
                    _ => {}
                }
                users
            }
            Self::Refused { actor, .. } => vec![actor],
            Self::MfaFailure { user, .. } | Self::MfaLocked { user, .. } => vec![user],
            Self::Login { user, .. }
            | Self::LoginWithdrawn { user, .. }
            | Self::SessionStarted { user, .. } => vec![user],
            Self::SessionTerminated { user, by, .. } => vec![user, by],
            Self::ChannelEnded { user, .. }
            | Self::SessionInterrupted { user, .. }
            | Self::SessionEnded { user, .. } => user.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The resource this event names. A workflow event names it only on
    /// the request itself and on workflow changes; readers resolve the
    /// others through its request id.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Self::Workflow {
                change:
                    workflow::Event::Requested { resource, .. }
                    | workflow::Event::WorkflowChanged { resource, .. },
                ..
            } => Some(resource),
            Self::Login { resource, .. } => resource.as_deref(),
            Self::ChannelEnded { resource, .. }
            | Self::SessionInterrupted { resource, .. }
            | Self::SessionEnded { resource, .. } => resource.as_deref(),
            Self::SessionStarted { resource, .. }
            | Self::SessionTerminated { resource, .. }
            | Self::TargetHostKey { resource, .. }
            | Self::CredentialImported { resource }
            | Self::RotationStarted { resource, .. }
            | Self::RotationSucceeded { resource, .. }
            | Self::RotationFailed { resource, .. }
            | Self::PlantedKeyRemoved { resource, .. }
            | Self::LeftoverProcessesEnded { resource, .. }
            | Self::StartupFilesChanged { resource, .. }
            | Self::RolesChanged { resource, .. }
            | Self::AccountCheckFailed { resource, .. }
            | Self::CredentialReconciled { resource, .. } => Some(resource),
            _ => None,
        }
    }

    /// The names a reader selects this record by (webhook `events`,
    /// `audit tail --type`): its type and, for a workflow record, the
    /// change it records.
    pub fn type_names(&self) -> Vec<String> {
        let value = serde_json::to_value(self).unwrap_or_default();
        [&value["type"], &value["change"]["type"]]
            .into_iter()
            .filter_map(|name| name.as_str().map(str::to_string))
            .collect()
    }

    /// The live session this event belongs to.
    pub fn session(&self) -> Option<&str> {
        match self {
            Self::SessionStarted { session, .. }
            | Self::SessionTerminated { session, .. }
            | Self::ChannelEnded { session, .. }
            | Self::SessionInterrupted { session, .. }
            | Self::SessionEnded { session, .. } => Some(session),
            _ => None,
        }
    }
}
