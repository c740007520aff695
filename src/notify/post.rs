//! One webhook endpoint and a POST to it: HTTP/1.1 over TCP, or over TLS
//! verified against the system's CAs or the webhook's `ca_file`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::audit::AuditRecord;
use crate::config::webhook::Webhook;
use crate::secret::{Secret, read_secret_file};

/// Connecting, the TLS handshake and the answer together.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("webhook {origin}: {problem}")]
    Setup { origin: String, problem: String },
    #[error("{0}")]
    Failed(String),
    /// The receiver answered that the request itself is wrong: sending it
    /// again the same way will not help for long.
    #[error("answered {0}")]
    Refused(axum::http::StatusCode),
}

impl PostError {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

pub struct Target {
    url: Uri,
    /// Scheme, host and port: how logs and metrics name the webhook.
    origin: String,
    key: String,
    events: Option<std::collections::BTreeSet<String>>,
    resources: Option<std::collections::BTreeSet<String>>,
    token: Option<Secret>,
    signing: Option<Secret>,
    tls: Option<TlsConnector>,
}

impl Target {
    pub fn new(webhook: &Webhook) -> Result<Self, PostError> {
        let setup = |problem: String| PostError::Setup {
            origin: origin(&webhook.url),
            problem,
        };
        let read = |key: &str, path: &Option<std::path::PathBuf>| match path {
            Some(path) => read_secret_file(path)
                .map(Some)
                .map_err(|e| setup(format!("{key} {}: {e}", path.display()))),
            None => Ok(None),
        };
        let token = read("bearer_token_file", &webhook.bearer_token_file)?;
        let signing = read("signing_secret_file", &webhook.signing_secret_file)?;
        let tls = match webhook.url.scheme_str() {
            Some("https") => Some(connector(webhook).map_err(setup)?),
            _ => None,
        };
        Ok(Self {
            url: webhook.url.clone(),
            origin: origin(&webhook.url),
            key: super::cursors::key(&webhook.url.to_string()),
            events: webhook.events.clone(),
            resources: webhook.resources.clone(),
            token,
            signing,
            tls,
        })
    }

    /// Scheme, host and port only, for logs: the path of many webhook
    /// URLs is their secret (a chat tool's incoming-webhook token).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What the webhook's place in the audit chain is kept under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The resources whose records alone the webhook asked for.
    pub fn resources(&self) -> Option<&std::collections::BTreeSet<String>> {
        self.resources.as_ref()
    }

    /// Whether the webhook asked for `record`: by its type, or for a
    /// workflow record, by the change it records.
    pub fn wants(&self, record: &AuditRecord) -> bool {
        let Some(events) = &self.events else {
            return true;
        };
        record
            .event
            .type_names()
            .iter()
            .any(|name| events.contains(name))
    }

    pub async fn post(&self, body: Bytes) -> Result<(), PostError> {
        tokio::time::timeout(TIMEOUT, self.post_within(body))
            .await
            .map_err(|_| PostError::Failed(format!("no answer within {TIMEOUT:?}")))?
    }

    async fn post_within(&self, body: Bytes) -> Result<(), PostError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| PostError::Failed(format!("{what}: {e}"));
        let host = self.url.host().unwrap_or_default();
        let port = self
            .url
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| failed("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| failed("server name", &e))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed("TLS", &e))?;
                self.send(stream, body).await
            }
            None => self.send(tcp, body).await,
        }
    }

    async fn send<S>(&self, stream: S, body: Bytes) -> Result<(), PostError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PostError::Failed(format!("HTTP: {e}")))?;
        tokio::spawn(connection);
        let mut request = Request::post(self.url.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                header::HOST,
                self.url.authority().map_or("", |a| a.as_str()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("jitgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(secret) = &self.signing {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body)?);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| PostError::Failed(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| PostError::Failed(format!("HTTP: {e}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            Err(PostError::Refused(status))
        } else {
            Err(PostError::Failed(format!("answered {status}")))
        }
    }
}

/// Carries `sha256=` and the hex HMAC-SHA256 of the body under the
/// webhook's signing secret, so a receiver can tell the gateway's POSTs
/// from anyone else's (compare in constant time; `record.seq` tells a
/// replay).
pub const SIGNATURE_HEADER: &str = "x-jitgate-signature-256";

fn signature(secret: &Secret, body: &[u8]) -> Result<String, PostError> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|e| PostError::Failed(format!("signing: {e}")))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn origin(url: &Uri) -> String {
    format!(
        "{}://{}",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str())
    )
}

/// Verifies the endpoint against `ca_file`, or the system's trusted CAs.
fn connector(webhook: &Webhook) -> Result<TlsConnector, String> {
    if let Some(ca) = &webhook.ca_file {
        return crate::postgres::tls::connector(ca).map_err(|e| e.to_string());
    }
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates found on this system: set ca_file".into());
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_a_webhook_by_its_origin_never_its_path() {
        let url: Uri = "https://hooks.example.com:8443/services/T0/B0/s3cret?x=1"
            .parse()
            .unwrap();
        assert_eq!(origin(&url), "https://hooks.example.com:8443");
    }

    #[test]
    fn bodies_are_signed_with_hmac_sha256() {
        let secret = Secret::new("key".into());
        let body = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(
            signature(&secret, body).unwrap(),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    /// POSTs once to a receiver that answers `status`.
    async fn post_answered(status: &str) -> Result<(), PostError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(answer.as_bytes()).await;
        });
        let webhook = Webhook {
            url: format!("http://127.0.0.1:{port}/hook").parse().unwrap(),
            events: None,
            resources: None,
            bearer_token_file: None,
            signing_secret_file: None,
            ca_file: None,
        };
        Target::new(&webhook)
            .unwrap()
            .post(Bytes::from_static(b"{}"))
            .await
    }

    #[tokio::test]
    async fn a_receiver_refusing_the_request_is_told_apart_from_one_failing() {
        assert!(post_answered("204 No Content").await.is_ok());
        assert!(
            post_answered("400 Bad Request")
                .await
                .unwrap_err()
                .is_refusal()
        );
        assert!(
            post_answered("404 Not Found")
                .await
                .unwrap_err()
                .is_refusal()
        );
        // Worth trying again: the receiver is busy or broken, not the record.
        for status in [
            "429 Too Many Requests",
            "408 Request Timeout",
            "503 Service Unavailable",
        ] {
            let error = post_answered(status).await.unwrap_err();
            assert!(!error.is_refusal(), "{status}: {error}");
        }
    }
}
