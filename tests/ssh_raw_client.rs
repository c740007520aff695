//! What stock OpenSSH never sends: absurd pty sizes and SSH `signal`
//! requests (with jitgate's own russh client), and channel data before the
//! channel is confirmed (with paramiko, whose internals allow it).

mod common;

use std::time::Duration;

use common::World;
use jitgate::config::{Resource, ResourceKind};
use jitgate::secret::Secret;
use russh::ChannelMsg;

/// The gateway itself, seen as an SSH "resource" for jitgate's own client.
fn gateway_as_target(world: &World, user: &str) -> Resource {
    Resource {
        name: "gateway".into(),
        kind: ResourceKind::Ssh,
        address: format!("127.0.0.1:{}", world.ssh_port),
        account: user.into(),
        database: None,
        credential_file: None,
        allow_port_forwarding: false,
        end_leftover_processes: true,
        host_key: None,
        upstream_tls_ca: None,
        rotation_interval: None,
        reconcile: None,
        workflow: Default::default(),
    }
}

async fn run(channel: &mut russh::Channel<russh::client::Msg>) -> (String, Option<u32>) {
    let (mut output, mut status) = (Vec::new(), None);
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(20), channel.wait()).await
    {
        match message {
            ChannelMsg::Data { data } => output.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (String::from_utf8_lossy(&output).into_owned(), status)
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_pty_sizes_are_clamped_and_signal_requests_reach_the_process() {
    let world = tokio::task::spawn_blocking(|| {
        let world = World::with_ssh_target(|t| t);
        world.lease_web("alice", "10m");
        world
    })
    .await
    .unwrap();
    let known = tempfile::tempdir().unwrap();
    let hosts = jitgate::ssh::KnownHosts::load(known.path()).unwrap();
    let key = Secret::new(std::fs::read_to_string(world.path("keys/alice")).unwrap());
    let target = gateway_as_target(&world, "alice+web-01");
    let handle = jitgate::ssh::upstream::connect(&target, &hosts, Some(key.clone()))
        .await
        .expect("alice+web-01 logs in through jitgate's own client");

    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", u32::MAX, u32::MAX, u32::MAX, u32::MAX, &[])
        .await
        .unwrap();
    channel.exec(true, "stty size").await.unwrap();
    let (output, status) = run(&mut channel).await;
    assert_eq!(status, Some(0), "{output}");
    assert_eq!(output.trim(), "10000 10000");

    // An SSH `signal` request (OpenSSH's client never sends one) ends the
    // remote process the way the signal would.
    let mut channel = handle.channel_open_session().await.unwrap();
    channel.exec(true, "sleep 30").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    channel.signal(russh::Sig::KILL).await.unwrap();
    let started = std::time::Instant::now();
    let mut ended = false;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(20), channel.wait()).await
    {
        if matches!(
            message,
            ChannelMsg::ExitSignal { .. } | ChannelMsg::ExitStatus { .. } | ChannelMsg::Close
        ) {
            ended = true;
            break;
        }
    }
    assert!(
        ended && started.elapsed() < Duration::from_secs(10),
        "the signal did not end `sleep 30`"
    );
    tokio::task::spawn_blocking(move || drop(world))
        .await
        .unwrap();
}

/// Data and EOF for a channel the gateway has not confirmed yet (it
/// confirms only once the target's channel is open) are dropped, not
/// relayed or mistaken for another channel's: the channel then opens and
/// works, so does the next one, and a stock client alongside is unaffected.
#[test]
fn channel_data_before_the_confirmation_is_ignored_cleanly() {
    let world = World::with_ssh_target(|t| t);
    world.lease_web("alice", "10m");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/early_channel_data.py"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(world.ssh_port.to_string())
        .arg("alice+web-01")
        .arg(world.path("keys/alice"))
        .output()
        .expect("python3 with paramiko (scripts/install-deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first 0\nsecond 0\n",
        "{stderr}"
    );
    let alongside = world
        .target_ssh("alice", "web-01")
        .arg("echo alongside")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&alongside.stdout), "alongside\n");
    assert!(!world.log().contains("panicked"), "{}", world.log());
}
