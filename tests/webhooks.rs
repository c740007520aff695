//! Webhooks end to end: the real `jitgate` binary POSTing audit records
//! to receivers on loopback, through failures, restarts and reloads.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{World, wait_until};

/// A webhook endpoint on loopback: answers the first `failures` POSTs
/// (or as many as `fail_next` says later) with 500, then 200, and hands
/// over each request's head and body.
struct HookReceiver {
    port: u16,
    failures: Arc<AtomicUsize>,
    received: std::sync::mpsc::Receiver<(String, String)>,
}

impl HookReceiver {
    fn start(failures: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tell, received) = std::sync::mpsc::channel();
        let failures = Arc::new(AtomicUsize::new(failures));
        let failing = failures.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                let fail = failing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if fail {
                    "500 Internal Server Error"
                } else {
                    let _ = tell.send((head, String::from_utf8_lossy(&body).into_owned()));
                    "200 OK"
                };
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Self {
            port,
            failures,
            received,
        }
    }

    fn fail_next(&self, failures: usize) {
        self.failures.store(failures, Ordering::SeqCst);
    }

    fn next(&self, within: Duration) -> Option<(String, String)> {
        self.received.recv_timeout(within).ok()
    }

    /// The request id of the next delivery's workflow record.
    fn next_request_id(&self) -> u64 {
        let (_, body) = self
            .next(Duration::from_secs(15))
            .expect("no webhook delivery");
        let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
        payload["record"]["event"]["change"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("not a request record: {payload}"))
    }

    fn config(&self, events: &str) -> String {
        format!(
            "\n[[webhook]]\nurl = \"http://127.0.0.1:{}/\"\nevents = [{events}]\n",
            self.port
        )
    }
}

#[test]
fn webhooks_get_the_records_they_ask_for_with_retries_and_follow_a_reload() {
    let hook = HookReceiver::start(1);
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("hook-token");
    jitgate::secret::write_secret_file(&token, "hook-secret").unwrap();
    let signing = secrets.path().join("hook-signing");
    jitgate::secret::write_secret_file(&signing, "signing-secret").unwrap();
    let world = World::start_with(|text| {
        format!(
            "{text}\n[[webhook]]\nurl = \"http://127.0.0.1:{}/hooks/jitgate?team=sre\"\n\
             events = [\"requested\", \"session_terminated\"]\nbearer_token_file = \"{}\"\n\
             signing_secret_file = \"{}\"\n",
            hook.port,
            token.display(),
            signing.display()
        )
    });
    let id = world.request("alice", "web-01 --for 10m --reason 'disk full'");
    world.ok("bob", &format!("approve {id}"));
    // The first POST is answered 500; the retry is delivered.
    let (head, body) = hook
        .next(Duration::from_secs(10))
        .expect("no webhook delivery");
    assert!(
        head.starts_with("POST /hooks/jitgate?team=sre HTTP/1.1"),
        "{head}"
    );
    assert!(head.contains("authorization: Bearer hook-secret"), "{head}");
    // The body is signed with the signing secret.
    let expected = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"signing-secret").unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    assert!(
        head.contains(&format!("x-jitgate-signature-256: {expected}")),
        "{head}"
    );
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["record"]["event"]["change"]["type"], "requested");
    assert_eq!(payload["record"]["event"]["change"]["id"], id);
    let text = payload["text"].as_str().unwrap();
    assert!(text.contains("alice") && text.contains("web-01"), "{text}");
    // The approval was not asked for.
    assert!(hook.next(Duration::from_secs(2)).is_none());
    let metrics = world.metrics();
    assert!(
        metrics.contains(r#"jitgate_webhook_deliveries_total{outcome="retried"} 1"#)
            && metrics.contains(r#"jitgate_webhook_deliveries_total{outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(!world.log().contains("hook-secret") && !world.log().contains("signing-secret"));

    // A reload brings the new configuration's webhooks.
    let other = HookReceiver::start(0);
    world.reload_applied(|text| {
        text.replace(
            &format!(":{}/hooks", hook.port),
            &format!(":{}/hooks", other.port),
        )
        .replace("\"requested\", ", "\"checked_out\", ")
    });
    world.ok("alice", &format!("checkout {id}"));
    let (_, body) = other
        .next(Duration::from_secs(10))
        .expect("no delivery after the reload");
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["record"]["event"]["change"]["type"], "checked_out");
    assert!(hook.next(Duration::from_millis(500)).is_none());
}

#[test]
fn a_webhook_for_some_resources_gets_only_their_records() {
    let hook = HookReceiver::start(0);
    let world = World::start_with(|text| {
        format!(
            "{text}{}resources = [\"orders-prod\"]\n",
            hook.config("\"requested\", \"approved\"")
        )
    });
    let web = world.request("alice", "web-01 --reason elsewhere");
    world.ok("bob", &format!("approve {web}"));
    let db = world.request("zoe", "orders-prod --reason ours");
    world.ok("bob", &format!("approve {db}"));
    // The approval names only its request: it is found through it.
    for change in ["requested", "approved"] {
        let (_, body) = hook
            .next(Duration::from_secs(15))
            .expect("no webhook delivery");
        let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
        let record = &payload["record"]["event"]["change"];
        assert_eq!(record["type"], change, "{payload}");
        assert_eq!(record["id"], db, "{payload}");
    }
    assert!(
        hook.next(Duration::from_secs(2)).is_none(),
        "a record about web-01 went out"
    );
}

#[test]
fn a_webhook_with_a_misspelt_event_or_a_missing_token_file_is_refused_by_check_config() {
    let world = World::start();
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    // check-config on the config with `webhook` appended.
    let check_with = |webhook: &str| {
        std::fs::write(world.config_path(), format!("{text}{webhook}")).unwrap();
        std::process::Command::new(common::BIN)
            .arg("check-config")
            .arg(world.config_path())
            .output()
            .unwrap()
    };
    assert!(check_with("").status.success());
    let out = check_with("\n[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nevents = [\"requestd\"]\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("webhook[0].events") && err.contains("unknown event \"requestd\""),
        "{err}"
    );
    let out =
        check_with("\n[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nresources = [\"web-02\"]\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("webhook[0].resources") && err.contains("unknown resource \"web-02\""),
        "{err}"
    );
    // Token files are read as at start.
    let out = check_with(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nbearer_token_file = \"no-such-token\"\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("bearer_token_file") && err.contains("no-such-token"),
        "{err}"
    );
}

