//! Commands that work on files without a running gateway:
//! `check-config`, `audit verify`, `totp enroll`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use qrcode::QrCode;
use qrcode::render::unicode;

use crate::audit;
use crate::config::Config;
use crate::mfa;
use crate::secret::write_secret_file;

pub fn check_config(file: &Path) -> Result<String, crate::config::ConfigError> {
    let config = Config::load(file)?;
    Ok(format!(
        "{}: OK ({} users, {} resources)",
        file.display(),
        config.directory.users.len(),
        config.resources.len()
    ))
}

pub fn audit_verify(files: &[PathBuf]) -> anyhow::Result<String> {
    let chain = match files {
        [one] => {
            audit::chain_files(one).with_context(|| format!("cannot list {}", one.display()))?
        }
        many => many.to_vec(),
    };
    if chain.is_empty() {
        bail!("{}: no such audit log", files[0].display());
    }
    let report = audit::verify_files(&chain).map_err(|e| anyhow::anyhow!("FAILED: {e}"))?;
    Ok(format!(
        "OK: {} records in {} file(s), chain intact up to seq {}",
        report.records, report.files, report.last_seq
    ))
}

pub fn totp_enroll(config_path: &Path, user: &str, force: bool) -> anyhow::Result<String> {
    let config = Config::load(config_path)?;
    let entry = config
        .directory
        .user(user)
        .with_context(|| format!("unknown user {user:?} in {}", config_path.display()))?;
    let path = entry.totp_secret_file.as_ref().with_context(|| {
        format!(
            "user {user:?} has no totp_secret_file in {}",
            config_path.display()
        )
    })?;
    if path.exists() && !force {
        bail!(
            "{} already exists: pass --force to replace {user}'s TOTP secret",
            path.display()
        );
    }
    if let Some(dir) = path.parent() {
        crate::fsutil::ensure_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret = mfa::generate_secret();
    let uri = mfa::provisioning_uri(&secret, &config.mfa.issuer, user)
        .context("cannot build the otpauth URI")?;
    let qr = QrCode::new(uri.as_bytes()).context("cannot draw the QR code")?;
    let drawing = qr.render::<unicode::Dense1x2>().quiet_zone(true).build();
    write_secret_file(path, secret.expose())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(format!(
        "TOTP secret for {user} written to {}\nScan this with an authenticator app, or enter the URI:\n{uri}\n\n{drawing}\n",
        path.display()
    ))
}
