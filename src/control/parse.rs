//! The control commands' grammar (clap), as typed after `ssh -p 2222 alice@GW`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jitgate",
    no_binary_name = true,
    disable_version_flag = true,
    about = "Request, approve and use just-in-time access",
    // Typed after `ssh -p PORT USER@GATEWAY`, or at its prompt: there is no
    // `jitgate` program on the user's side to run.
    override_usage = "ssh -p PORT USER@GATEWAY [--json] <COMMAND> [ARGS]",
    after_help = "Run COMMAND --help for details. Add --json to any command for scripts."
)]
pub struct ControlLine {
    /// Print one JSON document (JSON lines for streams) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ControlCommand,
}

// Free text (`--reason`, `--comment`) takes every word up to the next
// flag: ssh joins its arguments with spaces, so `--reason 'disk full'`
// typed in a local shell reaches the gateway as two words.

#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Ask for access to a resource.
    Request {
        /// The resource's name, as in the config (e.g. web-01).
        resource: String,
        /// How long the access window lasts (e.g. 30m, 2h).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why the access is needed; approvers see it.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
        /// The change or incident ticket this access serves.
        #[arg(long, value_name = "ID")]
        ticket: Option<String>,
    },
    /// The resources there are to request, on what terms, and where I
    /// stand on each.
    Resources,
    /// My requests, and those waiting for my approval.
    Requests {
        /// Include finished requests.
        #[arg(long)]
        all: bool,
        /// Every user's requests, with what each waits on (needs audit).
        #[arg(long)]
        everyone: bool,
        /// With --everyone: only this user's requests.
        #[arg(long, value_name = "USER", requires = "everyone")]
        user: Option<String>,
        /// With --everyone: only the requests for this resource.
        #[arg(long, value_name = "RESOURCE", requires = "everyone")]
        resource: Option<String>,
    },
    /// Approve a request (or a pending extension).
    Approve {
        /// The request's number (see `requests`).
        id: u64,
        /// A note kept with the approval, for the requester and auditors.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        comment: Vec<String>,
    },
    /// Deny a request (or a pending extension).
    Deny {
        /// The request's number (see `requests`).
        id: u64,
        /// Told to the requester, and audited.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// Withdraw my request before checkout.
    Cancel {
        /// The request's number (see `requests`).
        id: u64,
        /// Why it is no longer needed; its approvers are told.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// Let another user approve on my behalf.
    Delegate {
        /// Who may approve in my place.
        #[arg(long, value_name = "USER", required_unless_present = "revoke")]
        to: Option<String>,
        /// Limit to these resources (repeatable); all when absent.
        #[arg(long = "resource", value_name = "RESOURCE")]
        resources: Vec<String>,
        /// Until when: a duration from now (8h) or an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Withdraw my delegation.
        #[arg(long, conflicts_with_all = ["to", "resources", "until"])]
        revoke: bool,
    },
    /// Start using an approved request (MFA when the resource requires it).
    Checkout {
        /// The approved request's number (see `requests`).
        id: u64,
        /// The current TOTP code; prompted for on a terminal when absent.
        #[arg(long, value_name = "CODE")]
        totp: Option<String>,
    },
    /// A new connection password for my active database lease, if I lost
    /// the one checkout showed (MFA when the resource requires it); the
    /// old one stops working, live sessions go on.
    Password {
        /// The active lease's request number (see `status`).
        id: u64,
        /// The current TOTP code; prompted for on a terminal when absent.
        #[arg(long, value_name = "CODE")]
        totp: Option<String>,
    },
    /// End my access window now.
    Checkin {
        /// The request's number (see `status`).
        id: u64,
    },
    /// Ask for more time on an active lease.
    Extend {
        /// The request's number (see `status`).
        id: u64,
        /// How much longer (e.g. 15m); beyond the self-service allowance
        /// it goes to the approvers.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why more time is needed; approvers see it (required where the
        /// resource requires a reason and the extension needs approval).
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// End someone's lease or request (admin); with --user, every lease
    /// and open request of that user at once.
    Revoke {
        /// The request's number.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<u64>,
        /// Every lease of this user ends and every open request of theirs
        /// is cancelled.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Told to the user whose access ends, and audited.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// My active leases and the time left on each.
    Status {
        /// Everyone's active leases: who holds access now (needs audit).
        #[arg(long)]
        all: bool,
    },
    /// Live sessions: everyone's with the audit permission, otherwise my own.
    Sessions,
    /// End one live session on a resource now; its lease stays (admin).
    Terminate {
        /// The session's id (see `sessions`).
        session: String,
        /// Told to the session's user, and audited.
        #[arg(long, num_args = 1.., value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// Rotate a resource's managed credential now (admin).
    Rotate {
        /// The resource whose credential changes.
        resource: String,
    },
    /// Stream events relevant to me as they happen.
    Watch,
    /// Follow a live session read-only, from its start: pty output, SFTP
    /// file operations or Postgres statements (needs audit).
    Follow {
        /// The session's id (see `sessions`).
        session: String,
    },
    /// Show what a finished session left: its SSH pty output, its SFTP
    /// file operations, its Postgres statements; refused for files changed
    /// since (needs audit). With --json, the files' own lines.
    Replay {
        /// The session's id (in the audit log).
        session: String,
    },
    /// Audit records (needs audit).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Show or change a resource's workflow settings.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The latest audit records; -f keeps following.
    Tail {
        /// How many of the latest records.
        #[arg(short = 'n', default_value_t = 20)]
        lines: usize,
        /// Keep printing records as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Every record after this seq instead of the last -n (rotated
        /// files included): resumes a stream where a reader stopped.
        #[arg(long, value_name = "SEQ", conflicts_with = "since")]
        after: Option<u64>,
        /// Every record written since WHEN instead of the last -n: how long
        /// ago (2h, 1d), a UTC time (14:00), a date (2026-11-29) or an RFC
        /// 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only records naming this user: as actor, requester, approver,
        /// or whose login or session it is.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only records about this resource, its requests and sessions.
        #[arg(long, value_name = "RESOURCE")]
        resource: Option<String>,
        /// Only the records of this session.
        #[arg(long, value_name = "SESSION")]
        session: Option<String>,
        /// Only records of these types or workflow changes, e.g.
        /// mfa_failure,refused or checked_out (as webhook events name them).
        #[arg(
            long = "type",
            value_name = "TYPE",
            value_delimiter = ',',
            hide_possible_values = true,
            value_parser = clap::builder::PossibleValuesParser::new(crate::config::webhook::EVENT_NAMES)
        )]
        types: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Print the settings in force.
    Show {
        /// The resource's name.
        resource: String,
    },
    /// Change settings (needs manage_workflow), e.g. max_duration=2h
    /// single_user=true levels=group:sre*1;group:security*1
    /// escalate_after.2=1h escalate_to.2=user:dave
    ///
    /// Keys: require_reason, require_ticket, single_user, mfa_required,
    /// rotate_on_checkin, default_duration, max_duration, pending_timeout,
    /// self_service_extension, clock_starts (approval|checkout), levels
    /// (replaces every level), escalate_after.N (none removes it) and
    /// escalate_to.N for level N.
    Set {
        /// The resource's name.
        resource: String,
        /// Settings to change, e.g. max_duration=2h.
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
}

/// The words given to a free-text flag as one text; none when absent.
pub fn free_text(words: Vec<String>) -> Option<String> {
    (!words.is_empty()).then(|| words.join(" "))
}
