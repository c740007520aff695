//! Who may log in: the password message, the lease check, the per-user
//! connection cap and the gateway's own login upstream. Every way of
//! saying no is a [`Refusal`]: what the client is told, and what the
//! audit log records.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::UserSlot;
use super::login::{Peer, asks_for_replication};
use super::progress::ClientProgress;
use super::upstream::{Login, Stream, Upstream, UpstreamError, UpstreamTls};
use super::wire::{self, read_message, sqlstate};
use super::{Frontend, lease_password, scram_login as scram};
use crate::config::{ClientAuth, Resource, ResourceKind};
use crate::gateway::{AUDIT_UNAVAILABLE, Gateway};
use crate::lease::Lease;
use crate::secret::Secret;

/// A password message is tiny; anything bigger is not one.
const PASSWORD_MESSAGE_LIMIT: usize = 1024;

/// What a client's startup packet asks for.
pub struct Asked<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub peer: Peer,
    /// The protocol minor version it speaks (3.x).
    pub minor: u16,
    pub params: &'a [(String, String)],
    /// The hash of the certificate this connection's TLS presented, for
    /// SCRAM channel binding (`tls-server-end-point`), when it has one.
    pub tls_end_point: Option<&'a [u8]>,
}

/// A refused login: what the client is told, and why (audited).
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub reason: String,
}

impl Refusal {
    /// Whether the client failed to show who it is (a wrong password, no
    /// lease, a garbled password message), as opposed to being turned
    /// away for a cap, a feature or the target.
    pub fn is_failed_login(&self) -> bool {
        matches!(
            self.code,
            sqlstate::INVALID_PASSWORD
                | sqlstate::INVALID_AUTHORIZATION
                | sqlstate::PROTOCOL_VIOLATION
        )
    }

    /// One whose reason is what the client is told.
    fn plain(code: &'static str, message: String) -> Self {
        Self {
            code,
            reason: message.clone(),
            message,
        }
    }
}

/// A login let in, and logged in upstream.
pub struct Admitted {
    pub resource: Resource,
    pub lease: Arc<Lease>,
    pub slot: UserSlot,
    pub upstream: Upstream,
    pub tls: Option<UpstreamTls>,
}

/// Asks for the lease password and checks it, the lease and the caps, then
/// logs in upstream. An I/O error (the client went away) is not a refusal.
pub async fn admit(
    frontend: &Arc<Frontend>,
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
    progress: &ClientProgress,
) -> std::io::Result<Result<Admitted, Refusal>> {
    if asks_for_replication(asked.params) {
        // Refused rather than quietly turned into an SQL session, which
        // would leave pg_basebackup or a logical decoder guessing why its
        // commands fail. A lease grants SQL access, not a copy of the
        // cluster.
        return Ok(Err(Refusal::plain(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "jitgate does not relay replication connections".into(),
        )));
    }
    progress.asked_for_password();
    let (resource, lease) = match authenticate(frontend, client, asked).await? {
        Ok(found) => found,
        Err(refusal) => return Ok(Err(refusal)),
    };
    progress.settled();
    if !audit_ready(&frontend.runtime.gateway).await {
        return Ok(Err(Refusal::plain(
            sqlstate::CANNOT_CONNECT_NOW,
            AUDIT_UNAVAILABLE.into(),
        )));
    }
    let config = frontend.runtime.gateway.config();
    let limit = config.postgres.max_connections_per_user;
    let Some(slot) = frontend.take_slot(asked.user, limit) else {
        return Ok(Err(Refusal::plain(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!(
                "too many connections for {} (postgres.max_connections_per_user = {limit})",
                asked.user
            ),
        )));
    };
    match connect_upstream(frontend, &resource, asked.params).await {
        Ok((upstream, tls)) => Ok(Ok(Admitted {
            resource,
            lease,
            slot,
            upstream,
            tls,
        })),
        Err(detail) => {
            tracing::warn!(resource = %resource.name, error = %detail, "postgres upstream login failed");
            Ok(Err(Refusal {
                code: sqlstate::CANNOT_CONNECT,
                message: format!(
                    "jitgate could not open a session on {}; the failure is logged for the administrators",
                    resource.name
                ),
                reason: format!("target: {detail}"),
            }))
        }
    }
}

/// Whether the audit log takes records; checked off the event loop when
/// it failed before, as the check then writes the records it holds.
async fn audit_ready(gateway: &Arc<Gateway>) -> bool {
    if !gateway.audit_failing() {
        return true;
    }
    let gateway = gateway.clone();
    tokio::task::spawn_blocking(move || gateway.audit_ready())
        .await
        .unwrap_or(false)
}

/// Asks for the lease password the configured way; checks it and the lease.
async fn authenticate(
    frontend: &Frontend,
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
) -> std::io::Result<Result<(Resource, Arc<Lease>), Refusal>> {
    match frontend.runtime.gateway.config().postgres.client_auth {
        ClientAuth::Password => password_login(frontend, client, asked).await,
        ClientAuth::ScramSha256 => scram::login(frontend, client, asked).await,
    }
}

