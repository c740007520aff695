//! The control plane: the commands users type after `ssh -p 2222 alice@GW`.
//!
//! Transport-neutral: commands talk to a [`Terminal`] (the SSH channel in
//! production), so the same code serves exec (`ssh GW request …`) and the
//! interactive prompt. Every refusal is one line on stderr and a non-zero
//! exit status; nothing here can panic on user input.

mod admin;
mod catalog;
mod commands;
mod complete;
mod format;
mod narrate;
mod parse;
mod replay;
mod request_list;
mod settings;
mod since;
mod stream;
mod tail_filter;
mod views;
mod watch;

use std::future::Future;
use std::sync::Arc;

use clap::Parser;
use serde_json::Value;

use crate::gateway::{Gateway, GatewayError};

pub use complete::candidates as completions;
pub use format::psql_conninfo;
pub use narrate::describe;
pub use parse::{ControlCommand, ControlLine};
pub(crate) use since::parse_since;
pub use views::{greeting, no_lease_yet};

/// Longest command line accepted; longer ones are refused unread.
pub const MAX_LINE: usize = 8192;
const MAX_ARGS: usize = 64;

pub const EXIT_OK: u32 = 0;
pub const EXIT_REFUSED: u32 = 1;
pub const EXIT_USAGE: u32 = 2;

/// Where a command reads input and writes output.
pub trait Terminal: Send {
    fn has_pty(&self) -> bool;
    fn out(&mut self, text: &str) -> impl Future<Output = ()> + Send;
    fn err(&mut self, text: &str) -> impl Future<Output = ()> + Send;
    /// One line of input; `None` on EOF, interrupt or disconnect.
    fn read_line(&mut self, echo: bool) -> impl Future<Output = Option<String>> + Send;
    /// Resolves when the user interrupts (Ctrl-C), sends EOF or disconnects.
    fn interrupted(&mut self) -> impl Future<Output = ()> + Send;
}

/// Who is calling, and how they reached the gateway.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: String,
    pub remote: String,
    /// The gateway host as the client addressed it, for printed commands.
    pub host: String,
}

/// What a finished command says, as text and as JSON.
pub struct Reply {
    pub text: String,
    pub json: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Refused(String),
}

impl ControlError {
    fn exit_status(&self) -> u32 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            _ => EXIT_REFUSED,
        }
    }
}

/// Runs one command line for `caller`; returns the exit status.
pub async fn run_line<T: Terminal>(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    term: &mut T,
    line: &[u8],
) -> u32 {
    let args = match split_line(line) {
        Ok(args) => args,
        Err(message) => return fail(term, false, &ControlError::Usage(message)).await,
    };
    let parsed = match ControlLine::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(e) => return not_run(term, &args, e).await,
    };
    let json = parsed.json;
    let result = match parsed.command {
        ControlCommand::Watch => return watch::watch(gateway, caller, term, json).await,
        ControlCommand::Follow { session } => {
            return stream::follow(gateway, caller, term, &session).await;
        }
        ControlCommand::Replay { session } => {
            return replay::replay(gateway, caller, term, &session, json).await;
        }
        ControlCommand::Audit {
            command:
                parse::AuditCommand::Tail {
                    lines,
                    follow,
                    after,
                    since,
                    user,
                    resource,
                    session,
                    types,
                },
        } => {
            let types = types.into_iter().collect();
            let filter = tail_filter::TailFilter::new(user, resource, session, types);
            let from = stream::TailFrom {
                lines,
                after,
                since,
                filter,
            };
            return stream::audit_tail(gateway, caller, term, json, from, follow).await;
        }
        command => commands::run(gateway, caller, term, command).await,
    };
    match result {
        Ok(reply) => {
            let text = if json {
                format!("{}\n", reply.json)
            } else {
                reply.text
            };
            term.out(&text).await;
            EXIT_OK
        }
        Err(error) => fail(term, json, &error).await,
    }
}

/// Answers a line clap did not turn into a command: help (exit 0) or a
/// usage error. With `--json` anywhere on the line both come as JSON,
/// `{"help": ...}` or `{"error": ...}`, so scripts never parse prose.
async fn not_run<T: Terminal>(term: &mut T, args: &[String], error: clap::Error) -> u32 {
    let json = args.iter().any(|a| a == "--json");
    // clap's `help` subcommand takes no flags, so `help --json` fails on
    // the flag itself: judge the line without it.
    let error = if json {
        let plain: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
        ControlLine::try_parse_from(plain).err().unwrap_or(error)
    } else {
        error
    };
    let text = error.render().to_string();
    let (key, status) = if error.use_stderr() {
        ("error", EXIT_USAGE)
    } else {
        ("help", EXIT_OK)
    };
    let shown = if json {
        format!("{}\n", serde_json::json!({ key: text.trim_end() }))
    } else {
        text
    };
    if status == EXIT_OK {
        term.out(&shown).await;
    } else {
        term.err(&shown).await;
    }
    status
}

