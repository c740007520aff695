//! TLS for the Postgres port (rustls) and for upstream connections.
//!
//! The server certificate comes from `[tls]`; without it the gateway makes
//! a self-signed one in its state directory on first start, the way it
//! makes its SSH host key, so `sslmode=require` works out of the box.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ClientAuth, Config};

mod end_point;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {detail}")]
    Read {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// What a client connection's TLS is made with: the acceptor, and the
/// channel binding data of its certificate (for SCRAM-SHA-256-PLUS).
#[derive(Clone)]
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    pub end_point: Option<Arc<[u8]>>,
}

/// The acceptor for client connections, from `[tls]` or a generated pair.
pub fn acceptor(config: &Config) -> Result<ClientTls, TlsError> {
    let (cert, key) = match &config.tls {
        Some(tls) => (tls.cert.clone(), tls.key.clone()),
        None => ensure_self_signed(&config.state_dir)?,
    };
    acceptor_for(config, &cert, &key)
}

/// The acceptor for `cert` and `key`, checked against what `config` asks
/// of it.
pub fn acceptor_for(config: &Config, cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
    let tls = acceptor_from(cert, key)?;
    if config.postgres.client_auth == ClientAuth::ScramSha256 && tls.end_point.is_none() {
        // Clients are told to insist on channel binding (`checkout` prints
        // channel_binding=require), which this certificate cannot give.
        return Err(TlsError::Setup(format!(
            "postgres.client_auth = \"scram-sha-256\" needs a certificate signed with RSA or ECDSA over SHA-1 or SHA-2, for channel binding; {} is not",
            cert.display()
        )));
    }
    Ok(tls)
}

/// The acceptor for the certificate chain in `cert` and its key in `key`.
pub fn acceptor_from(cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
    let chain = read_certs(cert)?;
    let end_point = end_point::of(&chain[0]).map(Arc::from);
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        what: "key",
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    // libpq 17+ sends ALPN "postgresql" and insists on it coming back.
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(ClientTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        end_point,
    })
}

/// A connector that verifies targets against `ca_file`.
pub fn connector(ca_file: &Path) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", ca_file.display())))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(client)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |detail: String| TlsError::Read {
        what: "certificate",
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(read_error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// `state_dir/postgres_tls.{crt,key}`, created (key 0600) if missing.
fn ensure_self_signed(state_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = state_dir.join("postgres_tls.crt");
    let key = state_dir.join("postgres_tls.key");
    if !cert.exists() || !key.exists() {
        let pair = generate::self_signed(&["localhost".into(), "127.0.0.1".into()])?;
        write_pair(&pair, &cert, &key)?;
        tracing::info!(cert = %cert.display(), "generated a self-signed certificate for the Postgres port");
    }
    Ok((cert, key))
}

pub fn write_pair(pair: &generate::Pem, cert: &Path, key: &Path) -> Result<(), TlsError> {
    let setup = |e: std::io::Error| TlsError::Setup(e.to_string());
    crate::fsutil::write_atomic(key, pair.key.as_bytes(), 0o600).map_err(setup)?;
    crate::fsutil::write_atomic(cert, pair.cert.as_bytes(), 0o644).map_err(setup)?;
    Ok(())
}

/// Certificates made with rcgen: self-signed, or a throwaway CA and a
/// server certificate it signs (for the demo and the tests).
pub mod generate {
    use super::TlsError;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    pub struct Pem {
        pub cert: String,
        pub key: String,
    }

    fn setup(e: rcgen::Error) -> TlsError {
        TlsError::Setup(e.to_string())
    }

    pub fn self_signed(names: &[String]) -> Result<Pem, TlsError> {
        let key = KeyPair::generate().map_err(setup)?;
        let cert = CertificateParams::new(names.to_vec())
            .map_err(setup)?
            .self_signed(&key)
            .map_err(setup)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A CA and a server certificate for `names` signed by it: (ca, server).
    pub fn ca_and_server(names: &[String]) -> Result<(Pem, Pem), TlsError> {
        let ca_key = KeyPair::generate().map_err(setup)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jitgate demo CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(setup)?;
        let issuer = Issuer::new(ca_params, &ca_key);
        let server_key = KeyPair::generate().map_err(setup)?;
        let server_cert = CertificateParams::new(names.to_vec())
            .map_err(setup)?
            .signed_by(&server_key, &issuer)
            .map_err(setup)?;
        Ok((
            Pem {
                cert: ca_cert.pem(),
                key: ca_key.serialize_pem(),
            },
            Pem {
                cert: server_cert.pem(),
                key: server_key.serialize_pem(),
            },
        ))
    }
}
