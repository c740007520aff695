//! The control plane end to end: the real `jitgate` binary driven by the
//! real OpenSSH client.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, assert_success, exits_within, stderr_of, wait_until};

#[test]
fn web_01_happy_path_request_approve_checkout_status_checkin() {
    let world = World::start();
    // Typed in a shell: ssh joins its arguments with spaces, so the
    // gateway receives `--reason deploy fix on web` as four words.
    let filed = world
        .ssh_command("alice", "alice")
        .args([
            "request",
            "web-01",
            "--reason",
            "deploy fix on web",
            "--for",
            "30m",
            "--ticket",
            "OPS-12",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let filed = String::from_utf8_lossy(&filed.stdout);
    assert!(
        filed.contains("needs 1 approval from group:sre-leads (bob or erin may approve)"),
        "{filed}"
    );
    let id = 1;
    let twice = world.refused("alice", "request web-01 --for 30m");
    assert!(
        twice.contains("already have request 1 for web-01 waiting for approval"),
        "{twice}"
    );
    let mine = &world.json("alice", "requests")["mine"][0];
    assert_eq!(mine["reason"], "deploy fix on web");
    assert_eq!(mine["duration_secs"], 1800);
    let pending = world.ok("bob", "requests");
    assert!(
        pending.contains("WAITING FOR MY APPROVAL")
            && pending.contains("alice")
            && pending.contains("deploy fix on web (ticket OPS-12)"),
        "{pending}"
    );
    assert!(
        world
            .ok("bob", &format!("approve {id}"))
            .contains("approved")
    );
    let checkout = world.ok("alice", &format!("checkout {id}"));
    assert!(
        checkout.contains("checked out web-01") && checkout.contains("alice+web-01@"),
        "{checkout}"
    );
    let status = world.json("alice", "status");
    assert_eq!(status["leases"][0]["resource"], "web-01");
    assert!(status["leases"][0]["seconds_left"].as_i64().unwrap() > 1700);
    // Status repeats how to use the lease, as checkout said it.
    let ssh = format!("ssh -p {} alice+web-01@127.0.0.1", world.ssh_port);
    assert_eq!(status["leases"][0]["connect"], ssh.as_str());
    let text = world.ok("alice", "status");
    let row = text.lines().find(|l| l.contains("web-01")).unwrap_or("");
    assert!(row.contains("left)") && row.ends_with(&ssh), "{text}");
    // Asking again while holding the lease points at the lease.
    let again = world.refused("alice", "request web-01 --for 30m");
    assert!(
        again.contains("active lease on web-01 (request 1): extend it"),
        "{again}"
    );
    world.ok("alice", &format!("checkin {id}"));
    assert_eq!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let audit = world.audit_text();
    for change in ["requested", "approved", "granted", "checked_out", "ended"] {
        assert!(
            audit.contains(&format!(r#""type":"{change}""#)),
            "audit lacks {change}"
        );
    }
}

#[test]
fn an_extension_waits_for_approval_and_approvers_see_how_much_it_adds() {
    let world = World::start();
    let id = world.request("alice", "web-01 --for 30m");
    world.ok("bob", &format!("approve {id}"));
    world.ok("alice", &format!("checkout {id}"));
    let asked = world.ok("alice", &format!("extend {id} --for 20m"));
    let told = format!(
        "extension of request {id} filed: needs 1 approval from group:sre-leads (bob or erin may approve); access still ends at"
    );
    assert!(asked.contains(&told), "{asked}");
    let waiting = world.ok("bob", "requests");
    let row = waiting
        .lines()
        .find(|l| l.contains("alice") && l.contains("web-01"))
        .unwrap_or_default();
    assert!(row.contains("+20m"), "{waiting}");
    let listed = world.json("bob", "requests");
    assert_eq!(listed["to_approve"][0]["extension"]["duration_secs"], 1200);
    let mine = world.json("alice", "requests");
    let note = mine["mine"][0]["note"].as_str().unwrap_or_default();
    let told = "; +20m needs 1 approval from group:sre-leads (bob or erin may approve)";
    assert!(note.ends_with(told), "{mine}");
    let seconds_left = || world.json("alice", "status")["leases"][0]["seconds_left"].as_i64();
    let before = seconds_left().unwrap();
    let approved = world.ok("bob", &format!("approve {id}"));
    let told = format!("approved the extension of request {id}: access now ends at");
    assert!(approved.contains(&told), "{approved}");
    let after = seconds_left().unwrap();
    assert!(
        after >= before + 1190,
        "{before}s left before, {after}s after"
    );
    let listed = world.json("bob", "requests");
    assert_eq!(listed["to_approve"].as_array().map(Vec::len), Some(0));
    assert!(world.json("alice", "requests")["mine"][0]["extension"].is_null());
    let tail = world.ok("carol", "audit tail -n 20");
    let told = format!("bob approved the extension of request {id} at level 1");
    assert!(tail.contains(&told), "{tail}");
}

#[test]
fn an_extension_carries_its_reason_where_required_and_its_denial_keeps_the_lease() {
    let world = World::start();
    let id = world.request("alice", "orders-prod --for 1h --reason 'month end'");
    world.ok("bob", &format!("approve {id}"));
    world.ok("dave", &format!("approve {id}"));
    world.ok(
        "alice",
        &format!("checkout {id} --totp {}", world.totp("alice")),
    );
    let mut watcher = world.watching("bob", "bob");
    let refused = world.refused("alice", &format!("extend {id} --for 30m"));
    assert!(
        refused.contains("orders-prod requires a reason"),
        "{refused}"
    );
    let asked = world.ok(
        "alice",
        &format!("extend {id} --for 30m --reason 'restore still running'"),
    );
    let told = "needs 1 approval from group:sre-leads, then 1 approval from group:security";
    assert!(asked.contains(told), "{asked}");
    let waiting = world.ok("bob", "requests");
    let row = waiting
        .lines()
        .find(|l| l.contains("+30m"))
        .unwrap_or_default();
    assert!(
        row.contains("restore still running (request: month end)"),
        "{waiting}"
    );
    let listed = world.json("bob", "requests");
    let extension = &listed["to_approve"][0]["extension"];
    assert_eq!(extension["reason"], "restore still running");
    let audited: Vec<_> = world
        .audit_events("workflow")
        .into_iter()
        .filter(|event| event["change"]["type"] == "extension_requested")
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["change"]["reason"], "restore still running");
    let told = line_containing(&mut watcher, "restore still running");
    assert!(told.contains("(+30m)"), "{told}");
    assert!(told.contains(&format!("approve {id}")), "{told}");
    let _ = watcher.kill();
    let _ = watcher.wait();
    // Denied: the lease goes on, and everyone is told it was the extension.
    let denied = world.ok("bob", &format!("deny {id} --reason 'not tonight'"));
    let kept = format!("denied the extension of request {id}; its access still ends at");
    assert!(denied.contains(&kept), "{denied}");
    assert_eq!(world.json("alice", "status")["leases"][0]["id"], id);
    let tail = world.ok("carol", "audit tail -n 5");
    let told = format!("bob denied the extension of request {id}: not tonight");
    assert!(tail.contains(&told), "{tail}");
}

/// The first line of `child`'s output holding `text`, waiting up to 10 s.
fn line_containing(child: &mut std::process::Child, text: &str) -> String {
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let text = text.to_string();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let found = lines
            .map_while(Result::ok)
            .find(|line| line.contains(&text));
        let _ = sender.send(found);
    });
    let found = receiver.recv_timeout(Duration::from_secs(10));
    found.ok().flatten().expect("no such line within 10 s")
}

#[test]
fn orders_prod_needs_both_levels_in_order_and_a_real_totp_code() {
    let world = World::start();
    let refused = world.refused("alice", "request orders-prod --for 1h");
    assert!(refused.contains("requires a reason"), "{refused}");
    let id = world.request("alice", "orders-prod --for 1h --reason 'month end'");
    let wrong_level = world.refused("dave", &format!("approve {id}"));
    assert!(wrong_level.contains("waiting for level 1"), "{wrong_level}");
    world.ok("bob", &format!("approve {id}"));
    let not_level_two = world.refused("erin", &format!("approve {id}"));
    assert!(not_level_two.contains("not an approver"), "{not_level_two}");
    let done = world.ok("dave", &format!("approve {id}"));
    assert!(
        done.contains(&format!("approved request {id}: alice may check out now")),
        "{done}"
    );

    let no_code = world.refused("alice", &format!("checkout {id}"));
    assert!(no_code.contains("requires MFA"), "{no_code}");
    let wrong = world.refused("alice", &format!("checkout {id} --totp 000000"));
    assert!(wrong.contains("invalid TOTP code"), "{wrong}");
    let code = world.totp("alice");
    let out = world.json("alice", &format!("checkout {id} --totp {code}"));
    let password = out["password"].as_str().unwrap();
    assert_eq!(password.len(), 48);
    assert!(
        out["psql"]
            .as_str()
            .unwrap()
            .contains("dbname=orders-prod sslmode=require")
    );
    assert!(
        !world.audit_text().contains(password),
        "lease password in the audit log"
    );
    assert!(
        !world.audit_text().contains(&code),
        "TOTP code in the audit log"
    );

    // Single-user: zoe's approved request cannot check out while alice holds it.
    let second = world.request("zoe", "orders-prod --reason 'help alice'");
    world.ok("erin", &format!("approve {second}"));
    world.ok("dave", &format!("approve {second}"));
    let held = world.refused(
        "zoe",
        &format!("checkout {second} --totp {}", world.totp("zoe")),
    );
    assert!(
        held.contains("orders-prod is held by alice until"),
        "{held}"
    );
    // zoe, watching, is told the moment it is free.
    let (mut watcher, mut lines) = watch_json(&world, "zoe");
    world.ok("alice", &format!("checkin {id}"));
    let freed: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        freed["message"],
        format!("orders-prod is free now: checkout {second}"),
        "{freed}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    world.ok(
        "zoe",
        &format!("checkout {second} --totp {}", world.totp("zoe")),
    );
}

