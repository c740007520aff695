//! The core end to end in-process: journal, audit, leases and MFA together.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::mfa;
use crate::secret::{Secret, write_secret_file};
use crate::workflow::RequestSpec;

pub(super) fn config_text(users: usize) -> String {
    let mut text = String::from(
        r#"
[roles]
engineer = ["request"]
approver = ["request", "approve"]
admin = ["admin"]

[[user]]
name = "bob"
roles = ["approver"]
[[user]]
name = "root"
roles = ["admin"]

[[resource]]
name = "db"
kind = "postgres"
address = "127.0.0.1:5432"
account = "app"
database = "app"
[resource.workflow]
single_user = true
mfa_required = true
approval_levels = [{ approvers = ["bob"] }]

[[resource]]
name = "box"
kind = "ssh"
address = "127.0.0.1:22"
account = "deploy"
[resource.workflow]
single_user = true
mfa_required = false
"#,
    );
    for i in 0..users {
        text.push_str(&format!(
            "[[user]]\nname = \"u{i}\"\nroles = [\"engineer\"]\ntotp_secret_file = \"totp/u{i}\"\n"
        ));
    }
    text
}

pub(super) fn open(dir: &Path, users: usize) -> Arc<Gateway> {
    let config = Config::from_toml(&dir.join("jitgate.toml"), &config_text(users)).unwrap();
    Gateway::open(config).unwrap().0
}

pub(super) fn request(gateway: &Gateway, user: &str, resource: &str, secs: u64) -> RequestId {
    let spec = RequestSpec {
        resource: resource.into(),
        duration: Some(Duration::from_secs(secs)),
        ..Default::default()
    };
    let outcome = gateway.execute(user, Command::Request(spec)).unwrap();
    outcome.events[0].request_id().unwrap()
}

pub(super) fn enroll(dir: &Path, user: &str) -> Secret {
    std::fs::create_dir_all(dir.join("totp")).unwrap();
    let secret = mfa::generate_secret();
    write_secret_file(&dir.join("totp").join(user), secret.expose()).unwrap();
    secret
}

fn code(secret: &Secret) -> String {
    mfa::current_code(secret, chrono::Utc::now().timestamp() as u64).unwrap()
}

pub(super) fn audit_text(gateway: &Gateway) -> String {
    std::fs::read_to_string(&gateway.config().audit_log).unwrap()
}

#[test]
fn concurrent_checkouts_of_an_exclusive_resource_have_exactly_one_winner() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let gateway = open(dir.path(), 100);
        let ids: Vec<RequestId> = (0..100)
            .map(|i| request(&gateway, &format!("u{i}"), "box", 600))
            .collect();
        let winners: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let gateway = &gateway;
                    scope.spawn(move || {
                        let user = format!("u{i}");
                        gateway
                            .execute(
                                &user,
                                Command::Checkout {
                                    id: *id,
                                    totp: None,
                                },
                            )
                            .ok()
                            .map(|_| user)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert!(gateway.leases().lookup(&winners[0], "box").is_some());
        assert_eq!(gateway.leases().len(), 1);
        let held = format!("box is held by {} until", winners[0]);
        assert_eq!(
            audit_text(&gateway).matches(&held).count(),
            99,
            "every loser is told who holds it"
        );
    }
}

