//! How far a Postgres login got before its connection ended, and what that
//! costs its source (`[penalties]`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};

use super::Frontend;
use crate::gateway::Gateway;

/// Nothing a login needs has come yet.
const STARTING: u8 = 0;
/// A well-formed login was asked for its password.
const ASKED: u8 = 1;
/// The connection's end costs nothing more: it showed its lease password
/// (what time runs out after that is the gateway's, logging in upstream),
/// a cancel request was served, or a refusal was audited (and counted
/// there when it was a failed login).
const SETTLED: u8 = 2;

#[derive(Default)]
pub(super) struct ClientProgress(AtomicU8);

/// How a connection's startup ended without a session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum StartupEnd {
    Closed,
    TimedOut,
}

/// What a connection's end costs its source.
#[derive(PartialEq, Eq, Debug)]
enum Cost {
    Nothing,
    FailedLogin,
    NoLogin,
}

impl ClientProgress {
    pub(super) fn asked_for_password(&self) {
        self.0.fetch_max(ASKED, Ordering::Relaxed);
    }

    pub(super) fn settled(&self) {
        self.0.store(SETTLED, Ordering::Relaxed);
    }

    /// Holding a login open until it times out costs what a failed login
    /// does (sshd's "grace-exceeded"); leaving before asking for a login
    /// (garbage, a TLS handshake given up) costs a connection without a
    /// login (sshd's "noauth"). Leaving at the password prompt is what
    /// psql does before it prompts for the password: free.
    fn cost(&self, end: StartupEnd) -> Cost {
        match (self.0.load(Ordering::Relaxed), end) {
            (SETTLED, _) => Cost::Nothing,
            (_, StartupEnd::TimedOut) => Cost::FailedLogin,
            (STARTING, StartupEnd::Closed) => Cost::NoLogin,
            _ => Cost::Nothing,
        }
    }

    /// Charges the source of `remote` for a startup that ended as `end`.
    pub(super) fn charge(&self, frontend: &Frontend, remote: IpAddr, end: StartupEnd) {
        let gateway = frontend.runtime.gateway.clone();
        let count = match self.cost(end) {
            Cost::Nothing => return,
            Cost::FailedLogin => Gateway::login_failed,
            Cost::NoLogin => Gateway::left_without_login,
        };
        // Blocking: shutting a source out writes an audit record.
        frontend
            .runtime
            .tracker
            .spawn_blocking(move || count(&gateway, remote));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_costs_by_how_far_it_got_and_how_it_ended() {
        let progress = ClientProgress::default();
        assert_eq!(progress.cost(StartupEnd::Closed), Cost::NoLogin);
        assert_eq!(progress.cost(StartupEnd::TimedOut), Cost::FailedLogin);
        progress.asked_for_password();
        assert_eq!(progress.cost(StartupEnd::Closed), Cost::Nothing);
        assert_eq!(progress.cost(StartupEnd::TimedOut), Cost::FailedLogin);
        progress.settled();
        progress.asked_for_password();
        assert_eq!(progress.cost(StartupEnd::Closed), Cost::Nothing);
        assert_eq!(progress.cost(StartupEnd::TimedOut), Cost::Nothing);
    }
}
