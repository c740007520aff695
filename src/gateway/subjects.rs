//! Whose and about what an audit record is, for readers that pick records
//! out (`audit tail --user/--resource`, a webhook's `resources`). Most
//! records name their user and resource; a workflow record names only its
//! request, whose requester and resource come from the `requested` record
//! read earlier or from the engine.

use std::collections::HashMap;

use crate::audit::AuditEvent;
use crate::workflow::{Event, RequestId};

use super::Gateway;

/// How many requests a reader remembers: a webhook's reader runs for as
/// long as the gateway; past this it starts over (the engine still knows
/// every request of the last week).
const REMEMBERED: usize = 10_000;

/// Requester and resource of the requests a reader has met.
#[derive(Debug, Default)]
pub struct Subjects {
    requests: HashMap<RequestId, (String, String)>,
}

impl Subjects {
    /// The resource `event` is about, if any.
    pub fn resource_of(&mut self, gateway: &Gateway, event: &AuditEvent) -> Option<String> {
        match event.resource() {
            Some(resource) => Some(resource.to_string()),
            None => self
                .request_of(gateway, event)
                .map(|(_, resource)| resource),
        }
    }

    /// Whether `event` names `user`: as actor, requester or approver, or
    /// as whose login or session it is.
    pub fn names_user(&mut self, gateway: &Gateway, event: &AuditEvent, user: &str) -> bool {
        event.users().contains(&user)
            || self
                .request_of(gateway, event)
                .is_some_and(|(requester, _)| requester == user)
    }

    /// Requester and resource of a workflow event's request.
    fn request_of(&mut self, gateway: &Gateway, event: &AuditEvent) -> Option<(String, String)> {
        let AuditEvent::Workflow { change, .. } = event else {
            return None;
        };
        let id = change.request_id()?;
        if self.requests.len() >= REMEMBERED {
            self.requests.clear();
        }
        if let Event::Requested {
            requester,
            resource,
            ..
        } = change
        {
            self.requests
                .insert(id, (requester.clone(), resource.clone()));
        }
        if let Some(known) = self.requests.get(&id) {
            return Some(known.clone());
        }
        let found = gateway.read(|engine| {
            engine
                .request(id)
                .map(|r| (r.requester.clone(), r.resource.clone()))
        })?;
        self.requests.insert(id, found.clone());
        Some(found)
    }
}
