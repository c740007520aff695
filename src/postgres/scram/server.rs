//! SCRAM-SHA-256 server side, for client logins with the lease password
//! (`[postgres] client_auth = "scram-sha-256"`): RFC 5802/7677 as
//! PostgreSQL speaks it, with `tls-server-end-point` channel binding
//! (RFC 5929, SCRAM-SHA-256-PLUS) when the certificate allows it.
//!
//! The password never crosses the wire: the client proves it knows it, and
//! with channel binding that proof holds only for the TLS connection the
//! gateway terminated itself, so a man in the middle (a client using
//! `sslmode=require`, which checks no certificate) can neither learn the
//! password nor pass the login on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{MECHANISM, hmac};

pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const BINDING_TYPE: &str = "tls-server-end-point";
/// Clients of a gateway that asks for SCRAM run PBKDF2 with this count at
/// every connection; PostgreSQL's default, the minimum RFC 7677 asks for.
pub const ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramServerError {
    /// The client's messages do not follow the protocol.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism or binding this connection did not
    /// offer, or said it could bind when the gateway offered binding (RFC
    /// 5802's sign of a man in the middle stripping SCRAM-SHA-256-PLUS).
    #[error("SCRAM channel binding check failed")]
    Binding,
    /// The proof does not match: the wrong password (or no lease).
    #[error("wrong SCRAM proof")]
    WrongProof,
}

/// What the gateway keeps to check a proof: PostgreSQL's verifier form,
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// A stand-in for a user, resource or lease that does not exist: the
    /// exchange runs as for a real one and fails at the proof.
    mock: bool,
}

impl Verifier {
    /// The verifier of `password` with a fresh salt.
    pub fn compute(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored_key).ok()?.try_into().ok()?,
            server_key: B64.decode(server_key).ok()?.try_into().ok()?,
            mock: false,
        })
    }

    /// A verifier no proof matches, whose salt depends only on `seed` and
    /// `secret` (the same name gets the same salt each time, as a real one
    /// would, so a prober cannot tell the two apart by the salt).
    pub fn mock(secret: &[u8; 32], seed: &str) -> Self {
        let salt = hmac(secret, seed.as_bytes())[..16].to_vec();
        Self {
            iterations: ITERATIONS,
            salt,
            stored_key: [0; 32],
            server_key: [0; 32],
            mock: true,
        }
    }
}

/// The mechanisms to offer: with PLUS first when the connection can bind.
pub fn mechanisms(can_bind: bool) -> &'static [&'static str] {
    if can_bind {
        &[MECHANISM_PLUS, MECHANISM]
    } else {
        &[MECHANISM]
    }
}

/// One exchange, after the client's first message.
pub struct ServerExchange {
    verifier: Verifier,
    /// The `c=` value the client must send back: its GS2 header and, with
    /// binding, the certificate hash.
    expected_binding: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl ServerExchange {
    /// Takes the client's SASLInitialResponse (its mechanism and first
    /// message) and answers with the server-first message. `end_point` is
    /// the hash of this connection's certificate when it can bind.
    pub fn start(
        verifier: Verifier,
        end_point: Option<&[u8]>,
        mechanism: &str,
        client_first: &[u8],
    ) -> Result<(Self, Vec<u8>), ScramServerError> {
        let client_first = std::str::from_utf8(client_first)
            .map_err(|_| ScramServerError::Malformed("not UTF-8"))?;
        let (header, client_first_bare) = split_gs2_header(client_first)?;
        let binding_data = check_binding(header, mechanism, end_point)?;
        let client_nonce = client_nonce(client_first_bare)?;
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let mut binding = header.as_bytes().to_vec();
        binding.extend_from_slice(binding_data);
        let exchange = Self {
            verifier,
            expected_binding: B64.encode(binding),
            nonce,
            client_first_bare: client_first_bare.to_string(),
            server_first: server_first.clone(),
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Checks the client's final message; on success, the server-final
    /// message proving the gateway knew the verifier.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramServerError> {
        let client_final = std::str::from_utf8(client_final)
            .map_err(|_| ScramServerError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramServerError::Malformed("no proof"))?;
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramServerError::Malformed(
                "proof is not 32 bytes of base64",
            ))?;
        let mut parts = without_proof.split(',');
        let binding = parts.next().and_then(|p| p.strip_prefix("c="));
        let nonce = parts.next().and_then(|p| p.strip_prefix("r="));
        let (Some(binding), Some(nonce)) = (binding, nonce) else {
            return Err(ScramServerError::Malformed("expected c= and r="));
        };
        if binding != self.expected_binding {
            return Err(ScramServerError::Binding);
        }
        if nonce != self.nonce {
            return Err(ScramServerError::Malformed("nonce does not match"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        let matches = bool::from(stored_key.ct_eq(&self.verifier.stored_key));
        if !matches || self.verifier.mock {
            return Err(ScramServerError::WrongProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// Splits `gs2-header` ("n,,", "y,,", "p=tls-server-end-point,,") from
/// the bare message. An authorization identity is refused, as PostgreSQL
/// does.
fn split_gs2_header(message: &str) -> Result<(&str, &str), ScramServerError> {
    let mut fields = message.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(_)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ScramServerError::Malformed("no GS2 header"));
    };
    if !authzid.is_empty() {
        return Err(ScramServerError::Malformed(
            "authorization identities are not supported",
        ));
    }
    let header_len = flag.len() + authzid.len() + 2;
    Ok(message.split_at(header_len))
}

/// The channel binding data the client's header commits it to, checked
/// against the mechanism it chose and what this connection offered.
fn check_binding<'a>(
    header: &str,
    mechanism: &str,
    end_point: Option<&'a [u8]>,
) -> Result<&'a [u8], ScramServerError> {
    let flag = &header[..header.len() - 2];
    match (mechanism, flag, end_point) {
        (MECHANISM_PLUS, f, Some(hash)) if f == format!("p={BINDING_TYPE}") => Ok(hash),
        (MECHANISM_PLUS, _, _) => Err(ScramServerError::Binding),
        (MECHANISM, "n", _) => Ok(&[]),
        // "y": the client can bind but thinks the server cannot. Fine when
        // the gateway did not offer PLUS; when it did, someone removed it.
        (MECHANISM, "y", None) => Ok(&[]),
        (MECHANISM, "y", Some(_)) => Err(ScramServerError::Binding),
        (MECHANISM, _, _) => Err(ScramServerError::Malformed("bad GS2 header")),
        _ => Err(ScramServerError::Malformed("unknown SASL mechanism")),
    }
}

/// The client's nonce from its bare first message, `n=<user>,r=<nonce>`
/// (the user name is ignored, as PostgreSQL does: the startup packet's
/// counts). A mandatory extension (`m=`) is refused.
fn client_nonce(bare: &str) -> Result<&str, ScramServerError> {
    let mut parts = bare.split(',');
    let user = parts.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(ScramServerError::Malformed(
            "mandatory extensions are not supported",
        ));
    }
    if !user.starts_with("n=") {
        return Err(ScramServerError::Malformed("expected n="));
    }
    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .ok_or(ScramServerError::Malformed("expected r="))?;
    let printable = nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',');
    if nonce.is_empty() || !printable {
        return Err(ScramServerError::Malformed("bad client nonce"));
    }
    Ok(nonce)
}

#[cfg(test)]
mod tests;
