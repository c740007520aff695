//! The gateway's persistent SSH host key: generated on first start, 0600.

use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read the SSH host key {path}: {problem}")]
    Unreadable { path: String, problem: String },
    #[error("cannot create the SSH host key {path}: {problem}")]
    Uncreatable { path: String, problem: String },
}

/// Loads the host key at `path`, generating an ed25519 key there if the
/// file does not exist yet. Clients pin this key, so it must persist.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    if path.exists() {
        return load(path);
    }
    let uncreatable = |problem: String| HostKeyError::Uncreatable {
        path: path.display().to_string(),
        problem,
    };
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| uncreatable(e.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| uncreatable(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::ensure_private_dir(dir).map_err(|e| uncreatable(e.to_string()))?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(|e| uncreatable(e.to_string()))?;
    tracing::info!(path = %path.display(), "generated a new SSH host key");
    Ok(key)
}

/// Loads the host key at `path`, which must exist: a reload never
/// generates one (clients would find the gateway's key changed).
pub fn load(path: &Path) -> Result<PrivateKey, HostKeyError> {
    russh::keys::load_secret_key(path, None).map_err(|e| HostKeyError::Unreadable {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}
