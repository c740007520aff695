//! PostgreSQL rotation with tokio-postgres: the managed role sets its own
//! new password, sent as a SCRAM-SHA-256 verifier computed here, so the
//! plaintext never reaches the server (or its statement log).

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::error::SqlState;

use super::RotationError;
use crate::config::{Reconcile, Resource};
use crate::secret::{Secret, read_secret_file};

/// 32 random bytes, hex: 256 bits.
pub fn generate() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(hex::encode(bytes))
}

fn config(
    resource: &Resource,
    account: &str,
    password: &Secret,
    timeout: std::time::Duration,
) -> Result<tokio_postgres::Config, RotationError> {
    let (host, port) = resource
        .address
        .rsplit_once(':')
        .ok_or_else(|| RotationError::Target(format!("bad address {}", resource.address)))?;
    let port = port
        .parse()
        .map_err(|_| RotationError::Target(format!("bad port in {}", resource.address)))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(port)
        .user(account)
        .password(password.expose())
        .dbname(resource.database.as_deref().unwrap_or("postgres"))
        .application_name("jitgate-rotation")
        .connect_timeout(timeout);
    Ok(config)
}

/// A rotation's own session. `close` waits until the server was told
/// goodbye, so a look at the role's sessions after it does not find it.
pub(super) struct Login {
    pub client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Login {
    pub async fn close(self) {
        drop(self.client);
        let _ = self.connection.await;
    }
}

pub(super) async fn connect(
    resource: &Resource,
    account: &str,
    password: &Secret,
    timeout: std::time::Duration,
) -> Result<Login, RotationError> {
    tokio::time::timeout(
        timeout,
        connect_within(resource, account, password, timeout),
    )
    .await
    .map_err(|_| {
        RotationError::Unreachable(format!(
            "{} did not answer in {timeout:?}",
            resource.address
        ))
    })?
}

/// Plain TCP or verified TLS, as the resource's `upstream_tls_ca` says.
async fn connect_within(
    resource: &Resource,
    account: &str,
    password: &Secret,
    timeout: std::time::Duration,
) -> Result<Login, RotationError> {
    let config = config(resource, account, password, timeout)?;
    let tls = crate::postgres::upstream::tls_for(resource).map_err(RotationError::Target)?;
    let tcp = tokio::net::TcpStream::connect(&resource.address)
        .await
        .map_err(|e| RotationError::Unreachable(e.to_string()))?;
    let (client, connection) = match tls {
        Some(tls) => {
            let mut config = config;
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config
                .connect_raw(tcp, super::pg_tls::RustlsConnect(tls))
                .await
                .map_err(classify)?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
        None => {
            let (client, connection) = config
                .connect_raw(tcp, tokio_postgres::NoTls)
                .await
                .map_err(classify)?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
    };
    Ok(Login { client, connection })
}

fn classify(error: tokio_postgres::Error) -> RotationError {
    match error.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            RotationError::Refused("the target refused the credential".into())
        }
        Some(code) => RotationError::Target(format!("{} ({})", error, code.code())),
        None => RotationError::Unreachable(error.to_string()),
    }
}

pub async fn works(
    resource: &Resource,
    password: &Secret,
    timeout: std::time::Duration,
) -> Result<bool, RotationError> {
    match connect(resource, &resource.account, password, timeout).await {
        Ok(login) => {
            let answered = login.client.simple_query("select 1").await;
            login.close().await;
            answered.map(|_| true).map_err(classify)
        }
        Err(RotationError::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn apply(
    resource: &Resource,
    current: &Secret,
    new: &Secret,
    timeout: std::time::Duration,
) -> Result<(), RotationError> {
    let login = connect(resource, &resource.account, current, timeout).await?;
    let set = set_password(&login.client, resource, &resource.account, new).await;
    login.close().await;
    set
}

/// Sets the managed account's password as the reconcile role, for when the
/// account's own credential is refused.
pub async fn reset(
    resource: &Resource,
    reconcile: &Reconcile,
    new: &Secret,
    timeout: std::time::Duration,
) -> Result<(), RotationError> {
    let password = read_secret_file(&reconcile.credential_file).map_err(|e| {
        RotationError::Credential(format!(
            "reconcile_credential_file of {}: {e}",
            resource.name
        ))
    })?;
    let login = connect(resource, &reconcile.account, &password, timeout)
        .await
        .map_err(|e| match e {
            RotationError::Refused(_) => RotationError::Refused(format!(
                "the target refused the reconcile account {}",
                reconcile.account
            )),
            other => other,
        })?;
    let set = set_password(&login.client, resource, &reconcile.account, new).await;
    login.close().await;
    set
}

/// `ALTER ROLE` with a SCRAM verifier computed here, run as `actor`.
async fn set_password(
    client: &tokio_postgres::Client,
    resource: &Resource,
    actor: &str,
    new: &Secret,
) -> Result<(), RotationError> {
    let verifier = postgres_protocol::password::scram_sha_256(new.expose().as_bytes());
    let statement = format!(
        "ALTER ROLE {} PASSWORD {}",
        escape_identifier(&resource.account),
        escape_literal(&verifier)
    );
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| match e.code() {
            Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
                RotationError::Target(format!(
                    "{actor} may not change the password of {}: {e}",
                    resource.account
                ))
            }
            _ => classify(e),
        })
}