#[test]
fn a_replayed_totp_code_is_refused() {
    let world = World::start();
    let first = world.request("alice", "orders-prod --reason one");
    for approver in ["bob", "dave"] {
        world.ok(approver, &format!("approve {first}"));
    }
    let code = world.totp("alice");
    world.ok("alice", &format!("checkout {first} --totp {code}"));
    world.ok("alice", &format!("checkin {first}"));
    let second = world.request("alice", "orders-prod --reason two");
    for approver in ["bob", "dave"] {
        world.ok(approver, &format!("approve {second}"));
    }
    let replay = world.refused("alice", &format!("checkout {second} --totp {code}"));
    assert!(replay.contains("already used"), "{replay}");
    assert!(world.audit_text().contains("mfa_failure"));
}

#[test]
fn sessions_shows_an_auditor_everyones_and_anyone_else_their_own() {
    let world = World::start();
    let mut watcher = world.watching("bob", "bob");
    let users = |who: &str| -> Vec<String> {
        let listed = world.json(who, "sessions")["sessions"].clone();
        let rows = listed.as_array().cloned().unwrap_or_default();
        rows.iter()
            .filter_map(|s| s["user"].as_str().map(String::from))
            .collect()
    };
    let everyone = users("carol");
    assert!(everyone.iter().any(|u| u == "bob"), "{everyone:?}");
    let own = users("alice");
    assert!(!own.is_empty(), "alice's own command is a live session");
    assert!(own.iter().all(|u| u == "alice"), "{own:?}");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn refusals_say_why_and_change_nothing() {
    let world = World::start();
    let id = world.request("bob", "web-01");
    assert!(
        world
            .refused("bob", &format!("approve {id}"))
            .contains("cannot approve your own request")
    );
    assert!(
        world
            .refused("alice", "request db-99")
            .contains("unknown resource \"db-99\"")
    );
    assert!(
        world
            .refused("alice", &format!("approve {id}"))
            .contains("not an approver")
    );
    assert!(
        world
            .refused("alice", "audit tail")
            .contains("needs the audit permission")
    );
    // The permission is what is wrong, whatever the values.
    for change in [
        "web-01 max_duration=1h",
        "web-01 max_duration=bogus",
        "web-01 nonsense=1",
        "no-such-resource max_duration=1h",
    ] {
        let refused = world.refused("alice", &format!("workflow set {change}"));
        assert!(
            refused.contains("needs the manage_workflow permission"),
            "{change}: {refused}"
        );
    }
    assert!(
        world
            .refused("alice", "revoke 1")
            .contains("needs the admin permission")
    );
    assert!(
        world
            .refused("alice", "request web-01 --for 9h")
            .contains("longer than the maximum")
    );
    assert!(
        world
            .refused("alice", "request web-01 --for forever")
            .contains("invalid duration")
    );
    assert!(
        world
            .refused("alice", "checkout 99")
            .contains("unknown request 99")
    );
    let essay = "x".repeat(1001);
    let refused = world.refused("erin", &format!("deny {id} --reason {essay}"));
    assert!(
        refused.contains("the reason is too long (1001 characters, at most 1000)"),
        "{refused}"
    );
    let state = world.json("bob", "requests");
    assert_eq!(state["mine"][0]["state"], "pending", "{state}");
    assert_eq!(
        state["mine"].as_array().unwrap().len(),
        1,
        "refusals changed state: {state}"
    );
}

#[test]
fn errors_go_to_stderr_with_nonzero_status_and_json_errors_parse() {
    let world = World::start();
    let out = world.ssh("alice", "frobnicate");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    let out = world.ssh("alice", "approve 42 --json");
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"], "unknown request 42");
}

#[test]
fn help_is_available_for_every_command() {
    let world = World::start();
    let help = world.ok("alice", "help");
    for command in [
        "request", "approve", "checkout", "watch", "audit", "workflow", "delegate",
    ] {
        assert!(help.contains(command), "help lacks {command}");
    }
    assert!(world.ok("alice", "checkout --help").contains("--totp"));
}

#[test]
fn help_and_usage_errors_come_as_json_with_json() {
    let world = World::start();
    let help = world.json("alice", "help --json");
    assert!(help["help"].as_str().unwrap().contains("checkout"));
    let help = world.json("alice", "checkout --help --json");
    assert!(help["help"].as_str().unwrap().contains("--totp"));
    for (line, names) in [
        ("frobnicate --json", "frobnicate"),
        ("approve seven --json", "seven"),
    ] {
        let out = world.ssh("alice", line);
        assert_eq!(out.status.code(), Some(2), "{line}");
        let error: serde_json::Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("{line}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let text = error["error"].as_str().unwrap();
        assert!(text.starts_with("error:") && text.contains(names), "{text}");
    }
}

#[test]
fn an_administrator_revokes_everything_a_user_holds_at_once() {
    let world = World::start();
    let web = world.request("alice", "web-01 --for 30m");
    world.ok("bob", &format!("approve {web}"));
    world.ok("alice", &format!("checkout {web}"));
    let orders = world.request("alice", "orders-prod --reason incident");
    let zoes = world.request("zoe", "web-01 --for 30m");
    assert!(
        world
            .refused("bob", "revoke --user alice")
            .contains("needs the admin permission")
    );
    let usage = world.ssh("root", "revoke 1 --user alice");
    assert_eq!(usage.status.code(), Some(2), "an id or a user, not both");
    let revoked = world.json("root", "revoke --user alice");
    assert_eq!(revoked["revoked"], serde_json::json!([web]), "{revoked}");
    assert_eq!(
        revoked["cancelled"],
        serde_json::json!([orders]),
        "{revoked}"
    );
    assert!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let zoe = &world.json("zoe", "requests")["mine"][0];
    assert_eq!(
        (zoe["id"].as_u64(), zoe["state"].as_str()),
        (Some(zoes), Some("pending"))
    );
    assert_eq!(
        world.ok("root", "revoke --user alice"),
        "alice holds no lease and no open request\n"
    );
}

#[test]
fn json_output_parses_for_every_command() {
    let world = World::start();
    let id = world.request("alice", "web-01 --for 10m");
    let cancelled = world.request("alice", "orders-prod --for 10m --reason x");
    let denied = world.request("zoe", "web-01 --for 10m");
    for (user, command) in [
        ("alice", format!("cancel {cancelled}")),
        (
            "alice",
            "request orders-prod --for 1m --reason scripted".to_string(),
        ),
        ("bob", format!("deny {denied} --reason no")),
        ("bob", "requests".to_string()),
        ("zoe", "resources".to_string()),
        ("bob", format!("approve {id}")),
        ("alice", format!("checkout {id}")),
        ("alice", "status".to_string()),
        ("alice", format!("extend {id} --for 5m")),
        ("carol", "sessions".to_string()),
        ("carol", "workflow show web-01".to_string()),
        ("carol", "workflow set web-01 max_duration=4h".to_string()),
        ("bob", "delegate --to erin --until 2h".to_string()),
        ("bob", "delegate --revoke".to_string()),
        ("alice", format!("checkin {id}")),
    ] {
        world.json(user, &command);
    }
    let tail = world.ok("carol", "audit tail -n 3 --json");
    for line in tail.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["hash"].is_string());
    }
}