#[test]
fn checkout_with_a_real_totp_code_issues_a_lease_password_and_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let secret = enroll(dir.path(), "u0");
    let id = request(&gateway, "u0", "db", 600);
    gateway
        .execute("bob", Command::Approve { id, comment: None })
        .unwrap();
    let err = gateway
        .execute("u0", Command::Checkout { id, totp: None })
        .unwrap_err();
    assert!(err.to_string().contains("requires MFA"), "{err}");
    let err = gateway
        .execute(
            "u0",
            Command::Checkout {
                id,
                totp: Some("000000".into()),
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Mfa(mfa::MfaError::Invalid)),
        "{err}"
    );
    let code = code(&secret);
    let outcome = gateway
        .execute(
            "u0",
            Command::Checkout {
                id,
                totp: Some(code.clone()),
            },
        )
        .unwrap();
    let password = outcome
        .lease_password
        .expect("postgres checkout issues a password");
    let lease = gateway.leases().lookup("u0", "db").unwrap();
    assert!(lease.mfa_passed);
    let record = lease.secret_hash.as_deref().unwrap();
    assert!(crate::postgres::lease_password::cleartext_matches(
        record,
        password.expose()
    ));
    assert!(crate::postgres::lease_password::scram_verifier(record).is_some());
    let audit = audit_text(&gateway);
    assert!(audit.contains("mfa_failure"));
    assert!(
        !audit.contains(password.expose()),
        "lease password leaked into the audit log"
    );
    assert!(
        !audit.contains(&lease.secret_hash.clone().unwrap()),
        "lease hash leaked into the audit log"
    );
    assert!(
        !audit.contains(&code),
        "TOTP code leaked into the audit log"
    );
}

#[test]
fn a_refused_checkout_does_not_burn_the_totp_code() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 2);
    let secret = enroll(dir.path(), "u1");
    enroll(dir.path(), "u0");
    let first = request(&gateway, "u0", "db", 600);
    let second = request(&gateway, "u1", "db", 600);
    for id in [first, second] {
        gateway
            .execute("bob", Command::Approve { id, comment: None })
            .unwrap();
    }
    let holder_code = code(&enroll_secret(dir.path(), "u0"));
    gateway
        .execute(
            "u0",
            Command::Checkout {
                id: first,
                totp: Some(holder_code),
            },
        )
        .unwrap();
    let code = code(&secret);
    let err = gateway
        .execute(
            "u1",
            Command::Checkout {
                id: second,
                totp: Some(code.clone()),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("held by u0"), "{err}");
    gateway
        .execute("u0", Command::Checkin { id: first })
        .unwrap();
    gateway
        .execute(
            "u1",
            Command::Checkout {
                id: second,
                totp: Some(code),
            },
        )
        .unwrap();
}

fn enroll_secret(dir: &Path, user: &str) -> Secret {
    crate::secret::read_secret_file(&dir.join("totp").join(user)).unwrap()
}

