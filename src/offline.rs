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
    // The gateway refuses to start without them; say so now.
    crate::vault::check_reconcile_files(&config).map_err(|e| match e {
        crate::vault::VaultError::Reconcile { resource, problem } => {
            crate::config::ConfigError::Invalid {
                path: file.to_path_buf(),
                key: format!("resource {resource:?} reconcile_credential_file"),
                problem,
            }
        }
        other => crate::config::ConfigError::Invalid {
            path: file.to_path_buf(),
            key: "reconcile_credential_file".into(),
            problem: other.to_string(),
        },
    })?;
    crate::notify::prepare(&config.webhooks).map_err(|e| crate::config::ConfigError::Invalid {
        path: file.to_path_buf(),
        key: "webhook".into(),
        problem: e.to_string(),
    })?;
    if let Some(tls) = &config.tls {
        crate::postgres::tls::acceptor_for(&config, &tls.cert, &tls.key).map_err(|e| {
            crate::config::ConfigError::Invalid {
                path: file.to_path_buf(),
                key: "tls".into(),
                problem: e.to_string(),
            }
        })?;
    }
    // Generated at the first start when missing; one that is there must load.
    if config.ssh_host_key.exists() {
        crate::ssh::read_host_key(&config.ssh_host_key).map_err(|e| {
            crate::config::ConfigError::Invalid {
                path: file.to_path_buf(),
                key: "ssh.host_key".into(),
                problem: e.to_string(),
            }
        })?;
    }
    Ok(format!(
        "{}: OK ({} users, {} resources)",
        file.display(),
        config.directory.users.len(),
        config.resources.len()
    ))
}

/// Verifies the chain; with `recordings`, also the recordings and query
/// logs it vouches for.
pub fn audit_verify(
    files: &[PathBuf],
    anchor: Option<&audit::Anchor>,
    recordings: bool,
) -> anyhow::Result<String> {
    let chain = match files {
        [one] => {
            audit::chain_files(one).with_context(|| format!("cannot list {}", one.display()))?
        }
        many => many.to_vec(),
    };
    if chain.is_empty() {
        bail!("{}: no such audit log", files[0].display());
    }
    let report = match anchor {
        Some(anchor) => audit::verify_against(&chain, anchor),
        None => audit::verify_files(&chain),
    }
    .map_err(|e| anyhow::anyhow!("FAILED: {e}"))?;
    let held = anchor
        .map(|a| format!(", holds anchor {}", a.seq))
        .unwrap_or_default();
    let mut out = format!(
        "OK: {} records in {} file(s), chain intact up to seq {}{held}\nhead {}:{}",
        report.records, report.files, report.last_seq, report.last_seq, report.last_hash
    );
    if recordings {
        let evidence = audit::check_evidence(&chain).context("cannot read the audit log")?;
        out.push('\n');
        out.push_str(&describe_evidence(&evidence)?);
    }
    Ok(out)
}

/// The recordings' part of `audit verify`: an error naming each altered
/// file, else a count (and the files deleted since, which a retention
/// policy may explain).
fn describe_evidence(evidence: &audit::EvidenceReport) -> anyhow::Result<String> {
    let line = |seq: &u64, path: &Path| format!("\n  seq {seq}: {}", path.display());
    if !evidence.altered.is_empty() {
        let altered: String = evidence
            .altered
            .iter()
            .map(|(seq, path, problem)| format!("{}: {problem}", line(seq, path)))
            .collect();
        bail!(
            "FAILED: {} recording(s) or log(s) changed since their session ended:{altered}",
            evidence.altered.len()
        );
    }
    let mut out = format!(
        "OK: {} recording(s) and log(s) as their sessions left them",
        evidence.intact
    );
    if !evidence.missing.is_empty() {
        out.push_str(&format!("; {} no longer there:", evidence.missing.len()));
        for (seq, path) in &evidence.missing {
            out.push_str(&line(seq, path));
        }
    }
    Ok(out)
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

fn load(config_path: &Path) -> anyhow::Result<crate::config::Config> {
    Ok(crate::config::Config::load(config_path)?)
}

/// `jitgate vault set RESOURCE --password-file F | --key-file F`.
pub fn vault_set(
    config_path: &Path,
    resource: &str,
    password_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
) -> anyhow::Result<String> {
    use crate::vault::CredentialKind;
    let config = load(config_path)?;
    let target = config
        .resource(resource)
        .ok_or_else(|| anyhow::anyhow!("no resource {resource:?} in {}", config_path.display()))?;
    let (kind, file) = match (password_file, key_file) {
        (Some(file), None) => (CredentialKind::Password, file),
        (None, Some(file)) => (CredentialKind::SshKey, file),
        _ => anyhow::bail!("give exactly one of --password-file and --key-file"),
    };
    let expected = crate::vault::kind_for(target.kind);
    if kind != expected {
        anyhow::bail!(
            "{resource} is a {:?} resource: it needs a {expected}",
            target.kind
        );
    }
    let secret = crate::secret::read_secret_file(&file)?;
    if kind == CredentialKind::SshKey {
        russh::keys::decode_secret_key(secret.expose(), None).map_err(|e| {
            anyhow::anyhow!(
                "{} is not an unencrypted OpenSSH private key: {e}",
                file.display()
            )
        })?;
    }
    let (vault, _) = crate::vault::open_for(&config)?;
    let version = vault.set(resource, kind, secret)?;
    Ok(format!(
        "stored the {kind} of {resource} (version {version})"
    ))
}

/// `jitgate vault list`: metadata only.
pub fn vault_list(config_path: &Path, json: bool) -> anyhow::Result<String> {
    let config = load(config_path)?;
    if !config.vault_path.exists() {
        return Ok(format!("no vault yet at {}", config.vault_path.display()));
    }
    let vault = crate::vault::Vault::open(
        &config.vault_path,
        crate::vault::resolve_master_key(&config)?,
    )?;
    let records = vault.list();
    let marks = crate::gateway::RotationMarks::load(&config.state_dir)?;
    if json {
        let rows: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let mut value = serde_json::to_value(r).unwrap_or_default();
                value["state"] = r.state().into();
                value["rotate_again"] = marks.reasons(&r.resource).into();
                value
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    let mut text =
        String::from("RESOURCE         KIND      VERSION  LAST ROTATION         STATE\n");
    for r in &records {
        let rotated = r
            .last_rotation
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "never".into());
        let mut error = r
            .last_error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        for reason in marks.reasons(&r.resource) {
            error.push_str(&format!("; rotates again: {reason}"));
        }
        text.push_str(&format!(
            "{:<16} {:<9} {:<8} {:<21} {}{error}\n",
            r.resource,
            r.kind.to_string(),
            r.version,
            rotated,
            r.state()
        ));
    }
    Ok(text.trim_end().to_string())
}

/// `jitgate vault rotate RESOURCE` with the gateway stopped.
pub async fn vault_rotate(config_path: &Path, resource: &str) -> anyhow::Result<String> {
    let config = load(config_path)?;
    let (gateway, _expired) = crate::gateway::Gateway::open(config)?;
    let rotator = crate::rotation::Rotator::new(gateway);
    let version = rotator.rotate(resource, "jitgate vault rotate").await?;
    Ok(format!(
        "rotated the credential of {resource} (now version {version})"
    ))
}
