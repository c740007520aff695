//! SSH rotation: a new ed25519 key replaces everything in the managed
//! account's `authorized_keys`, atomically, through the current key.
//!
//! OpenSSH also reads `~/.ssh/authorized_keys2` unless the target's
//! `AuthorizedKeysFile` says otherwise, so a key planted there from inside
//! a window would outlive it: the rotation reports and removes that file
//! too.

use russh::ChannelMsg;
use russh::client::Handle;
use russh::keys::ssh_key::{self, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::RotationError;
use crate::config::Resource;
use crate::secret::Secret;
use crate::ssh::upstream::{self, UpstreamError, UpstreamHandler};

/// Replaces the file in one rename, so the account never has none.
const REPLACE: &str = "umask 077 && mkdir -p ~/.ssh && cat > ~/.ssh/.authorized_keys.jitgate && mv -f ~/.ssh/.authorized_keys.jitgate ~/.ssh/authorized_keys && rm -f ~/.ssh/authorized_keys2";
const LIST: &str = "cat ~/.ssh/authorized_keys ~/.ssh/authorized_keys2 2>/dev/null; exit 0";

pub fn generate() -> Secret {
    let seed: [u8; 32] = rand::random();
    let keypair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::from(keypair);
    let text = key
        .to_openssh(LineEnding::LF)
        .expect("an ed25519 key encodes");
    Secret::new(text.to_string())
}

fn public_line(secret: &Secret) -> Result<String, RotationError> {
    let key = russh::keys::decode_secret_key(secret.expose(), None)
        .map_err(|e| RotationError::Credential(e.to_string()))?;
    key.public_key()
        .to_openssh()
        .map_err(|e| RotationError::Credential(e.to_string()))
}

async fn login(
    resource: &Resource,
    known: &crate::ssh::KnownHosts,
    secret: &Secret,
) -> Result<Handle<UpstreamHandler>, UpstreamError> {
    upstream::connect(resource, known, Some(secret.clone()))
        .await
        .map(|(handle, _)| handle)
}

/// Whether `secret` logs in: Ok(false) when the target refuses it.
pub async fn works(
    resource: &Resource,
    known: &crate::ssh::KnownHosts,
    secret: &Secret,
) -> Result<bool, RotationError> {
    match login(resource, known, secret).await {
        Ok(handle) => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "")
                .await;
            Ok(true)
        }
        Err(UpstreamError::Refused { .. }) => Ok(false),
        Err(e) => Err(RotationError::Unreachable(e.to_string())),
    }
}

/// Installs `new` as the only key; returns the fingerprints of keys that
/// were there besides the gateway's current one (planted during a window).
pub async fn apply(
    resource: &Resource,
    known: &crate::ssh::KnownHosts,
    current: &Secret,
    new: &Secret,
) -> Result<Vec<String>, RotationError> {
    let handle = login(resource, known, current).await.map_err(|e| match e {
        UpstreamError::Refused { .. } => RotationError::Refused(e.to_string()),
        other => RotationError::Unreachable(other.to_string()),
    })?;
    let (_, listing) = exec(&handle, LIST, b"").await?;
    let ours = public_line(current)?;
    let ours =
        PublicKey::from_openssh(&ours).map_err(|e| RotationError::Credential(e.to_string()))?;
    let planted = String::from_utf8_lossy(&listing)
        .lines()
        .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
        .filter(|key| key.key_data() != ours.key_data())
        .map(|key| key.fingerprint(HashAlg::Sha256).to_string())
        .collect();
    let line = format!("{}\n", public_line(new)?);
    let (status, _) = exec(&handle, REPLACE, line.as_bytes()).await?;
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    if status != Some(0) {
        return Err(RotationError::Target(format!(
            "replacing authorized_keys exited with {status:?}"
        )));
    }
    Ok(planted)
}

/// Runs `command` with `input` on stdin; returns (exit status, stdout).
async fn exec(
    handle: &Handle<UpstreamHandler>,
    command: &str,
    input: &[u8],
) -> Result<(Option<u32>, Vec<u8>), RotationError> {
    let failed = |e: russh::Error| RotationError::Unreachable(e.to_string());
    let mut channel = handle.channel_open_session().await.map_err(failed)?;
    channel.exec(true, command).await.map_err(failed)?;
    if !input.is_empty() {
        channel.data(input).await.map_err(failed)?;
    }
    channel.eof().await.map_err(failed)?;
    let (mut status, mut output) = (None, Vec::new());
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => output.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok((status, output))
}
