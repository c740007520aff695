//! Connections still logging in, counted per source: a source may hold at
//! most `penalties.max_pending_logins` of them at once (as sshd's
//! PerSourceMaxStartups), so one address cannot take every file
//! descriptor and task with connections that never log in.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

type Counts = Arc<DashMap<IpAddr, usize>>;

#[derive(Default)]
pub struct PendingLogins {
    counts: Counts,
}

/// One connection's place among its source's pending logins, given back
/// when it logs in or ends, whichever comes first.
pub struct PendingLogin {
    slot: Option<(Counts, IpAddr)>,
}

impl PendingLogins {
    /// A place for one more pending login from `source`, unless it already
    /// holds `limit`.
    pub fn take(&self, source: IpAddr, limit: usize) -> Option<PendingLogin> {
        let mut count = self.counts.entry(source).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PendingLogin {
            slot: Some((self.counts.clone(), source)),
        })
    }

    #[cfg(test)]
    fn pending(&self, source: IpAddr) -> usize {
        self.counts.get(&source).map_or(0, |count| *count)
    }
}

impl PendingLogin {
    /// For a source that is not counted (exempt, or no limit set).
    pub fn untracked() -> Self {
        Self { slot: None }
    }

    /// The connection logged in: its place is given back.
    pub fn logged_in(&mut self) {
        let Some((counts, source)) = self.slot.take() else {
            return;
        };
        if let Entry::Occupied(mut count) = counts.entry(source) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        self.logged_in();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_the_limit_and_gets_places_back() {
        let logins = PendingLogins::default();
        let (source, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut first = logins.take(source, 2).unwrap();
        let second = logins.take(source, 2).unwrap();
        assert!(logins.take(source, 2).is_none());
        assert!(logins.take(other, 2).is_some());
        // Logging in gives the place back once, however often it is said.
        first.logged_in();
        first.logged_in();
        assert_eq!(logins.pending(source), 1);
        let third = logins.take(source, 2).unwrap();
        drop(second);
        drop(third);
        drop(first);
        assert_eq!(logins.pending(source), 0);
        assert!(logins.counts.is_empty());
    }
}
