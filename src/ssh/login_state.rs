//! How far a connection's login got, and as whom with which key. The key
//! is checked again whenever the configuration changes: taking a key (a
//! lost laptop's) or a user out of the file cuts the connections that
//! logged in with it, multiplexed masters included, at once.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use russh::keys::PublicKey;
use russh::keys::ssh_key::HashAlg;

use crate::audit::AuditEvent;
use crate::config::Config;

use super::login_names::key_matches;

/// Why a login to a resource that never asked for a channel is on record
/// as giving no access.
pub const UNUSED_LOGIN: &str =
    "its key was accepted, but it never asked for a shell, command, file transfer or port";

/// A refused key or user with no success after it is a failed login (a
/// client offering several keys is refused some on its way to the right
/// one, so refusals alone are not), and so is running out of time to log
/// in (sshd's "grace-exceeded": such a connection held a place among its
/// source's pending logins all along).
#[derive(Default)]
pub struct LoginState {
    authenticated: AtomicBool,
    refused: AtomicBool,
    identity: Mutex<Option<(String, PublicKey)>>,
    /// The resource a data-plane login names (`alice+web-01`).
    resource: Mutex<Option<String>>,
    /// The client asked for a channel at least once.
    used: AtomicBool,
}

impl LoginState {
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> bool {
        self.refused.load(Ordering::Acquire) && !self.authenticated()
    }

    /// The login did not finish within the time allowed for it.
    pub fn ran_out_of_time(&self) {
        self.refused();
    }

    /// A key or user was refused.
    pub fn refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    pub fn logged_in(&self, user: &str, resource: Option<&str>, key: &PublicKey) {
        *self.identity.lock() = Some((user.to_string(), key.clone()));
        *self.resource.lock() = resource.map(String::from);
        self.authenticated.store(true, Ordering::Release);
    }

    /// The client asked for a channel (served or not).
    pub fn asked_for_a_channel(&self) {
        self.used.store(true, Ordering::Release);
    }

    /// Logged in, and never asked for a channel: the connection is of no
    /// use to anyone (sshd's UnusedConnectionTimeout).
    pub fn unused(&self) -> bool {
        self.authenticated() && !self.used.load(Ordering::Acquire)
    }

    /// The record of a login to a resource that ended without asking for
    /// a channel, if this was one. Its lease was never checked, so it
    /// counts as no access; control-plane logins are on record already.
    pub fn unused_resource_login(&self, remote: &str) -> Option<AuditEvent> {
        if !self.unused() {
            return None;
        }
        let resource = self.resource.lock().clone()?;
        let (user, key) = self.identity.lock().clone()?;
        Some(AuditEvent::Login {
            protocol: crate::audit::Protocol::Ssh,
            user,
            resource: Some(resource),
            remote: remote.to_string(),
            key: Some(key_fingerprint(&key)),
            accepted: false,
            reason: Some(UNUSED_LOGIN.to_string()),
        })
    }

    /// The key the connection logged in with.
    pub fn key(&self) -> Option<PublicKey> {
        self.identity.lock().as_ref().map(|(_, key)| key.clone())
    }

    /// Why `config` no longer lets this connection's login stand, if it
    /// does not: its user or its key is gone.
    pub fn withdrawn(&self, config: &Config) -> Option<Withdrawn> {
        let identity = self.identity.lock();
        let (user, public) = identity.as_ref()?;
        let key = key_fingerprint(public);
        let reason = match config.directory.user(user) {
            None => format!("jitgate no longer knows user {user}"),
            Some(known) if !key_matches(public, &known.ssh_keys) => {
                format!(
                    "the key this connection logged in with ({key}) is no longer one of {user}'s"
                )
            }
            Some(_) => return None,
        };
        Some(Withdrawn {
            user: user.clone(),
            key,
            reason,
        })
    }
}

/// A login the configuration in force no longer allows.
pub struct Withdrawn {
    pub user: String,
    pub key: String,
    pub reason: String,
}

impl Withdrawn {
    pub fn into_event(self, remote: String) -> AuditEvent {
        AuditEvent::LoginWithdrawn {
            user: self.user,
            remote,
            key: self.key,
            reason: self.reason,
        }
    }
}

/// The key's SHA-256 fingerprint, as `ssh-keygen -l` prints it.
pub fn key_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}
