//! `audit tail --user U --resource R --session S --type T`: the records
//! a security team asked to see.

use std::collections::BTreeSet;
use std::path::Path;

use crate::audit::{AuditEvent, AuditRecord, records_after};
use crate::gateway::{Gateway, Subjects};

/// Records read at a time while looking back (for the last matches, or
/// for a moment).
const WINDOW: u64 = 4096;
/// How far back `-n` and `--since` look at most: a filter that matches
/// nothing, or a moment older than the log, must not read a years-long
/// chain.
const FURTHEST: u64 = 1_000_000;

#[derive(Debug, Default)]
pub struct TailFilter {
    pub user: Option<String>,
    pub resource: Option<String>,
    pub session: Option<String>,
    /// Record types and workflow changes; any of them passes.
    pub types: BTreeSet<String>,
    subjects: Subjects,
}

impl TailFilter {
    pub fn new(
        user: Option<String>,
        resource: Option<String>,
        session: Option<String>,
        types: BTreeSet<String>,
    ) -> Self {
        Self {
            user,
            resource,
            session,
            types,
            subjects: Subjects::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.resource.is_none()
            && self.session.is_none()
            && self.types.is_empty()
    }

    /// Whether `event` is one asked for (every condition given holds).
    pub fn matches(&mut self, gateway: &Gateway, event: &AuditEvent) -> bool {
        if self.is_empty() {
            return true;
        }
        // Read before testing, so every `requested` record is learned.
        let resource = self.subjects.resource_of(gateway, event);
        let user_ok = match &self.user {
            Some(user) => self.subjects.names_user(gateway, event, user),
            None => true,
        };
        let resource_ok = self
            .resource
            .as_deref()
            .is_none_or(|wanted| resource.as_deref() == Some(wanted));
        let session_ok = self
            .session
            .as_deref()
            .is_none_or(|session| event.session() == Some(session));
        let type_ok = self.types.is_empty()
            || event
                .type_names()
                .iter()
                .any(|name| self.types.contains(name));
        user_ok && resource_ok && session_ok && type_ok
    }
}

/// The seq after which the last `lines` records matching `filter` begin,
/// looking back from `head` a window at a time.
pub fn start_of_last_matches(
    gateway: &Gateway,
    log: &Path,
    head: u64,
    lines: usize,
    filter: &mut TailFilter,
) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(head);
    }
    let mut found = 0;
    look_back(log, head, |records| {
        // Oldest first, so a request's `requested` record is learned
        // before the approvals that follow it in the same window.
        let matching: Vec<u64> = records
            .iter()
            .filter(|record| filter.matches(gateway, &record.event))
            .map(|record| record.seq)
            .collect();
        matching.iter().rev().find_map(|seq| {
            found += 1;
            (found == lines).then_some(seq - 1)
        })
    })
}

/// Reads back from `head` a window of records at a time (each window
/// oldest first) until `visit` names the seq it looked for; at most
/// `FURTHEST` records back, where it gives up and answers that seq.
pub(super) fn look_back(
    log: &Path,
    head: u64,
    mut visit: impl FnMut(&[AuditRecord]) -> Option<u64>,
) -> std::io::Result<u64> {
    let furthest = head.saturating_sub(FURTHEST);
    let mut upto = head;
    while upto > furthest {
        let from = upto.saturating_sub(WINDOW).max(furthest);
        let records = records_after(log, from, (upto - from) as usize)?;
        if let Some(seq) = visit(&records) {
            return Ok(seq);
        }
        upto = from;
    }
    Ok(furthest)
}
