//! Commands users run against the gateway, and how each is carried out.

use crate::audit::AuditEvent;
use crate::config::{Config, ResourceKind, WorkflowSettings};
use crate::mfa::MfaError;
use crate::secret::{Secret, read_secret_file};
use crate::workflow::{Context, Event, ExtendSpec, RequestId, RequestSpec, Time, WorkflowError};

use super::{Core, Gateway, GatewayError};

#[derive(Clone, Debug)]
pub enum Command {
    Request(RequestSpec),
    Approve {
        id: RequestId,
        comment: Option<String>,
    },
    Deny {
        id: RequestId,
        reason: Option<String>,
    },
    Cancel {
        id: RequestId,
        why: Option<String>,
    },
    Checkout {
        id: RequestId,
        totp: Option<String>,
    },
    Checkin {
        id: RequestId,
    },
    /// A new connection password for an active Postgres lease.
    NewPassword {
        id: RequestId,
        totp: Option<String>,
    },
    /// `why` is the administrator's reason, told to the user and audited.
    Revoke {
        id: RequestId,
        why: Option<String>,
    },
    RevokeUser {
        user: String,
        why: Option<String>,
    },
    Extend(ExtendSpec),
    Delegate {
        to: String,
        resources: Vec<String>,
        until: Option<Time>,
    },
    RevokeDelegation,
    SetWorkflow {
        resource: String,
        settings: WorkflowSettings,
    },
}

impl Command {
    /// A short description for audit records; never includes a TOTP code.
    pub fn describe(&self) -> String {
        match self {
            Self::Request(spec) => format!("request {}", spec.resource),
            Self::Approve { id, .. } => format!("approve {id}"),
            Self::Deny { id, .. } => format!("deny {id}"),
            Self::Cancel { id, .. } => format!("cancel {id}"),
            Self::Checkout { id, .. } => format!("checkout {id}"),
            Self::Checkin { id } => format!("checkin {id}"),
            Self::NewPassword { id, .. } => format!("password {id}"),
            Self::Revoke { id, .. } => format!("revoke {id}"),
            Self::RevokeUser { user, .. } => format!("revoke --user {user}"),
            Self::Extend(spec) => format!("extend {} by {}s", spec.id, spec.by.as_secs()),
            Self::Delegate { to, .. } => format!("delegate to {to}"),
            Self::RevokeDelegation => "delegate --revoke".into(),
            Self::SetWorkflow { resource, .. } => format!("workflow set {resource}"),
        }
    }
}

/// What a successful command produced.
#[derive(Debug)]
pub struct Outcome {
    pub events: Vec<Event>,
    /// For a Postgres checkout: the lease's connection password, shown to
    /// the user once. Only its hash is stored.
    pub lease_password: Option<Secret>,
}

impl Gateway {
    /// Runs `command` for `actor`. A refused command changes nothing and is
    /// audited with its reason.
    pub fn execute(&self, actor: &str, command: Command) -> Result<Outcome, GatewayError> {
        let config = self.config();
        let fresh_password = self.lease_password_for(&config, &command);
        let mut core = self.core.lock();
        let description = command.describe();
        let result = self.execute_locked(&mut core, &config, actor, command, fresh_password);
        if let Some(error) = result.as_ref().err().filter(|e| !e.took_effect()) {
            metrics::counter!("jitgate_commands_refused_total").increment(1);
            let refusal = AuditEvent::Refused {
                actor: actor.to_string(),
                command: description,
                reason: error.to_string(),
            };
            self.audit(refusal);
        }
        result
    }

    fn execute_locked(
        &self,
        core: &mut Core,
        config: &Config,
        actor: &str,
        command: Command,
        fresh_password: Option<LeasePassword>,
    ) -> Result<Outcome, GatewayError> {
        let now = chrono::Utc::now();
        let ctx = Context::of(config, now);
        let engine = &core.state.engine;
        let events = match command {
            Command::Request(spec) => engine.decide_request(&ctx, actor, spec)?,
            Command::Approve { id, comment } => engine.decide_approve(&ctx, actor, id, comment)?,
            Command::Deny { id, reason } => engine.decide_deny(&ctx, actor, id, reason)?,
            Command::Cancel { id, why } => engine.decide_cancel(&ctx, actor, id, why)?,
            Command::Checkin { id } => engine.decide_checkin(&ctx, actor, id)?,
            Command::Revoke { id, why } => engine.decide_revoke(&ctx, actor, id, why)?,
            Command::RevokeUser { user, why } => {
                engine.decide_revoke_user(&ctx, actor, &user, why)?
            }
            Command::Extend(spec) => engine.decide_extend(&ctx, actor, spec)?,
            Command::Delegate {
                to,
                resources,
                until,
            } => engine.decide_delegate(&ctx, actor, &to, resources, until)?,
            Command::RevokeDelegation => engine.decide_revoke_delegation(&ctx, actor)?,
            Command::SetWorkflow { resource, settings } => {
                engine.decide_set_workflow(&ctx, actor, &resource, settings)?
            }
            Command::Checkout { id, totp } => {
                let checkout = Checkout {
                    id,
                    totp,
                    fresh_password,
                };
                return self.checkout(core, config, &ctx, actor, checkout);
            }
            Command::NewPassword { id, totp } => {
                let asked = Checkout {
                    id,
                    totp,
                    fresh_password,
                };
                return self.new_password(core, config, &ctx, actor, asked);
            }
        };
        self.commit(core, Some(actor), events.clone(), None)?;
        Ok(Outcome {
            events,
            lease_password: None,
        })
    }