#[test]
fn refused_commands_change_nothing_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let id = request(&gateway, "u0", "db", 600);
    let before = gateway.read(|engine| engine.clone());
    let err = gateway
        .execute("u0", Command::Approve { id, comment: None })
        .unwrap_err();
    assert_eq!(err.to_string(), "you cannot approve your own request");
    gateway
        .execute(
            "u0",
            Command::Request(RequestSpec {
                resource: "nope".into(),
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(gateway.read(|engine| engine.clone()), before);
    let audit = audit_text(&gateway);
    assert!(
        audit.contains(r#""command":"approve 1""#)
            && audit.contains("you cannot approve your own request")
    );
    assert!(audit.contains(r#"unknown resource \"nope\""#));
}

#[test]
fn restart_rebuilds_requests_approvals_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 2);
    let pending = request(&gateway, "u0", "db", 600);
    let active = request(&gateway, "u1", "box", 600);
    gateway
        .execute(
            "u1",
            Command::Checkout {
                id: active,
                totp: None,
            },
        )
        .unwrap();
    let before = gateway.read(|engine| engine.clone());
    drop(gateway);
    let gateway = open(dir.path(), 2);
    assert_eq!(gateway.read(|engine| engine.clone()), before);
    assert!(gateway.leases().lookup("u1", "box").is_some());
    gateway
        .execute(
            "bob",
            Command::Approve {
                id: pending,
                comment: None,
            },
        )
        .unwrap();
    assert_eq!(
        gateway.request(pending).unwrap().state,
        RequestState::Approved
    );
    assert!(
        crate::audit::verify_files(
            &crate::audit::chain_files(&gateway.config().audit_log).unwrap()
        )
        .is_ok()
    );
}

#[test]
fn a_lease_that_expired_while_down_is_ended_and_audited_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let id = request(&gateway, "u0", "box", 1);
    gateway
        .execute("u0", Command::Checkout { id, totp: None })
        .unwrap();
    drop(gateway);
    std::thread::sleep(Duration::from_millis(1100));
    let gateway = open(dir.path(), 1);
    assert_eq!(gateway.request(id).unwrap().state, RequestState::Expired);
    assert!(gateway.leases().lookup("u0", "box").is_none());
    assert!(audit_text(&gateway).contains(r#""reason":"expired""#));
    // The exclusive resource is free again.
    let next = request(&gateway, "u0", "box", 60);
    gateway
        .execute(
            "u0",
            Command::Checkout {
                id: next,
                totp: None,
            },
        )
        .unwrap();
}

#[test]
fn a_torn_journal_record_loses_only_the_unacknowledged_command() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let kept = request(&gateway, "u0", "db", 600);
    let journal = gateway.config().state_dir.join("journal.log");
    let complete = std::fs::metadata(&journal).unwrap().len();
    request(&gateway, "u0", "box", 600);
    drop(gateway);
    let full = std::fs::read(&journal).unwrap();
    for cut in (complete + 1..full.len() as u64).step_by(7) {
        std::fs::write(&journal, &full[..cut as usize]).unwrap();
        let gateway = open(dir.path(), 1);
        let ids: Vec<_> = gateway.read(|e| e.requests().map(|r| r.id).collect());
        assert_eq!(ids, vec![kept], "cut at {cut}");
        assert!(audit_text(&gateway).contains("torn_tail_dropped"));
    }
}

#[test]
fn compaction_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(26);
    text.insert_str(0, "[gateway]\njournal_compact_records = 10\n");
    let config = Config::from_toml(&dir.path().join("jitgate.toml"), &text).unwrap();
    let gateway = Gateway::open(config.clone()).unwrap().0;
    for i in 0..25 {
        request(&gateway, &format!("u{i}"), "db", 600);
    }
    assert!(config.state_dir.join("snapshot.json").exists());
    let before = gateway.read(|engine| engine.clone());
    drop(gateway);
    let gateway = Gateway::open(config).unwrap().0;
    assert_eq!(gateway.read(|engine| engine.clone()), before);
    assert_eq!(request(&gateway, "u25", "db", 600), 26);
}

#[tokio::test]
async fn expiry_is_journaled_by_housekeeping() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&dir.path().join("jitgate.toml"), &config_text(1)).unwrap();
    let (gateway, expired) = Gateway::open(config).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(gateway.clone().run_housekeeping(expired, shutdown.clone()));
    let id = request(&gateway, "u0", "box", 1);
    gateway
        .execute("u0", Command::Checkout { id, totp: None })
        .unwrap();
    let lease = gateway.leases().lookup("u0", "box").unwrap();
    tokio::time::timeout(Duration::from_secs(3), lease.token.cancelled())
        .await
        .unwrap();
    for _ in 0..100 {
        if gateway.request(id).unwrap().state == RequestState::Expired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gateway.request(id).unwrap().state, RequestState::Expired);
    shutdown.cancel();
}

#[test]
fn a_single_user_resource_is_held_back_while_processes_are_left_running_unless_it_no_longer_ends_them()
 {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    gateway.processes_left_running("box", true);
    let id = request(&gateway, "u0", "box", 600);
    let checkout = |gateway: &Gateway| gateway.execute("u0", Command::Checkout { id, totp: None });
    let refused = checkout(&gateway).err().unwrap().to_string();
    assert!(refused.contains("box is held back"), "{refused}");
    drop(gateway);
    let gateway = open(dir.path(), 1);
    assert!(checkout(&gateway).is_err(), "a restart forgot the mark");
    drop(gateway);
    let text = config_text(1).replace(
        "account = \"deploy\"",
        "account = \"deploy\"\nend_leftover_processes = false",
    );
    let config = Config::from_toml(&dir.path().join("jitgate.toml"), &text).unwrap();
    let gateway = Gateway::open(config).unwrap().0;
    assert!(checkout(&gateway).is_ok());
}

