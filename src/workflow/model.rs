//! The workflow's data: requests, approvals, delegations and the events that change them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{ApprovalLevel, Principal, WorkflowSettings};

pub type RequestId = u64;
pub type Time = DateTime<Utc>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Every level approved; not checked out yet.
    Approved,
    /// Checked out: the lease is live.
    Active,
    CheckedIn,
    Expired,
    Revoked,
    Denied,
    Cancelled,
    TimedOut,
}

impl RequestState {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved | Self::Active)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Active => "active",
            Self::CheckedIn => "checked in",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Denied => "denied",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed out",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who clicked approve.
    pub approver: String,
    /// Whose authority was used, when acting as a delegate ("bob for dave").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub level: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: Time,
}

impl Approval {
    /// The people this approval counts for; each may count once per round.
    pub fn people(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.approver.as_str()).chain(self.on_behalf_of.as_deref())
    }
}

/// Progress through the approval levels: for the request itself, and again
/// for an extension that exceeds the self-service allowance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRound {
    pub level: usize,
    pub level_started_at: Time,
    pub approvals: Vec<Approval>,
    /// The current level has been announced to its escalation approvers.
    #[serde(default)]
    pub escalated: bool,
}

impl ApprovalRound {
    pub fn new(at: Time) -> Self {
        Self {
            level: 0,
            level_started_at: at,
            approvals: Vec::new(),
            escalated: false,
        }
    }

    pub fn has_counted(&self, user: &str) -> bool {
        self.approvals.iter().any(|a| a.people().any(|p| p == user))
    }

