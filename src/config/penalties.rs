//! `[penalties]`: a source address whose logins keep failing is shut out
//! for a while, as OpenSSH's PerSourcePenalties does. Each failed login
//! adds `per_failure` to the source's penalty, which runs down in real
//! time; while more than `threshold` of it is left, new connections from
//! the source are closed at once, before any handshake, and cost neither
//! an audit record nor a password check. A source may also hold only so
//! many connections that have not logged in yet (`max_pending_logins`).
//! A connection that ends without trying to log in (a scanner, a TLS or
//! SSH handshake given up) adds the smaller `per_no_login`, as sshd's
//! "noauth" penalty: handshakes cost the gateway CPU, even unanswered.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::ConfigError;
use super::duration::HumanDuration;
use super::validate::Checker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltiesSection {
    pub per_failure: HumanDuration,
    pub per_no_login: HumanDuration,
    pub threshold: HumanDuration,
    pub max: HumanDuration,
    pub max_pending_logins: usize,
    pub exempt: Vec<String>,
}

impl Default for PenaltiesSection {
    fn default() -> Self {
        Self {
            per_failure: HumanDuration::from_secs(5),
            per_no_login: HumanDuration::from_secs(1),
            threshold: HumanDuration::from_secs(15),
            max: HumanDuration::from_secs(600),
            max_pending_logins: 32,
            exempt: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Penalties {
    /// Added to a source's penalty by each failed login; zero turns
    /// penalties off.
    pub per_failure: Duration,
    /// Added by each connection that ends without trying to log in.
    pub per_no_login: Duration,
    /// A source is shut out while more than this is left of its penalty.
    pub threshold: Duration,
    /// No penalty grows past this.
    pub max: Duration,
    /// Connections one source may have still logging in at once (0: no
    /// limit); more are closed at accept, without counting as failures.
    pub max_pending_logins: usize,
    /// Sources never shut out (a load balancer, a bastion, the host itself).
    pub exempt: Vec<IpNet>,
}

impl Penalties {
    pub fn enabled(&self) -> bool {
        !self.per_failure.is_zero()
    }

    pub fn exempts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.exempt.iter().any(|net| net.contains(&address))
    }
}

pub(super) fn validate_penalties(
    check: &Checker,
    section: PenaltiesSection,
) -> Result<Penalties, ConfigError> {
    let exempt = section
        .exempt
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    check.invalid(
                        "penalties.exempt",
                        format!("{text:?} is neither an address nor a network (10.0.0.0/8, 2001:db8::/32)"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let penalties = Penalties {
        per_failure: section.per_failure.as_duration(),
        per_no_login: section.per_no_login.as_duration(),
        threshold: section.threshold.as_duration(),
        max: section.max.as_duration(),
        max_pending_logins: section.max_pending_logins,
        exempt,
    };
    if penalties.enabled() && penalties.max <= penalties.threshold {
        return Err(check.invalid(
            "penalties.max",
            format!(
                "must be longer than penalties.threshold ({}), or no source is ever shut out",
                section.threshold
            ),
        ));
    }
    Ok(penalties)
}
