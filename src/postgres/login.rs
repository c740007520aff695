//! The startup phase: TLS negotiation, cancel requests, the lease-checked
//! password login, and the gateway's own login upstream.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::cancel::{ClientKey, UpstreamKey, cancel_upstream};
use super::session::{NewSession, PgSession};
use super::upstream::{Login, Stream, Upstream, UpstreamError, UpstreamTls};
use super::wire::{self, StartupPacket, read_message, read_startup, sqlstate};
use super::{Frontend, relay};
use crate::audit::{AuditEvent, Protocol};
use crate::config::{Resource, ResourceKind};
use crate::gateway::hash_lease_password;
use crate::lease::Lease;
use crate::secret::Secret;

/// A password message is tiny; anything bigger is not one.
const PASSWORD_MESSAGE_LIMIT: usize = 1024;
/// The first byte of a TLS handshake: a client using `sslnegotiation=direct`.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection's two ends: who connected (audited, and shown as
/// such) and the gateway address it reached (named in suggested commands).
#[derive(Clone, Copy)]
struct Peer {
    remote: SocketAddr,
    gateway: IpAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.remote.fmt(f)
    }
}

pub async fn handle(frontend: Arc<Frontend>, tcp: TcpStream, remote: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let gateway = tcp
        .local_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let peer = Peer { remote, gateway };
    let timeout = frontend.runtime.gateway.config().postgres.auth_timeout;
    match tokio::time::timeout(timeout, negotiate(&frontend, tcp, peer)).await {
        Ok(Ok(Some((session, client, upstream)))) => relay::run(session, client, upstream).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "postgres connection ended during startup")
        }
        Err(_) => {
            metrics::counter!("jitgate_postgres_startup_timeouts_total").increment(1);
            tracing::debug!(%peer, "postgres startup timed out");
        }
    }
}

type Ready = (Arc<PgSession>, Box<dyn Stream>, super::upstream::BoxStream);

