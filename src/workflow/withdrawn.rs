//! What a configuration change decides: a lease whose user or resource the
//! new configuration no longer has ends at once. Removing an engineer from
//! the file is how access is taken away in a hurry; a lease that outlived
//! it would leave their sessions running for the rest of the window.

use super::Engine;
use super::decide::Context;
use super::model::{EndReason, Event};

impl Engine {
    /// Ends every active lease held by a user, or on a resource, that
    /// `ctx` (the configuration just loaded) no longer knows.
    pub fn decide_withdrawn(&self, ctx: &Context) -> Vec<Event> {
        self.active_requests()
            .filter(|r| {
                ctx.directory.user(&r.requester).is_none()
                    || !ctx.resources.contains_key(&r.resource)
            })
            .map(|r| Event::Ended {
                id: r.id,
                reason: EndReason::Revoked,
                by: None,
                at: ctx.now,
            })
            .collect()
    }
}
