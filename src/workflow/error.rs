//! Why the workflow refused a command. Each message tells the user what to do next.

use crate::config::{HumanDuration, Permission};

use super::model::{RequestId, RequestState, Time};

/// What a user refused for a request's state can do instead.
fn next_step(state: RequestState, action: &str) -> &'static str {
    use RequestState::{Active, Approved, Pending};
    match (state, action) {
        (Pending, "checked out" | "extended") => ": it still needs approval",
        (Approved, "extended") => ": check it out first",
        (Pending | Approved, "checked in") => ": cancel withdraws it",
        (Active, "checked out") => ": it is checked out already (status shows it)",
        (Active, "cancelled") => ": checkin ends it",
        (Approved | Active, "approved") => ": it needs no more approvals",
        (state, "checked out" | "extended") if state.is_final() => ": it has ended; request anew",
        (state, _) if state.is_final() => ": it has ended already",
        _ => "",
    }
}

fn hhmm(time: &Time) -> String {
    time.format("%H:%M UTC").to_string()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown resource {0:?}: `resources` lists them")]
    UnknownResource(String),
    #[error("unknown request {0}")]
    UnknownRequest(RequestId),
    #[error("permission denied: this needs the {} permission", .0.name())]
    MissingPermission(Permission),
    #[error("{0} requires a reason: add --reason TEXT")]
    ReasonRequired(String),
    #[error("{0} requires a ticket id: add --ticket ID")]
    TicketRequired(String),
    #[error("duration must be longer than 0s")]
    ZeroDuration,
    #[error("{requested} is longer than the maximum of {max} for {resource}")]
    DurationTooLong {
        resource: String,
        requested: HumanDuration,
        max: HumanDuration,
    },
    #[error("you cannot approve your own request")]
    SelfApproval,
    #[error("you have already approved request {0}")]
    AlreadyApproved(RequestId),
    #[error("you are not an approver for request {0}")]
    NotAnApprover(RequestId),
    #[error("request {id} is waiting for level {} approval; you approve at a later level", waiting + 1)]
    LevelNotReached { id: RequestId, waiting: usize },
    #[error("request {id} is {} and cannot be {action}{}", state.name(), next_step(*state, action))]
    WrongState {
        id: RequestId,
        state: RequestState,
        action: &'static str,
    },
    #[error("request {0} belongs to someone else")]
    NotYourRequest(RequestId),
    #[error(
        "{resource} is held by {holder} until {}: `watch` tells you when it is free",
        hhmm(until)
    )]
    HeldBy {
        resource: String,
        holder: String,
        until: Time,
    },
    #[error("you already hold an active lease on {resource} (request {id}): extend it instead")]
    AlreadyHolding { resource: String, id: RequestId },
    #[error(
        "you already have request {id} for {resource} waiting for approval: cancel it first to ask anew"
    )]
    AlreadyRequested { resource: String, id: RequestId },
    #[error(
        "you already have request {id} for {resource}, approved: check it out, or cancel it first to ask anew"
    )]
    AlreadyApprovedFor { resource: String, id: RequestId },
    #[error("{0} requires MFA: pass --totp CODE, or connect with ssh -t to be prompted")]
    MfaRequired(String),
    #[error(
        "request {id} is for {resource}, which is not a database: it has no connection password"
    )]
    NoConnectionPassword { id: RequestId, resource: String },
    #[error("the approval of request {0} has lapsed: file a new request")]
    ApprovalLapsed(RequestId),
    #[error("extending by {requested} would exceed the maximum of {max} for {resource}")]
    ExtensionTooLong {
        resource: String,
        requested: HumanDuration,
        max: HumanDuration,
    },
    #[error("request {0} already has an extension waiting for approval")]
    ExtensionPending(RequestId),
    #[error("you cannot delegate to yourself")]
    SelfDelegation,
    #[error("the delegation end {} is already past", .0.format("%Y-%m-%d %H:%M UTC"))]
    DelegationInPast(Time),
    #[error("you have no delegation to revoke")]
    NoDelegation,
    #[error("invalid workflow for {resource}: {key}: {problem}")]
    InvalidWorkflow {
        resource: String,
        key: String,
        problem: String,
    },
    #[error(
        "the {what} is too long ({chars} characters, at most {max}): keep it short, the details belong in a ticket"
    )]
    TextTooLong {
        what: &'static str,
        chars: usize,
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(state: RequestState, action: &'static str) -> String {
        WorkflowError::WrongState {
            id: 7,
            state,
            action,
        }
        .to_string()
    }

    #[test]
    fn a_refusal_for_the_state_says_what_to_do_instead() {
        assert_eq!(
            refused(RequestState::Approved, "extended"),
            "request 7 is approved and cannot be extended: check it out first"
        );
        assert_eq!(
            refused(RequestState::Pending, "checked in"),
            "request 7 is pending and cannot be checked in: cancel withdraws it"
        );
        assert_eq!(
            refused(RequestState::Expired, "extended"),
            "request 7 is expired and cannot be extended: it has ended; request anew"
        );
        assert_eq!(
            refused(RequestState::CheckedIn, "revoked"),
            "request 7 is checked in and cannot be revoked: it has ended already"
        );
        assert_eq!(
            refused(RequestState::Active, "cancelled"),
            "request 7 is active and cannot be cancelled: checkin ends it"
        );
    }
}
