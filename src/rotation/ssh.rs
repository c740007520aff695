//! SSH rotation: a new ed25519 key replaces everything in the managed
//! account's `authorized_keys`, atomically, through the current key — or,
//! when the target refuses that key (someone swapped it from inside a
//! window), through the resource's reconcile account (root, or a user
//! allowed to `sudo -u` the managed account).
//!
//! OpenSSH also reads `~/.ssh/authorized_keys2` unless the target's
//! `AuthorizedKeysFile` says otherwise, so a key planted there from inside
//! a window would outlive it: the rotation reports and removes that file
//! too.

use russh::ChannelMsg;
use russh::client::Handle;
use russh::keys::ssh_key::{self, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::RotationError;
use crate::config::{Reconcile, Resource};
use crate::secret::{Secret, read_secret_file};
use crate::ssh::KnownHosts;
use crate::ssh::upstream::{self, UpstreamError, UpstreamHandler};

/// Replaces the file in one rename, so the account never has none.
const REPLACE: &str = "umask 077 && mkdir -p ~/.ssh && cat > ~/.ssh/.authorized_keys.jitgate && mv -f ~/.ssh/.authorized_keys.jitgate ~/.ssh/authorized_keys && rm -f ~/.ssh/authorized_keys2";
const LIST: &str = "cat ~/.ssh/authorized_keys ~/.ssh/authorized_keys2 2>/dev/null; exit 0";

#[expect(
    clippy::expect_used,
    reason = "an ed25519 key always encodes: the encoder fails only on key types it lacks"
)]
pub fn generate() -> Secret {
    let seed: [u8; 32] = rand::random();
    let keypair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::from(keypair);
    let text = key
        .to_openssh(LineEnding::LF)
        .expect("an ed25519 key encodes");
    Secret::new(text.to_string())
}

fn public_key(secret: &Secret) -> Result<PublicKey, RotationError> {
    let key = russh::keys::decode_secret_key(secret.expose(), None)
        .map_err(|e| RotationError::Credential(e.to_string()))?;
    Ok(key.public_key().clone())
}

