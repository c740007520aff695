//! Commands decided into events. Nothing here mutates: a refused command
//! changes nothing by construction.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{
    ClockStart, Directory, HumanDuration, Permission, Resource, WorkflowSettings, validate_workflow,
};

use super::model::{
    Approval, EndReason, Event, PendingExtension, Request, RequestId, RequestState, Time,
};
use super::{Engine, WorkflowError};

/// What the engine may consult: the directory, the resources and the time.
pub struct Context<'a> {
    pub directory: &'a Directory,
    pub resources: &'a BTreeMap<String, Resource>,
    pub now: Time,
}

impl<'a> Context<'a> {
    /// The users and resources of `config`, at `now`.
    pub fn of(config: &'a crate::config::Config, now: Time) -> Self {
        Self {
            directory: &config.directory,
            resources: &config.resources,
            now,
        }
    }
}

/// The arguments of `extend ID --for D [--reason T]`.
#[derive(Clone, Debug)]
pub struct ExtendSpec {
    pub id: RequestId,
    pub by: Duration,
    pub reason: Option<String>,
}

/// The arguments of `request RESOURCE [--for D] [--reason T] [--ticket ID]`.
#[derive(Clone, Debug, Default)]
pub struct RequestSpec {
    pub resource: String,
    pub duration: Option<Duration>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
}

