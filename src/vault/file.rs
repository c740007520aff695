//! The vault file: JSON metadata with sealed secrets.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::{CredentialKind, MasterKey, VaultError};
use crate::secret::Secret;

const FORMAT: u32 = 1;
const KEY_CHECK: &[u8] = b"jitgate vault key check";

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultFile {
    pub format: u32,
    /// A known text sealed under the master key: a wrong key fails here.
    pub key_check: Sealed,
    pub records: BTreeMap<String, Record>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub kind: CredentialKind,
    pub version: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub last_rotation: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub current: Sealed,
    pub pending: Option<Sealed>,
}

impl Record {
    pub fn new(kind: CredentialKind, version: u64, current: Sealed) -> Self {
        Self {
            kind,
            version,
            updated_at: chrono::Utc::now(),
            last_rotation: None,
            last_error: None,
            current,
            pending: None,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub version: u64,
    pub nonce: String,
    pub ciphertext: String,
}

fn cipher(key: &MasterKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key.0).into())
}

/// What a sealed secret is bound to.
fn aad(resource: &str, kind: CredentialKind, version: u64) -> Vec<u8> {
    format!("jitgate-vault/{FORMAT}/{resource}/{kind}/{version}").into_bytes()
}

impl Sealed {
    #[expect(
        clippy::expect_used,
        reason = "XChaCha20-Poly1305 refuses only messages past 256 GiB"
    )]
    fn seal_bytes(key: &MasterKey, aad: &[u8], plaintext: &[u8], version: u64) -> Self {
        let nonce: [u8; 24] = rand::random();
        let ciphertext = cipher(key)
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any secret of sane size");
        Self {
            version,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        }
    }

    pub fn seal(
        key: &MasterKey,
        resource: &str,
        kind: CredentialKind,
        version: u64,
        secret: &Secret,
    ) -> Self {
        Self::seal_bytes(
            key,
            &aad(resource, kind, version),
            secret.expose().as_bytes(),
            version,
        )
    }

    fn open_bytes(&self, key: &MasterKey, aad: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let nonce: [u8; 24] = B64.decode(&self.nonce).ok()?.try_into().ok()?;
        let ciphertext = B64.decode(&self.ciphertext).ok()?;
        cipher(key)
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .ok()
            .map(zeroize::Zeroizing::new)
    }

    fn open(&self, key: &MasterKey, resource: &str, kind: CredentialKind) -> Option<Secret> {
        let bytes = self.open_bytes(key, &aad(resource, kind, self.version))?;
        String::from_utf8(bytes.to_vec()).ok().map(Secret::new)
    }
}

impl VaultFile {
    pub fn new(key: &MasterKey) -> Self {
        Self {
            format: FORMAT,
            key_check: Sealed::seal_bytes(key, b"key-check", KEY_CHECK, 0),
            records: BTreeMap::new(),
        }
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, VaultError> {
        let file: Self = serde_json::from_slice(bytes).map_err(|e| VaultError::Corrupted {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(VaultError::Corrupted {
                path: path.to_path_buf(),
                problem: format!("unknown format {}", file.format),
            });
        }
        Ok(file)
    }

    /// Authenticates and decrypts every record; any failure is fatal.
    #[allow(clippy::type_complexity)]
    pub fn unseal_all(
        &self,
        path: &Path,
        key: &MasterKey,
    ) -> Result<BTreeMap<String, (Secret, Option<Secret>)>, VaultError> {
        let check = self.key_check.open_bytes(key, b"key-check");
        if check.as_deref().map(Vec::as_slice) != Some(KEY_CHECK) {
            return Err(VaultError::WrongKey {
                path: path.to_path_buf(),
            });
        }
        let tampered = |resource: &str| VaultError::Tampered {
            path: path.to_path_buf(),
            resource: resource.to_string(),
        };
        let mut secrets = BTreeMap::new();
        for (resource, record) in &self.records {
            if record.current.version != record.version {
                return Err(tampered(resource));
            }
            let current = record
                .current
                .open(key, resource, record.kind)
                .ok_or_else(|| tampered(resource))?;
            let pending = match &record.pending {
                Some(sealed) => Some(
                    sealed
                        .open(key, resource, record.kind)
                        .ok_or_else(|| tampered(resource))?,
                ),
                None => None,
            };
            secrets.insert(resource.clone(), (current, pending));
        }
        Ok(secrets)
    }

    pub fn write(&self, path: &Path) -> Result<(), VaultError> {
        let failed = |source: std::io::Error| VaultError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| failed(e.into()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        crate::fsutil::write_atomic(path, &text, 0o600).map_err(failed)
    }
}
