//! The master key: 32 bytes from a 0600 file (64 hex digits, or raw), or
//! from a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::VaultError;

pub struct MasterKey(pub(super) Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

/// Reads the master key, refusing files other users can read.
pub fn read_master_key(path: &Path) -> Result<MasterKey, VaultError> {
    let problem = |p: String| VaultError::Key(format!("{}: {p}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(problem(format!(
            "readable by others (mode {mode:o}): chmod 600 it"
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| problem(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    let mut key = Zeroizing::new([0u8; 32]);
    if text.len() == 64 && hex::decode_to_slice(text, key.as_mut_slice()).is_ok() {
        return Ok(MasterKey(key));
    }
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(MasterKey(key));
    }
    Err(problem(format!(
        "must hold 32 bytes (64 hex digits); it holds {} bytes",
        bytes.len()
    )))
}

/// Writes a new random key (64 hex digits, mode 0600) to `path`.
pub fn generate_key_file(path: &Path) -> std::io::Result<()> {
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_slice())));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
}
