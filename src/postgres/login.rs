//! The startup phase: TLS negotiation, cancel requests, and the login
//! (checked in `admission`) that opens a session and greets the client.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::admission::{self, Admitted, Asked};
use super::cancel::{ClientKey, UpstreamKey, cancel_upstream};
use super::progress::{ClientProgress, StartupEnd};
use super::session::{NewSession, PgSession};
use super::upstream::{Stream, Upstream};
use super::wire::{self, StartupPacket, read_startup, sqlstate};
use super::{Frontend, relay};
use crate::audit::{AuditEvent, Protocol};
use crate::gateway::AUDIT_UNAVAILABLE;

/// The first byte of a TLS handshake: a client using `sslnegotiation=direct`.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection's two ends: who connected (audited, and shown as
/// such) and the gateway address it reached (named in suggested commands).
#[derive(Clone, Copy)]
pub(super) struct Peer {
    remote: SocketAddr,
    pub gateway: IpAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.remote.fmt(f)
    }
}

/// Serves one connection. `pending` holds its place among its source's
/// logins in progress until the login is over.
pub async fn handle(
    frontend: Arc<Frontend>,
    tcp: TcpStream,
    remote: SocketAddr,
    pending: crate::gateway::PendingLogin,
) {
    let _ = tcp.set_nodelay(true);
    let gateway = tcp
        .local_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let peer = Peer { remote, gateway };
    let timeout = frontend.runtime.gateway.config().postgres.auth_timeout;
    let progress = ClientProgress::default();
    let negotiated =
        tokio::time::timeout(timeout, negotiate(&frontend, tcp, peer, &progress)).await;
    drop(pending);
    match negotiated {
        Ok(Ok(Some((session, client, upstream)))) => relay::run(session, client, upstream).await,
        Ok(Ok(None)) => progress.charge(&frontend, remote.ip(), StartupEnd::Closed),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "postgres connection ended during startup");
            progress.charge(&frontend, remote.ip(), StartupEnd::Closed);
        }
        Err(_) => {
            metrics::counter!("jitgate_postgres_startup_timeouts_total").increment(1);
            tracing::debug!(%peer, "postgres startup timed out");
            progress.charge(&frontend, remote.ip(), StartupEnd::TimedOut);
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
    progress: &ClientProgress,
) -> std::io::Result<Option<Ready>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        return after_tls(frontend, tcp, peer, progress).await;
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
                return after_tls(frontend, tcp, peer, progress).await;
            }
            StartupPacket::GssEncRequest => tcp.write_all(b"N").await?,
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                progress.settled();
                forward_cancel(frontend, process_id, secret_key).await;
                return Ok(None);
            }
            StartupPacket::Startup { params, .. } => {
                progress.settled();
                let user = param(&params, "user").unwrap_or_default();
                audit_refusal(
                    frontend,
                    user,
                    param(&params, "database"),
                    peer,
                    Failure {
                        reason: "client did not use TLS".into(),
                        against_source: true,
                    },
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
    tcp: TcpStream,
    peer: Peer,
    progress: &ClientProgress,
) -> std::io::Result<Option<Ready>> {
    let tls = frontend.tls();
    let mut client: Box<dyn Stream> = Box::new(tls.acceptor.accept(tcp).await?);
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
            progress.settled();
            forward_cancel(frontend, process_id, secret_key).await;
            // libpq 17+ takes only a clean close (TLS close_notify, as
            // PostgreSQL sends) as the cancel's success; a bare TCP close
            // makes it report the cancel as failed.
            let _ = client.shutdown().await;
            Ok(None)
        }
        StartupPacket::Startup { minor, params } => {
            let startup = Startup {
                peer,
                minor,
                params,
                tls_end_point: tls.end_point,
            };
            login(frontend, client, startup, progress).await
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

pub(super) async fn refuse(client: &mut Box<dyn Stream>, code: &str, message: &str) {
    let _ = client.write_all(&wire::fatal(code, message)).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Whether the startup packet asks for a physical (`replication=true`) or
/// logical (`replication=database`) replication connection. Only the
/// spellings PostgreSQL reads as false mean an ordinary session; anything
/// else it would either honour or reject.
pub(super) fn asks_for_replication(params: &[(String, String)]) -> bool {
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

/// A login's startup packet, and the connection it came on.
struct Startup {
    peer: Peer,
    minor: u16,
    params: Vec<(String, String)>,
    tls_end_point: Option<Arc<[u8]>>,
}

async fn login(
    frontend: &Arc<Frontend>,
    mut client: Box<dyn Stream>,
    startup: Startup,
    progress: &ClientProgress,
) -> std::io::Result<Option<Ready>> {
    let Startup {
        peer,
        minor,
        params,
        tls_end_point,
    } = startup;
    let user = param(&params, "user").unwrap_or_default().to_string();
    // libpq's default database is the user name.
    let database = param(&params, "database").unwrap_or(&user).to_string();
    let asked = Asked {
        user: &user,
        database: &database,
        peer,
        minor,
        params: &params,
        tls_end_point: tls_end_point.as_deref(),
    };
    let admitted = match admission::admit(frontend, &mut client, &asked, progress).await? {
        Ok(admitted) => admitted,
        Err(refusal) => {
            progress.settled();
            turn_away(frontend, &mut client, &asked, refusal).await;
            return Ok(None);
        }
    };
    let (session, upstream) = match open_session(frontend, &user, peer, admitted) {
        Ok(opened) => opened,
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
    if !record_start(frontend, &session, &asked).await {
        refuse(&mut client, sqlstate::CANNOT_CONNECT_NOW, AUDIT_UNAVAILABLE).await;
        return Ok(None);
    }
    greet(&mut client, &session, &upstream).await?;
    Ok(Some((session, client, upstream.stream)))
}

/// A refused login: audited, counted, and the client told why.
async fn turn_away(
    frontend: &Frontend,
    client: &mut Box<dyn Stream>,
    asked: &Asked<'_>,
    refusal: admission::Refusal,
) {
    let failure = Failure {
        against_source: refusal.is_failed_login(),
        reason: refusal.reason,
    };
    audit_refusal(
        frontend,
        asked.user,
        Some(asked.database),
        asked.peer,
        failure,
    );
    metrics::counter!("jitgate_logins_total", "protocol" => "postgres", "outcome" => "refused")
        .increment(1);
    refuse(client, refusal.code, &refusal.message).await;
}

/// The session of an admitted login, with its query log open.
fn open_session(
    frontend: &Arc<Frontend>,
    user: &str,
    peer: Peer,
    admitted: Admitted,
) -> std::io::Result<(Arc<PgSession>, Upstream)> {
    let Admitted {
        resource,
        lease,
        slot,
        upstream,
        tls,
    } = admitted;
    let upstream_key = UpstreamKey {
        address: upstream.address,
        process_id: upstream.process_id,
        secret_key: upstream.secret_key,
        tls,
    };
    let session = PgSession::open(NewSession {
        frontend: frontend.clone(),
        user: user.to_string(),
        remote: peer.to_string(),
        gateway_host: peer.gateway,
        resource,
        lease,
        upstream_key,
        slot,
    })?;
    Ok((session, upstream))
}

/// Puts the login and the session's start on disk before its first byte
/// flows, so no session goes unseen, even if the gateway is killed right
/// after. False when the audit log cannot take them.
async fn record_start(frontend: &Frontend, session: &PgSession, asked: &Asked<'_>) -> bool {
    let started = session.started_event();
    let accepted = login_event(asked.user, Some(asked.database), asked.peer, Ok(()));
    let gateway = frontend.runtime.gateway.clone();
    frontend
        .runtime
        .tracker
        .spawn_blocking(move || {
            gateway.audit_all(vec![accepted, started]);
            !gateway.audit_failing()
        })
        .await
        .unwrap_or(false)
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
        key: None,
        accepted: outcome.is_ok(),
        reason: outcome.err(),
    }
}

/// Why a login was refused, and whether it counts as a failed login of
/// its source (`[penalties]`): a client that cannot show who it is, not
/// one whose user is over a cap or whose target is down.
struct Failure {
    reason: String,
    against_source: bool,
}

/// Audits a refused login, and counts it against its source.
fn audit_refusal(
    frontend: &Frontend,
    user: &str,
    database: Option<&str>,
    peer: Peer,
    failure: Failure,
) {
    let event = login_event(user, database, peer, Err(failure.reason));
    let gateway = frontend.runtime.gateway.clone();
    let address = peer.remote.ip();
    frontend.runtime.tracker.spawn_blocking(move || {
        gateway.audit(event);
        if failure.against_source {
            gateway.login_failed(address);
        }
    });
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
