//! The gateway's own login to a Postgres target as the managed account.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::scram::{self, KeyCache};
use super::wire::{self, error_fields, read_message};
use crate::config::Resource;
use crate::secret::Secret;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Backend messages during login are small; a huge one means a confused
/// or hostile target.
const LOGIN_MESSAGE_LIMIT: usize = 1 << 20;

/// Verified TLS to a target.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamTls({:?})", self.server_name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {resource}: {detail}")]
    Unreachable { resource: String, detail: String },
    #[error("{resource} did not answer within {timeout:?}")]
    Timeout { resource: String, timeout: Duration },
    #[error("{resource} has no managed credential configured (credential_file)")]
    NoCredential { resource: String },
    #[error("the managed credential of {resource} is unusable: {problem}")]
    BadCredential { resource: String, problem: String },
    #[error("{resource} refused the gateway's managed credential")]
    Refused { resource: String },
    #[error("{resource} refused the session: {message} ({code})")]
    Target {
        resource: String,
        code: String,
        message: String,
    },
    #[error("{resource} broke the protocol during login: {detail}")]
    Protocol { resource: String, detail: String },
}

/// A logged-in upstream connection, positioned right after ReadyForQuery.
pub struct Upstream {
    pub stream: BoxStream,
    /// The backend's address, as connected (for cancel requests).
    pub address: std::net::SocketAddr,
    pub process_id: i32,
    pub secret_key: i32,
    /// ParameterStatus and notices, to be relayed to the client as they
    /// came (BackendKeyData is replaced, ReadyForQuery comes after it).
    pub greeting: BytesMut,
    pub ready_status: u8,
}

/// TLS settings for a resource: verified against its CA when configured.
pub fn tls_for(resource: &Resource) -> Result<Option<UpstreamTls>, String> {
    let Some(ca) = &resource.upstream_tls_ca else {
        return Ok(None);
    };
    let connector = super::tls::connector(ca).map_err(|e| e.to_string())?;
    let host = resource
        .address
        .rsplit_once(':')
        .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(&resource.address);
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    Ok(Some(UpstreamTls {
        connector,
        server_name,
    }))
}

/// Upgrades `tcp` to TLS with an SSLRequest when `tls` is set.
pub async fn secure(mut tcp: TcpStream, tls: Option<&UpstreamTls>) -> std::io::Result<BoxStream> {
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    if tcp.read_u8().await? != b'S' {
        return Err(std::io::Error::other("the target does not accept TLS"));
    }
    let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
    Ok(Box::new(stream))
}

pub struct Login<'a> {
    pub resource: &'a Resource,
    pub password: &'a Secret,
    pub tls: Option<&'a UpstreamTls>,
    pub client_params: &'a [(String, String)],
    pub keys: &'a KeyCache,
    pub timeout: Duration,
}

