//! What the gateway keeps of a lease's connection password: never the
//! password itself (it is shown once, at checkout), but what checks it.
//!
//! Journaled with the checkout as one string: the password's SHA-256 in
//! hex, which checks a password sent in cleartext in one hash (the
//! password is 192 random bits: nothing to stretch), then a space and its
//! SCRAM-SHA-256 verifier in PostgreSQL's form, which checks a SCRAM
//! proof. Leases checked out before SCRAM logins existed hold the hash
//! alone.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scram::server::Verifier;

/// The record of a new lease password.
pub fn record(password: &str) -> String {
    format!("{} {}", sha256_hex(password), Verifier::compute(password))
}

/// Whether `password`, sent in cleartext, is the one `record` keeps.
pub fn cleartext_matches(record: &str, password: &str) -> bool {
    let hash = record.split(' ').next().unwrap_or_default();
    bool::from(hash.as_bytes().ct_eq(sha256_hex(password).as_bytes()))
}

/// The SCRAM verifier `record` keeps, if it keeps one.
pub fn scram_verifier(record: &str) -> Option<Verifier> {
    Verifier::parse(record.split_once(' ')?.1)
}

fn sha256_hex(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_checks_its_password_both_ways_and_no_other() {
        let record = record("right");
        assert!(cleartext_matches(&record, "right"));
        assert!(!cleartext_matches(&record, "wrong"));
        assert!(!cleartext_matches(&record, ""));
        assert!(scram_verifier(&record).is_some());
        assert!(!record.contains("right"));
    }

    #[test]
    fn a_record_from_before_scram_logins_checks_cleartext_only() {
        let old = sha256_hex("right");
        assert!(cleartext_matches(&old, "right"));
        assert!(scram_verifier(&old).is_none());
    }
}
