//! The credential vault: managed passwords and SSH keys, encrypted at rest.
//!
//! One JSON file (metadata readable, secrets sealed) under a 32-byte master
//! key with XChaCha20-Poly1305. Each sealed secret is bound, through the
//! AEAD's associated data, to its resource, kind and version, so records
//! cannot be swapped between resources or rolled back to older versions
//! unnoticed. A key check sealed under the master key tells a wrong key
//! apart from a tampered record. Every change rewrites the file atomically
//! (temp file, fsync, rename, fsync the directory) before it is reported.
//!
//! Rotation is two-phase: the new secret is stored as `pending` first and
//! promoted to `current` only once the target accepts it, so the working
//! credential is never lost, whatever happens in between.

mod file;
mod key;
mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use key::{MasterKey, generate_key_file, read_master_key};
pub use setup::{
    SYSTEMD_CREDENTIAL, check_reconcile_files, import_missing, kind_for, open_for,
    resolve_master_key,
};

use crate::secret::Secret;
use file::{Sealed, VaultFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Password,
    SshKey,
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Password => "password",
            Self::SshKey => "ssh_key",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read the vault {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the vault {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the vault {path} is corrupted: {problem}")]
    Corrupted { path: PathBuf, problem: String },
    #[error("the master key does not open the vault {path}: wrong key")]
    WrongKey { path: PathBuf },
    #[error("vault record {resource} in {path} fails authentication: tampered or swapped")]
    Tampered { path: PathBuf, resource: String },
    #[error("the vault has no credential for {0}")]
    Missing(String),
    #[error("{resource} holds a {actual} credential, not a {expected}")]
    WrongKind {
        resource: String,
        actual: CredentialKind,
        expected: CredentialKind,
    },
    #[error(
        "the vault {path} is in use by a running gateway: rotate through it (ssh ... rotate RESOURCE) or stop it first"
    )]
    Busy { path: PathBuf },
    #[error("master key: {0}")]
    Key(String),
    #[error("cannot import the credential of {resource}: {problem}")]
    Import { resource: String, problem: String },
    #[error("cannot read the reconcile_credential_file of {resource}: {problem}")]
    Reconcile { resource: String, problem: String },
}

/// What `vault list` shows: metadata only, never a secret.
#[derive(Clone, Debug, Serialize)]
pub struct RecordInfo {
    pub resource: String,
    pub kind: CredentialKind,
    pub version: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub last_rotation: Option<chrono::DateTime<chrono::Utc>>,
    pub pending_version: Option<u64>,
    pub last_error: Option<String>,
}

impl RecordInfo {
    pub fn state(&self) -> &'static str {
        match (self.pending_version, &self.last_error) {
            (Some(_), _) | (None, Some(_)) => "rotation pending",
            (None, None) => "current",
        }
    }
}

struct Open {
    file: VaultFile,
    /// Decrypted secrets, by resource: (current, pending).
    secrets: BTreeMap<String, (Secret, Option<Secret>)>,
}

pub struct Vault {
    /// Held for the vault's lifetime: one writer per vault.
    _lock: Option<std::fs::File>,
    path: PathBuf,
    key: MasterKey,
    state: Mutex<Open>,
}

impl Vault {
    /// Opens the vault at `path`, creating an empty one only if no file
    /// exists. A file that cannot be read, parsed or fully authenticated
    /// is an error: the gateway never runs on an empty vault in its place.
    pub fn open(path: &Path, key: MasterKey) -> Result<Self, VaultError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => VaultFile::parse(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = VaultFile::new(&key);
                file.write(path)?;
                file
            }
            Err(source) => {
                return Err(VaultError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let secrets = file.unseal_all(path, &key)?;
        Ok(Self {
            _lock: None,
            path: path.to_path_buf(),
            key,
            state: Mutex::new(Open { file, secrets }),
        })
    }

    /// Opens the vault for writing: takes its lock file first, so a
    /// second writer (an offline `vault set` while the gateway runs) is
    /// refused instead of racing it.
    pub fn open_exclusive(path: &Path, key: MasterKey) -> Result<Self, VaultError> {
        let lock_path = path.with_extension("lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| VaultError::Write {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(VaultError::Busy {
                path: path.to_path_buf(),
            });
        }
        let mut vault = Self::open(path, key)?;
        vault._lock = Some(lock);
        Ok(vault)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The working credential of `resource`.
    pub fn current(&self, resource: &str) -> Option<Secret> {
        self.state
            .lock()
            .secrets
            .get(resource)
            .map(|(current, _)| current.clone())
    }

