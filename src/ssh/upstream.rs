//! The gateway's own SSH client to a target: verifies the target's host key
//! (pinned in the config, or recorded on first contact) and logs in as the
//! managed account with the managed key. The user never sees that key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use crate::config::Resource;
use crate::secret::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {resource} at {address}: {problem}")]
    Unreachable {
        resource: String,
        address: String,
        problem: String,
    },
    #[error(
        "the host key of {resource} does not match ({presented}, expected {expected}): refusing to connect"
    )]
    HostKeyMismatch {
        resource: String,
        presented: String,
        expected: String,
    },
    #[error("the vault has no credential for {resource}")]
    NoCredential { resource: String },
    #[error("the managed credential of {resource} is unusable: {problem}")]
    BadCredential { resource: String, problem: String },
    #[error("{resource} refused the gateway's managed credential")]
    Refused { resource: String },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the recorded target host keys in {path}: {problem} (restore it from a backup, or pin each target's host_key in the config)"
)]
pub struct KnownHostsError {
    path: PathBuf,
    problem: String,
}

/// Told of each key recorded on first contact: (resource, fingerprint).
type OnRecord = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Host keys recorded on first contact, persisted in the state directory.
pub struct KnownHosts {
    path: PathBuf,
    keys: Mutex<BTreeMap<String, String>>,
    on_record: std::sync::OnceLock<OnRecord>,
}

impl KnownHosts {
    /// Loads the recorded keys. A file that is there but unreadable or
    /// damaged is an error, not an empty record: that would trust whatever
    /// key each target presents next.
    pub fn load(state_dir: &Path) -> Result<Self, KnownHostsError> {
        let path = state_dir.join("target_host_keys.json");
        let keys = crate::fsutil::read_json_state(&path).map_err(|problem| KnownHostsError {
            path: path.clone(),
            problem,
        })?;
        Ok(Self {
            path,
            keys: Mutex::new(keys),
            on_record: std::sync::OnceLock::new(),
        })
    }

    /// Sets what hears of each first-contact recording (the audit log), for
    /// whichever connection makes it: a session, a rotation, a check.
    pub fn on_record(&self, hook: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.on_record.set(Box::new(hook));
    }

    fn get(&self, resource: &str) -> Option<String> {
        self.keys.lock().get(resource).cloned()
    }

    fn record(&self, resource: &str, key: &str) -> std::io::Result<()> {
        let mut keys = self.keys.lock();
        keys.insert(resource.to_string(), key.to_string());
        let bytes = serde_json::to_vec_pretty(&*keys).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
    }
}

/// What the host key check saw, for the caller to persist or report.
#[derive(Default)]
struct Seen {
    presented: Option<String>,
}

pub struct UpstreamHandler {
    expected: Option<String>,
    seen: Arc<Mutex<Seen>>,
}

fn openssh_line(key: &PublicKey) -> String {
    key.to_openssh()
        .map(|t| t.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn fingerprint(line: &str) -> String {
    line.split_whitespace()
        .nth(1)
        .and_then(|b| russh::keys::parse_public_key_base64(b).ok())
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl client::Handler for UpstreamHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            return Ok(false);
        };
        let presented = openssh_line(key);
        let accepted = self
            .expected
            .as_ref()
            .is_none_or(|expected| *expected == presented);
        self.seen.lock().presented = Some(presented);
        Ok(accepted)
    }
}

/// Connects and authenticates to `resource` as its managed account.
pub async fn connect(
    resource: &Resource,
    known: &KnownHosts,
    credential: Option<Secret>,
) -> Result<Handle<UpstreamHandler>, UpstreamError> {
    connect_as(resource, &resource.account, known, credential).await
}

/// `connect`, logging in as `account` instead of the managed account (the
/// resource's reconcile account, for a rotation).
pub async fn connect_as(
    resource: &Resource,
    account: &str,
    known: &KnownHosts,
    credential: Option<Secret>,
) -> Result<Handle<UpstreamHandler>, UpstreamError> {
    let name = resource.name.clone();
    let key = managed_key(resource, credential)?;
    let pinned = resource.host_key.clone().or_else(|| known.get(&name));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = UpstreamHandler {
        expected: pinned.clone(),
        seen: seen.clone(),
    };
    let unreachable = |problem: String| UpstreamError::Unreachable {
        resource: name.clone(),
        address: resource.address.clone(),
        problem,
    };
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&resource.address),
    )
    .await
    .map_err(|_| unreachable("connection timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client::connect_stream(Arc::new(client_config()), stream, handler),
    )
    .await;
    let mut handle = match handshake {
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            let presented = seen.lock().presented.clone();
            return Err(match (presented, pinned) {
                (Some(presented), Some(expected)) if presented != expected => {
                    UpstreamError::HostKeyMismatch {
                        resource: name,
                        presented: fingerprint(&presented),
                        expected: fingerprint(&expected),
                    }
                }
                _ => unreachable(e.to_string()),
            });
        }
        Err(_) => return Err(unreachable("SSH handshake timed out".into())),
    };
    let presented = seen.lock().presented.clone();
    if let (None, Some(presented)) = (&resource.host_key, presented) {
        record_first_contact(known, &name, &presented);
    }
    let auth = handle
        .authenticate_publickey(
            account.to_string(),
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !auth.success() {
        return Err(UpstreamError::Refused { resource: name });
    }
    Ok(handle)
}

/// The managed account's private key, from the vault's credential.
fn managed_key(
    resource: &Resource,
    credential: Option<Secret>,
) -> Result<russh::keys::PrivateKey, UpstreamError> {
    let credential = credential.ok_or_else(|| UpstreamError::NoCredential {
        resource: resource.name.clone(),
    })?;
    russh::keys::decode_secret_key(credential.expose(), None).map_err(|e| {
        UpstreamError::BadCredential {
            resource: resource.name.clone(),
            problem: e.to_string(),
        }
    })
}

/// Trust on first contact: a target without a pinned or recorded host key
/// has the one it presented recorded (and audited, by the hook).
fn record_first_contact(known: &KnownHosts, resource: &str, presented: &str) {
    if known.get(resource).is_some() {
        return;
    }
    if let Err(e) = known.record(resource, presented) {
        tracing::warn!(error = %e, resource, "cannot record the target host key");
    }
    if let Some(hook) = known.on_record.get() {
        hook(resource, &fingerprint(presented));
    }
}

/// How the gateway's client talks to targets.
fn client_config() -> client::Config {
    client::Config {
        // Large windows keep bulk transfers from stalling on window updates.
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 32768,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(super::CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    }
}
