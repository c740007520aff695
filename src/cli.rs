//! The command line: `jitgate serve | check-config | audit verify | totp enroll | demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jitgate",
    version,
    about = "Just-in-time privileged-access gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Run the gateway daemon.
    Serve {
        /// The gateway's config file (TOML; see config/jitgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Bring up a complete local world: targets, users, gateway.
    Demo {
        /// Where keys, TOTP secrets, config and state go.
        #[arg(long, value_name = "DIR", default_value = "demo")]
        dir: PathBuf,
    },
    /// Validate a config file and exit (64 on any error).
    CheckConfig {
        /// The config file to check (TOML; see config/jitgate.example.toml).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// TOTP enrollment.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
    /// The encrypted credential vault.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Store a resource's managed credential (the gateway must be stopped).
    Set {
        /// The resource's name, as in the config.
        #[arg(value_name = "RESOURCE")]
        resource: String,
        /// A file holding the Postgres password (one line, mode 0600).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        password_file: Option<PathBuf>,
        /// A file holding the SSH private key (OpenSSH format, mode 0600).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The gateway's config file (TOML; see config/jitgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Resources, kinds, versions, last rotation and state; never a secret.
    List {
        /// The gateway's config file (TOML; see config/jitgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rotate a resource's credential now (the gateway must be stopped;
    /// while it runs, use `ssh ... rotate RESOURCE`).
    Rotate {
        /// The resource's name, as in the config.
        #[arg(value_name = "RESOURCE")]
        resource: String,
        /// The gateway's config file (TOML; see config/jitgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain. One FILE also checks its rotated files
    /// (FILE.1, FILE.2, ...); several FILEs are checked in the order given.
    ///
    /// A chain cannot show on its own that its newest records were cut off:
    /// record the head it prints (SEQ:HASH) somewhere else, and pass it back
    /// with --anchor to prove the log still reaches it unchanged.
    Verify {
        /// The audit log (its rotated files are found beside it), or
        /// several files in order.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// A head recorded earlier (SEQ:HASH) that the log must still hold.
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<crate::audit::Anchor>,
        /// Also check every session recording and query log the chain
        /// vouches for against the digest recorded when its session ended.
        #[arg(long)]
        recordings: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Generate a TOTP secret for USER, write it to the user's
    /// `totp_secret_file`, and print the otpauth:// URI and a QR code.
    Enroll {
        /// The user's name, as in the config.
        #[arg(value_name = "USER")]
        user: String,
        /// The gateway's config file (TOML; see config/jitgate.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Replace an existing secret.
        #[arg(long)]
        force: bool,
    },
}

/// Libraries that warn about what an unauthenticated peer sent them
/// (rustls, of a broken TLS handshake). The gateway logs failed handshakes
/// at debug itself, so that anyone who can connect cannot fill its log
/// with warnings; a `JITGATE_LOG` that names the library has its own say.
const PEER_NOISE: &[(&str, &str)] = &[("rustls", "error")];

/// The log filter: `JITGATE_LOG`'s directives (default `info`), with the
/// libraries above quieted unless they are named.
pub fn log_directives(from_env: Option<&str>) -> String {
    let mut directives = from_env
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .unwrap_or("info")
        .to_string();
    for (target, level) in PEER_NOISE {
        if !directives.contains(target) {
            directives.push_str(&format!(",{target}={level}"));
        }
    }
    directives
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, log_directives};
    use crate::control::ControlLine;

    /// "command --arg" for every argument of `command` and its
    /// subcommands that `--help` would list without a word about it.
    fn undocumented(command: &clap::Command, path: &str) -> Vec<String> {
        let path = format!("{path} {}", command.get_name());
        let mut missing: Vec<String> = command
            .get_arguments()
            .filter(|arg| arg.get_help().is_none() && arg.get_long_help().is_none())
            .map(|arg| format!("{path} {}", arg.get_id()))
            .collect();
        for sub in command.get_subcommands() {
            missing.extend(undocumented(sub, &path));
        }
        missing
    }

    #[test]
    fn every_argument_of_every_command_says_what_it_is() {
        let missing = undocumented(&Cli::command(), "");
        assert!(missing.is_empty(), "no help text: {missing:?}");
        let missing = undocumented(&ControlLine::command(), "");
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn peer_noise_is_quieted_unless_the_log_setting_names_it() {
        assert_eq!(log_directives(None), "info,rustls=error");
        assert_eq!(log_directives(Some(" ")), "info,rustls=error");
        assert_eq!(log_directives(Some("debug")), "debug,rustls=error");
        assert_eq!(
            log_directives(Some("info,rustls=debug")),
            "info,rustls=debug"
        );
    }
}
