//! One session channel: a control command (exec), the interactive prompt
//! (shell), or a resource login that the data plane refuses.

use std::sync::Arc;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, Protocol};
use crate::config::ResourceKind;
use crate::control::{
    Caller, EXIT_OK, EXIT_REFUSED, Terminal, greeting, no_lease_yet, psql_conninfo, run_line,
};
use crate::gateway::{AUDIT_UNAVAILABLE, Gateway};

use super::console::{Console, Input};

/// Waits for the client's exec or shell request, then serves it. `gone`
/// is cancelled when the client's connection ends.
pub async fn serve_control(
    mut channel: Channel<Msg>,
    gateway: Arc<Gateway>,
    caller: Caller,
    gone: CancellationToken,
) {
    let mut pty = false;
    loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty { .. }) => pty = true,
            Some(ChannelMsg::Exec { command, .. }) => {
                let mut console = Console::new(channel, pty, gone);
                let status = run_line(&gateway, &caller, &mut console, &command).await;
                console.finish(status).await;
                return;
            }
            Some(ChannelMsg::RequestShell { .. }) => {
                let mut console = Console::new(channel, pty, gone);
                prompt(&gateway, &caller, &mut console).await;
                console.finish(EXIT_OK).await;
                return;
            }
            Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) | None => return,
            Some(_) => {}
        }
    }
}

const PROMPT: &str = "jitgate> ";

/// The interactive prompt of `ssh -p 2222 alice@GW`.
async fn prompt(gateway: &Arc<Gateway>, caller: &Caller, console: &mut Console) {
    console
        .out(&format!(
            "jitgate: signed in as {}. Type help for commands, exit to leave.\n{}",
            caller.user,
            greeting(gateway, &caller.user)
        ))
        .await;
    loop {
        console.out(PROMPT).await;
        let resources: Vec<String> = gateway.config().resources.keys().cloned().collect();
        let line = match console.read_command(PROMPT, &resources).await {
            Input::Line(line) => line,
            // As in a shell: the line typed so far is dropped, the prompt
            // comes again.
            Input::Interrupted => {
                if console.has_pty() {
                    console.out("^C").await;
                }
                String::new()
            }
            Input::Ended => break,
        };
        if console.has_pty() {
            console.out("\n").await;
        }
        match line.trim() {
            "" => continue,
            "exit" | "quit" | "logout" => break,
            text => {
                console.remember(text);
                run_line(gateway, caller, console, text.as_bytes()).await;
            }
        }
    }
}

/// A resource login that gets no access, and the key it logged in with.
pub struct Refused {
    pub caller: Caller,
    pub resource: String,
    pub key: Option<String>,
}

/// `alice+RESOURCE@GW`: tells the user why there is no access and what to
/// type next. Fails closed: nothing reaches the target from here.
pub async fn refuse_target(
    mut channel: Channel<Msg>,
    gateway: Arc<Gateway>,
    refused: Refused,
    gone: CancellationToken,
) {
    let Refused {
        caller,
        resource,
        key,
    } = refused;
    while let Some(message) = channel.wait().await {
        if matches!(
            message,
            ChannelMsg::Exec { .. }
                | ChannelMsg::RequestShell { .. }
                | ChannelMsg::RequestSubsystem { .. }
        ) {
            break;
        }
    }
    let config = gateway.config();
    let port = config.listen.ssh.port();
    let kind = config.resource(&resource).map(|r| r.kind);
    let reason = if kind.is_none() {
        format!(
            "unknown resource {resource} — ssh -p {port} {}@{} resources lists them",
            caller.user, caller.host
        )
    } else if kind == Some(ResourceKind::Postgres) {
        let conninfo = psql_conninfo(&config, &caller.host, &caller.user, &resource);
        format!(
            "{resource} is a PostgreSQL database, reached with psql, not ssh: psql \"{conninfo}\" with the password checkout printed"
        )
    } else if gateway.leases().lookup(&caller.user, &resource).is_none() {
        no_lease_yet(&gateway, &caller, &resource)
    } else if !gateway.audit_ready() || gateway.audit_failing() {
        AUDIT_UNAVAILABLE.to_string()
    } else {
        // The one refusal left: the lease was granted without the MFA
        // check that its request's settings require.
        format!(
            "your lease on {resource} has no MFA pass, which {resource} requires: check in, then check out again with --totp"
        )
    };
    gateway.audit_all_in_place(vec![AuditEvent::Login {
        protocol: Protocol::Ssh,
        user: caller.user.clone(),
        resource: Some(resource),
        remote: caller.remote.clone(),
        key,
        accepted: false,
        reason: Some(reason.clone()),
    }]);
    let mut console = Console::new(channel, false, gone);
    console.err(&format!("jitgate: {reason}\n")).await;
    console.finish(EXIT_REFUSED).await;
}
