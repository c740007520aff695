//! `jitgate`: parse the command line, build, run, exit.
#![forbid(unsafe_code)]
// What a user can reach must not panic: a failure is an error they read.
// Unit tests may (clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use clap::Parser;
use jitgate::cli::{AuditCommand, Cli, TopCommand, TotpCommand, VaultCommand};
use jitgate::config::Config;
use jitgate::{demo, offline, serve};

/// EX_CONFIG-style status for configuration mistakes (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        TopCommand::Serve { config } => {
            let loaded = match Config::load(&config) {
                Ok(loaded) => loaded,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => return fail(1, e),
            };
            match runtime.block_on(serve::run(config, loaded, serve::Hangup::Reload, || {})) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, format!("{e:#}")),
            }
        }
        TopCommand::Demo { dir } => {
            match tokio::runtime::Runtime::new().map(|rt| rt.block_on(demo::run(dir))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(1, format!("{e:#}")),
                Err(e) => fail(1, e),
            }
        }
        TopCommand::CheckConfig { file } => report(offline::check_config(&file), EXIT_CONFIG),
        TopCommand::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    anchor,
                    recordings,
                },
        } => report(
            offline::audit_verify(&files, anchor.as_ref(), recordings),
            1,
        ),
        TopCommand::Totp {
            command:
                TotpCommand::Enroll {
                    user,
                    config,
                    force,
                },
        } => report(offline::totp_enroll(&config, &user, force), 1),
        TopCommand::Vault { command } => report(vault_command(command), 1),
    }
}

fn vault_command(command: VaultCommand) -> anyhow::Result<String> {
    match command {
        VaultCommand::Set {
            resource,
            password_file,
            key_file,
            config,
        } => offline::vault_set(&config, &resource, password_file, key_file),
        VaultCommand::List { config, json } => offline::vault_list(&config, json),
        VaultCommand::Rotate { resource, config } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(offline::vault_rotate(&config, &resource))
        }
    }
}

fn report<E: std::fmt::Display>(result: Result<String, E>, failure: u8) -> ExitCode {
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(failure, e),
    }
}

fn fail(code: u8, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("jitgate: {error}");
    ExitCode::from(code)
}

fn init_tracing() {
    let from_env = std::env::var("JITGATE_LOG").ok();
    let filter =
        tracing_subscriber::EnvFilter::try_new(jitgate::cli::log_directives(from_env.as_deref()))
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(jitgate::cli::log_directives(None))
            });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