    /// The credential being rotated in, if a rotation is under way.
    pub fn pending(&self, resource: &str) -> Option<Secret> {
        self.state
            .lock()
            .secrets
            .get(resource)
            .and_then(|(_, pending)| pending.clone())
    }

    pub fn kind(&self, resource: &str) -> Option<CredentialKind> {
        self.state.lock().file.records.get(resource).map(|r| r.kind)
    }

    pub fn contains(&self, resource: &str) -> bool {
        self.state.lock().file.records.contains_key(resource)
    }

    pub fn last_rotation(&self, resource: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state
            .lock()
            .file
            .records
            .get(resource)
            .and_then(|r| r.last_rotation)
    }

    /// When the current credential was last rotated (or first stored).
    pub fn rotated_or_set_at(&self, resource: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state
            .lock()
            .file
            .records
            .get(resource)
            .map(|r| r.last_rotation.unwrap_or(r.updated_at))
    }

    pub fn list(&self) -> Vec<RecordInfo> {
        self.state
            .lock()
            .file
            .records
            .iter()
            .map(|(resource, r)| RecordInfo {
                resource: resource.clone(),
                kind: r.kind,
                version: r.version,
                updated_at: r.updated_at,
                last_rotation: r.last_rotation,
                pending_version: r.pending.as_ref().map(|p| p.version),
                last_error: r.last_error.clone(),
            })
            .collect()
    }

    /// Stores `secret` as the current credential of `resource` (a new
    /// version), dropping any pending one.
    pub fn set(
        &self,
        resource: &str,
        kind: CredentialKind,
        secret: Secret,
    ) -> Result<u64, VaultError> {
        self.change(|open, key| {
            let version = open.file.records.get(resource).map_or(1, |r| {
                r.version.max(r.pending.as_ref().map_or(0, |p| p.version)) + 1
            });
            let sealed = Sealed::seal(key, resource, kind, version, &secret);
            open.file.records.insert(
                resource.to_string(),
                file::Record::new(kind, version, sealed),
            );
            open.secrets.insert(resource.to_string(), (secret, None));
            Ok(version)
        })
    }

    /// Phase one of a rotation: `secret` is stored as pending.
    pub fn begin_rotation(&self, resource: &str, secret: Secret) -> Result<u64, VaultError> {
        self.change(|open, key| {
            let record = open
                .file
                .records
                .get_mut(resource)
                .ok_or_else(|| VaultError::Missing(resource.to_string()))?;
            let version = record
                .version
                .max(record.pending.as_ref().map_or(0, |p| p.version))
                + 1;
            record.pending = Some(Sealed::seal(key, resource, record.kind, version, &secret));
            if let Some(entry) = open.secrets.get_mut(resource) {
                entry.1 = Some(secret);
            }
            Ok(version)
        })
    }

    /// Phase two: the target accepted the pending secret; it is current now.
    pub fn promote(&self, resource: &str) -> Result<(), VaultError> {
        self.change(|open, _| {
            let record = open
                .file
                .records
                .get_mut(resource)
                .ok_or_else(|| VaultError::Missing(resource.to_string()))?;
            let pending = record
                .pending
                .take()
                .ok_or_else(|| VaultError::Missing(format!("{resource} (pending)")))?;
            record.version = pending.version;
            record.current = pending;
            let now = chrono::Utc::now();
            record.updated_at = now;
            record.last_rotation = Some(now);
            record.last_error = None;
            if let Some(entry) = open.secrets.get_mut(resource)
                && let Some(new) = entry.1.take()
            {
                entry.0 = new;
            }
            Ok(())
        })
    }

    /// The pending secret never reached the target: forget it.
    pub fn abandon_pending(&self, resource: &str) -> Result<(), VaultError> {
        self.change(|open, _| {
            if let Some(record) = open.file.records.get_mut(resource) {
                record.pending = None;
            }
            if let Some(entry) = open.secrets.get_mut(resource) {
                entry.1 = None;
            }
            Ok(())
        })
    }

    /// Records why the last rotation attempt failed (`None` clears it).
    pub fn set_error(&self, resource: &str, error: Option<String>) -> Result<(), VaultError> {
        self.change(|open, _| {
            if let Some(record) = open.file.records.get_mut(resource) {
                record.last_error = error;
            }
            Ok(())
        })
    }

    /// Applies `edit` and makes it durable; if the write fails, memory is
    /// put back to what the disk still holds.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Open, &MasterKey) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut open = self.state.lock();
        let before = open.file.clone();
        let before_secrets = open.secrets.clone();
        let result = edit(&mut open, &self.key)?;
        if let Err(e) = open.file.write(&self.path) {
            // Not durable, not done: memory goes back to what disk holds.
            open.file = before;
            open.secrets = before_secrets;
            return Err(e);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests;