    pub fn approvals_at(&self, level: usize) -> usize {
        self.approvals.iter().filter(|a| a.level == level).count()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingExtension {
    pub duration_secs: u64,
    /// Why more time is needed; approvers see it beside the request's own
    /// reason. Journals written before extensions had reasons lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub round: ApprovalRound,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub requester: String,
    pub resource: String,
    pub duration_secs: u64,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    pub created_at: Time,
    pub state: RequestState,
    /// The workflow in force when the request was filed; later changes to
    /// the resource do not move the goalposts of a request in flight.
    pub settings: WorkflowSettings,
    pub round: ApprovalRound,
    pub approved_at: Option<Time>,
    pub checked_out_at: Option<Time>,
    pub window_end: Option<Time>,
    pub ended_at: Option<Time>,
    pub ended_by: Option<String>,
    /// What whoever ended it said: a denial's or a revocation's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_why: Option<String>,
    pub extended_secs: u64,
    pub extension: Option<PendingExtension>,
    /// SHA-256 of the lease's connection password (never the password).
    pub secret_hash: Option<String>,
    pub mfa_passed: bool,
}

/// How much more time expiry warnings suggest asking for.
pub const SUGGESTED_EXTENSION_SECS: u64 = 15 * 60;

impl Request {
    pub fn levels(&self) -> &[ApprovalLevel] {
        &self.settings.approval_levels
    }

    /// Whether `by_secs` more on this lease goes to the approvers: it is
    /// beyond the self-service allowance left, and there are approvers.
    pub fn extension_needs_approval(&self, by_secs: u64) -> bool {
        let allowance = self.settings.self_service_extension.as_duration().as_secs();
        self.extended_secs + by_secs > allowance && !self.settings.approval_levels.is_empty()
    }

    /// The control command asking for `by_secs` more on this lease, with
    /// `--reason` where the approvers it goes to need one.
    pub fn extend_command(&self, by_secs: u64) -> String {
        let by = crate::config::HumanDuration::from_secs(by_secs);
        let command = format!("extend {} --for {by}", self.id);
        if self.settings.require_reason && self.extension_needs_approval(by_secs) {
            return format!("{command} --reason TEXT");
        }
        command
    }

    /// The approval round in progress: the request's own while it is
    /// pending, an extension's while the lease is active.
    pub fn open_round(&self) -> Option<&ApprovalRound> {
        match (&self.state, &self.extension) {
            (RequestState::Pending, _) => Some(&self.round),
            (RequestState::Active, Some(extension)) => Some(&extension.round),
            _ => None,
        }
    }

    fn open_round_mut(&mut self) -> Option<&mut ApprovalRound> {
        match (&self.state, &mut self.extension) {
            (RequestState::Pending, _) => Some(&mut self.round),
            (RequestState::Active, Some(extension)) => Some(&mut extension.round),
            _ => None,
        }
    }

    /// Counts `approval` in the open round; completing a level opens the next.
    pub(super) fn count_approval(&mut self, approval: &Approval) {
        let levels = self.settings.approval_levels.clone();
        let Some(round) = self.open_round_mut() else {
            return;
        };
        round.approvals.push(approval.clone());
        let required = levels.get(round.level).map_or(0, |l| l.required as usize);
        if round.approvals_at(round.level) >= required && round.level < levels.len() {
            round.level += 1;
            round.level_started_at = approval.at;
            round.escalated = false;
        }
    }

    /// Marks `level` of the open round as announced to its escalation approvers.
    pub(super) fn mark_escalated(&mut self, level: usize) {
        if let Some(round) = self.open_round_mut().filter(|r| r.level == level) {
            round.escalated = true;
        }
    }
}

/// "bob may approve for dave on these resources until then".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    pub from: String,
    pub to: String,
    /// Empty means every resource.
    pub resources: Vec<String>,
    pub until: Option<Time>,
}

impl Delegation {
    pub fn covers(&self, resource: &str, now: Time) -> bool {
        self.until.is_none_or(|until| now < until)
            && (self.resources.is_empty() || self.resources.iter().any(|r| r == resource))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    CheckedIn,
    Expired,
    Revoked,
}

/// Every change to workflow state. Commands are decided into events, events
/// are journaled, then applied: replaying the journal rebuilds the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Requested {
        id: RequestId,
        requester: String,
        resource: String,
        duration_secs: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
        settings: WorkflowSettings,
        at: Time,
    },
    Approved {
        id: RequestId,
        #[serde(flatten)]
        approval: Approval,
        /// An active lease's extension was approved (at this level).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        extension: bool,
    },
    /// The last level approved the request.
    Granted {
        id: RequestId,
        at: Time,
    },
    /// A level waited its `escalate_after`: `to` may now approve it too.
    Escalated {
        id: RequestId,
        level: usize,
        to: Vec<Principal>,
        at: Time,
    },
    Denied {
        id: RequestId,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// An active lease's extension was denied; the lease goes on.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        extension: bool,
        at: Time,
    },
    Cancelled {
        id: RequestId,
        by: String,
        /// An administrator's reason for revoking an open request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
        at: Time,
    },
    TimedOut {
        id: RequestId,
        at: Time,
    },
    CheckedOut {
        id: RequestId,
        window_end: Time,
        mfa_passed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_hash: Option<String>,
        at: Time,
    },
    Ended {
        id: RequestId,
        reason: EndReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// An administrator's reason for revoking the lease.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
        at: Time,
    },
    ExtensionRequested {
        id: RequestId,
        duration_secs: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: Time,
    },
    Extended {
        id: RequestId,
        window_end: Time,
        /// The requester's reason for a self-service extension; one that
        /// went to the approvers has it on its `ExtensionRequested`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: Time,
    },
    /// A new connection password for an active Postgres lease (the
    /// requester lost the one checkout showed); the old one stops working.
    PasswordReplaced {
        id: RequestId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_hash: Option<String>,
        mfa_passed: bool,
        at: Time,
    },
    DelegationGranted {
        delegation: Delegation,
        at: Time,
    },
    DelegationRevoked {
        from: String,
        at: Time,
    },
    WorkflowChanged {
        resource: String,
        by: String,
        settings: WorkflowSettings,
        at: Time,
    },
}

impl Event {
    /// The request this event concerns, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::Requested { id, .. }
            | Self::Approved { id, .. }
            | Self::Granted { id, .. }
            | Self::Escalated { id, .. }
            | Self::Denied { id, .. }
            | Self::Cancelled { id, .. }
            | Self::TimedOut { id, .. }
            | Self::CheckedOut { id, .. }
            | Self::Ended { id, .. }
            | Self::ExtensionRequested { id, .. }
            | Self::Extended { id, .. }
            | Self::PasswordReplaced { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// A copy fit for the audit log and event streams: hashes of lease
    /// passwords stay in the journal only.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        if let Self::CheckedOut { secret_hash, .. } | Self::PasswordReplaced { secret_hash, .. } =
            &mut copy
        {
            *secret_hash = None;
        }
        copy
    }
}
