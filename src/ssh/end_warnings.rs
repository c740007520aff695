//! Warnings to a user that their access window is about to end, timed
//! from the lease in force: an extension approved mid-session moves them
//! (and the first ones due under the old end are not given).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::Lease;

use super::dataplane::DataPlane;

pub struct EndWarnings {
    /// Warnings given (or passed before the session began), by the
    /// deadline they were for and how long before it.
    given: Vec<(Instant, Duration)>,
    next: Option<Instant>,
}

impl EndWarnings {
    pub fn new(plane: &DataPlane) -> Self {
        let lease = current_lease(plane);
        let now = Instant::now();
        let mut warnings = Self {
            given: Vec::new(),
            next: None,
        };
        // Those whose time passed before the session began are not given.
        let passed: Vec<_> = warnings
            .ahead(plane, &lease)
            .filter(|(at, _)| *at <= now)
            .map(|(_, before)| (lease.deadline, before))
            .collect();
        warnings.given = passed;
        warnings.next = warnings.earliest(plane, &lease);
        warnings
    }

    /// When the next warning is due, as the lease stood when last looked at.
    pub fn next_at(&self) -> Option<Instant> {
        self.next
    }

    /// The warning to show now, if one is due under the lease in force.
    pub fn fire(&mut self, plane: &DataPlane) -> Option<String> {
        let lease = current_lease(plane);
        let now = Instant::now();
        let due: Vec<_> = self
            .ahead(plane, &lease)
            .filter(|(at, _)| *at <= now)
            .map(|(_, before)| (lease.deadline, before))
            .collect();
        let warn = !due.is_empty();
        self.given.extend(due);
        self.next = self.earliest(plane, &lease);
        warn.then(|| warning_text(plane, &lease))
    }

    /// Configured warnings not yet given for `lease`'s deadline: (when, how
    /// long before the end).
    fn ahead<'a>(
        &'a self,
        plane: &DataPlane,
        lease: &'a Lease,
    ) -> impl Iterator<Item = (Instant, Duration)> + 'a {
        let befores = plane.gateway.config().warn_before.clone();
        befores
            .into_iter()
            .filter(|before| !self.given.contains(&(lease.deadline, *before)))
            .filter_map(|before| Some((lease.deadline.checked_sub(before)?, before)))
    }

    fn earliest(&self, plane: &DataPlane, lease: &Lease) -> Option<Instant> {
        self.ahead(plane, lease).map(|(at, _)| at).min()
    }
}

/// The lease the session runs on as it stands now (an extension replaced
/// the one it started with).
fn current_lease(plane: &DataPlane) -> Arc<Lease> {
    plane
        .gateway
        .leases()
        .lookup(&plane.lease.user, &plane.lease.resource)
        .filter(|lease| lease.request_id == plane.lease.request_id)
        .unwrap_or_else(|| plane.lease.clone())
}

fn warning_text(plane: &DataPlane, lease: &Lease) -> String {
    format!(
        "access to {} ends in {}: extend it with `{}`",
        plane.resource.name,
        lease.ends_in(Instant::now()),
        plane.gateway.extend_command(lease.request_id)
    )
}