/// The lease password sent in cleartext (inside TLS), checked against
/// the lease's record of it.
async fn password_login(
    frontend: &Frontend,
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
) -> std::io::Result<Result<(Resource, Arc<Lease>), Refusal>> {
    let password = match read_password(client, asked).await? {
        Ok(password) => password,
        Err(refusal) => return Ok(Err(refusal)),
    };
    Ok(find_lease(frontend, asked).and_then(|(resource, lease)| {
        let record = lease.secret_hash.as_deref().unwrap_or_default();
        match lease_password::cleartext_matches(record, password.expose()) {
            true => Ok((resource, lease)),
            false => Err(bad_password(asked, "wrong lease password")),
        }
    }))
}

/// What goes before the request for a password: the protocol version
/// spoken, when the client asked for a newer one or for options.
pub(super) fn negotiation(asked: &Asked<'_>) -> BytesMut {
    let mut out = BytesMut::new();
    let unrecognised: Vec<String> = asked
        .params
        .iter()
        .filter(|(key, _)| key.starts_with("_pq_."))
        .map(|(key, _)| key.clone())
        .collect();
    if asked.minor > 0 || !unrecognised.is_empty() {
        wire::negotiate_protocol_version(&mut out, &unrecognised);
    }
    out
}

/// Asks for a cleartext password (inside TLS), after negotiating the
/// protocol version when the client asked for a newer one.
async fn read_password(
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
) -> std::io::Result<Result<Secret, Refusal>> {
    let mut out = negotiation(asked);
    wire::auth_cleartext(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    let parsed = match read_message(client, PASSWORD_MESSAGE_LIMIT).await {
        Ok((tag, body)) => wire::password_from(tag, &body).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    Ok(parsed.map(Secret::new).map_err(|problem| {
        // The text names the framing fault only, never the bytes sent.
        Refusal::plain(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed password message: {problem}"),
        )
    }))
}

/// The login a wrong password gets: the same whether the user, the
/// resource or the password is what is wrong.
pub(super) fn bad_password(asked: &Asked<'_>, reason: &str) -> Refusal {
    Refusal {
        code: sqlstate::INVALID_PASSWORD,
        message: format!("password authentication failed for user \"{}\"", asked.user),
        reason: reason.to_string(),
    }
}

/// The user's live lease on the resource asked for.
pub(super) fn find_lease(
    frontend: &Frontend,
    asked: &Asked,
) -> Result<(Resource, Arc<Lease>), Refusal> {
    let (user, database) = (asked.user, asked.database);
    let config = frontend.runtime.gateway.config();
    // Unknown users and resources look exactly like a wrong password.
    if config.directory.user(user).is_none() {
        return Err(bad_password(asked, "unknown user"));
    }
    let Some(resource) = config
        .resources
        .get(database)
        .filter(|r| r.kind == ResourceKind::Postgres)
    else {
        return Err(bad_password(asked, "unknown postgres resource"));
    };
    let Some(lease) = frontend.runtime.gateway.leases().lookup(user, database) else {
        return Err(Refusal {
            code: sqlstate::INVALID_AUTHORIZATION,
            message: format!(
                "no active lease for {database}: request and check out first ({})",
                frontend.control_command(asked.peer.gateway, user, &format!("request {database}"))
            ),
            reason: "no active lease".into(),
        });
    };
    if lease.resource != resource.name {
        return Err(bad_password(asked, "lease of another resource"));
    }
    Ok((resource.clone(), lease))
}

/// Logs in with the vault's current credential — or, while a rotation is
/// between applying and confirming a new one, with the pending one.
async fn connect_upstream(
    frontend: &Frontend,
    resource: &Resource,
    params: &[(String, String)],
) -> Result<(Upstream, Option<UpstreamTls>), String> {
    let gateway = &frontend.runtime.gateway;
    let current = gateway
        .vault()
        .current(&resource.name)
        .ok_or_else(|| format!("the vault has no credential for {}", resource.name))?;
    let tls = frontend.upstream_tls(resource)?;
    let login = |password| Login {
        resource,
        password,
        tls: tls.as_ref(),
        client_params: params,
        keys: gateway.scram_keys(),
        timeout: gateway.config().postgres.connect_timeout,
    };
    let result = match (
        login(&current).connect().await,
        gateway.vault().pending(&resource.name),
    ) {
        (Err(UpstreamError::Refused { .. }), Some(pending)) => login(&pending).connect().await,
        (result, _) => result,
    };
    if let Err(UpstreamError::Refused { .. }) = &result {
        gateway.credential_refused(&resource.name);
    }
    let upstream = result.map_err(|e| e.to_string())?;
    Ok((upstream, tls))
}
