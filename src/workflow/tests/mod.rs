//! Every transition and every refusal of the workflow engine: the shared
//! test world here, approvals in `approvals.rs`, checkout and leases in
//! `leases.rs`.

use std::time::Duration;

use chrono::TimeZone;

use super::*;

mod approvals;
mod leases;
mod random_walk;
use crate::config::Config;

const CONFIG: &str = r#"
[roles]
engineer = ["request"]
approver = ["request", "approve"]
workflow_admin = ["manage_workflow"]
admin = ["admin"]

[groups.engineers]
roles = ["engineer"]
[groups.sre-leads]
roles = ["approver"]
[groups.security]
roles = ["approver"]

[[user]]
name = "alice"
groups = ["engineers"]
[[user]]
name = "zoe"
groups = ["engineers"]
[[user]]
name = "bob"
groups = ["sre-leads"]
[[user]]
name = "erin"
groups = ["sre-leads"]
[[user]]
name = "dave"
groups = ["security"]
[[user]]
name = "frank"
groups = ["engineers"]
[[user]]
name = "root"
roles = ["admin"]
[[user]]
name = "wanda"
roles = ["workflow_admin"]

[[resource]]
name = "web-01"
kind = "ssh"
address = "127.0.0.1:22"
account = "deploy"
[resource.workflow]
mfa_required = false
max_duration = "2h"
self_service_extension = "15m"
approval_levels = [{ approvers = ["group:sre-leads"] }]

[[resource]]
name = "orders-prod"
kind = "postgres"
address = "127.0.0.1:5432"
account = "app"
database = "orders"
[resource.workflow]
single_user = true
require_reason = true
max_duration = "8h"
approval_levels = [
  { approvers = ["group:sre-leads"], required = 2 },
  { approvers = ["group:security"], escalate_after = "1h", escalate_to = ["user:root"] },
]

[[resource]]
name = "sandbox"
kind = "ssh"
address = "127.0.0.1:22"
account = "ops"
[resource.workflow]
mfa_required = false
clock_starts = "approval"
pending_timeout = "10m"
"#;

struct World {
    config: Config,
    engine: Engine,
    now: Time,
    /// Every event committed, in order, as the journal would hold them.
    log: Vec<Event>,
}

impl World {
    fn new() -> Self {
        let config = Config::from_toml("test.toml".as_ref(), CONFIG).expect("test config is valid");
        Self {
            config,
            engine: Engine::default(),
            log: Vec::new(),
            now: chrono::Utc
                .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
                .unwrap(),
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            directory: &self.config.directory,
            resources: &self.config.resources,
            now: self.now,
        }
    }

    /// What a reload to `config` would withdraw now.
    fn withdrawn_under(&self, config: &Config) -> Vec<Event> {
        self.engine.decide_withdrawn(&Context {
            directory: &config.directory,
            resources: &config.resources,
            now: self.now,
        })
    }

    fn advance(&mut self, secs: i64) {
        self.now += chrono::Duration::seconds(secs);
    }

    fn commit(
        &mut self,
        decision: Result<Vec<Event>, WorkflowError>,
    ) -> Result<Vec<Event>, WorkflowError> {
        let events = decision?;
        for event in &events {
            self.engine.apply(event);
            self.log.push(event.clone());
        }
        Ok(events)
    }

    fn request(&mut self, who: &str, resource: &str) -> Result<RequestId, WorkflowError> {
        let spec = RequestSpec {
            resource: resource.into(),
            duration: Some(Duration::from_secs(1800)),
            reason: Some("incident 42".into()),
            ticket: None,
        };
        let events = self.commit(self.engine.decide_request(&self.ctx(), who, spec))?;
        Ok(events[0].request_id().unwrap())
    }

    fn approve(&mut self, who: &str, id: RequestId) -> Result<Vec<Event>, WorkflowError> {
        self.commit(self.engine.decide_approve(&self.ctx(), who, id, None))
    }

    fn checkout(&mut self, who: &str, id: RequestId) -> Result<Vec<Event>, WorkflowError> {
        self.commit(
            self.engine
                .decide_checkout(&self.ctx(), who, id, true, None),
        )
    }

    /// What `extend ID --for SECS` by `who` would do, without a reason.
    fn decide_extend(
        &self,
        who: &str,
        id: RequestId,
        secs: u64,
    ) -> Result<Vec<Event>, WorkflowError> {
        let spec = ExtendSpec {
            id,
            by: Duration::from_secs(secs),
            reason: None,
        };
        self.engine.decide_extend(&self.ctx(), who, spec)
    }

    fn state(&self, id: RequestId) -> RequestState {
        self.engine.request(id).unwrap().state
    }

    /// Fully approves and checks out an orders-prod request of `who`.
    fn hold_orders(&mut self, who: &str) -> RequestId {
        let id = self.request(who, "orders-prod").unwrap();
        self.approve("bob", id).unwrap();
        self.approve("erin", id).unwrap();
        self.approve("dave", id).unwrap();
        self.checkout(who, id).unwrap();
        id
    }
}
