//! What a configuration change decides: a lease whose user or resource the
//! new configuration no longer has, or whose user may no longer request
//! access, ends at once. Removing an engineer from the file, or their
//! `request` permission, is how access is taken away in a hurry; a lease
//! that outlived it would leave their sessions running for the rest of the
//! window. Their open requests are cancelled too, so approvers are not
//! asked about them.

use super::Engine;
use super::decide::Context;
use super::ending::revocation;
use super::model::{Event, Request};
use crate::config::Permission;

impl Engine {
    /// Ends every lease, and cancels every open request, of a user or on a
    /// resource that `ctx` (the configuration just loaded) no longer knows,
    /// or of a user it no longer lets request access.
    pub fn decide_withdrawn(&self, ctx: &Context) -> Vec<Event> {
        self.requests
            .values()
            .filter(|r| !still_allowed(ctx, r))
            .filter_map(|r| revocation(r, (None, &None), ctx.now))
            .collect()
    }
}

/// Whether the configuration in `ctx` would still let `request` be made.
fn still_allowed(ctx: &Context, request: &Request) -> bool {
    ctx.directory.has(&request.requester, Permission::Request)
        && ctx.resources.contains_key(&request.resource)
}