async fn fail<T: Terminal>(term: &mut T, json: bool, error: &ControlError) -> u32 {
    let text = if json {
        format!("{}\n", serde_json::json!({ "error": error.to_string() }))
    } else {
        format!("jitgate: {error}\n")
    };
    term.err(&text).await;
    error.exit_status()
}

pub(crate) fn split_line(line: &[u8]) -> Result<Vec<String>, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "command too long ({} bytes, at most {MAX_LINE})",
            line.len()
        ));
    }
    let text =
        std::str::from_utf8(line).map_err(|_| "the command is not valid UTF-8".to_string())?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err("the command contains control characters".into());
    }
    let args = shell_words::split(text).map_err(|e| format!("cannot parse the command: {e}"))?;
    if args.len() > MAX_ARGS {
        return Err(format!(
            "too many arguments ({}, at most {MAX_ARGS})",
            args.len()
        ));
    }
    if args.is_empty() {
        return Err("no command given: try help".into());
    }
    Ok(args)
}

/// Runs a blocking gateway operation off the async workers.
async fn blocking<T: Send + 'static>(
    gateway: &Arc<Gateway>,
    work: impl FnOnce(&Gateway) -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, ControlError> {
    let gateway = gateway.clone();
    match tokio::task::spawn_blocking(move || work(&gateway)).await {
        Ok(result) => result.map_err(ControlError::from),
        Err(_) => Err(ControlError::Refused(
            "internal error: the command did not complete; nothing was changed".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_arguments() {
        let args = split_line(b"request web-01 --reason 'disk full on /var'").unwrap();
        assert_eq!(args, ["request", "web-01", "--reason", "disk full on /var"]);
    }

    #[test]
    fn refuses_bad_lines() {
        assert!(split_line(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(
            split_line(&vec![b'a'; MAX_LINE + 1])
                .unwrap_err()
                .contains("too long")
        );
        assert!(split_line(b"request 'unterminated").is_err());
        assert!(
            split_line(b"status\x1b[2J")
                .unwrap_err()
                .contains("control")
        );
        assert!(split_line(b"   ").is_err());
        let many = "x ".repeat(MAX_ARGS + 1);
        assert!(
            split_line(many.as_bytes())
                .unwrap_err()
                .contains("too many")
        );
    }

    #[test]
    fn grammar_accepts_the_documented_commands() {
        for line in [
            "request web-01 --for 30m --reason x --ticket OPS-1",
            "requests --all",
            "approve 7 --comment ok",
            "deny 7 --reason no",
            "cancel 7",
            "delegate --to bob --resource web-01 --until 8h",
            "delegate --revoke",
            "checkout 7 --totp 123456",
            "checkin 7",
            "extend 7 --for 15m",
            "extend 7 --for 15m --reason restore still running",
            "revoke 7",
            "status --json",
            "status --all",
            "sessions",
            "terminate s-0123456789ab --reason 'looks wrong'",
            "watch",
            "audit tail -n 5 -f",
            "audit tail --user alice --resource web-01 --session s-1 --json",
            "workflow show web-01",
            "workflow set web-01 max_duration=2h",
        ] {
            let args = split_line(line.as_bytes()).unwrap();
            assert!(ControlLine::try_parse_from(&args).is_ok(), "{line}");
        }
        for bad in [
            "approve seven",
            "delegate",
            "extend 7",
            "terminate",
            "frobnicate",
            "delegate --revoke --to bob",
        ] {
            let args = split_line(bad.as_bytes()).unwrap();
            assert!(ControlLine::try_parse_from(&args).is_err(), "{bad}");
        }
    }

    fn parse(line: &str) -> ControlCommand {
        let args = split_line(line.as_bytes()).unwrap();
        ControlLine::try_parse_from(&args).unwrap().command
    }

    #[test]
    fn free_text_takes_every_word_up_to_the_next_flag() {
        // What ssh sends for: request web-01 --reason 'disk full on /var' --for 30m
        let ControlCommand::Request {
            reason, duration, ..
        } = parse("request web-01 --reason disk full on /var --for 30m")
        else {
            panic!("not a request");
        };
        assert_eq!(
            parse::free_text(reason).as_deref(),
            Some("disk full on /var")
        );
        assert_eq!(duration.as_deref(), Some("30m"));
        let ControlCommand::Request { reason, .. } = parse("request web-01 --reason 'a  b' c")
        else {
            panic!("not a request");
        };
        assert_eq!(parse::free_text(reason).as_deref(), Some("a  b c"));
        let ControlCommand::Deny { reason, .. } = parse("deny 7") else {
            panic!("not a deny");
        };
        assert_eq!(parse::free_text(reason), None);
        let ControlCommand::Approve { comment, .. } = parse("approve 7 --comment looks fine")
        else {
            panic!("not an approve");
        };
        assert_eq!(parse::free_text(comment).as_deref(), Some("looks fine"));
        let ControlCommand::Terminate { reason, .. } =
            parse("terminate s-1 --reason looks wrong --json")
        else {
            panic!("not a terminate");
        };
        assert_eq!(parse::free_text(reason).as_deref(), Some("looks wrong"));
    }
}
