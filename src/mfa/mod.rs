//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step of skew)
//! with replay protection and lockout.
//!
//! Each accepted code's time step is remembered per user, and only a later
//! step is accepted next: a code seen once (by a shoulder-surfer, a log, a
//! proxy) is worthless. Consecutive failures lock the user's MFA for a while.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use totp_rs::{Algorithm, Builder, Secret as TotpSecret, Totp};

use crate::secret::Secret;

const STEP_SECS: u64 = 30;
const DIGITS: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MfaError {
    #[error(
        "no TOTP secret is enrolled for {0}: ask an administrator to run `jitgate totp enroll`"
    )]
    NotEnrolled(String),
    #[error("the TOTP secret of {0} is invalid: re-enroll it")]
    BadSecret(String),
    #[error("invalid TOTP code")]
    Invalid,
    #[error("this TOTP code was already used: wait for the next one")]
    Replayed,
    #[error("too many wrong TOTP codes: MFA is locked for {} more seconds", .0.as_secs())]
    Locked(Duration),
}

#[derive(Default)]
struct UserState {
    last_step: Option<u64>,
    failures: u32,
    locked_until: Option<u64>,
}

/// Verifies codes; remembers per user what was used and what failed.
pub struct MfaGuard {
    max_failures: u32,
    lockout: Duration,
    users: Mutex<HashMap<String, UserState>>,
}

/// What a successful verification proves: the time step that was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaPass {
    pub step: u64,
}

/// Outcome details the caller audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaFailure {
    pub error: MfaError,
    /// True when this failure locked the user.
    pub locked_now: bool,
}

impl MfaGuard {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            max_failures,
            lockout,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `code` for `user` at wall-clock second `now_unix`.
    pub fn verify(
        &self,
        user: &str,
        secret: &Secret,
        code: &str,
        now_unix: u64,
    ) -> Result<MfaPass, MfaFailure> {
        let fail = |error| MfaFailure {
            error,
            locked_now: false,
        };
        let totp = build_totp(secret).ok_or_else(|| fail(MfaError::BadSecret(user.to_string())))?;
        let mut users = self.users.lock();
        let state = users.entry(user.to_string()).or_default();
        if let Some(until) = state.locked_until {
            if now_unix < until {
                return Err(fail(MfaError::Locked(Duration::from_secs(
                    until - now_unix,
                ))));
            }
            state.locked_until = None;
            state.failures = 0;
        }
        // `check` compares in constant time over the ±1 step window and
        // tells which step matched, which is what replay protection needs.
        let matched = totp.check(code.trim(), now_unix);
        let error = match matched {
            Some(step) if state.last_step.is_some_and(|last| step <= last) => MfaError::Replayed,
            Some(step) => {
                state.last_step = Some(step);
                state.failures = 0;
                return Ok(MfaPass { step });
            }
            None => MfaError::Invalid,
        };
        state.failures += 1;
        let locked_now = state.failures >= self.max_failures;
        if locked_now {
            state.locked_until = Some(now_unix + self.lockout.as_secs());
        }
        Err(MfaFailure { error, locked_now })
    }

    /// Restores the replay floor after a restart from the journal's record
    /// of the last accepted step.
    pub fn remember_step(&self, user: &str, step: u64) {
        let mut users = self.users.lock();
        let state = users.entry(user.to_string()).or_default();
        state.last_step = Some(state.last_step.map_or(step, |last| last.max(step)));
    }
}

fn builder(secret: &Secret) -> Option<Builder> {
    let bytes =
        TotpSecret::try_from_base32(secret.expose().replace(' ', "").to_uppercase()).ok()?;
    if bytes.as_ref().len() < 10 {
        return None;
    }
    Some(
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(1)
            .with_step_duration(STEP_SECS)
            .with_secret(bytes),
    )
}

fn build_totp(secret: &Secret) -> Option<Totp> {
    Some(builder(secret)?.build_noncompliant())
}

/// The current code for `secret` (for tests and the demo's helper).
pub fn current_code(secret: &Secret, now_unix: u64) -> Option<String> {
    build_totp(secret).map(|totp| totp.generate(now_unix).to_string())
}

/// A fresh random base32 secret (160 bits, as RFC 4226 recommends).
pub fn generate_secret() -> Secret {
    let bytes: [u8; 20] = rand::random();
    Secret::new(base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        &bytes,
    ))
}

/// The `otpauth://` URI authenticator apps scan.
pub fn provisioning_uri(secret: &Secret, issuer: &str, user: &str) -> Option<String> {
    builder(secret)?
        .with_issuer(Some(issuer))
        .with_account_name(user)
        .build()
        .ok()?
        .to_url()
        .ok()
}

#[cfg(test)]
mod tests;
