//! The lease table: the one thing the data planes consult on every login.
//!
//! `lookup(user, resource)` is a dashmap read: O(1), no lock held across an
//! await, no disk, no network. Expiry is timer-driven, in the shape of
//! mini-redis's purge task: one task sleeps until the earliest deadline in a
//! `BTreeSet<(Instant, RequestId)>`, woken early by a `Notify` whenever the
//! set changes. At the deadline it cancels the lease's token first (so every
//! session selecting on it is severed at once) and only then reports the end
//! to the gateway, which journals and audits it.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::workflow::{RequestId, Time};

/// A live access window of one user on one resource.
#[derive(Debug)]
pub struct Lease {
    pub request_id: RequestId,
    pub user: String,
    pub resource: String,
    /// Wall-clock end, for messages ("ended at 14:32 UTC").
    pub window_end: Time,
    /// Monotonic end, for timers and the login check.
    pub deadline: Instant,
    pub mfa_passed: bool,
    /// What checks the lease's connection password, for Postgres logins
    /// (`postgres::lease_password`).
    pub secret_hash: Option<String>,
    /// Cancelled when the lease ends; every session on it selects on this.
    pub token: CancellationToken,
    /// When it ended (its deadline, or the moment it was checked in or
    /// revoked), so a severed session can tell how long severing took.
    /// Shared, like the token, by the copies an extension makes.
    pub ended: Arc<OnceLock<Instant>>,
}

impl Lease {
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.deadline && !self.token.is_cancelled()
    }

    /// Ends the lease at `at` (no later than its deadline): every session
    /// on it is severed. Only the first end counts.
    fn end_at(&self, at: Instant) {
        let _ = self.ended.set(at.min(self.deadline));
        self.token.cancel();
    }

    /// When the lease ended, once it has.
    pub fn ended_at(&self) -> Option<Instant> {
        self.ended.get().copied()
    }

    /// "1m (at 14:32 UTC)": the time left to the nearest second (a warning
    /// due a minute before the end must not say 59s) and the wall-clock
    /// end, for end-of-window warnings.
    pub fn ends_in(&self, now: Instant) -> String {
        let left = self.deadline.saturating_duration_since(now);
        let seconds = left.as_secs_f64().round().max(1.0) as u64;
        format!(
            "{} (at {})",
            crate::config::HumanDuration::from_secs(seconds),
            self.window_end.format("%H:%M UTC")
        )
    }
}

type Key = (String, String);

pub struct LeaseTable {
    leases: DashMap<Key, Arc<Lease>>,
    timers: Mutex<BTreeSet<(Instant, RequestId, Key)>>,
    changed: Notify,
    expired: mpsc::Sender<RequestId>,
}

impl LeaseTable {
    /// Creates the table and the channel on which expired request ids arrive.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<RequestId>) {
        let (expired, receiver) = mpsc::channel(1024);
        let table = Arc::new(Self {
            leases: DashMap::new(),
            timers: Mutex::new(BTreeSet::new()),
            changed: Notify::new(),
            expired,
        });
        (table, receiver)
    }

    /// The live lease of `user` on `resource`, if any. Fails closed: a lease
    /// past its deadline is not returned even if its timer has not fired yet.
    pub fn lookup(&self, user: &str, resource: &str) -> Option<Arc<Lease>> {
        let key = (user.to_string(), resource.to_string());
        let lease = self.leases.get(&key)?.value().clone();
        lease.is_live(Instant::now()).then_some(lease)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Whether anyone holds a live lease on `resource`.
    pub fn any_live_on(&self, resource: &str) -> bool {
        let now = Instant::now();
        self.leases
            .iter()
            .any(|entry| entry.key().1 == resource && entry.value().is_live(now))
    }

    pub fn all(&self) -> Vec<Arc<Lease>> {
        self.leases.iter().map(|e| e.value().clone()).collect()
    }

    /// Inserts or replaces (on extension) the lease of its user and resource.
    /// A replaced lease keeps its token, so sessions stay attached to it.
    pub fn upsert(&self, mut lease: Lease) -> Arc<Lease> {
        let key = (lease.user.clone(), lease.resource.clone());
        if let Some(existing) = self.leases.get(&key)
            && existing.request_id == lease.request_id
        {
            lease.token = existing.token.clone();
            lease.ended = existing.ended.clone();
        }
        let lease = Arc::new(lease);
        let previous = self.leases.insert(key.clone(), lease.clone());
        if let Some(previous) = previous.filter(|p| p.request_id != lease.request_id) {
            previous.end_at(Instant::now());
        }
        self.timers
            .lock()
            .insert((lease.deadline, lease.request_id, key));
        self.changed.notify_one();
        metrics::gauge!("jitgate_active_leases").set(self.leases.len() as f64);
        lease
    }

    /// Ends the lease of request `id` (check-in, revoke, expiry recorded by
    /// the gateway): cancels its token and removes it. Idempotent.
    pub fn end(&self, user: &str, resource: &str, id: RequestId) -> Option<Arc<Lease>> {
        let key = (user.to_string(), resource.to_string());
        let (_, lease) = self
            .leases
            .remove_if(&key, |_, lease| lease.request_id == id)?;
        lease.end_at(Instant::now());
        metrics::gauge!("jitgate_active_leases").set(self.leases.len() as f64);
        Some(lease)
    }

    /// The expiry task. Runs until `shutdown` is cancelled.
    pub async fn run_expiry(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.expire_due(Instant::now()).await;
            let sleep = async {
                match next {
                    Some(when) => tokio::time::sleep_until(when).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.changed.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Ends every lease whose deadline is at or before `now`; returns the
    /// next deadline still pending.
    async fn expire_due(&self, now: Instant) -> Option<Instant> {
        let due = {
            let mut timers = self.timers.lock();
            let mut due = Vec::new();
            while let Some(first) = timers.first() {
                if first.0 > now {
                    break;
                }
                if let Some(entry) = timers.pop_first() {
                    due.push(entry);
                }
            }
            due
        };
        for (deadline, id, key) in due {
            // A stale timer (the lease was extended or replaced) is skipped.
            let ended = self.leases.remove_if(&key, |_, lease| {
                lease.request_id == id && lease.deadline <= deadline
            });
            if let Some((_, lease)) = ended {
                lease.end_at(lease.deadline);
                metrics::counter!("jitgate_lease_expiries_total").increment(1);
                // The receiver outlives the table in a running gateway; in a
                // test without one there is nobody to tell.
                let _ = self.expired.send(id).await;
            }
        }
        metrics::gauge!("jitgate_active_leases").set(self.leases.len() as f64);
        self.timers.lock().first().map(|entry| entry.0)
    }
}

#[cfg(test)]
mod tests;
