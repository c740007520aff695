//! A throwaway PostgreSQL cluster: initdb + pg_ctl from the system packages,
//! SCRAM authentication, listening on 127.0.0.1 only. PostgreSQL refuses to
//! run as root, so as root the cluster runs as the `postgres` user in a
//! directory that user owns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{TargetError, is_root, run, wait_listening};

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    pub superuser_password: String,
    run_as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The newest installed server's bin directory.
pub fn bin_dir() -> Result<PathBuf, TargetError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| TargetError::Missing {
            what: "PostgreSQL".into(),
            hint: "package postgresql".into(),
        })?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| TargetError::Missing {
            what: "PostgreSQL server".into(),
            hint: "package postgresql".into(),
        })
}

impl Postgres {
    /// Creates and starts a fresh cluster on `port`. `settings` are extra
    /// `-c name=value` server settings (e.g. `log_statement=all`).
    pub fn start(port: u16, settings: &[&str]) -> Result<Self, TargetError> {
        let bin = bin_dir()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("jitgate-pg-").tempdir()?;
        let data = dir.path().join("data");
        let password = hex::encode(rand::random::<[u8; 16]>());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if run_as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))?;
        }
        let cluster = Self {
            bin,
            data,
            port,
            superuser_password: password,
            run_as_postgres,
            _dir: dir,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data_str(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--pwfile",
                &pwfile.display().to_string(),
            ],
        )?;
        std::fs::remove_file(&pwfile)?;
        cluster.start_server(settings)?;
        Ok(cluster)
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .join("server.log")
    }

    /// Runs a PostgreSQL server program, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) -> Result<(), TargetError> {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir("/");
        run(&mut command)?;
        Ok(())
    }

    fn start_server(&self, settings: &[&str]) -> Result<(), TargetError> {
        let socket_dir = self
            .data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .display()
            .to_string();
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir}",
            self.port
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = self.log_path().display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data_str(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        wait_listening(
            "PostgreSQL",
            self.port,
            Duration::from_secs(30),
            &self.log_path(),
        )
    }

    /// Starts a stopped cluster again (tests take targets down and up).
    pub fn restart(&self, settings: &[&str]) -> Result<(), TargetError> {
        self.start_server(settings)
    }

    /// Runs SQL as the superuser through `psql` over TCP.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, TargetError> {
        let output = run(Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.superuser_password))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn stop(&self) {
        let _ = self.pg(
            "pg_ctl",
            &["-D", &self.data_str(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