/// Whether `secret` logs in: Ok(false) when the target refuses it.
pub async fn works(
    resource: &Resource,
    known: &KnownHosts,
    secret: &Secret,
) -> Result<bool, RotationError> {
    match AccountShell::managed(resource, known, secret).await {
        Ok(shell) => {
            shell.close().await;
            Ok(true)
        }
        Err(RotationError::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `apply` did besides installing the new key.
pub struct Applied {
    /// Fingerprints of keys that were there besides the gateway's current
    /// one (planted during a window); all were removed.
    pub planted: Vec<String>,
    /// The reconcile account, if it found the gateway's current key gone
    /// (swapped from inside a window) and put the gateway's back.
    pub reset_by: Option<String>,
}

/// Installs `new` as the only key. With a reconcile account, acts through
/// it, so nothing the managed account's own login runs (its shell's
/// startup files, which a window could rewrite) is involved; otherwise
/// through the managed account's login with `current`.
pub async fn apply(
    resource: &Resource,
    known: &KnownHosts,
    current: &Secret,
    new: &Secret,
) -> Result<Applied, RotationError> {
    let shell = AccountShell::open(resource, known, current).await?;
    let ours = public_key(current)?;
    let replaced = replace_keys(&shell, Some(&ours), new).await;
    shell.close().await;
    let (planted, ours_found) = replaced?;
    let reset_by = match &resource.reconcile {
        Some(reconcile) if !ours_found => Some(reconcile.account.clone()),
        _ => None,
    };
    Ok(Applied { planted, reset_by })
}

/// Installs `new` as the only key through the reconcile account, for when
/// neither of the gateway's keys is accepted; returns the fingerprints of
/// every key that was there (none of them is the gateway's any more).
pub async fn reset(
    resource: &Resource,
    known: &KnownHosts,
    reconcile: &Reconcile,
    new: &Secret,
) -> Result<Vec<String>, RotationError> {
    let shell = AccountShell::reconcile(resource, known, reconcile).await?;
    let replaced = replace_keys(&shell, None, new).await;
    shell.close().await;
    replaced.map(|(planted, _)| planted)
}

/// Replaces the account's keys with `new`'s; returns the fingerprints of
/// the keys that were there other than `ours`, and whether `ours` was.
async fn replace_keys(
    shell: &AccountShell,
    ours: Option<&PublicKey>,
    new: &Secret,
) -> Result<(Vec<String>, bool), RotationError> {
    let listing = shell
        .run(LIST, b"")
        .await?
        .success("listing authorized_keys")?;
    let keys = keys_in(&String::from_utf8_lossy(&listing));
    let is_ours = |key: &PublicKey| ours.is_some_and(|ours| key.key_data() == ours.key_data());
    let ours_found = keys.iter().any(is_ours);
    let planted = keys
        .iter()
        .filter(|key| !is_ours(key))
        .map(|key| key.fingerprint(HashAlg::Sha256).to_string())
        .collect();
    let line = public_key(new)?
        .to_openssh()
        .map_err(|e| RotationError::Credential(e.to_string()))?;
    shell
        .run(REPLACE, format!("{line}\n").as_bytes())
        .await?
        .success("replacing authorized_keys")?;
    Ok((planted, ours_found))
}

/// The keys of `authorized_keys` text, options (`from=`, `command=`, ...)
/// or not; lines sshd would not read either are skipped.
fn keys_in(text: &str) -> Vec<PublicKey> {
    ssh_key::AuthorizedKeys::new(text)
        .filter_map(Result::ok)
        .map(PublicKey::from)
        .collect()
}

/// A login on the target that runs commands as the managed account: its
/// own login, or the reconcile account's, each command handed to the
/// managed account with `runuser` (as root) or `sudo -n -u` (otherwise),
/// in a clean environment with its home as `HOME`.
pub struct AccountShell {
    handle: Handle<UpstreamHandler>,
    /// Set when logged in as the reconcile account: the managed account.
    switch_to: Option<String>,
}

impl AccountShell {
    /// Through the reconcile account when the resource has one (so nothing
    /// the managed account's own login runs is involved), else as the
    /// managed account with `secret`.
    pub async fn open(
        resource: &Resource,
        known: &KnownHosts,
        secret: &Secret,
    ) -> Result<Self, RotationError> {
        match &resource.reconcile {
            Some(reconcile) => Self::reconcile(resource, known, reconcile).await,
            None => Self::managed(resource, known, secret).await,
        }
    }

    pub async fn managed(
        resource: &Resource,
        known: &KnownHosts,
        secret: &Secret,
    ) -> Result<Self, RotationError> {
        let handle = upstream::connect(resource, known, Some(secret.clone()))
            .await
            .map_err(|e| match e {
                UpstreamError::Refused { .. } => RotationError::Refused(e.to_string()),
                other => RotationError::Unreachable(other.to_string()),
            })?;
        Ok(Self {
            handle,
            switch_to: None,
        })
    }

    pub async fn reconcile(
        resource: &Resource,
        known: &KnownHosts,
        reconcile: &Reconcile,
    ) -> Result<Self, RotationError> {
        let key = read_secret_file(&reconcile.credential_file).map_err(|e| {
            RotationError::Credential(format!(
                "reconcile_credential_file of {}: {e}",
                resource.name
            ))
        })?;
        let handle = upstream::connect_as(resource, &reconcile.account, known, Some(key))
            .await
            .map_err(|e| match e {
                UpstreamError::Refused { .. } => RotationError::Refused(format!(
                    "the target refused the reconcile account {}",
                    reconcile.account
                )),
                other => RotationError::Unreachable(other.to_string()),
            })?;
        Ok(Self {
            handle,
            switch_to: Some(resource.account.clone()),
        })
    }

    /// Runs `command` (a `sh` script) as the managed account with `input`
    /// on stdin.
    pub async fn run(&self, command: &str, input: &[u8]) -> Result<Output, RotationError> {
        let command = match &self.switch_to {
            None => command.to_string(),
            Some(account) => as_account(account, command),
        };
        exec(&self.handle, &command, input).await
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
    }
}

/// Wraps `command` to run as `account` from a privileged login.
fn as_account(account: &str, command: &str) -> String {
    let missing = shell_words::quote(&format!("no account {account} on the target")).into_owned();
    let account = shell_words::quote(account);
    let command = shell_words::quote(command);
    format!(
        "home=$(getent passwd {account} | cut -d: -f6) && [ -n \"$home\" ] || {{ echo {missing} >&2; exit 1; }}; \
         set -- env -i HOME=\"$home\" PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c {command}; \
         if [ \"$(id -u)\" -eq 0 ]; then exec runuser -u {account} -- \"$@\"; \
         else exec sudo -n -u {account} -- \"$@\"; fi"
    )
}

/// What a command run on the target left.
#[derive(Default)]
pub struct Output {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Its stdout if it exited 0; else an error saying what `doing` was
    /// and the first line of its stderr (where sudo and the shell explain).
    pub fn success(self, doing: &str) -> Result<Vec<u8>, RotationError> {
        if self.status == Some(0) {
            return Ok(self.stdout);
        }
        let stderr = String::from_utf8_lossy(&self.stderr);
        let reason = stderr.lines().next().unwrap_or_default().trim();
        let status = self
            .status
            .map_or("without an exit status".to_string(), |s| {
                format!("with {s}")
            });
        Err(RotationError::Target(format!(
            "{doing} exited {status}: {reason}"
        )))
    }
}

/// Runs `command` with `input` on stdin.
async fn exec(
    handle: &Handle<UpstreamHandler>,
    command: &str,
    input: &[u8],
) -> Result<Output, RotationError> {
    let failed = |e: russh::Error| RotationError::Unreachable(e.to_string());
    let mut channel = handle.channel_open_session().await.map_err(failed)?;
    channel.exec(true, command).await.map_err(failed)?;
    if !input.is_empty() {
        channel.data(input).await.map_err(failed)?;
    }
    channel.eof().await.map_err(failed)?;
    let mut output = Output::default();
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
            // Bounded: only the first line is ever shown.
            ChannelMsg::ExtendedData { data, .. } if output.stderr.len() < 4096 => {
                output.stderr.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_options_count_and_comments_do_not() {
        let (ours, planted) = (generate(), generate());
        let line = |secret: &Secret| public_key(secret).unwrap().to_openssh().unwrap();
        let text = format!(
            "# a comment\n{}\n\nno-pty,from=\"10.0.0.0/8\" {} planted\nnot a key\n",
            line(&ours),
            line(&planted)
        );
        let keys = keys_in(&text);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].key_data(), public_key(&planted).unwrap().key_data());
    }
}
