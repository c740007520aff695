//! SCRAM-SHA-256 client for upstream logins (RFC 5802/7677, as PostgreSQL
//! speaks it), with the derived keys cached.
//!
//! postgres-protocol's `ScramSha256` runs PBKDF2 inside every exchange and
//! offers no way to reuse the result; at 4096+ iterations that is the most
//! expensive step of a connection. Here the salted keys are kept per
//! (resource, credential, salt, iterations), so PBKDF2 runs once per
//! credential and the per-connection cost is two HMACs. The primitives come
//! from the RustCrypto crates postgres-protocol itself uses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dashmap::DashMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub mod server;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// No channel binding: gs2 header "n,,", whose base64 is "biws".
const GS2_HEADER: &str = "n,,";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM nonce does not extend ours")]
    NonceMismatch,
    #[error("the server's SCRAM signature is wrong: it does not know this credential")]
    BadServerSignature,
    #[error("the server refused the SCRAM exchange: {0}")]
    ServerError(String),
}

#[derive(Clone)]
struct Keys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

/// Salted keys by credential; `forget` drops a resource's after rotation.
#[derive(Default)]
pub struct KeyCache {
    keys: DashMap<(String, [u8; 32]), Keys>,
}

impl KeyCache {
    fn get_or_derive(
        &self,
        resource: &str,
        password: &Secret,
        salt: &[u8],
        iterations: u32,
    ) -> Keys {
        let mut id = Sha256::new();
        id.update(password.expose().as_bytes());
        id.update([0]);
        id.update(salt);
        id.update(iterations.to_be_bytes());
        let id: [u8; 32] = id.finalize().into();
        let key = (resource.to_string(), id);
        if let Some(keys) = self.keys.get(&key) {
            return keys.clone();
        }
        metrics::counter!("jitgate_postgres_scram_derivations_total").increment(1);
        let keys = derive(password, salt, iterations);
        self.keys.insert(key, keys.clone());
        keys
    }

    pub fn forget(&self, resource: &str) {
        self.keys.retain(|(name, _), _| name != resource);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn derive(password: &Secret, salt: &[u8], iterations: u32) -> Keys {
    // PostgreSQL applies SASLprep when the password is valid for it and
    // uses the raw bytes otherwise; so does the client.
    let prepared = stringprep::saslprep(password.expose())
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.expose().to_string());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    Keys {
        client_key: hmac(&salted, b"Client Key"),
        server_key: hmac(&salted, b"Server Key"),
    }
}

#[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// One exchange: `client_first`, then `client_final(server_first)`, then
/// `verify(server_final)`.
pub struct Exchange<'a> {
    cache: &'a KeyCache,
    resource: &'a str,
    password: &'a Secret,
    /// Empty: PostgreSQL takes the user from the startup packet.
    user: String,
    nonce: String,
    expected_signature: Option<[u8; 32]>,
}

impl<'a> Exchange<'a> {
    pub fn new(cache: &'a KeyCache, resource: &'a str, password: &'a Secret) -> Self {
        let nonce: [u8; 18] = rand::random();
        Self::with_nonce(cache, resource, password, "", B64.encode(nonce))
    }

    pub(crate) fn with_nonce(
        cache: &'a KeyCache,
        resource: &'a str,
        password: &'a Secret,
        user: &str,
        nonce: String,
    ) -> Self {
        Self {
            cache,
            resource,
            password,
            user: user.to_string(),
            nonce,
            expected_signature: None,
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare()).into_bytes()
    }

    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let keys = self
            .cache
            .get_or_derive(self.resource, self.password, &salt, iterations);
        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!(
            "{},{server_first},{without_proof}",
            self.client_first_bare()
        );
        let stored_key: [u8; 32] = Sha256::digest(keys.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_signature = Some(hmac(&keys.server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server proves it knows the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(error.to_string()));
        }
        let signature = text
            .split(',')
            .find_map(|part| part.strip_prefix("v="))
            .ok_or(ScramError::Malformed("no verifier"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        let expected = self
            .expected_signature
            .ok_or(ScramError::Malformed("final message before the first"))?;
        if bool::from(expected.ct_eq(signature.as_slice())) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

/// The iteration count a server-first message asks for.
pub(crate) fn iteration_count(server_first: &str) -> Result<u32, ScramError> {
    parse_server_first(server_first).map(|(_, _, iterations)| iterations)
}

fn parse_server_first(text: &str) -> Result<(&str, Vec<u8>, u32), ScramError> {
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for part in text.split(',') {
        match part.split_at_checked(2) {
            Some(("r=", v)) => nonce = Some(v),
            Some(("s=", v)) => {
                salt = Some(
                    B64.decode(v)
                        .map_err(|_| ScramError::Malformed("salt is not base64"))?,
                )
            }
            Some(("i=", v)) => {
                iterations = Some(
                    v.parse()
                        .map_err(|_| ScramError::Malformed("bad iteration count"))?,
                )
            }
            _ => {}
        }
    }
    let iterations: u32 = iterations.ok_or(ScramError::Malformed("no iteration count"))?;
    if iterations == 0 || iterations > 10_000_000 {
        return Err(ScramError::Malformed("iteration count out of range"));
    }
    Ok((
        nonce.ok_or(ScramError::Malformed("no nonce"))?,
        salt.ok_or(ScramError::Malformed("no salt"))?,
        iterations,
    ))
}

#[cfg(test)]
mod tests;