#[test]
fn subjects_find_a_workflow_records_user_and_resource_through_its_request() {
    use crate::audit::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let id = request(&gateway, "u0", "db", 600);
    let approval = gateway
        .execute("bob", Command::Approve { id, comment: None })
        .unwrap();
    let approved = AuditEvent::Workflow {
        actor: Some("bob".into()),
        change: approval.events[0].clone(),
    };
    // Not learned from a `requested` record: the engine answers.
    let mut subjects = Subjects::default();
    assert_eq!(
        subjects.resource_of(&gateway, &approved).as_deref(),
        Some("db")
    );
    assert!(subjects.names_user(&gateway, &approved, "u0"));
    assert!(subjects.names_user(&gateway, &approved, "bob"));
    assert!(!subjects.names_user(&gateway, &approved, "root"));
    // A record naming no request and no resource is about none.
    let started = AuditEvent::GatewayStarted {
        version: "0".into(),
    };
    assert_eq!(subjects.resource_of(&gateway, &started), None);
}

#[test]
fn workflow_reads_do_not_wait_for_an_audit_write() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let id = request(&gateway, "u0", "box", 600);
    // An audit write that takes long (a slow disk's fsync) holds the
    // audit lock; reading workflow state must not wait for it.
    let writing = gateway.audit.lock();
    let (done, finished) = std::sync::mpsc::channel();
    let reader = gateway.clone();
    std::thread::spawn(move || {
        let requester = reader.request(id).map(|r| r.requester);
        let _ = done.send(requester);
    });
    let read = finished.recv_timeout(Duration::from_secs(10));
    drop(writing);
    assert_eq!(read.unwrap().as_deref(), Some("u0"));
}

#[test]
fn a_commands_events_are_audited_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    let id = request(&gateway, "u0", "box", 600);
    let text = audit_text(&gateway);
    let changes: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&format!("\"id\":{id}")))
        .collect();
    assert!(changes.len() >= 2, "requested and granted: {text}");
    assert!(changes[0].contains("requested"), "{text}");
    assert!(changes[1].contains("granted"), "{text}");
}

/// How long a task waits to run on a one-worker runtime whose worker is
/// running `work`, while another thread holds one of the gateway's locks
/// for 3 s (`hold` takes it, then signals).
fn wait_beside(
    gateway: &Arc<Gateway>,
    hold: fn(&Gateway, std::sync::mpsc::Sender<()>),
    work: impl FnOnce(&Gateway) + Send + 'static,
) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let holder = gateway.clone();
    let (held, holding) = std::sync::mpsc::channel();
    let holding_thread = std::thread::spawn(move || hold(&holder, held));
    holding.recv().unwrap();
    let waited = runtime.block_on(async {
        let worker = gateway.clone();
        let working = tokio::spawn(async move { work(&worker) });
        // The only worker is the one `work` waits on: another task should
        // still run at once.
        let started = std::time::Instant::now();
        tokio::spawn(async {}).await.unwrap();
        let waited = started.elapsed();
        working.await.unwrap();
        waited
    });
    holding_thread.join().unwrap();
    waited
}

#[test]
fn an_audit_write_from_async_code_does_not_stall_the_runtimes_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    // Another write holds the audit log for a while (a slow disk's fsync).
    let waited = wait_beside(
        &gateway,
        |gateway, held| {
            let _writing = gateway.audit.lock();
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        },
        |gateway| gateway.audit_all_in_place(vec![AuditEvent::GatewayStopped]),
    );
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
}

#[test]
fn a_workflow_read_from_async_code_does_not_stall_the_runtime_during_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path(), 1);
    // A command being committed holds the core for a while (a slow disk's
    // journal and audit fsyncs).
    let waited = wait_beside(
        &gateway,
        |gateway, held| {
            let _committing = gateway.core.lock();
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        },
        |gateway| assert!(gateway.read(|engine| engine.request(1).is_none())),
    );
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
}
