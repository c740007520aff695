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

/// Lists the account's processes: the shell's own pid and its parent's
/// (the sshd process of this very login) first, so they can be left out;
/// `exec` makes `ps` itself that shell.
const LIST_PROCESSES: &str = "echo \"$$ $PPID\"; exec ps -o pid=,stat=,comm= -u \"$(id -u)\"";
/// Kills can race a process that forks: this many rounds, then give up.
const KILL_ROUNDS: usize = 3;

/// A process of the managed account on the target: its pid and name (never
/// its arguments, which may hold what a user typed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetProcess {
    pub pid: u32,
    pub name: String,
}

impl std::fmt::Display for TargetProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.pid)
    }
}

/// What `end_leftover_processes` found: killed, and still running after.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub ended: Vec<TargetProcess>,
    pub remaining: Vec<TargetProcess>,
}

/// Kills every process of the managed account but the login doing it:
/// with no window open, whatever still runs was left behind by one.
pub async fn end_leftover_processes(
    resource: &Resource,
    known: &crate::ssh::KnownHosts,
    secret: &Secret,
) -> Result<Leftovers, RotationError> {
    let handle = login(resource, known, secret)
        .await
        .map_err(|e| RotationError::Unreachable(e.to_string()))?;
    let mut leftovers = Leftovers::default();
    for _ in 0..KILL_ROUNDS {
        let found = list_processes(&handle).await?;
        if found.is_empty() {
            break;
        }
        let pids: Vec<String> = found.iter().map(|p| p.pid.to_string()).collect();
        // Some may have exited meanwhile: kill's status says nothing useful.
        let kill = format!("kill -KILL {} 2>/dev/null; exit 0", pids.join(" "));
        exec(&handle, &kill, b"").await?;
        for process in found {
            if !leftovers.ended.contains(&process) {
                leftovers.ended.push(process);
            }
        }
    }
    leftovers.remaining = list_processes(&handle).await?;
    leftovers
        .ended
        .retain(|process| !leftovers.remaining.contains(process));
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    Ok(leftovers)
}

async fn list_processes(
    handle: &Handle<UpstreamHandler>,
) -> Result<Vec<TargetProcess>, RotationError> {
    let (status, output) = exec(handle, LIST_PROCESSES, b"").await?;
    if status != Some(0) {
        return Err(RotationError::Target(format!(
            "listing the account's processes (ps) exited with {status:?}"
        )));
    }
    parse_processes(&String::from_utf8_lossy(&output))
}

/// Parses `LIST_PROCESSES` output, leaving out the listing login's own
/// processes and zombies (already dead, waiting to be reaped).
fn parse_processes(output: &str) -> Result<Vec<TargetProcess>, RotationError> {
    let malformed = |line: &str| RotationError::Target(format!("unexpected ps output: {line:?}"));
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let own: Vec<u32> = header
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| malformed(header))?;
    if own.len() != 2 {
        return Err(malformed(header));
    }
    let mut processes = Vec::new();
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let mut fields = line.trim_start().splitn(3, char::is_whitespace);
        let (Some(pid), Some(stat), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(line));
        };
        let pid: u32 = pid.parse().map_err(|_| malformed(line))?;
        if own.contains(&pid) || stat.starts_with('Z') {
            continue;
        }
        processes.push(TargetProcess {
            pid,
            name: name.trim().to_string(),
        });
    }
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_login_and_zombies_are_not_leftovers() {
        let output = "200 150\n  150 S    sshd\n  200 R    ps\n  300 S    sleep\n  \
                      310 Z    bash\n  320 Ss   tmux: server\n";
        let names: Vec<String> = parse_processes(output)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["sleep (300)", "tmux: server (320)"]);
        assert!(parse_processes("200 150\n").unwrap().is_empty());
    }

    #[test]
    fn unexpected_listings_are_errors_not_empty_lists() {
        for output in [
            "",
            "ps: not found\n",
            "200\n",
            "200 150\n  abc S sleep\n",
            "1 2\n 3 S\n",
        ] {
            assert!(
                parse_processes(output).is_err(),
                "{output:?} was taken for a listing"
            );
        }
    }
}
