//! `jitgate demo --dir DIR`: a complete local world in one command.
//!
//! Real, throwaway targets (a PostgreSQL cluster exposed as `orders-prod`,
//! an OpenSSH server exposed as `web-01`), demo users with keys and TOTP
//! secrets under DIR, an ordinary `DIR/config.toml`, and the gateway in the
//! foreground. Ctrl-C (or SIGTERM) stops the gateway, then the targets.

mod files;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::serve::Hangup;
use crate::targets::{self, postgres::Postgres, sshd::Sshd};

/// The demo users and what they do.
pub const USERS: [(&str, &str); 5] = [
    ("alice", "engineer"),
    ("bob", "approver, level 1"),
    ("dave", "security approver, level 2"),
    ("carol", "auditor"),
    ("erin", "admin"),
];

/// The Unix account on the SSH target that the gateway logs in as.
const SSH_ACCOUNT: &str = "jgdemo";

/// Held while a demo runs: every demo manages the one account
/// `SSH_ACCOUNT`, whose key each rotates, so two at once would break each
/// other's SSH target.
const LOCK_FILE: &str = "/run/jitgate-demo.lock";

/// Everything the demo started; dropping it stops the targets.
pub struct Demo {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub ports: files::Ports,
    pub postgres: Postgres,
    pub sshd: Sshd,
    _running: std::fs::File,
}

/// Takes the machine's demo lock, or says which demo holds it.
fn only_demo_running() -> anyhow::Result<std::fs::File> {
    let path = Path::new(LOCK_FILE);
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        anyhow::bail!(
            "another jitgate demo is running on this machine (pid {}): both would manage the target account {SSH_ACCOUNT}; stop it first",
            holder.trim()
        );
    }
    use std::io::Write;
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

pub async fn run(dir: PathBuf) -> anyhow::Result<()> {
    let demo = tokio::task::spawn_blocking(move || prepare(&dir))
        .await
        .context("demo set-up panicked")??;
    let config = Config::load(&demo.config_path)?;
    let instructions = files::instructions(&demo);
    let result = crate::serve::run(demo.config_path.clone(), config, Hangup::Stop, move || {
        println!("{instructions}");
        println!("jitgate demo ready");
    })
    .await;
    drop(demo);
    result
}

/// Starts the targets and writes keys, secrets and the config under `dir`.
/// The targets are created afresh on every run, with fresh credentials in
/// `DIR/credentials`; a vault from an earlier run holds the old targets'
/// (rotated) credentials, so it is dropped and the new ones are imported.
fn forget_old_credentials(dir: &Path) -> anyhow::Result<()> {
    for file in ["vault.json", "vault.key", "vault.lock"] {
        match std::fs::remove_file(dir.join("state").join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// A throwaway CA and a certificate for the Postgres port signed by it, so
/// clients can use `sslmode=verify-full sslrootcert=DIR/tls/ca.crt`.
fn ensure_tls(dir: &Path) -> anyhow::Result<()> {
    let tls = dir.join("tls");
    if tls.join("server.crt").exists() && tls.join("server.key").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&tls)?;
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let (ca, server) = crate::postgres::tls::generate::ca_and_server(&names)?;
    crate::fsutil::write_atomic(&tls.join("ca.crt"), ca.cert.as_bytes(), 0o644)?;
    crate::postgres::tls::write_pair(&server, &tls.join("server.crt"), &tls.join("server.key"))?;
    Ok(())
}

pub fn prepare(dir: &Path) -> anyhow::Result<Demo> {
    let running = only_demo_running()?;
    targets::ensure_packages()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    files::ensure_user_files(&dir)?;
    let ports = files::Ports::pick();

    let ssh_credential = dir.join("credentials/web-01");
    targets::ensure_ssh_key(&ssh_credential, "jitgate-managed")?;
    let managed_public = std::fs::read_to_string(ssh_credential.with_extension("pub"))?;
    let sshd = Sshd::start(
        &dir.join("targets/sshd"),
        ports.target_ssh,
        SSH_ACCOUNT,
        &managed_public,
    )
    .context("cannot start the demo's SSH target")?;
    // root on that sshd (only) resets the managed key should a user swap
    // it from inside a window, and ends what windows leave running.
    let admin_key = dir.join("credentials/web-01-admin");
    targets::ensure_ssh_key(&admin_key, "jitgate-reconcile")?;
    sshd.allow_root_key(std::fs::read_to_string(admin_key.with_extension("pub"))?.trim())?;

    let postgres = Postgres::start(ports.target_postgres, &[])
        .context("cannot start the demo's PostgreSQL target")?;
    let password = hex::encode(rand::random::<[u8; 24]>());
    postgres.sql(
        "postgres",
        &format!("CREATE ROLE orders_app LOGIN PASSWORD '{password}'"),
    )?;
    postgres.sql("postgres", "CREATE DATABASE orders OWNER orders_app")?;
    postgres.sql(
        "orders",
        "CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL); \
         ALTER TABLE orders OWNER TO orders_app; \
         INSERT INTO orders (customer, total) SELECT 'customer ' || i, i * 1.5 FROM generate_series(1, 100) i",
    )?;
    crate::secret::write_secret_file(&dir.join("credentials/orders-prod"), &password)?;
    // The role that resets orders_app's password should a user change it
    // from inside a window.
    let admin_password = hex::encode(rand::random::<[u8; 24]>());
    postgres.sql(
        "postgres",
        &format!(
            "CREATE ROLE jitgate_admin LOGIN CREATEROLE PASSWORD '{admin_password}'; \
             GRANT orders_app TO jitgate_admin WITH ADMIN OPTION"
        ),
    )?;
    crate::secret::write_secret_file(&dir.join("credentials/orders-prod-admin"), &admin_password)?;

    ensure_tls(&dir)?;
    forget_old_credentials(&dir)?;
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, files::config_text(&dir, &ports, SSH_ACCOUNT))?;
    Config::load(&config_path).context("the generated demo config is invalid")?;
    Ok(Demo {
        dir,
        config_path,
        ports,
        postgres,
        sshd,
        _running: running,
    })
}