impl Login<'_> {
    fn unreachable(&self, detail: impl ToString) -> UpstreamError {
        UpstreamError::Unreachable {
            resource: self.resource.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn protocol(&self, detail: impl ToString) -> UpstreamError {
        UpstreamError::Protocol {
            resource: self.resource.name.clone(),
            detail: detail.to_string(),
        }
    }

    pub async fn connect(&self) -> Result<Upstream, UpstreamError> {
        tokio::time::timeout(self.timeout, self.connect_and_login())
            .await
            .map_err(|_| UpstreamError::Timeout {
                resource: self.resource.name.clone(),
                timeout: self.timeout,
            })?
    }

    async fn connect_and_login(&self) -> Result<Upstream, UpstreamError> {
        let tcp = TcpStream::connect(&self.resource.address)
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let address = tcp.peer_addr().map_err(|e| self.unreachable(e))?;
        let mut stream = secure(tcp, self.tls)
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut out = BytesMut::new();
        frontend::startup_message(self.startup_params(), &mut out).map_err(|e| self.protocol(e))?;
        stream
            .write_all(&out)
            .await
            .map_err(|e| self.unreachable(e))?;
        self.login(stream, address).await
    }

    /// The client's parameters, with user and database replaced by the
    /// managed ones. Replication connections are never forwarded: a lease
    /// grants SQL access, not a copy of the cluster.
    fn startup_params(&self) -> Vec<(&str, &str)> {
        let database = self.resource.database.as_deref().unwrap_or("postgres");
        let mut params = vec![
            ("user", self.resource.account.as_str()),
            ("database", database),
        ];
        params.extend(
            self.client_params
                .iter()
                .filter(|(name, _)| {
                    !matches!(name.as_str(), "user" | "database" | "replication")
                        && !name.starts_with("_pq_.")
                })
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        params
    }

    async fn login(
        &self,
        mut stream: BoxStream,
        address: std::net::SocketAddr,
    ) -> Result<Upstream, UpstreamError> {
        let mut scram: Option<scram::Exchange> = None;
        let mut greeting = BytesMut::new();
        let mut key = None;
        loop {
            let (tag, body) = read_message(&mut stream, LOGIN_MESSAGE_LIMIT)
                .await
                .map_err(|e| self.unreachable(e))?;
            match tag {
                b'R' => {
                    let reply = self.authenticate(&body, &mut scram)?;
                    if !reply.is_empty() {
                        stream
                            .write_all(&reply)
                            .await
                            .map_err(|e| self.unreachable(e))?;
                    }
                }
                b'E' => return Err(self.refusal(&body)),
                b'K' if body.len() == 8 => key = wire::backend_key(&body),
                b'S' | b'N' | b'v' => put_raw(&mut greeting, tag, &body),
                b'Z' => {
                    let (process_id, secret_key) =
                        key.ok_or_else(|| self.protocol("no BackendKeyData"))?;
                    return Ok(Upstream {
                        stream,
                        address,
                        process_id,
                        secret_key,
                        greeting,
                        ready_status: body.first().copied().unwrap_or(b'I'),
                    });
                }
                other => {
                    return Err(self.protocol(format!("unexpected message {:?}", other as char)));
                }
            }
        }
    }

    fn refusal(&self, body: &[u8]) -> UpstreamError {
        let (code, message) = error_fields(body);
        if code == wire::sqlstate::INVALID_PASSWORD || code == wire::sqlstate::INVALID_AUTHORIZATION
        {
            UpstreamError::Refused {
                resource: self.resource.name.clone(),
            }
        } else {
            UpstreamError::Target {
                resource: self.resource.name.clone(),
                code,
                message,
            }
        }
    }

    /// Answers one Authentication* request; returns the bytes to send.
    fn authenticate<'s>(
        &'s self,
        body: &[u8],
        scram: &mut Option<scram::Exchange<'s>>,
    ) -> Result<BytesMut, UpstreamError> {
        let (code, data) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| self.protocol("short authentication message"))?;
        let mut out = BytesMut::new();
        let password = self.password.expose().as_bytes();
        let encode = |r: std::io::Result<()>| r.map_err(|e| self.protocol(e));
        match i32::from_be_bytes(*code) {
            0 => {}
            3 => encode(frontend::password_message(password, &mut out))?,
            5 => {
                let salt = data
                    .first_chunk::<4>()
                    .ok_or_else(|| self.protocol("short md5 salt"))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    self.resource.account.as_bytes(),
                    password,
                    *salt,
                );
                encode(frontend::password_message(hash.as_bytes(), &mut out))?;
            }
            10 => {
                let offered = data
                    .split(|b| *b == 0)
                    .any(|m| m == scram::MECHANISM.as_bytes());
                if !offered {
                    return Err(
                        self.protocol("the target offers no SASL mechanism the gateway speaks")
                    );
                }
                let exchange = scram::Exchange::new(self.keys, &self.resource.name, self.password);
                encode(frontend::sasl_initial_response(
                    scram::MECHANISM,
                    &exchange.client_first(),
                    &mut out,
                ))?;
                *scram = Some(exchange);
            }
            11 => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| self.protocol("SASLContinue first"))?;
                let message = exchange.client_final(data).map_err(|e| self.protocol(e))?;
                encode(frontend::sasl_response(&message, &mut out))?;
            }
            12 => {
                let exchange = scram
                    .as_ref()
                    .ok_or_else(|| self.protocol("SASLFinal first"))?;
                exchange.verify(data).map_err(|e| self.protocol(e))?;
            }
            other => {
                return Err(self.protocol(format!("unsupported authentication method {other}")));
            }
        }
        Ok(out)
    }
}

/// Appends a message exactly as received.
pub fn put_raw(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
}
