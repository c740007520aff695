//! Finding the master key and opening the vault a config describes.

use std::path::PathBuf;

use super::{CredentialKind, MasterKey, Vault, VaultError, generate_key_file, read_master_key};
use crate::config::{Config, ResourceKind};
use crate::secret::read_secret_file;

/// The name of the master key as a systemd credential
/// (`LoadCredential=jitgate-vault-key:/etc/jitgate/vault.key`).
pub const SYSTEMD_CREDENTIAL: &str = "jitgate-vault-key";

/// The master key: `[vault] master_key_file` if set; else the systemd
/// credential if present; else `vault.key` beside the vault, created only
/// when neither it nor the vault exists yet (a first start).
pub fn resolve_master_key(config: &Config) -> Result<MasterKey, VaultError> {
    if let Some(path) = &config.vault_master_key_file {
        return read_master_key(path);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(SYSTEMD_CREDENTIAL);
        if path.exists() {
            return read_master_key(&path);
        }
    }
    let path = config.vault_path.with_file_name("vault.key");
    if !path.exists() {
        if config.vault_path.exists() {
            return Err(VaultError::Key(format!(
                "the vault {} exists but its master key {} does not: restore the key (a new one cannot open it)",
                config.vault_path.display(),
                path.display()
            )));
        }
        generate_key_file(&path)
            .map_err(|e| VaultError::Key(format!("{}: {e}", path.display())))?;
    }
    read_master_key(&path)
}

pub fn kind_for(kind: ResourceKind) -> CredentialKind {
    match kind {
        ResourceKind::Postgres => CredentialKind::Password,
        ResourceKind::Ssh => CredentialKind::SshKey,
    }
}

/// Opens the vault and imports the `credential_file` of every resource the
/// vault does not know yet. Returns the vault and the resources imported.
pub fn open_for(config: &Config) -> Result<(Vault, Vec<String>), VaultError> {
    let vault = Vault::open_exclusive(&config.vault_path, resolve_master_key(config)?)?;
    let imported = import_missing(&vault, config)?;
    Ok((vault, imported))
}

/// Reads every reconcile account's credential file once (and, for SSH,
/// decodes its key), so a missing or unusable one is refused at start or
/// reload, not found in the middle of a reset. (Resets read the file
/// again: it may change without a reload.)
pub fn check_reconcile_files(config: &Config) -> Result<(), VaultError> {
    for resource in config.resources.values() {
        let Some(reconcile) = &resource.reconcile else {
            continue;
        };
        let problem = |problem: String| VaultError::Reconcile {
            resource: resource.name.clone(),
            problem,
        };
        let secret =
            read_secret_file(&reconcile.credential_file).map_err(|e| problem(e.to_string()))?;
        if resource.kind == ResourceKind::Ssh {
            russh::keys::decode_secret_key(secret.expose(), None)
                .map_err(|e| problem(format!("not an unencrypted OpenSSH private key: {e}")))?;
        }
    }
    Ok(())
}

/// Imports the `credential_file` of every resource the vault lacks.
pub fn import_missing(vault: &Vault, config: &Config) -> Result<Vec<String>, VaultError> {
    let mut imported = Vec::new();
    for resource in config.resources.values() {
        let Some(file) = &resource.credential_file else {
            continue;
        };
        if vault.contains(&resource.name) {
            continue;
        }
        let secret = read_secret_file(file).map_err(|e| VaultError::Import {
            resource: resource.name.clone(),
            problem: e.to_string(),
        })?;
        vault.set(&resource.name, kind_for(resource.kind), secret)?;
        imported.push(resource.name.clone());
    }
    Ok(imported)
}
