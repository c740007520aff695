//! Per-source penalties for failed logins and limits on logins in progress
//! (see `config::penalties`): one table for both data planes and the
//! control plane, so a source guessing at the Postgres port is shut out of
//! SSH too.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::Gateway;
use super::pending_logins::PendingLogin;
use crate::audit::AuditEvent;
use crate::config::penalties::Penalties;

/// Sources tracked at once. Past this, expired entries are dropped; if
/// none has expired, new sources go untracked (never shut out) rather
/// than growing memory without bound.
const MAX_SOURCES: usize = 65_536;

#[derive(Default)]
pub struct PenaltyBox {
    /// When each source's penalty runs out.
    sources: DashMap<IpAddr, Instant>,
}

/// The unit a penalty applies to: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64, and would otherwise step around it).
pub fn source_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn display(source: IpAddr) -> String {
    match source {
        IpAddr::V6(_) => format!("{source}/64"),
        IpAddr::V4(_) => source.to_string(),
    }
}

impl PenaltyBox {
    /// Whether `source` is shut out at `now`.
    pub fn shuts_out(&self, settings: &Penalties, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|until| until.saturating_duration_since(now) > settings.threshold)
    }

    /// Adds `penalty` to `source`'s. Returns how long the source is now
    /// shut out for, when this is what shut it out.
    pub fn add(
        &self,
        settings: &Penalties,
        source: IpAddr,
        penalty: Duration,
        now: Instant,
    ) -> Option<Duration> {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources.retain(|_, until| *until > now);
            if self.sources.len() >= MAX_SOURCES {
                metrics::counter!("jitgate_penalty_sources_untracked_total").increment(1);
                return None;
            }
        }
        let mut until = self.sources.entry(source).or_insert(now);
        let before = until.saturating_duration_since(now);
        let after = (before + penalty).min(settings.max);
        *until = now + after;
        (before <= settings.threshold && after > settings.threshold)
            .then(|| after - settings.threshold)
    }
}

impl Gateway {
    /// Whether a new connection from `remote` may go on to its handshake:
    /// its place among the source's pending logins, or `None` (counted)
    /// when the source is shut out or holds as many as it may.
    pub fn admit_source(&self, remote: IpAddr, protocol: &'static str) -> Option<PendingLogin> {
        let config = self.config();
        let settings = &config.penalties;
        if settings.exempts(remote) {
            return Some(PendingLogin::untracked());
        }
        let source = source_of(remote);
        if settings.enabled() && self.penalties.shuts_out(settings, source, Instant::now()) {
            metrics::counter!("jitgate_connections_penalized_total", "protocol" => protocol)
                .increment(1);
            return None;
        }
        if settings.max_pending_logins == 0 {
            return Some(PendingLogin::untracked());
        }
        let pending = self
            .pending_logins
            .take(source, settings.max_pending_logins);
        if pending.is_none() {
            metrics::counter!("jitgate_connections_over_source_limit_total", "protocol" => protocol)
                .increment(1);
        }
        pending
    }

    /// Records a failed login from `remote`: audited when it shuts the
    /// source out. Blocking (it may write an audit record).
    pub fn login_failed(&self, remote: IpAddr) {
        self.penalize(remote, |settings| settings.per_failure);
    }

    /// Records a connection from `remote` that ended without trying to log
    /// in. Blocking, as `login_failed`.
    pub fn left_without_login(&self, remote: IpAddr) {
        self.penalize(remote, |settings| settings.per_no_login);
    }

    fn penalize(&self, remote: IpAddr, penalty: impl Fn(&Penalties) -> Duration) {
        let config = self.config();
        let settings = &config.penalties;
        let penalty = penalty(settings);
        if !settings.enabled() || penalty.is_zero() || settings.exempts(remote) {
            return;
        }
        let source = source_of(remote);
        if let Some(shut_out) = self
            .penalties
            .add(settings, source, penalty, Instant::now())
        {
            let source = display(source);
            tracing::warn!(%source, seconds = shut_out.as_secs(), "logins keep failing; the source is shut out");
            self.audit(AuditEvent::SourcePenalized {
                source,
                seconds: shut_out.as_secs().max(1),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILURE: Duration = Duration::from_secs(5);

    fn settings() -> Penalties {
        Penalties {
            per_failure: FAILURE,
            per_no_login: Duration::from_secs(1),
            threshold: Duration::from_secs(15),
            max: Duration::from_secs(600),
            max_pending_logins: 32,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    #[test]
    fn a_source_is_shut_out_past_the_threshold_and_let_in_as_its_penalty_runs_down() {
        let (table, settings) = (PenaltyBox::default(), settings());
        let source: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(table.add(&settings, source, FAILURE, start), None);
        }
        assert!(!table.shuts_out(&settings, source, start));
        // The fourth failure in a row: 20 s of penalty, 5 s past the threshold.
        assert_eq!(
            table.add(&settings, source, FAILURE, start),
            Some(Duration::from_secs(5))
        );
        assert!(table.shuts_out(&settings, source, start));
        assert!(table.shuts_out(&settings, source, start + Duration::from_secs(4)));
        assert!(!table.shuts_out(&settings, source, start + Duration::from_secs(5)));
        // Others are not affected.
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert!(!table.shuts_out(&settings, other, start));
    }

    #[test]
    fn penalties_stop_growing_at_the_maximum() {
        let (table, settings) = (PenaltyBox::default(), settings());
        let source: IpAddr = "203.0.113.7".parse().unwrap();
        let now = Instant::now();
        for _ in 0..1000 {
            table.add(&settings, source, FAILURE, now);
        }
        assert!(table.shuts_out(&settings, source, now + Duration::from_secs(584)));
        assert!(!table.shuts_out(&settings, source, now + Duration::from_secs(586)));
    }

    #[test]
    fn an_ipv6_host_is_one_source_across_its_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        assert_eq!(display(source_of(a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(source_of(mapped), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(settings().exempts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!settings().exempts("203.0.113.7".parse().unwrap()));
    }
}