#[test]
fn workflow_changes_apply_at_runtime_and_survive_restart() {
    let mut world = World::start();
    world.ok(
        "carol",
        "workflow set web-01 max_duration=1h require_ticket=true",
    );
    assert!(
        world
            .refused("alice", "request web-01 --for 2h --ticket T-1")
            .contains("maximum of 1h")
    );
    assert!(
        world
            .refused("alice", "request web-01")
            .contains("requires a ticket")
    );
    world.ok("alice", "request web-01 --ticket T-1");
    assert!(
        world
            .refused("carol", "workflow set web-01 nonsense=1")
            .contains("unknown workflow setting")
    );
    world.signal("TERM");
    assert_eq!(world.wait_exit(Duration::from_secs(10)), Some(0));
    world.launch();
    let shown = world.json("carol", "workflow show web-01");
    assert_eq!(shown["settings"]["max_duration"], "1h");
    assert_eq!(shown["changed_at_runtime"], true);
}

#[test]
fn delegated_approvals_are_recorded_as_delegate_for_delegator() {
    let world = World::start();
    world.ok(
        "dave",
        "delegate --to erin --resource orders-prod --until 1h",
    );
    let id = world.request("alice", "orders-prod --reason x");
    world.ok("bob", &format!("approve {id}"));
    let out = world.ok("erin", &format!("approve {id}"));
    assert!(out.contains("(for dave)"), "{out}");
    let tail = world.ok("carol", "audit tail -n 20");
    assert!(tail.contains("erin for dave approved request"), "{tail}");
}

