//! Real, throwaway targets on loopback: a PostgreSQL cluster and an OpenSSH
//! server, started from the system packages. The demo serves them as its
//! protected resources and the integration tests drive them for real.
//!
//! Every process started here is stopped when its guard is dropped.

pub mod postgres;
pub mod sshd;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{what} is not installed ({hint}): run scripts/install-deps as root")]
    Missing { what: String, hint: String },
    #[error("{command} failed: {detail}")]
    Failed { command: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what} did not start listening on port {port} within {secs}s; see {log}")]
    NotListening {
        what: String,
        port: u16,
        secs: u64,
        log: String,
    },
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs `command`, turning a non-zero exit into an error with its stderr.
pub fn run(command: &mut Command) -> Result<Output, TargetError> {
    let described = format!("{command:?}");
    let output = command.output().map_err(|e| TargetError::Failed {
        command: described.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        let detail = format!(
            "{} {}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
        return Err(TargetError::Failed {
            command: described,
            detail,
        });
    }
    Ok(output)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_listening(
    what: &str,
    port: u16,
    within: Duration,
    log: &Path,
) -> Result<(), TargetError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(TargetError::NotListening {
        what: what.into(),
        port,
        secs: within.as_secs(),
        log: log.display().to_string(),
    })
}

/// A free loopback port, preferring `wanted` when it is free.
pub fn pick_port(wanted: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() {
        return wanted;
    }
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_or(wanted, |a| a.port())
}

/// Generates an ed25519 key pair at `path` (and `path.pub`) unless present.
pub fn ensure_ssh_key(path: &Path, comment: &str) -> Result<(), TargetError> {
    if path.exists() {
        return Ok(());
    }
    which("ssh-keygen", "openssh-client")?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))?;
    Ok(())
}

pub fn which(program: &str, package: &str) -> Result<PathBuf, TargetError> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| TargetError::Missing {
            what: program.into(),
            hint: format!("package {package}"),
        })
}

/// Installs the Debian packages the demo needs when any is missing (as
/// root, with apt-get): the targets', and oathtool, which the demo's
/// instructions use to type TOTP codes; otherwise says what to install.
pub fn ensure_packages() -> Result<(), TargetError> {
    let mut missing = Vec::new();
    if !Path::new("/usr/sbin/sshd").is_file() {
        missing.push("openssh-server");
    }
    if which("ssh", "openssh-client").is_err() || which("ssh-keygen", "openssh-client").is_err() {
        missing.push("openssh-client");
    }
    if which("psql", "postgresql-client").is_err() {
        missing.push("postgresql-client");
    }
    if postgres::bin_dir().is_err() {
        missing.push("postgresql");
    }
    if which("oathtool", "oathtool").is_err() {
        missing.push("oathtool");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || which("apt-get", "apt").is_err() {
        return Err(TargetError::Missing {
            what: missing.join(", "),
            hint: "Debian packages".into(),
        });
    }
    eprintln!("jitgate: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}