pub(super) fn secs(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Longest reason or comment kept: each is shown in every approver's
/// list and journaled and audited for good.
pub(super) const MAX_TEXT_CHARS: usize = 1000;
/// Longest ticket id.
const MAX_TICKET_CHARS: usize = 100;

/// Free text a user gave (`what`: "reason", "comment", ...), trimmed;
/// blank is none, and too long is refused rather than cut.
pub(super) fn given_text(
    what: &'static str,
    text: Option<String>,
    max: usize,
) -> Result<Option<String>, WorkflowError> {
    let Some(text) = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > max {
        return Err(WorkflowError::TextTooLong { what, chars, max });
    }
    Ok(Some(text))
}

pub(super) type Decision = Result<Vec<Event>, WorkflowError>;

impl Engine {
    /// The settings in force for `resource`: a runtime change or the file's.
    pub fn settings_for<'a>(
        &'a self,
        ctx: &'a Context,
        resource: &str,
    ) -> Option<&'a WorkflowSettings> {
        self.workflow_overrides
            .get(resource)
            .or_else(|| ctx.resources.get(resource).map(|r| &r.workflow))
    }

    pub(super) fn require(
        &self,
        ctx: &Context,
        actor: &str,
        permission: Permission,
    ) -> Result<(), WorkflowError> {
        let user = ctx
            .directory
            .user(actor)
            .ok_or_else(|| WorkflowError::UnknownUser(actor.to_string()))?;
        if user.has(permission) {
            Ok(())
        } else {
            Err(WorkflowError::MissingPermission(permission))
        }
    }

    pub(super) fn get(&self, id: RequestId) -> Result<&Request, WorkflowError> {
        self.requests
            .get(&id)
            .ok_or(WorkflowError::UnknownRequest(id))
    }

    pub(super) fn owned(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
    ) -> Result<&Request, WorkflowError> {
        let request = self.get(id)?;
        let is_admin = ctx.directory.has(actor, Permission::Admin);
        if request.requester != actor && !is_admin {
            return Err(WorkflowError::NotYourRequest(id));
        }
        Ok(request)
    }

    /// One open request per user and resource: a second would only ask
    /// approvers the same question twice, and one lease is all a user can
    /// hold on a resource. A lapsed approval, or a window over but not yet
    /// ended by its timer, leaves room for a new request.
    fn refuse_duplicate(
        &self,
        ctx: &Context,
        actor: &str,
        resource: &str,
    ) -> Result<(), WorkflowError> {
        let open = self
            .requests
            .values()
            .filter(|r| r.requester == actor && r.resource == resource)
            .find(|r| match r.state {
                RequestState::Pending => true,
                RequestState::Active => r.window_end.is_none_or(|end| end > ctx.now),
                RequestState::Approved => self
                    .approval_deadline(r)
                    .is_none_or(|deadline| deadline > ctx.now),
                _ => false,
            });
        let Some(open) = open else {
            return Ok(());
        };
        let (resource, id) = (resource.to_string(), open.id);
        Err(match open.state {
            RequestState::Active => WorkflowError::AlreadyHolding { resource, id },
            RequestState::Approved => WorkflowError::AlreadyApprovedFor { resource, id },
            _ => WorkflowError::AlreadyRequested { resource, id },
        })
    }

    pub fn decide_request(&self, ctx: &Context, actor: &str, spec: RequestSpec) -> Decision {
        self.require(ctx, actor, Permission::Request)?;
        let settings = self
            .settings_for(ctx, &spec.resource)
            .ok_or_else(|| WorkflowError::UnknownResource(spec.resource.clone()))?;
        self.refuse_duplicate(ctx, actor, &spec.resource)?;
        let reason = given_text("reason", spec.reason, MAX_TEXT_CHARS)?;
        let ticket = given_text("ticket id", spec.ticket, MAX_TICKET_CHARS)?;
        if settings.require_reason && reason.is_none() {
            return Err(WorkflowError::ReasonRequired(spec.resource));
        }
        if settings.require_ticket && ticket.is_none() {
            return Err(WorkflowError::TicketRequired(spec.resource));
        }
        let duration = spec
            .duration
            .unwrap_or(settings.default_duration.as_duration());
        if duration.is_zero() {
            return Err(WorkflowError::ZeroDuration);
        }
        if duration > settings.max_duration.as_duration() {
            return Err(WorkflowError::DurationTooLong {
                resource: spec.resource,
                requested: HumanDuration(duration),
                max: settings.max_duration,
            });
        }
        let id = self.next_id + 1;
        let mut events = vec![Event::Requested {
            id,
            requester: actor.to_string(),
            resource: spec.resource,
            duration_secs: duration.as_secs(),
            reason,
            ticket,
            settings: settings.clone(),
            at: ctx.now,
        }];
        if settings.approval_levels.is_empty() {
            events.push(Event::Granted { id, at: ctx.now });
        }
        Ok(events)
    }

    pub fn decide_approve(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        comment: Option<String>,
    ) -> Decision {
        let request = self.get(id)?;
        if ctx.directory.user(actor).is_none() {
            return Err(WorkflowError::UnknownUser(actor.to_string()));
        }
        let Some(round) = request.open_round() else {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "approved",
            });
        };
        if request.requester == actor {
            return Err(WorkflowError::SelfApproval);
        }
        let on_behalf_of = self.approval_authority(ctx, request, round, actor)?;
        let comment = given_text("comment", comment, MAX_TEXT_CHARS)?;
        let level = round.level;
        let mut events = vec![Event::Approved {
            id,
            approval: Approval {
                approver: actor.to_string(),
                on_behalf_of,
                level,
                comment,
                at: ctx.now,
            },
            extension: request.state == RequestState::Active,
        }];
        let level_done = round.approvals_at(level) + 1 >= request.levels()[level].required as usize;
        if level_done && level + 1 == request.levels().len() {
            events.push(match &request.extension {
                Some(extension) if request.state == RequestState::Active => {
                    self.extended_event(request, extension.duration_secs, None, ctx.now)
                }
                _ => Event::Granted { id, at: ctx.now },
            });
        }
        Ok(events)
    }

    fn extended_event(
        &self,
        request: &Request,
        add_secs: u64,
        reason: Option<String>,
        now: Time,
    ) -> Event {
        let end = request.window_end.unwrap_or(now);
        Event::Extended {
            id: request.id,
            window_end: end + secs(Duration::from_secs(add_secs)),
            reason,
            at: now,
        }
    }

    pub fn decide_deny(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        reason: Option<String>,
    ) -> Decision {
        let request = self.get(id)?;
        let Some(round) = request.open_round() else {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "denied",
            });
        };
        if request.requester == actor {
            return Err(WorkflowError::SelfApproval);
        }
        let is_admin = ctx.directory.has(actor, Permission::Admin);
        if !is_admin && !self.can_act_on(ctx, request, round, actor) {
            return Err(WorkflowError::NotAnApprover(id));
        }
        let reason = given_text("reason", reason, MAX_TEXT_CHARS)?;
        Ok(vec![Event::Denied {
            id,
            by: actor.to_string(),
            reason,
            extension: request.state == RequestState::Active,
            at: ctx.now,
        }])
    }

    /// The requester withdraws their request before checkout, saying why
    /// if they like (approvers watching are told).
    pub fn decide_cancel(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        why: Option<String>,
    ) -> Decision {
        let request = self.owned(ctx, actor, id)?;
        match request.state {
            RequestState::Pending | RequestState::Approved => Ok(vec![Event::Cancelled {
                id,
                by: actor.to_string(),
                why: given_text("reason", why, MAX_TEXT_CHARS)?,
                at: ctx.now,
            }]),
            state => Err(WorkflowError::WrongState {
                id,
                state,
                action: "cancelled",
            }),
        }
    }

    /// Checks everything about a checkout except MFA, which the caller
    /// verifies only once the rest has passed (so a refused checkout never
    /// burns a TOTP code), then calls again with the outcome.
    pub fn decide_checkout(
        &self,
        ctx: &Context,
        actor: &str,
        id: RequestId,
        mfa_passed: bool,
        secret_hash: Option<String>,
    ) -> Decision {
        let request = self.get(id)?;
        if request.requester != actor {
            return Err(WorkflowError::NotYourRequest(id));
        }
        if request.state != RequestState::Approved {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "checked out",
            });
        }
        if self
            .approval_deadline(request)
            .is_some_and(|deadline| deadline <= ctx.now)
        {
            return Err(WorkflowError::ApprovalLapsed(id));
        }
        let mut events = Vec::new();
        // A window that is over, though its timer has not ended it yet,
        // ends now and makes way.
        if let Some(own) = self
            .active_requests()
            .find(|r| r.requester == actor && r.resource == request.resource)
        {
            if own.window_end.is_none_or(|end| end > ctx.now) {
                return Err(WorkflowError::AlreadyHolding {
                    resource: request.resource.clone(),
                    id: own.id,
                });
            }
            events.push(Event::Ended {
                why: None,
                id: own.id,
                reason: EndReason::Expired,
                by: None,
                at: ctx.now,
            });
        }
        events.extend(self.make_way(ctx, actor, request)?);
        if request.settings.mfa_required && !mfa_passed {
            return Err(WorkflowError::MfaRequired(request.resource.clone()));
        }
        let window_end = match request.settings.clock_starts {
            ClockStart::Approval => request.window_end.unwrap_or(ctx.now),
            ClockStart::Checkout => ctx.now + secs(Duration::from_secs(request.duration_secs)),
        };
        events.push(Event::CheckedOut {
            id,
            window_end,
            mfa_passed,
            secret_hash,
            at: ctx.now,
        });
        Ok(events)
    }

    /// The other leases a checkout of `request` must not share the
    /// resource with: all of them for a single-user request, and any
    /// single-user one for any request (an administrator may have changed
    /// the resource's workflow since either was filed; a single-user lease
    /// stays exclusive to its end). Those whose windows are over end now;
    /// a live one refuses the checkout.
    fn make_way(&self, ctx: &Context, actor: &str, request: &Request) -> Decision {
        let mut ended = Vec::new();
        let exclusive = self.active_requests().filter(|other| {
            other.resource == request.resource
                && other.requester != actor
                && (request.settings.single_user || other.settings.single_user)
        });
        for other in exclusive {
            let until = other.window_end.unwrap_or(ctx.now);
            if until > ctx.now {
                return Err(WorkflowError::HeldBy {
                    resource: request.resource.clone(),
                    holder: other.requester.clone(),
                    until,
                });
            }
            ended.push(Event::Ended {
                why: None,
                id: other.id,
                reason: EndReason::Expired,
                by: None,
                at: ctx.now,
            });
        }
        Ok(ended)
    }

    pub fn decide_extend(&self, ctx: &Context, actor: &str, spec: ExtendSpec) -> Decision {
        let ExtendSpec { id, by, reason } = spec;
        let reason = given_text("reason", reason, MAX_TEXT_CHARS)?;
        // A bad argument is reported before anything about the request's state.
        if by.is_zero() {
            return Err(WorkflowError::ZeroDuration);
        }
        let request = self.get(id)?;
        if request.requester != actor {
            return Err(WorkflowError::NotYourRequest(id));
        }
        if request.state != RequestState::Active {
            return Err(WorkflowError::WrongState {
                id,
                state: request.state,
                action: "extended",
            });
        }
        if request.extension.is_some() {
            return Err(WorkflowError::ExtensionPending(id));
        }
        let settings = &request.settings;
        let total = request.duration_secs + request.extended_secs + by.as_secs();
        if total > settings.max_duration.as_duration().as_secs() {
            return Err(WorkflowError::ExtensionTooLong {
                resource: request.resource.clone(),
                requested: HumanDuration(by),
                max: settings.max_duration,
            });
        }
        if !request.extension_needs_approval(by.as_secs()) {
            let extended = self.extended_event(request, by.as_secs(), reason, ctx.now);
            return Ok(vec![extended]);
        }
        // Approvers asked for more time judge it by why it is needed, as
        // they judged the request itself.
        if settings.require_reason && reason.is_none() {
            return Err(WorkflowError::ReasonRequired(request.resource.clone()));
        }
        Ok(vec![Event::ExtensionRequested {
            id,
            duration_secs: by.as_secs(),
            reason,
            at: ctx.now,
        }])
    }

    pub fn decide_set_workflow(
        &self,
        ctx: &Context,
        actor: &str,
        resource: &str,
        settings: WorkflowSettings,
    ) -> Decision {
        self.require(ctx, actor, Permission::ManageWorkflow)?;
        if !ctx.resources.contains_key(resource) {
            return Err(WorkflowError::UnknownResource(resource.to_string()));
        }
        validate_workflow("workflow", &settings, ctx.directory).map_err(|(key, problem)| {
            WorkflowError::InvalidWorkflow {
                resource: resource.to_string(),
                key,
                problem,
            }
        })?;
        Ok(vec![Event::WorkflowChanged {
            resource: resource.to_string(),
            by: actor.to_string(),
            settings,
            at: ctx.now,
        }])
    }

    /// A new extension round starts at level 0 of the request's own levels.
    pub(super) fn new_extension(
        duration_secs: u64,
        reason: Option<String>,
        at: Time,
    ) -> PendingExtension {
        PendingExtension {
            duration_secs,
            reason,
            round: super::model::ApprovalRound::new(at),
        }
    }
}