    /// A Postgres checkout's password and its record, made before the core
    /// lock is taken: the record's SCRAM verifier costs a PBKDF2 run (about
    /// a millisecond) that other commands should not wait for.
    fn lease_password_for(&self, config: &Config, command: &Command) -> Option<LeasePassword> {
        let (Command::Checkout { id, .. } | Command::NewPassword { id, .. }) = command else {
            return None;
        };
        let resource = self.core.lock().state.engine.request(*id)?.resource.clone();
        let kind = config.resource(&resource)?.kind;
        (kind == ResourceKind::Postgres).then(LeasePassword::new)
    }

    /// Checkout verifies everything else first, so a refused checkout never
    /// consumes a TOTP code; then MFA; then issues the lease password.
    fn checkout(
        &self,
        core: &mut Core,
        config: &Config,
        ctx: &Context,
        actor: &str,
        checkout: Checkout,
    ) -> Result<Outcome, GatewayError> {
        let Checkout {
            id,
            totp,
            fresh_password,
        } = checkout;
        let engine = &core.state.engine;
        engine.decide_checkout(ctx, actor, id, true, None)?;
        let request = engine
            .request(id)
            .ok_or(WorkflowError::UnknownRequest(id))?;
        let resource = request.resource.clone();
        if let Some(managed) = config.resource(&resource) {
            self.checkout_held_back(engine, managed)?;
        }
        let mfa_step = self.mfa_step(config, actor, request, totp)?;
        let is_postgres = config
            .resource(&resource)
            .is_some_and(|r| r.kind == ResourceKind::Postgres);
        // Made here only if the resource became a database after the
        // password was prepared (a reload in between).
        let lease_password = is_postgres.then(|| fresh_password.unwrap_or_else(LeasePassword::new));
        let (lease_password, secret_hash) = lease_password.map(LeasePassword::split).unzip();
        let events =
            core.state
                .engine
                .decide_checkout(ctx, actor, id, mfa_step.is_some(), secret_hash)?;
        self.commit(core, Some(actor), events.clone(), mfa_step)?;
        Ok(Outcome {
            events,
            lease_password,
        })
    }

    /// A new connection password for `actor`'s active Postgres lease,
    /// checked as a checkout is: everything but MFA, then MFA.
    fn new_password(
        &self,
        core: &mut Core,
        config: &Config,
        ctx: &Context,
        actor: &str,
        asked: Checkout,
    ) -> Result<Outcome, GatewayError> {
        let Checkout {
            id,
            totp,
            fresh_password,
        } = asked;
        let engine = &core.state.engine;
        engine.decide_new_password(ctx, actor, id, true, None)?;
        let request = engine
            .request(id)
            .ok_or(WorkflowError::UnknownRequest(id))?;
        let mfa_step = self.mfa_step(config, actor, request, totp)?;
        let (password, record) = fresh_password.unwrap_or_else(LeasePassword::new).split();
        let events = core.state.engine.decide_new_password(
            ctx,
            actor,
            id,
            mfa_step.is_some(),
            Some(record),
        )?;
        self.commit(core, Some(actor), events.clone(), mfa_step)?;
        Ok(Outcome {
            events,
            lease_password: Some(password),
        })
    }

    /// The TOTP step `actor` passed, where `request`'s settings require
    /// MFA; none where they do not.
    fn mfa_step(
        &self,
        config: &Config,
        actor: &str,
        request: &crate::workflow::Request,
        totp: Option<String>,
    ) -> Result<Option<(String, u64)>, GatewayError> {
        if !request.settings.mfa_required {
            return Ok(None);
        }
        let code = totp.ok_or_else(|| WorkflowError::MfaRequired(request.resource.clone()))?;
        let step = self.verify_totp(config, actor, &code)?;
        Ok(Some((actor.to_string(), step)))
    }

    /// Called under the core lock, so a code's step is consumed and
    /// journaled before another checkout can present it.
    fn verify_totp(&self, config: &Config, user: &str, code: &str) -> Result<u64, GatewayError> {
        let secret_file = config
            .directory
            .user(user)
            .and_then(|u| u.totp_secret_file.clone())
            .ok_or_else(|| MfaError::NotEnrolled(user.to_string()))?;
        let secret = read_secret_file(&secret_file).map_err(|e| {
            tracing::error!(error = %e, user, "TOTP secret unreadable");
            MfaError::NotEnrolled(user.to_string())
        })?;
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        match self.mfa.verify(user, &secret, code, now) {
            Ok(pass) => Ok(pass.step),
            Err(failure) => {
                metrics::counter!("jitgate_mfa_failures_total").increment(1);
                let reason = failure.error.to_string();
                self.audit(AuditEvent::MfaFailure {
                    user: user.to_string(),
                    reason,
                });
                if failure.locked_now {
                    let seconds = config.mfa.lockout.as_secs();
                    self.audit(AuditEvent::MfaLocked {
                        user: user.to_string(),
                        seconds,
                    });
                }
                Err(failure.error.into())
            }
        }
    }
}

/// A checkout as `execute_locked` hands it on.
struct Checkout {
    id: RequestId,
    totp: Option<String>,
    fresh_password: Option<LeasePassword>,
}

/// A new lease connection password and what the gateway keeps of it.
struct LeasePassword {
    password: Secret,
    record: String,
}

impl LeasePassword {
    /// 24 random bytes, hex: 192 bits, and safe to paste into any
    /// connection string.
    fn new() -> Self {
        let bytes: [u8; 24] = rand::random();
        let password = Secret::new(hex::encode(bytes));
        let record = crate::postgres::lease_password::record(password.expose());
        Self { password, record }
    }

    fn split(self) -> (Secret, String) {
        (self.password, self.record)
    }
}