/// Plaintext part: answers SSLRequest/GSSENCRequest, serves plaintext
/// cancels, refuses plaintext logins.
async fn negotiate(
    frontend: &Arc<Frontend>,
    mut tcp: TcpStream,
    peer: Peer,
) -> std::io::Result<Option<Ready>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        let tls = frontend.tls.accept(tcp).await?;
        return after_tls(frontend, Box::new(tls), peer).await;
    }
    // A client may ask for GSS encryption first and TLS after the refusal.
    for _ in 0..2 {
        let packet = match read_startup(&mut tcp).await {
            Ok(packet) => packet,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = tcp
                    .write_all(&wire::fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string()))
                    .await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match packet {
            StartupPacket::SslRequest => {
                tcp.write_all(b"S").await?;
                let tls = frontend.tls.accept(tcp).await?;
                return after_tls(frontend, Box::new(tls), peer).await;
            }
            StartupPacket::GssEncRequest => tcp.write_all(b"N").await?,
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                forward_cancel(frontend, process_id, secret_key).await;
                return Ok(None);
            }
            StartupPacket::Startup { params, .. } => {
                let user = param(&params, "user").unwrap_or_default();
                audit_login(
                    frontend,
                    user,
                    param(&params, "database"),
                    peer,
                    Err("client did not use TLS".into()),
                );
                tcp.write_all(&wire::fatal(
                    sqlstate::INVALID_AUTHORIZATION,
                    "jitgate requires TLS: use sslmode=require",
                ))
                .await?;
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Inside TLS: a cancel or a login.
async fn after_tls(
    frontend: &Arc<Frontend>,
    mut client: Box<dyn Stream>,
    peer: Peer,
) -> std::io::Result<Option<Ready>> {
    let packet = match read_startup(&mut client).await {
        Ok(packet) => packet,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            refuse(&mut client, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match packet {
        StartupPacket::Cancel {
            process_id,
            secret_key,
        } => {
            forward_cancel(frontend, process_id, secret_key).await;
            Ok(None)
        }
        StartupPacket::Startup { minor, params } => {
            login(frontend, client, peer, minor, params).await
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            refuse(
                &mut client,
                sqlstate::PROTOCOL_VIOLATION,
                "encryption requested twice",
            )
            .await;
            Ok(None)
        }
    }
}

async fn refuse(client: &mut Box<dyn Stream>, code: &str, message: &str) {
    let _ = client.write_all(&wire::fatal(code, message)).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Whether the startup packet asks for a physical (`replication=true`) or
/// logical (`replication=database`) replication connection. Only the
/// spellings PostgreSQL reads as false mean an ordinary session; anything
/// else it would either honour or reject.
fn asks_for_replication(params: &[(String, String)]) -> bool {
    param(params, "replication").is_some_and(|value| !means_false(value))
}

/// PostgreSQL's `parse_bool` reading of false: any prefix of "false" or
/// "no", "of" or "off", or "0".
fn means_false(value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    let prefix_of = |word: &str| !value.is_empty() && word.starts_with(value.as_str());
    prefix_of("false") || prefix_of("no") || value == "of" || value == "off" || value == "0"
}

async fn forward_cancel(frontend: &Frontend, process_id: i32, secret_key: i32) {
    let key = ClientKey {
        process_id,
        secret_key,
    };
    let Some(upstream) = frontend.cancels.lookup(key) else {
        metrics::counter!("jitgate_postgres_cancels_total", "outcome" => "unknown_key")
            .increment(1);
        return;
    };
    let timeout = frontend.runtime.gateway.config().postgres.connect_timeout;
    let outcome = match cancel_upstream(&upstream, timeout).await {
        Ok(()) => "forwarded",
        Err(e) => {
            tracing::warn!(error = %e, "forwarding a cancel request failed");
            "failed"
        }
    };
    metrics::counter!("jitgate_postgres_cancels_total", "outcome" => outcome).increment(1);
}

/// A refused login: what the client is told.
struct Refusal {
    code: &'static str,
    message: String,
    reason: String,
}

async fn login(
    frontend: &Arc<Frontend>,
    mut client: Box<dyn Stream>,
    peer: Peer,
    minor: u16,
    params: Vec<(String, String)>,
) -> std::io::Result<Option<Ready>> {
    let user = param(&params, "user").unwrap_or_default().to_string();
    // libpq's default database is the user name.
    let database = param(&params, "database").unwrap_or(&user).to_string();
    if asks_for_replication(&params) {
        // Refused rather than quietly turned into an SQL session, which
        // would leave pg_basebackup or a logical decoder guessing why its
        // commands fail. A lease grants SQL access, not a copy of the
        // cluster.
        let reason = "jitgate does not relay replication connections".to_string();
        audit_login(frontend, &user, Some(&database), peer, Err(reason.clone()));
        refuse(&mut client, sqlstate::FEATURE_NOT_SUPPORTED, &reason).await;
        return Ok(None);
    }
    let mut out = BytesMut::new();
    let unrecognised: Vec<String> = params
        .iter()
        .filter(|(key, _)| key.starts_with("_pq_."))
        .map(|(key, _)| key.clone())
        .collect();
    if minor > 0 || !unrecognised.is_empty() {
        wire::negotiate_protocol_version(&mut out, &unrecognised);
    }
    wire::auth_cleartext(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    let message = read_message(&mut client, PASSWORD_MESSAGE_LIMIT).await;
    let parsed = match &message {
        Ok((tag, body)) => wire::password_from(*tag, body).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(e.to_string()),
        Err(_) => return message.map(|_| None),
    };
    let password = match parsed {
        Ok(password) => Secret::new(password),
        Err(problem) => {
            // The text names the framing fault only, never the bytes sent.
            let reason = format!("malformed password message: {problem}");
            audit_login(frontend, &user, Some(&database), peer, Err(reason.clone()));
            refuse(&mut client, sqlstate::PROTOCOL_VIOLATION, &reason).await;
            return Ok(None);
        }
    };
    let checked = check_lease(frontend, peer, &user, &database, &password);
    let (resource, lease) = match checked {
        Ok(found) => found,
        Err(refusal) => {
            audit_login(frontend, &user, Some(&database), peer, Err(refusal.reason));
            metrics::counter!("jitgate_logins_total", "protocol" => "postgres", "outcome" => "refused").increment(1);
            refuse(&mut client, refusal.code, &refusal.message).await;
            return Ok(None);
        }
    };
    let config = frontend.runtime.gateway.config();
    let Some(slot) = frontend.take_slot(&user, config.postgres.max_connections_per_user) else {
        let message = format!(
            "too many connections for {user} (postgres.max_connections_per_user = {})",
            config.postgres.max_connections_per_user
        );
        audit_login(frontend, &user, Some(&database), peer, Err(message.clone()));
        refuse(&mut client, sqlstate::TOO_MANY_CONNECTIONS, &message).await;
        return Ok(None);
    };
    let (upstream, tls) = match connect_upstream(frontend, &resource, &params).await {
        Ok(connected) => connected,
        Err(detail) => {
            tracing::warn!(resource = %resource.name, error = %detail, "postgres upstream login failed");
            audit_login(
                frontend,
                &user,
                Some(&database),
                peer,
                Err(format!("target: {detail}")),
            );
            let message = format!(
                "jitgate could not open a session on {}; the failure is logged for the administrators",
                resource.name
            );
            refuse(&mut client, sqlstate::CANNOT_CONNECT, &message).await;
            return Ok(None);
        }
    };
    let upstream_key = UpstreamKey {
        address: resource.address.clone(),
        process_id: upstream.process_id,
        secret_key: upstream.secret_key,
        tls,
    };
    let session = match PgSession::open(NewSession {
        frontend: frontend.clone(),
        user: user.clone(),
        remote: peer.to_string(),
        gateway_host: peer.gateway,
        resource,
        lease,
        upstream_key,
        slot,
    }) {
        Ok(session) => session,
        Err(e) => {
            // No query log, no session: security teams must see everything.
            tracing::error!(error = %e, "cannot create the query log");
            refuse(
                &mut client,
                sqlstate::CANNOT_CONNECT,
                "jitgate cannot write the query log; the session is refused",
            )
            .await;
            return Ok(None);
        }
    };
    metrics::counter!("jitgate_logins_total", "protocol" => "postgres", "outcome" => "accepted")
        .increment(1);
    let started = session.started_event();
    let accepted = login_event(&user, Some(&database), peer, Ok(()));
    let gateway = frontend.runtime.gateway.clone();
    // Tracked, so a shutdown waits for the record to be written.
    frontend.runtime.tracker.spawn_blocking(move || {
        gateway.audit(accepted);
        gateway.audit(started);
    });
    greet(&mut client, &session, &upstream).await?;
    Ok(Some((session, client, upstream.stream)))
}

/// AuthenticationOk, the target's parameters, our cancel key, ready.
async fn greet(
    client: &mut Box<dyn Stream>,
    session: &PgSession,
    upstream: &Upstream,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    wire::auth_ok(&mut out);
    out.extend_from_slice(&upstream.greeting);
    let key = session.cancel_key.key();
    wire::backend_key_data(&mut out, key.process_id, key.secret_key);
    super::upstream::put_raw(&mut out, b'Z', &[upstream.ready_status]);
    client.write_all(&out).await?;
    client.flush().await
}

/// The user's live lease on the resource, if the password is its password.
fn check_lease(
    frontend: &Frontend,
    peer: Peer,
    user: &str,
    database: &str,
    password: &Secret,
) -> Result<(Resource, Arc<Lease>), Refusal> {
    let config = frontend.runtime.gateway.config();
    // Unknown users and resources look exactly like a wrong password.
    let bad_password = |reason: &str| Refusal {
        code: sqlstate::INVALID_PASSWORD,
        message: format!("password authentication failed for user \"{user}\""),
        reason: reason.to_string(),
    };
    if config.directory.user(user).is_none() {
        return Err(bad_password("unknown user"));
    }
    let Some(resource) = config
        .resources
        .get(database)
        .filter(|r| r.kind == ResourceKind::Postgres)
    else {
        return Err(bad_password("unknown postgres resource"));
    };
    let Some(lease) = frontend.runtime.gateway.leases().lookup(user, database) else {
        return Err(Refusal {
            code: sqlstate::INVALID_AUTHORIZATION,
            message: format!(
                "no active lease for {database}: request and check out first ({})",
                frontend.control_command(peer.gateway, user, &format!("request {database}"))
            ),
            reason: "no active lease".into(),
        });
    };
    let matches = lease.secret_hash.as_ref().is_some_and(|hash| {
        bool::from(
            hash.as_bytes()
                .ct_eq(hash_lease_password(password.expose()).as_bytes()),
        )
    });
    if !matches {
        return Err(bad_password("wrong lease password"));
    }
    if lease.resource != resource.name {
        return Err(bad_password("lease of another resource"));
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

fn login_event(
    user: &str,
    database: Option<&str>,
    peer: Peer,
    outcome: Result<(), String>,
) -> AuditEvent {
    AuditEvent::Login {
        protocol: Protocol::Postgres,
        user: user.to_string(),
        resource: database.map(String::from),
        remote: peer.to_string(),
        accepted: outcome.is_ok(),
        reason: outcome.err(),
    }
}

fn audit_login(
    frontend: &Frontend,
    user: &str,
    database: Option<&str>,
    peer: Peer,
    outcome: Result<(), String>,
) {
    let event = login_event(user, database, peer, outcome);
    let gateway = frontend.runtime.gateway.clone();
    frontend
        .runtime
        .tracker
        .spawn_blocking(move || gateway.audit(event));
}

#[cfg(test)]
mod tests {
    use super::asks_for_replication;

    fn startup(replication: Option<&str>) -> Vec<(String, String)> {
        let mut params = vec![("user".to_string(), "alice".to_string())];
        if let Some(value) = replication {
            params.push(("replication".to_string(), value.to_string()));
        }
        params
    }

    #[test]
    fn replication_is_asked_for_unless_the_value_reads_as_false() {
        for value in [
            "true", "on", "1", "yes", "database", "DATABASE", "t", "nonsense", "",
        ] {
            assert!(asks_for_replication(&startup(Some(value))), "{value:?}");
        }
        for value in ["false", "FALSE", "f", "fal", "no", "n", "off", "of", "0"] {
            assert!(!asks_for_replication(&startup(Some(value))), "{value:?}");
        }
        assert!(!asks_for_replication(&startup(None)));
    }
}