/// `ssh-keygen -lf`'s SHA-256 fingerprint of a user's key.
#[test]
fn taking_a_key_out_of_the_config_cuts_the_connections_that_used_it() {
    let world = World::start();
    let old = world.key_fingerprint("alice");
    let mut alice = world.watching("alice", "alice");
    let mut bob = world.watching("bob", "bob");
    // Each login's record names the key it presented.
    let audit = world.audit_text();
    assert!(
        audit.contains(&format!(r#""key":"{old}""#)),
        "no login names {old}: {audit}"
    );
    // Alice's laptop is lost: her new key replaces the old one.
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice-new", "-f"])
        .arg(world.path("keys").join("alice-new"))
        .status()
        .unwrap();
    assert!(status.success());
    world.reload_with(|text| text.replace("keys/alice.pub", "keys/alice-new.pub"));
    assert!(
        exits_within(&mut alice, Duration::from_secs(10)),
        "a connection went on with a key taken out of the config"
    );
    assert!(
        bob.try_wait().unwrap().is_none(),
        "bob's connection was cut"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        world.audit_text().lines().any(|line| {
            line.contains(r#""type":"login_withdrawn""#)
                && line.contains(&format!(r#""key":"{old}""#))
                && line.contains(r#""user":"alice""#)
        })
    }));
    // The old key no longer logs in; the new one does.
    assert!(!world.ssh("alice", "status").status.success());
    let out = world
        .ssh_command("alice", "alice-new")
        .arg("status")
        .output()
        .unwrap();
    assert_success(&out);
    let _ = bob.kill();
    let _ = bob.wait();
}

#[test]
fn watch_shows_an_approver_a_new_request_within_one_second() {
    let world = World::start();
    let mut watcher = world
        .ssh_command("bob", "bob")
        .arg("watch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("watching events for bob"), "{banner}");
    let reader = std::thread::spawn(move || {
        let line = lines.next().unwrap().unwrap();
        (line, Instant::now())
    });
    world.ok(
        "alice",
        "request web-01 --reason 'disk full' --ticket INC-7",
    );
    let acknowledged = Instant::now();
    let (line, seen) = reader.join().unwrap();
    assert!(
        line.contains("request 1 from alice for web-01 (30m), reason: disk full, ticket: INC-7")
            && line.contains("approve 1"),
        "{line}"
    );
    assert!(
        seen < acknowledged + Duration::from_secs(1),
        "the approver saw the request {:?} after it was acknowledged",
        seen.saturating_duration_since(acknowledged)
    );
    world.ok("bob", "approve 1");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// `user` running `watch --json`, given time to subscribe.
fn watch_json(world: &World, user: &str) -> (std::process::Child, Lines) {
    let mut watcher = world
        .ssh_command(user, user)
        .arg("watch --json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(500));
    (watcher, lines)
}

#[test]
fn an_approver_watching_hears_when_a_request_no_longer_needs_them() {
    let world = World::start();
    let (mut watcher, mut lines) = watch_json(&world, "bob");
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let taken = world.request("alice", "web-01 --for 10m");
    assert!(
        next()["message"]
            .as_str()
            .unwrap()
            .contains("awaits your approval")
    );
    world.ok("erin", &format!("approve {taken}"));
    assert_eq!(
        next()["message"],
        format!(
            "request {taken} no longer awaits your approval: erin approved request {taken} at level 1"
        )
    );
    let withdrawn = world.request("zoe", "web-01 --for 10m");
    assert!(
        next()["message"]
            .as_str()
            .unwrap()
            .contains("awaits your approval")
    );
    world.ok(
        "zoe",
        &format!("cancel {withdrawn} --reason fixed by a restart"),
    );
    assert_eq!(
        next()["message"],
        format!(
            "request {withdrawn} no longer awaits your approval: zoe cancelled request {withdrawn}: fixed by a restart"
        )
    );
    // bob's own decision is no news to him.
    let own = world.request("zoe", "web-01 --for 10m");
    assert!(
        next()["message"]
            .as_str()
            .unwrap()
            .contains("awaits your approval")
    );
    world.ok("bob", &format!("deny {own}"));
    let fourth = world.request("alice", "orders-prod --for 10m --reason x");
    let message = next()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("request {fourth} from alice")),
        "{message}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn watch_notifies_the_requester_of_approval_as_json_lines() {
    let world = World::start();
    let id = world.request("alice", "web-01");
    let (mut watcher, mut lines) = watch_json(&world, "alice");
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    world.ok("bob", &format!("approve {id}"));
    let first = next();
    assert_eq!(first["event"]["type"], "approved");
    let second = next();
    assert_eq!(second["event"]["type"], "granted");
    // With the next step: the checkout.
    assert_eq!(
        second["message"],
        format!("request {id} fully approved: checkout {id}")
    );
    // A request of two levels says who is left to ask.
    let db = world.request("alice", "orders-prod --reason two");
    let filed = next();
    let message = filed["message"].as_str().unwrap();
    assert!(
        message.ends_with("; needs 1 approval from group:sre-leads, then 1 approval from group:security (bob or erin may approve)"),
        "{message}"
    );
    world.ok("bob", &format!("approve {db}"));
    let halfway = next();
    let message = halfway["message"].as_str().unwrap();
    assert!(
        message.ends_with("; needs 1 approval from group:security (dave may approve)"),
        "{message}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn a_watcher_started_after_several_warnings_passed_is_warned_once() {
    let world = World::start_with(|text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"1h\", \"30m\", \"4s\"]",
        )
    });
    let id = world.lease_web("alice", "10s");
    let (mut watcher, mut lines) = watch_json(&world, "alice");
    let mut kinds = Vec::new();
    while !kinds.iter().any(|kind| kind == "ended") {
        let line = lines.next().unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let kind = value["event"]["type"].as_str().or(value["type"].as_str());
        kinds.push(kind.unwrap().to_string());
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    // The hour's and the half hour's warnings were both due at the start:
    // one line for them; the 4 s one comes on its own.
    let warnings = kinds
        .iter()
        .filter(|kind| *kind == "expiry_warning")
        .count();
    assert_eq!(warnings, 2, "request {id}: {kinds:?}");
}

#[test]
fn watch_tells_the_requester_of_denials_expiry_warnings_and_expiry() {
    let world = World::start_with(|text| {
        text.replace(
            "shutdown_grace = \"3s\"",
            "shutdown_grace = \"3s\"\nwarn_before = [\"4s\"]",
        )
    });
    let (mut watcher, mut lines) = watch_json(&world, "alice");
    let denied = world.request("alice", "web-01 --reason first");
    world.ok("bob", &format!("deny {denied} --reason 'not now'"));
    let id = world.request("alice", "web-01 --for 7s --reason second");
    world.ok("bob", &format!("approve {id}"));
    world.ok("alice", &format!("checkout {id}"));
    let checked_out = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|(kind, _)| kind == "ended") {
        let line = lines.next().unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let kind = value["event"]["type"]
            .as_str()
            .or(value["type"].as_str())
            .unwrap()
            .to_string();
        // Extended at the first warning: warned again before the new end.
        if kind == "expiry_warning" && !seen.iter().any(|(k, _)| k == &kind) {
            world.ok("alice", &format!("extend {id} --for 4s"));
            world.ok("bob", &format!("approve {id}"));
        }
        seen.push((kind, checked_out.elapsed()));
        assert!(checked_out.elapsed() < Duration::from_secs(20), "{seen:?}");
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let at = |kind: &str| {
        seen.iter()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind}: {seen:?}"))
            .1
    };
    at("denied");
    // Warned 4 s before the 7 s window ends, again 4 s before the end the
    // extension set, then told it ended.
    let warned = at("expiry_warning");
    assert!(
        warned >= Duration::from_millis(2500) && warned < Duration::from_secs(5),
        "{seen:?}"
    );
    let warnings: Vec<Duration> = seen
        .iter()
        .filter(|(k, _)| k == "expiry_warning")
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(warnings.len(), 2, "{seen:?}");
    assert!(warnings[1] >= Duration::from_secs(6), "{seen:?}");
    assert!(at("ended") >= Duration::from_secs(10), "{seen:?}");
    // Afterwards, her finished requests say how each ended.
    let mine = world.json("alice", "requests --all")["mine"].clone();
    let note_of = |id: u64| {
        let rows = mine.as_array().cloned().unwrap_or_default();
        let row = rows.iter().find(|r| r["id"] == id).cloned();
        row.and_then(|r| r["note"].as_str().map(String::from))
            .unwrap_or_default()
    };
    let refused = note_of(denied);
    assert!(refused.starts_with("denied by bob at "), "{mine}");
    assert!(refused.ends_with(" UTC: not now"), "{mine}");
    assert!(note_of(id).starts_with("expired at "), "{mine}");
}

#[test]
fn a_stalled_level_is_offered_to_escalation_approvers_as_it_escalates() {
    let world = World::start();
    // Set at runtime, as a workflow manager would.
    world.ok(
        "carol",
        "workflow set web-01 escalate_after.1=3s escalate_to.1=user:dave",
    );
    let shown = world.json("carol", "workflow show web-01");
    assert_eq!(
        shown["settings"]["approval_levels"][0]["escalate_to"][0], "user:dave",
        "{shown}"
    );
    let (mut watcher, mut lines) = watch_json(&world, "dave");
    let id = world.request("alice", "web-01 --reason stalled");
    let filed = Instant::now();
    assert!(
        world
            .refused("dave", &format!("approve {id}"))
            .contains("not an approver"),
        "dave may not approve before the escalation"
    );
    let line = lines.next().unwrap().unwrap();
    let offered = filed.elapsed();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["event"]["type"], "escalated", "{value}");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains(&format!("approve {id}")),
        "{value}"
    );
    // Not before the level escalates; as it does, give or take a loaded
    // machine's delays (dave's refused approval above has 3 s to run).
    assert!(
        offered >= Duration::from_millis(2500) && offered < Duration::from_secs(6),
        "offered after {offered:?}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    world.ok("dave", &format!("approve {id}"));
    assert_eq!(
        world.json("alice", "requests")["mine"][0]["state"],
        "approved"
    );
    assert!(world.audit_text().contains(r#""type":"escalated""#));
}

/// carol following the audit log (`args` after `audit tail`), and its
/// first line once it is out: stdin, stdout and stderr piped.
fn audit_tail(world: &World, args: &str) -> (std::process::Child, Lines, String) {
    let mut tail = world
        .ssh_command("carol", "carol")
        .arg(format!("audit tail {args}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    (tail, lines, first)
}

#[test]
fn audit_tail_follow_streams_new_records() {
    let world = World::start();
    let (mut tail, mut lines, _) = audit_tail(&world, "-n 1 -f");
    world.ok("alice", "request web-01 --reason followed");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = false;
    while Instant::now() < deadline {
        let line = lines.next().unwrap().unwrap();
        if line.contains("alice requested web-01") {
            found = true;
            break;
        }
    }
    assert!(found);
    // Ctrl-C on the stream's stdin stops it cleanly.
    tail.stdin.as_mut().unwrap().write_all(&[3]).unwrap();
    let status = tail.wait().unwrap();
    assert!(status.success());
}

#[test]
fn audit_tail_shows_one_user_or_resource_with_its_requests_and_the_last_n_of_them() {
    let world = World::start();
    let web = world.request("alice", "web-01 --reason filtered");
    world.ok("bob", &format!("approve {web}"));
    let db = world.request("zoe", "orders-prod --reason other");
    world.ok("bob", &format!("approve {db}"));
    world.ok("alice", &format!("checkout {web}"));
    let tail = |args: &str| world.ok("carol", &format!("audit tail -n 1000 {args}"));

    let web_01 = tail("--resource web-01");
    assert!(web_01.contains("alice requested web-01"), "{web_01}");
    // Approvals and checkouts name only their request: found through it.
    assert!(
        web_01.contains(&format!("bob approved request {web}")),
        "{web_01}"
    );
    assert!(
        web_01.contains(&format!("checked out request {web}")),
        "{web_01}"
    );
    assert!(!web_01.contains("orders-prod"), "{web_01}");
    assert!(!web_01.contains(&format!("request {db}")), "{web_01}");

    let zoe = tail("--user zoe");
    assert!(zoe.contains("zoe requested orders-prod"), "{zoe}");
    assert!(zoe.contains(&format!("bob approved request {db}")), "{zoe}");
    assert!(!zoe.contains("web-01"), "{zoe}");

    let both = tail("--user bob --resource orders-prod");
    assert!(
        both.contains(&format!("bob approved request {db}")),
        "{both}"
    );
    assert!(!both.contains(&format!("request {web}")), "{both}");

    // -n counts the records that pass the filter.
    let last = world.ok("carol", "audit tail -n 1 --resource web-01");
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(
        last.contains(&format!("checked out request {web}")),
        "{last}"
    );
    let none = world.ok("carol", "audit tail --resource nothing-here");
    assert!(none.is_empty(), "{none}");

    // --type picks record types and workflow changes, as webhooks do.
    let checkouts = tail("--type checked_out");
    assert_eq!(checkouts.lines().count(), 1, "{checkouts}");
    assert!(checkouts.contains(&format!("alice checked out request {web}")));
    let zoes = tail("--type requested,approved --user zoe");
    assert_eq!(zoes.lines().count(), 2, "{zoes}");
    assert!(zoes.contains("zoe requested orders-prod"), "{zoes}");
    let logins = tail("--type login");
    assert!(
        logins.lines().count() >= 5 && logins.lines().all(|l| l.contains(" login of ")),
        "{logins}"
    );
    let out = world.ssh("carol", "audit tail --type nonsense");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value 'nonsense' for '--type <TYPE>'") && err.contains("mfa_failure"),
        "{err}"
    );
}

#[test]
fn resources_lists_what_can_be_asked_for_and_where_the_caller_stands() {
    let world = World::start();
    let row = |user: &str, resource: &str| {
        let text = world.ok(user, "resources");
        let line = text
            .lines()
            .find(|l| l.starts_with(resource))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no {resource} row in:\n{text}"))
    };
    let orders = row("alice", "orders-prod");
    assert!(
        orders.contains("postgres")
            && orders.contains("reason, 2 approvals in 2 levels, MFA")
            && orders.ends_with("single-user, free"),
        "{orders}"
    );
    let web = row("alice", "web-01");
    assert!(
        web.contains("ssh") && web.contains("30m (max 8h)") && web.contains("1 approval"),
        "{web}"
    );
    assert!(!web.contains("MFA"), "web-01 needs no MFA here: {web}");

    let id = world.request("alice", "web-01 --for 1h");
    assert!(row("alice", "web-01").ends_with(&format!("request {id} pending")));
    world.ok("bob", &format!("approve {id}"));
    assert!(row("alice", "web-01").ends_with(&format!("request {id} approved: checkout {id}")));
    world.ok("alice", &format!("checkout {id}"));
    assert!(row("alice", "web-01").contains("mine until"));
    // Nothing of alice's shows to zoe on a resource many may use at once.
    assert!(
        row("zoe", "web-01").ends_with("1 approval"),
        "{}",
        row("zoe", "web-01")
    );

    // A single-user resource held by someone else: by whom (as `request`
    // says) and until when.
    let (pg, _) = world.lease_pg("alice", "1h");
    let taken = row("zoe", "orders-prod");
    assert!(
        taken.contains("single-user, held by alice until"),
        "{taken}"
    );
    let listed = world.json("zoe", "resources")["resources"].clone();
    let orders = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "orders-prod")
        .unwrap();
    assert_eq!(orders["held_by"]["user"], "alice", "{orders}");
    assert!(orders["held_by"]["until"].is_string(), "{orders}");
    assert!(orders["mine"].is_null(), "{orders}");
    assert_eq!(orders["approval_levels"].as_array().map(Vec::len), Some(2));
    assert!(
        orders["connect"].as_str().unwrap().contains("user=zoe"),
        "{orders}"
    );
    let mine = &world.json("alice", "resources")["resources"][0];
    assert_eq!(mine["mine"]["id"], pg, "{mine}");
    assert_eq!(mine["mine"]["state"], "active", "{mine}");

    // Runtime workflow changes are what `resources` shows.
    world.ok(
        "carol",
        "workflow set web-01 max_duration=2h default_duration=15m",
    );
    assert!(row("zoe", "web-01").contains("15m (max 2h)"));
    let unknown = world.refused("alice", "request web-02");
    assert!(unknown.contains("`resources` lists them"), "{unknown}");
}

#[test]
fn auditors_see_everyones_active_leases_and_others_only_their_own() {
    let world = World::start();
    for user in ["alice", "zoe"] {
        let id = world.request(user, "web-01 --for 1h");
        world.ok("bob", &format!("approve {id}"));
        world.ok(user, &format!("checkout {id}"));
    }
    let everyone = world.json("carol", "status --all")["leases"].clone();
    let holders: Vec<&str> = everyone
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["user"].as_str().unwrap())
        .collect();
    assert_eq!(holders, ["alice", "zoe"], "{everyone}");
    let text = world.ok("carol", "status --all");
    assert!(
        text.lines()
            .any(|l| l.contains("zoe") && l.contains("web-01")),
        "{text}"
    );
    // Nobody else's connect command: it would name its holder's login.
    assert!(!text.contains("ssh -p"), "{text}");
    assert!(everyone[0].get("connect").is_none(), "{everyone}");
    let mine = world.json("alice", "status")["leases"].clone();
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let refused = world.refused("alice", "status --all");
    assert!(refused.contains("needs the audit permission"), "{refused}");
}

#[test]
fn audit_tail_follow_stops_once_a_reload_takes_the_audit_permission_away() {
    let world = World::start();
    let (mut tail, mut lines, _) = audit_tail(&world, "-n 1 -f");
    world.reload_with(|text| {
        text.replace(
            "name = \"carol\"\nroles = [\"auditor\"]",
            "name = \"carol\"\nroles = [\"engineer\"]",
        )
    });
    // The reload's own record is the first one carol may no longer see.
    assert!(
        exits_within(&mut tail, Duration::from_secs(10)),
        "the tail went on after the reload"
    );
    let stderr = stderr_of(&mut tail);
    assert!(!tail.wait().unwrap().success());
    assert!(stderr.contains("needs the audit permission"), "{stderr}");
    assert!(lines.next().is_none());
}

#[test]
fn interactive_prompt_runs_commands_on_a_pty() {
    let world = World::start();
    let mut shell = world
        .ssh_command("alice", "alice")
        .arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = shell.stdin.as_mut().unwrap();
    stdin
        .write_all(b"request web-01 --reason 'from the prompt'\r")
        .unwrap();
    stdin.write_all(b"request nope\r").unwrap();
    // Ctrl-C drops the line typed so far, as in a shell, and the prompt
    // goes on.
    stdin.write_all(b"cancel 1\x03").unwrap();
    stdin.write_all(b"status\r").unwrap();
    // Up arrow: the last command again; Left arrow: no trace.
    stdin.write_all(b"\x1b[A\x1b[D\r").unwrap();
    // Tab completes commands and resource names; twice, it lists the choices.
    stdin.write_all(b"workf\tsh\tw\t\r").unwrap();
    stdin.write_all(b"req\t\t\x03").unwrap();
    stdin.write_all(b"exit\r").unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("signed in as alice"), "{text}");
    assert!(text.contains("request 1 for web-01"), "{text}");
    assert!(text.contains("cancel 1^C\r\njitgate> "), "{text}");
    assert!(!text.contains("cancelled request"), "{text}");
    // On a pty an error is on the terminal, in order, as under sshd.
    let refused = text.find("unknown resource \"nope\"");
    let status = text.find("no active leases");
    assert!(refused.is_some() && refused < status, "{text}");
    assert_eq!(text.matches("no active leases").count(), 2, "{text}");
    assert!(
        text.contains("workflow show web-01 \r\n# workflow of web-01"),
        "{text}"
    );
    assert!(
        text.contains("jitgate> request\r\nrequest  requests\r\njitgate> request^C"),
        "{text}"
    );
}

#[test]
fn the_prompt_greets_with_what_awaits_the_user() {
    let world = World::start();
    let greeting = |user: &str| {
        let out = world
            .ssh_command(user, user)
            .arg("-tt")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut shell| {
                shell.stdin.as_mut().unwrap().write_all(b"exit\r")?;
                shell.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = greeting("alice");
    assert!(
        first.contains("`resources` lists what you can request."),
        "{first}"
    );
    let web = world.request("alice", "web-01 --for 1h");
    world.request("zoe", "web-01 --for 1h");
    let bob = greeting("bob");
    assert!(
        bob.contains("2 requests await your approval: `requests` shows them."),
        "{bob}"
    );
    world.ok("bob", &format!("approve {web}"));
    world.ok("alice", &format!("checkout {web}"));
    let alice = greeting("alice");
    assert!(
        alice.contains("You hold web-01 until ") && alice.contains(&format!("(request {web}).")),
        "{alice}"
    );
    assert!(!alice.contains("`resources` lists"), "{alice}");
}

/// Alice's orders-prod request, approved by both levels, being checked out
/// on a terminal without `--totp` (so the gateway prompts for the code).
fn checkout_on_a_terminal(world: &World) -> (u64, std::process::Child) {
    let id = world.request("alice", "orders-prod --reason prompt");
    world.ok("bob", &format!("approve {id}"));
    world.ok("dave", &format!("approve {id}"));
    let checkout = world
        .ssh_command("alice", "alice")
        .arg("-tt")
        .arg(format!("checkout {id}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    (id, checkout)
}

#[test]
fn checkout_prompts_for_the_totp_code_on_a_terminal_without_echo() {
    let world = World::start();
    let (_, mut checkout) = checkout_on_a_terminal(&world);
    std::thread::sleep(Duration::from_millis(800));
    let code = world.totp("alice");
    checkout
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{code}\r").as_bytes())
        .unwrap();
    let out = checkout.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("TOTP code:"), "{text}");
    assert!(!text.contains(&code), "the code was echoed: {text}");
    assert!(text.contains("connection password"), "{text}");
}

#[test]
fn a_client_gone_at_the_totp_prompt_changes_nothing() {
    let world = World::start();
    let (id, mut checkout) = checkout_on_a_terminal(&world);
    let mut prompt = [0u8; 64];
    let read = std::io::Read::read(checkout.stdout.as_mut().unwrap(), &mut prompt).unwrap();
    assert!(String::from_utf8_lossy(&prompt[..read]).contains("TOTP code:"));
    // Half a code typed, then the client is gone.
    let stdin = checkout.stdin.as_mut().unwrap();
    stdin.write_all(b"123").unwrap();
    stdin.flush().unwrap();
    checkout.kill().unwrap();
    let _ = checkout.wait();
    assert!(
        wait_until(Duration::from_secs(10), || world.open_connections("ssh")
            == Some(0.0)),
        "the prompting command outlived its client"
    );

    let requests = world.json("alice", "requests");
    assert_eq!(requests["mine"][0]["state"], "approved", "{requests}");
    assert!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    world.ok(
        "alice",
        &format!("checkout {id} --totp {}", world.totp("alice")),
    );
    assert!(
        world.json("alice", "status")["leases"][0]["id"].as_u64() == Some(id),
        "the request was still there to check out"
    );
}

#[test]
fn unknown_keys_and_users_are_refused_and_audited() {
    let world = World::start();
    let out = world
        .ssh_command("alice", "bob")
        .arg("status")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let out = world
        .ssh_command("mallory", "bob")
        .arg("status")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let audit = world.audit_text();
    assert!(audit.contains(r#""user":"mallory""#) && audit.contains("unknown user or key"));
    assert!(world.metrics().contains("jitgate_ssh_auth_failures_total"));
}

#[test]
fn resource_logins_without_a_lease_say_what_to_do() {
    let world = World::start();
    let refusal = || {
        let out = world
            .ssh_command("alice+web-01", "alice")
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refusal();
    assert!(
        err.contains("no active lease for web-01") && err.contains("request web-01"),
        "{err}"
    );
    // The next step follows the request: wait for its approval, then check out.
    let id = world.request("alice", "web-01 --for 1h");
    let err = refusal();
    assert!(
        err.contains(&format!(
            "no active lease for web-01: request {id} needs 1 approval from group:sre-leads"
        )),
        "{err}"
    );
    world.ok("bob", &format!("approve {id}"));
    let err = refusal();
    assert!(
        err.contains(&format!("request {id} is approved"))
            && err.contains(&format!("checkout {id}")),
        "{err}"
    );
}

#[test]
fn bad_input_gets_clean_errors_and_the_gateway_stays_up() {
    let world = World::start();
    let huge = format!("request web-01 --reason {}", "x".repeat(20_000));
    let err = world.refused("alice", &huge);
    assert!(err.contains("command too long"), "{err}");
    let raw = std::ffi::OsStr::from_bytes(b"request \xff\xfe web");
    let out = world
        .ssh_command("alice", "alice")
        .arg(raw)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));
    let garbage = world.refused("alice", "approve -- -- --json 'unterminated");
    assert!(garbage.contains("cannot parse"), "{garbage}");
    assert!(world.refused("alice", "request").contains("RESOURCE"));
    // A client that disconnects mid-command.
    let mut watcher = world
        .ssh_command("alice", "alice")
        .arg("watch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    watcher.kill().unwrap();
    let _ = watcher.wait();
    assert_eq!(
        world.json("alice", "status")["leases"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(
        world.json("alice", "requests")["mine"]
            .as_array()
            .unwrap()
            .is_empty(),
        "refused commands changed state"
    );
}

#[test]
fn two_hundred_concurrent_control_sessions_are_served() {
    let world = World::start();
    let mut children = Vec::new();
    for i in 0..200 {
        let user = ["alice", "zoe", "bob", "erin"][i % 4];
        children.push(
            world
                .ssh_command(user, user)
                .arg("status --json")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok()
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    assert!(wait_until(Duration::from_secs(5), || world
        .json("alice", "status")["leases"]
        .is_array()));
}

/// Writes `count` audit records fast: Postgres logins without TLS, each
/// refused and audited, from four threads.
fn refused_logins(world: &World, count: usize) {
    let mut packet = Vec::new();
    let params = b"user\0alice\0database\0orders-prod\0\0";
    packet.extend_from_slice(&(8 + params.len() as u32).to_be_bytes());
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(params);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (port, packet) = (world.pg_port, packet.clone());
            std::thread::spawn(move || {
                for _ in 0..count / 4 {
                    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    stream.write_all(&packet).unwrap();
                    let mut answer = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
                    assert!(String::from_utf8_lossy(&answer).contains("requires TLS"));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

fn seq_of(line: &str) -> u64 {
    let record: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    record["seq"].as_u64().unwrap()
}

#[test]
fn audit_tail_misses_no_record_however_far_behind_its_reader_falls_and_resumes_after_a_seq() {
    // Small audit files, so the records span rotated ones.
    let world = World::start_with(|text| {
        text.replace("[gateway]\n", "[gateway]\naudit_rotate_bytes = 262144\n")
    });
    let (mut tail, mut lines, first) = audit_tail(&world, "-n 1 -f --json");
    let first = seq_of(&first);
    // Far more than the live stream buffers (4096 records) and the SSH
    // window and pipe hold, written while nothing reads the tail.
    let written = 12_000;
    refused_logins(&world, written);
    for expected in first + 1..=first + written as u64 {
        assert_eq!(seq_of(&lines.next().unwrap().unwrap()), expected);
    }
    tail.stdin.as_mut().unwrap().write_all(&[3]).unwrap();
    assert!(tail.wait().unwrap().success());
    assert!(!world.log().contains("fell"), "{}", world.log());

    // A reader that stopped at a seq goes on from there, across files.
    let resumed = world.ok("carol", &format!("audit tail --json --after {first}"));
    let seqs: Vec<u64> = resumed.lines().map(seq_of).collect();
    assert_eq!(
        seqs[..written],
        (first + 1..=first + written as u64).collect::<Vec<_>>()[..]
    );
    let files = jitgate::audit::chain_files(&world.path("audit/audit.log")).unwrap();
    assert!(files.len() > 3, "{files:?}");

    // A reader asking from a moment gets every record since, however many
    // windows and files back it lies.
    std::thread::sleep(Duration::from_millis(30));
    let moment = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let head = world.metric("jitgate_audit_head_seq").unwrap() as u64;
    std::thread::sleep(Duration::from_millis(30));
    let since_written = 6_000;
    refused_logins(&world, since_written);
    // A refusal is audited once the client has its answer (each on disk
    // before the next: a loaded machine takes a while for thousands).
    let written = head + since_written as u64;
    assert!(wait_until(Duration::from_secs(60), || world
        .metric("jitgate_audit_head_seq")
        .is_some_and(|seq| seq as u64 >= written)));
    let since = world.ok("carol", &format!("audit tail --json --since {moment}"));
    let seqs: Vec<u64> = since.lines().map(seq_of).collect();
    assert_eq!(
        seqs[..since_written],
        (head + 1..=head + since_written as u64).collect::<Vec<_>>()[..]
    );
    let refused = world.refused("carol", "audit tail --since yesterday");
    assert!(refused.contains("how long ago (2h, 1d)"), "{refused}");
}

#[test]
fn security_teams_see_every_users_requests_and_what_each_waits_on() {
    let world = World::start();
    let web = world.request("alice", "web-01 --reason one");
    let db = world.request("zoe", "orders-prod --reason two");
    let approved = world.ok("bob", &format!("approve {db}"));
    assert!(
        approved.ends_with("needs 1 approval from group:security (dave may approve)\n"),
        "{approved}"
    );
    let row = |text: &str, id: u64| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")));
        line.unwrap_or_else(|| panic!("no row {id} in:\n{text}"))
            .to_string()
    };
    let listed = world.ok("carol", "requests --everyone");
    let alice = row(&listed, web);
    assert!(
        alice.contains("alice") && alice.contains("pending") && alice.contains("web-01"),
        "{alice}"
    );
    // Who may approve it now, by name, so anyone reading knows whom to ask.
    assert!(
        alice.ends_with("needs 1 approval from group:sre-leads (bob or erin may approve)"),
        "{alice}"
    );
    let zoe = row(&listed, db);
    assert!(zoe.contains("zoe") && zoe.contains("orders-prod"), "{zoe}");
    assert!(
        zoe.ends_with("needs 1 approval from group:security (dave may approve)"),
        "the level it waits on now: {zoe}"
    );

    let refused = world.refused("alice", "requests --everyone");
    assert!(refused.contains("needs the audit permission"), "{refused}");
    // Narrowed to one user or resource.
    let zoes = world.json("carol", "requests --everyone --user zoe")["requests"].clone();
    assert_eq!(zoes.as_array().map(Vec::len), Some(1), "{zoes}");
    assert_eq!(zoes[0]["id"], db);
    let webs = world.json("carol", "requests --everyone --resource web-01")["requests"].clone();
    assert_eq!(webs.as_array().map(Vec::len), Some(1), "{webs}");
    assert_eq!(webs[0]["id"], web);
    let none = world.ok("carol", "requests --everyone --user zoe --resource web-01");
    assert_eq!(none, "no open requests\n");
    let out = world.ssh("carol", "requests --user zoe");
    assert_eq!(out.status.code(), Some(2), "--user needs --everyone");

    world.ok("alice", &format!("cancel {web}"));
    let open = world.json("carol", "requests --everyone")["requests"].clone();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["requester"], "zoe");
    let all = world.ok("carol", "requests --everyone --all");
    assert!(row(&all, web).contains("cancelled"), "{all}");
}
