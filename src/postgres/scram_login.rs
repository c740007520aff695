//! A client's SCRAM-SHA-256 login with its lease password (`[postgres]
//! client_auth = "scram-sha-256"`). The exchange runs against the lease's
//! verifier, or against a stand-in when the user, the resource or the
//! lease does not exist, so every refusal comes at the same point, after
//! the proof, as with a password sent in cleartext.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::admission::{Asked, Refusal, bad_password, find_lease, negotiation};
use super::scram::server::{ScramServerError, ServerExchange, Verifier, mechanisms};
use super::upstream::Stream;
use super::wire::{self, read_message, sqlstate};
use super::{Frontend, lease_password};
use crate::config::Resource;
use crate::lease::Lease;

/// SCRAM messages are small; anything bigger is not one.
const SASL_MESSAGE_LIMIT: usize = 1024;
const SASL_CONTINUE: i32 = 11;
const SASL_FINAL: i32 = 12;

/// The user's lease on the resource, once the client proved it knows the
/// lease password.
pub(super) async fn login(
    frontend: &Frontend,
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
) -> std::io::Result<Result<(Resource, Arc<Lease>), Refusal>> {
    let found = find_lease(frontend, asked);
    let verifier = found
        .as_ref()
        .ok()
        .and_then(|(_, lease)| lease.secret_hash.as_deref())
        .and_then(lease_password::scram_verifier);
    let has_verifier = verifier.is_some();
    let verifier = verifier.unwrap_or_else(|| {
        let seed = format!("{}\0{}", asked.user, asked.database);
        Verifier::mock(&frontend.scram_mock_secret, &seed)
    });
    let outcome = match exchange(client, asked, verifier).await? {
        Ok(server_final) => {
            let mut out = bytes::BytesMut::new();
            wire::auth_sasl_data(&mut out, SASL_FINAL, &server_final);
            client.write_all(&out).await?;
            client.flush().await?;
            found
        }
        Err(ScramServerError::WrongProof) => Err(match found {
            Err(refusal) => refusal,
            Ok(_) if !has_verifier => Refusal {
                code: sqlstate::INVALID_AUTHORIZATION,
                message: format!(
                    "the lease on {} was checked out before SCRAM logins: a new password from `password ID` (status shows the ID) can log in",
                    asked.database
                ),
                reason: "lease password has no SCRAM verifier".into(),
            },
            Ok(_) => bad_password(asked, "wrong lease password (SCRAM proof)"),
        }),
        Err(error) => Err(Refusal {
            code: sqlstate::PROTOCOL_VIOLATION,
            message: error.to_string(),
            reason: error.to_string(),
        }),
    };
    Ok(outcome)
}

/// Offers SCRAM, runs the exchange, and gives the server-final message
/// when the client's proof holds.
async fn exchange(
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
    verifier: Verifier,
) -> std::io::Result<Result<Vec<u8>, ScramServerError>> {
    let end_point = asked.tls_end_point;
    let mut out = negotiation(asked);
    wire::auth_sasl(&mut out, mechanisms(end_point.is_some()));
    client.write_all(&out).await?;
    client.flush().await?;
    let Some((tag, body)) = read(client).await? else {
        return Ok(Err(ScramServerError::Malformed("bad SASLInitialResponse")));
    };
    let Ok((mechanism, first)) = wire::sasl_initial_response(tag, &body) else {
        return Ok(Err(ScramServerError::Malformed("bad SASLInitialResponse")));
    };
    let (exchange, server_first) =
        match ServerExchange::start(verifier, end_point, mechanism, first) {
            Ok(started) => started,
            Err(error) => return Ok(Err(error)),
        };
    out.clear();
    wire::auth_sasl_data(&mut out, SASL_CONTINUE, &server_first);
    client.write_all(&out).await?;
    client.flush().await?;
    let Some((tag, body)) = read(client).await? else {
        return Ok(Err(ScramServerError::Malformed("bad SASLResponse")));
    };
    let Ok(last) = wire::sasl_response(tag, &body) else {
        return Ok(Err(ScramServerError::Malformed("bad SASLResponse")));
    };
    Ok(exchange.finish(last))
}

/// The client's next message; None when its framing is bad.
async fn read(client: &mut Box<dyn Stream>) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    match read_message(client, SASL_MESSAGE_LIMIT).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(e),
    }
}