#[test]
fn a_webhook_over_https_is_verified_against_its_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, server) =
        jitgate::postgres::tls::generate::ca_and_server(&["localhost".to_string()]).unwrap();
    let (cert, key) = (certs.path().join("hook.crt"), certs.path().join("hook.key"));
    jitgate::postgres::tls::write_pair(&server, &cert, &key).unwrap();
    let ca_file = certs.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.cert).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/https_hook.py");
    let mut receiver = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([&cert, &key])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread, so a delivery that never comes fails the test.
    let (tell, lines) = std::sync::mpsc::channel();
    let stdout = receiver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tell.send(line);
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(20));
    let port = next().expect("the https receiver did not start");
    let world = World::start_with(|text| {
        format!(
            "{text}\n[[webhook]]\nurl = \"https://localhost:{port}/\"\nca_file = \"{}\"\n\
             events = [\"requested\"]\n",
            ca_file.display()
        )
    });
    let id = world.request("alice", "web-01 --for 10m --reason test");
    let body = next();
    let _ = receiver.kill();
    let _ = receiver.wait();
    let body = body.expect("no delivery over https");
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["record"]["event"]["change"]["id"], id);
    // web-01's approvers: group:sre-leads.
    assert_eq!(
        payload["awaiting_approval_from"],
        serde_json::json!(["bob", "erin"])
    );
}

#[test]
fn a_gateway_stopped_right_after_deliveries_resends_none_of_them_after_a_restart() {
    // Cursors are saved at most once a second while records flow, and
    // whenever the stream stops: here before the retry of a failed
    // delivery, and at the stop that follows the deliveries at once.
    let hook = HookReceiver::start(0);
    let mut world = World::start_with(|text| format!("{text}{}", hook.config("\"requested\"")));
    let first = world.request("alice", "web-01 --for 10m --reason first");
    assert_eq!(hook.next_request_id(), first);
    hook.fail_next(1);
    let mut ids = vec![world.request("zoe", "web-01 --for 10m --reason retried")];
    assert_eq!(hook.next_request_id(), ids[0]);
    // One open request per user and resource.
    for user in ["bob", "erin", "dave"] {
        ids.push(world.request(user, &format!("web-01 --for 10m --reason {user}")));
    }
    for id in &ids[1..] {
        assert_eq!(hook.next_request_id(), *id);
    }
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(10)), Some(0));
    world.launch();
    let after = world.request("alice", "orders-prod --for 10m --reason after");
    assert_eq!(hook.next_request_id(), after);
    assert!(hook.next(Duration::from_millis(500)).is_none());
}

#[test]
fn records_written_while_a_webhook_or_the_gateway_was_down_are_sent_once_both_are_back() {
    let hook = HookReceiver::start(0);
    let mut world = World::start_with(|text| format!("{text}{}", hook.config("\"requested\"")));
    let first = world.request("alice", "web-01 --for 10m --reason one");
    assert_eq!(hook.next_request_id(), first);

    // The receiver fails; the gateway keeps trying until it crashes.
    hook.fail_next(usize::MAX);
    let second = world.request("alice", "orders-prod --for 10m --reason two");
    let third = world.request("zoe", "web-01 --for 10m --reason three");
    assert!(wait_until(Duration::from_secs(10), || world
        .metrics()
        .contains(
            r#"jitgate_webhook_deliveries_total{outcome="retried"}"#
        )));
    world.kill_hard();

    // Back up, with a webhook added meanwhile: the first gets what it
    // missed, in order and without the record it had; the new one starts
    // from now.
    hook.fail_next(0);
    let added = HookReceiver::start(0);
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        format!("{text}{}", added.config("\"requested\"")),
    )
    .unwrap();
    world.launch();
    assert_eq!(hook.next_request_id(), second);
    assert_eq!(hook.next_request_id(), third);
    let origin = format!("http://127.0.0.1:{}", hook.port);
    assert!(wait_until(Duration::from_secs(5), || {
        let head = world.metric("jitgate_audit_head_seq");
        head.is_some()
            && world.metric(&format!(
                "jitgate_webhook_cursor_seq{{webhook=\"{origin}\"}}"
            )) == head
    }));
    let fourth = world.request("bob", "web-01 --for 10m --reason four");
    assert_eq!(hook.next_request_id(), fourth);
    assert_eq!(added.next_request_id(), fourth);
    assert!(hook.next(Duration::from_secs(1)).is_none());
    assert!(added.next(Duration::from_millis(200)).is_none());
}
