//! A throwaway OpenSSH server (`/usr/sbin/sshd -D`) with its own config and
//! host key, allowing public-key logins of one managed account only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TargetError, ensure_ssh_key, is_root, run, wait_listening};

/// root's authorized keys for this server, in its directory.
const ROOT_KEYS: &str = "root_authorized_keys";

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub account: String,
    pub home: PathBuf,
    dir: PathBuf,
}

impl Sshd {
    /// Starts sshd on `port` for `account`, creating the account (locked
    /// password `*`, which sshd accepts for key logins) if it is missing,
    /// and installing `authorized_key` as its only key.
    pub fn start(
        dir: &Path,
        port: u16,
        account: &str,
        authorized_key: &str,
    ) -> Result<Self, TargetError> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        if !sshd.is_file() {
            return Err(TargetError::Missing {
                what: "sshd".into(),
                hint: "package openssh-server".into(),
            });
        }
        if !is_root() {
            return Err(TargetError::Failed {
                command: "sshd target".into(),
                detail: "needs root to create the managed account".into(),
            });
        }
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all("/run/sshd")?;
        let home = ensure_account(account)?;
        install_authorized_key(&home, account, authorized_key)?;
        let host_key = dir.join("ssh_host_ed25519_key");
        ensure_ssh_key(&host_key, "jitgate-target")?;
        let config = dir.join("sshd_config");
        std::fs::write(&config, sshd_config(port, &host_key, dir, account))?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut server = Self {
            child,
            port,
            account: account.to_string(),
            home,
            dir: dir.to_path_buf(),
        };
        if let Err(e) = wait_listening("sshd", port, Duration::from_secs(15), &dir.join("sshd.log"))
        {
            server.stop();
            return Err(e);
        }
        Ok(server)
    }

    /// Lets root log in to this server (only) with `public_key`: the
    /// administrative account a resource's reconcile login may use.
    pub fn allow_root_key(&self, public_key: &str) -> std::io::Result<()> {
        crate::secret::write_secret_file(&self.dir.join(ROOT_KEYS), public_key)
    }

    pub fn authorized_keys(&self) -> std::io::Result<String> {
        std::fs::read_to_string(self.home.join(".ssh/authorized_keys"))
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `AuthorizedKeysFile` spells out OpenSSH's built-in default, as a stock
/// target has it, so rotation is tried against keys planted in either file.
/// root may log in only with the keys of `allow_root_key` (none at first),
/// kept in this server's directory, never in root's own home.
fn sshd_config(port: u16, host_key: &Path, dir: &Path, account: &str) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
         PermitRootLogin prohibit-password\nAllowUsers {account} root\n\
         AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2\n\
         StrictModes no\nPrintMotd no\nAllowTcpForwarding yes\nX11Forwarding no\n\
         AcceptEnv LANG LC_* \nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n\
         Match User root\n    AuthorizedKeysFile {}\n",
        host_key.display(),
        dir.join("sshd.pid").display(),
        dir.join(ROOT_KEYS).display(),
    )
}

/// Creates `account` (home, bash, password field `*`) unless it exists.
fn ensure_account(account: &str) -> Result<PathBuf, TargetError> {
    let exists = Command::new("id")
        .arg("-u")
        .arg(account)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", account]))?;
    }
    // A locked password (`!`) makes sshd refuse the account; `*` does not.
    run(Command::new("usermod").args(["-p", "*", account]))?;
    let home = run(Command::new("getent").args(["passwd", account]))?;
    let line = String::from_utf8_lossy(&home.stdout).to_string();
    let home = line
        .split(':')
        .nth(5)
        .map(PathBuf::from)
        .ok_or_else(|| TargetError::Failed {
            command: "getent".into(),
            detail: line.clone(),
        })?;
    Ok(home)
}

fn install_authorized_key(home: &Path, account: &str, key: &str) -> Result<(), TargetError> {
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir)?;
    std::fs::write(ssh_dir.join("authorized_keys"), format!("{}\n", key.trim()))?;
    run(Command::new("chown")
        .args(["-R", &format!("{account}:{account}")])
        .arg(&ssh_dir))?;
    run(Command::new("chmod").args(["700"]).arg(&ssh_dir))?;
    Ok(())
}

/// Removes an account created for a test (and its home).
pub fn remove_account(account: &str) {
    let _ = Command::new("userdel")
        .args(["-r", "-f", account])
        .stderr(Stdio::null())
        .status();
}
