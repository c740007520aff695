//! Credential vault and rotation against real PostgreSQL and sshd targets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{World, exits_within, stderr_of, wait_until};

/// Whether `password` logs in to the target directly as the managed role.
fn pg_direct_works(world: &World, password: &str) -> bool {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(world.pg().server.port.to_string())
        .args(["-U", "orders_app", "-d", "orders", "-c", "select 1"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        // Shown with the test's failure: why the database said no.
        eprintln!("direct psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// Whether the private key file `key` logs in to the SSH target directly.
fn ssh_direct_works(world: &World, key: &std::path::Path) -> bool {
    world
        .direct_ssh(key)
        .arg("true")
        .output()
        .unwrap()
        .status
        .success()
}

fn rotated(world: &World, resource: &str, times: usize) -> bool {
    wait_until(Duration::from_secs(30), || {
        rotations_succeeded(world, resource) >= times
    })
}

fn rotations_succeeded(world: &World, resource: &str) -> usize {
    rotation_events(world, resource, "rotation_succeeded")
}

/// How many audit records of `kind` (`rotation_started`, ...) name `resource`.
fn rotation_events(world: &World, resource: &str, kind: &str) -> usize {
    world
        .audit_text()
        .matches(&format!(r#""resource":"{resource}","type":"{kind}""#))
        .count()
}

#[test]
fn check_in_rotates_both_credentials_removes_planted_keys_and_the_old_ones_stop_working() {
    let world = World::with_both_targets(&["log_statement=all"], |t| t);
    let old_password = world.pg().password.clone();
    let old_key = world.ssh_target.as_ref().unwrap().key.clone();

    // Postgres: a session, then check-in.
    let (pg_id, lease_password) = world.lease_pg("alice", "10m");
    let (out, err, ok) = world.psql_run("alice", &lease_password, "select 1");
    assert!(ok && out == "1", "{err}");
    world.ok("alice", &format!("checkin {pg_id}"));
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    assert!(
        !pg_direct_works(&world, &old_password),
        "the old password still works"
    );
    let vault = world.vault();
    let new_password = vault.current("orders-prod").unwrap();
    assert_ne!(new_password.expose(), old_password);
    assert!(new_password.expose().len() >= 64);
    assert!(pg_direct_works(&world, new_password.expose()));
    // The plaintext never reached the server log (log_statement=all shows
    // the ALTER ROLE with a verifier) nor the gateway's own files.
    let server_log = world.pg().server.server_log();
    assert!(server_log.contains("ALTER ROLE"), "statement logging is on");
    assert!(server_log.contains("SCRAM-SHA-256$"));
    for (name, text) in [
        ("server log", server_log),
        ("serve log", world.log()),
        ("audit", world.audit_text()),
        ("query logs", world.query_logs()),
    ] {
        assert!(
            !text.contains(new_password.expose()),
            "new password in the {name}"
        );
    }
    // The next user's session through the gateway works.
    let (_, zoe_password) = world.lease_pg("zoe", "10m");
    let (out, err, ok) = world.psql_run("zoe", &zoe_password, "select current_user");
    assert!(ok, "{err}");
    assert_eq!(out, "orders_app");

    // SSH: plant a key during the window, then check in.
    let web_id = world.lease_web("alice", "10m");
    // sshd reads authorized_keys2 too unless configured otherwise.
    let planted = [
        plant_key(&world, "planted", ">> ~/.ssh/authorized_keys"),
        plant_key(&world, "planted2", ">> ~/.ssh/authorized_keys2"),
    ];
    for key in &planted {
        assert!(
            ssh_direct_works(&world, key),
            "the planted key {key:?} works during the window"
        );
    }
    world.ok("alice", &format!("checkin {web_id}"));
    assert!(rotated(&world, "web-01", 1), "{}", world.audit_text());
    for key in &planted {
        assert!(
            !ssh_direct_works(&world, key),
            "the planted key {key:?} survived rotation"
        );
        let fingerprint = fingerprint_of(key);
        assert!(
            world.audit_text().contains(&format!(
                r#""fingerprint":"{fingerprint}","resource":"web-01","type":"planted_key_removed""#
            )),
            "{}",
            world.audit_text()
        );
    }
    assert!(
        !ssh_direct_works(&world, &old_key),
        "the old managed key still works"
    );
    let carol = world.ok("carol", "audit tail -n 50");
    assert!(carol.contains("planted key removed from web-01"), "{carol}");
    // The next session through the gateway uses the new key.
    world.lease_web("zoe", "10m");
    let out = world
        .target_ssh("zoe", "web-01")
        .arg("echo fresh-key")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fresh-key");

    // vault list: metadata, never a secret.
    let listed = Command::new(common::BIN)
        .args(["vault", "list", "--config"])
        .arg(world.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    assert!(
        text.contains("orders-prod") && text.contains("password") && text.contains("current"),
        "{text}"
    );
    assert!(!text.contains(new_password.expose()));
}

/// The SHA-256 fingerprint of the key pair at `key`, as ssh-keygen prints it.
fn fingerprint_of(key: &std::path::Path) -> String {
    let listed = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Whether the vault's current credential of `resource` works directly.
fn vault_credential_works(world: &World, resource: &str) -> bool {
    let current = world.vault().current(resource).unwrap();
    if resource == "orders-prod" {
        return pg_direct_works(world, current.expose());
    }
    let key = world.path("vault-key-check");
    jitgate::secret::write_secret_file(&key, current.expose()).unwrap();
    ssh_direct_works(world, &key)
}

#[test]
fn a_crash_at_any_phase_of_a_rotation_converges_on_restart() {
    let mut world = World::with_both_targets(&[], |t| t);
    for resource in ["orders-prod", "web-01"] {
        for point in ["after_pending", "after_apply", "after_confirm"] {
            world.signal("TERM");
            world.wait_exit(Duration::from_secs(10));
            world.launch_with_fault(Some(&format!("rotation:{point}")));
            let out = world.ssh("root", &format!("rotate {resource}"));
            assert!(
                !out.status.success(),
                "{resource} {point}: the gateway should have crashed"
            );
            world.wait_exit(Duration::from_secs(10));
            assert!(
                world
                    .log()
                    .contains(&format!("fault injected at rotation:{point}"))
            );
            let succeeded_before = rotations_succeeded(&world, resource);
            world.launch();
            // The restarted gateway settles the interrupted rotation by itself
            // (keeping whichever secret the target accepts) and then finishes
            // the rotation that was asked for. Waiting for the pending secret
            // alone would race that second step, which replaces the key the
            // check below reads.
            assert!(
                rotated(&world, resource, succeeded_before + 1),
                "{resource} {point}: the interrupted rotation was not finished"
            );
            assert!(
                world.vault().pending(resource).is_none(),
                "{resource} {point}: still pending"
            );
            assert!(
                vault_credential_works(&world, resource),
                "{resource} {point}: the vault's credential does not work"
            );
        }
    }
    // And a normal rotation afterwards works end to end.
    let out = world.ok("root", "rotate orders-prod");
    assert!(
        out.contains("rotated the credential of orders-prod"),
        "{out}"
    );
    let current = world.vault().current("orders-prod").unwrap();
    assert!(pg_direct_works(&world, current.expose()));
    let (_, password) = world.lease_pg("alice", "10m");
    let (_, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(ok, "{err}");
}

/// The background loop sees the pending secret of a rotation asked for by
/// hand; once that rotation is done it must not rotate again (a second
/// rotation would also change the secret under anyone who just read it).
#[test]
fn a_rotation_due_while_another_runs_is_not_done_twice() {
    let mut world = World::with_pg_target(&[], |t| t);
    world.signal("TERM");
    world.wait_exit(Duration::from_secs(10));
    world.launch_with_fault(Some("rotation:after_pending:pause"));
    let started = |world: &World| rotation_events(world, "orders-prod", "rotation_started");
    let before = started(&world);
    // Held after its pending secret is stored for longer than a scan.
    let out = world.ok("root", "rotate orders-prod");
    assert!(
        out.contains("rotated the credential of orders-prod"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(started(&world), before + 1, "{}", world.audit_text());
    let current = world.vault().current("orders-prod").unwrap();
    assert!(pg_direct_works(&world, current.expose()));
}

#[test]
fn a_target_down_during_rotation_keeps_the_old_secret_and_converges_when_it_returns() {
    let world = World::with_pg_target(&[], |t| t);
    let old_password = world.pg().password.clone();
    let (id, _) = world.lease_pg("alice", "10m");
    world.pg().server.stop();
    world.ok("alice", &format!("checkin {id}"));
    assert!(wait_until(Duration::from_secs(30), || world
        .audit_text()
        .contains(
            r#""resource":"orders-prod","type":"rotation_failed""#
        )));
    assert_eq!(
        world.vault().current("orders-prod").unwrap().expose(),
        old_password
    );
    let listed = Command::new(common::BIN)
        .args(["vault", "list", "--config"])
        .arg(world.config_path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("rotation pending"));
    // The single-user resource is not handed out meanwhile.
    let id = world.request("zoe", "orders-prod --for 10m --reason next");
    world.ok("bob", &format!("approve {id}"));
    world.ok("dave", &format!("approve {id}"));
    let refused = world.refused(
        "zoe",
        &format!("checkout {id} --totp {}", world.totp("zoe")),
    );
    assert!(refused.contains("rotating its credential"), "{refused}");
    world.pg().server.restart(&[]).unwrap();
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    assert!(!pg_direct_works(&world, &old_password));
    // Now the next holder gets the resource.
    std::thread::sleep(Duration::from_secs(
        31 - (chrono::Utc::now().timestamp() % 30) as u64,
    ));
    let out = world.json(
        "zoe",
        &format!("checkout {id} --totp {}", world.totp("zoe")),
    );
    let (_, err, ok) = world.psql_run("zoe", out["password"].as_str().unwrap(), "select 1");
    assert!(ok, "{err}");
}

#[test]
fn a_wrong_key_or_tampered_vault_refuses_to_start_and_writers_are_exclusive() {
    let mut world = World::with_pg_target(&[], |t| t);
    // While the gateway runs, an offline writer is refused.
    let secret = world.path("new-password");
    jitgate::secret::write_secret_file(&secret, "whatever-password").unwrap();
    let out = Command::new(common::BIN)
        .args(["vault", "set", "orders-prod", "--password-file"])
        .arg(&secret)
        .arg("--config")
        .arg(world.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running gateway"));
    world.signal("TERM");
    world.wait_exit(Duration::from_secs(10));

    // A world-readable secret file is refused.
    std::fs::write(world.path("loose"), "pw").unwrap();
    let out = Command::new(common::BIN)
        .args(["vault", "set", "orders-prod", "--password-file"])
        .arg(world.path("loose"))
        .arg("--config")
        .arg(world.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let vault_path = world.path("state/vault.json");
    let original = std::fs::read_to_string(&vault_path).unwrap();
    assert!(
        !original.contains(&world.pg().password),
        "the vault file holds the password in clear"
    );

    let serve = World::serve_once;
    // Tampered record.
    let mut tampered: serde_json::Value = serde_json::from_str(&original).unwrap();
    let sealed = &mut tampered["records"]["orders-prod"]["current"]["ciphertext"];
    let text = sealed.as_str().unwrap().to_string();
    let prefix = if text.starts_with("AAAA") {
        "BBBB"
    } else {
        "AAAA"
    };
    *sealed = format!("{prefix}{}", &text[4..]).into();
    std::fs::write(&vault_path, tampered.to_string()).unwrap();
    let out = serve(&world);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tampered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Truncated file.
    std::fs::write(&vault_path, &original[..original.len() / 2]).unwrap();
    let out = serve(&world);
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupted"));
    // Wrong master key.
    std::fs::write(&vault_path, &original).unwrap();
    let key_path = world.path("state/vault.key");
    let real_key = std::fs::read(&key_path).unwrap();
    jitgate::vault::generate_key_file(&key_path).unwrap();
    let out = serve(&world);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
    // Missing master key with an existing vault.
    std::fs::remove_file(&key_path).unwrap();
    let out = serve(&world);
    assert!(String::from_utf8_lossy(&out.stderr).contains("restore the key"));
    // The right key again: it starts, nothing was lost.
    std::fs::write(&key_path, &real_key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    world.launch();
    let (_, password) = world.lease_pg("alice", "10m");
    let (_, err, ok) = world.psql_run("alice", &password, "select 1");
    assert!(ok, "{err}");
}

#[test]
fn credentials_also_rotate_on_their_schedule() {
    let world = World::with_ssh_target(|text| {
        text.replacen(
            "kind = \"ssh\"\n",
            "kind = \"ssh\"\nrotation_interval = \"10s\"\n",
            1,
        )
    });
    let before = world.vault().current("web-01").unwrap();
    assert!(rotated(&world, "web-01", 1), "{}", world.audit_text());
    assert!(world.audit_text().contains(r#""reason":"scheduled""#));
    assert_ne!(
        world.vault().current("web-01").unwrap().expose(),
        before.expose()
    );
    assert!(vault_credential_works(&world, "web-01"));
    assert!(
        world
            .metrics()
            .contains(r#"jitgate_rotations_total{outcome="succeeded"}"#)
    );
}

#[test]
fn an_account_that_cannot_replace_its_keys_fails_rotation_clearly_and_keeps_working() {
    let world = World::with_ssh_target(|t| t);
    let target = world.ssh_target.as_ref().unwrap();
    let ssh_dir = target.sshd.home.join(".ssh");
    // root owns the key directory: the managed account cannot write there.
    Command::new("chown")
        .args(["-R", "root:root"])
        .arg(&ssh_dir)
        .status()
        .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&ssh_dir)
        .status()
        .unwrap();
    let out = world.ssh("root", "rotate web-01");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rotation of web-01 failed") && err.contains("authorized_keys"),
        "{err}"
    );
    assert!(
        world
            .audit_text()
            .contains(r#""resource":"web-01","type":"rotation_failed""#)
    );
    assert!(
        vault_credential_works(&world, "web-01"),
        "the working key was lost"
    );
    world.lease_web("alice", "10m");
    let out = world
        .target_ssh("alice", "web-01")
        .arg("echo still-in")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still-in");
    // A secret file that does not exist is a clear error too.
    let out = Command::new(common::BIN)
        .args([
            "vault",
            "set",
            "web-01",
            "--key-file",
            "/nonexistent/key",
            "--config",
        ])
        .arg(world.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key"));
}

#[test]
fn a_resource_added_by_a_reload_brings_its_credential_into_the_vault() {
    let world = World::start();
    let credential = world.path("db2-password");
    jitgate::secret::write_secret_file(&credential, "db2-secret").unwrap();
    world.reload_with(|text| {
        format!(
            "{text}\n[[resource]]\nname = \"db-2\"\nkind = \"postgres\"\naddress = \"127.0.0.1:1\"\naccount = \"app2\"\ndatabase = \"db\"\ncredential_file = \"{}\"\n",
            credential.display()
        )
    });
    assert!(wait_until(Duration::from_secs(10), || world
        .audit_text()
        .contains(r#""resource":"db-2","type":"credential_imported""#)));
    assert_eq!(
        world.vault().current("db-2").unwrap().expose(),
        "db2-secret"
    );
}

/// Adds a new key of alice's to web-01's managed account from inside her
/// window (`redirect` says where: `>> ~/.ssh/authorized_keys` appends, `>`
/// replaces the file); returns the key.
fn plant_key(world: &World, name: &str, redirect: &str) -> std::path::PathBuf {
    let planted = world.path(name);
    jitgate::targets::ensure_ssh_key(&planted, name).unwrap();
    let planted_public = std::fs::read_to_string(planted.with_extension("pub")).unwrap();
    let status = world
        .target_ssh("alice", "web-01")
        .arg(format!("echo '{}' {redirect}", planted_public.trim()))
        .status()
        .unwrap();
    assert!(status.success());
    planted
}

/// Alice, through the gateway with her lease password, gives the managed
/// role the password 'mine'.
fn set_managed_password_to_mine(world: &World, lease_password: &str) {
    let (_, err, ok) = world.psql_run(
        "alice",
        lease_password,
        "ALTER ROLE CURRENT_USER PASSWORD 'mine'",
    );
    assert!(ok, "{err}");
}

/// A role on the Postgres target that may reset orders_app's password.
fn create_reconcile_role(world: &World) {
    world
        .pg()
        .server
        .sql(
            "orders",
            "CREATE ROLE jitgate_admin LOGIN CREATEROLE PASSWORD 'admin-secret'; \
             GRANT orders_app TO jitgate_admin WITH ADMIN OPTION",
        )
        .unwrap();
}

/// Config `text` with orders-prod reconciled by jitgate_admin, whose
/// password is in `file`.
fn with_reconcile_role(text: &str, file: &std::path::Path) -> String {
    text.replacen(
        "account = \"orders_app\"\n",
        &format!(
            "account = \"orders_app\"\nreconcile_account = \"jitgate_admin\"\nreconcile_credential_file = \"{}\"\n",
            file.display()
        ),
        1,
    )
}

#[test]
fn a_password_set_inside_a_window_fails_rotation_loudly_and_a_reconcile_role_resets_it() {
    let mut world = World::with_pg_target(&[], |t| t);
    let admin_file = world.path("orders-admin-password");
    create_reconcile_role(&world);
    jitgate::secret::write_secret_file(&admin_file, "admin-secret").unwrap();

    // Inside the window, alice gives the managed role a password she knows.
    let (id, lease_password) = world.lease_pg("alice", "10m");
    set_managed_password_to_mine(&world, &lease_password);
    world.ok("alice", &format!("checkin {id}"));

    // Without a reconcile role the gateway cannot log in to rotate: the
    // failure is audited and retried, never passed over.
    assert!(wait_until(Duration::from_secs(30), || rotation_events(
        &world,
        "orders-prod",
        "rotation_failed"
    ) >= 1));
    assert!(
        world
            .audit_text()
            .contains("refused the gateway's credential")
    );
    assert_eq!(rotations_succeeded(&world, "orders-prod"), 0);

    // A reconcile role whose password file cannot be read is refused at
    // reload, naming it, and the old config stays.
    let original = std::fs::read_to_string(world.config_path()).unwrap();
    world.reload_with(|_| with_reconcile_role(&original, &world.path("no-such-file")));
    assert!(wait_until(Duration::from_secs(10), || world
        .audit_text()
        .contains(
            "cannot read the reconcile_credential_file of orders-prod"
        )));

    // With one, the next attempt resets the password and rotates.
    world.reload_with(|_| with_reconcile_role(&original, &admin_file));
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    assert_eq!(
        rotation_events(&world, "orders-prod", "credential_reconciled"),
        1
    );
    assert!(
        !pg_direct_works(&world, "mine"),
        "the password set inside the window outlived it"
    );
    let current = world.vault().current("orders-prod").unwrap();
    assert!(pg_direct_works(&world, current.expose()));
    // The gateway logs in again (zoe: alice's TOTP code may not be fresh
    // yet), and no secret reached the audit log.
    let (_, lease_password) = world.lease_pg("zoe", "10m");
    let (out, err, ok) = world.psql_run("zoe", &lease_password, "select 1");
    assert!(ok && out == "1", "{err}");
    let audit = world.audit_text();
    for secret in ["admin-secret", "mine'", current.expose()] {
        assert!(!audit.contains(secret), "the audit log holds {secret:?}");
    }

    // Nor does the gateway start with an unreadable one.
    world.signal("TERM");
    world.wait_exit(Duration::from_secs(10));
    std::fs::remove_file(&admin_file).unwrap();
    let out = world.serve_once();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the reconcile_credential_file of orders-prod"),
        "{err}"
    );
}

#[test]
fn a_password_changed_mid_window_is_reset_at_once_so_other_users_get_back_in() {
    let secrets = tempfile::tempdir().unwrap();
    let admin_file = secrets.path().join("orders-admin-password");
    jitgate::secret::write_secret_file(&admin_file, "admin-secret").unwrap();
    let world = World::with_pg_target(&[], |text| {
        with_reconcile_role(
            &text.replace("single_user = true", "single_user = false"),
            &admin_file,
        )
    });
    create_reconcile_role(&world);
    let (_, alice_password) = world.lease_pg("alice", "10m");
    let (_, zoe_password) = world.lease_pg("zoe", "10m");
    set_managed_password_to_mine(&world, &alice_password);

    // Zoe's next login is refused by the target; that starts a rotation
    // at once, long before either lease ends.
    let (_, err, ok) = world.psql_run("zoe", &zoe_password, "select 1");
    assert!(!ok);
    assert!(err.contains("could not open a session"), "{err}");
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    assert_eq!(
        rotation_events(&world, "orders-prod", "credential_reconciled"),
        1
    );
    assert!(
        world
            .audit_text()
            .contains("the target refused the managed credential")
    );
    assert!(!pg_direct_works(&world, "mine"));
    let (out, err, ok) = world.psql_run("zoe", &zoe_password, "select 1");
    assert!(ok && out == "1", "{err}");
    // Both leases are still active: the rotation ended nobody's window.
    let status = world.ok("alice", "status");
    assert!(status.contains("orders-prod"), "{status}");
}

#[test]
fn a_managed_key_removed_from_inside_a_window_is_reported_at_the_next_login() {
    let world = World::with_ssh_target(|t| t);
    let web_id = world.lease_web("alice", "10m");
    // Alice swaps the gateway's key for her own.
    plant_key(&world, "planted", "> ~/.ssh/authorized_keys");
    // The gateway's next login is refused; that alone starts a rotation,
    // which cannot log in either and fails loudly, long before the lease
    // ends (this resource has no reconcile account).
    let out = world
        .target_ssh("alice", "web-01")
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        wait_until(Duration::from_secs(30), || rotation_events(
            &world,
            "web-01",
            "rotation_failed"
        ) >= 1),
        "{}",
        world.audit_text()
    );
    assert!(
        world
            .audit_text()
            .contains("the target refused the managed credential")
    );
    let status = world.ok("alice", "status");
    assert!(
        status.contains("web-01"),
        "the lease {web_id} is still active: {status}"
    );
}

/// Alice, inside her window on web-01, starts `sleep SECONDS` detached
/// from her session, the way `nohup` or `setsid` outlive a logout.
fn leave_running(world: &World, seconds: &str) {
    let status = world
        .target_ssh("alice", "web-01")
        .arg(format!(
            "setsid -f sleep {seconds} </dev/null >/dev/null 2>&1"
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `account` runs a live (not zombie) process whose command line
/// is `command`, seen on the target host itself.
fn runs(world: &World, command: &str) -> bool {
    let account = &world.ssh_target.as_ref().unwrap().sshd.account;
    let listed = Command::new("ps")
        .args(["-o", "stat=,args=", "-u", account])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout).lines().any(|line| {
        let (stat, args) = line.trim().split_once(' ').unwrap_or_default();
        !stat.starts_with('Z') && args.trim() == command
    })
}

/// Waits until the gateway has fingerprinted web-01's startup files.
fn wait_for_first_baseline(world: &World) {
    let baselines = world.path("state/baselines.json");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &baselines
        )
        .is_ok_and(|text| text.contains("web-01"))),
        "no first fingerprints of web-01's startup files: {}",
        world.log()
    );
}

/// `startup_files_changed` records of web-01, as JSON.
fn startup_changes(world: &World) -> Vec<serde_json::Value> {
    world
        .audit_text()
        .lines()
        .filter(|line| line.contains(r#""type":"startup_files_changed""#))
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["event"].clone())
        .collect()
}

#[test]
fn processes_a_window_left_running_are_ended_when_it_closes() {
    let world = World::with_ssh_target(|t| t);
    wait_for_first_baseline(&world);
    let web_id = world.lease_web("alice", "10m");
    leave_running(&world, "4242.25");
    // She also leaves footholds that run without any login of hers.
    let status = world
        .target_ssh("alice", "web-01")
        .arg(
            "echo '# mine' >> ~/.bashrc && mkdir -p ~/.config/systemd/user \
             && echo '[Service]' > ~/.config/systemd/user/mine.service \
             && echo true | at now + 1 hour 2>/dev/null",
        )
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(5), || runs(&world, "sleep 4242.25")),
        "the detached process outlives the ssh session"
    );
    // While anyone's window is open, the account's processes may be
    // theirs: the rotation after alice's check-in leaves them alone.
    let zoe_id = world.lease_web("zoe", "10m");
    world.ok("alice", &format!("checkin {web_id}"));
    assert!(rotated(&world, "web-01", 1), "{}", world.audit_text());
    assert!(runs(&world, "sleep 4242.25"), "ended inside zoe's window");
    // Her edits are reported at the first rotation after them, once.
    let changes = startup_changes(&world);
    assert_eq!(changes.len(), 1, "{}", world.audit_text());
    assert_eq!(
        changes[0]["files"],
        serde_json::json!([".bashrc", ".config/systemd/user", "at-jobs"])
    );
    world.ok("zoe", &format!("checkin {zoe_id}"));
    assert!(rotated(&world, "web-01", 2), "{}", world.audit_text());
    assert_eq!(startup_changes(&world).len(), 1, "{}", world.audit_text());
    assert!(
        !runs(&world, "sleep 4242.25"),
        "the leftover process survived"
    );
    let audit = world.audit_text();
    assert!(
        audit.contains(r#""ended":["sleep ("#) && audit.contains("leftover_processes_ended"),
        "{audit}"
    );
    let record = audit
        .lines()
        .find(|line| line.contains("leftover_processes_ended"))
        .unwrap();
    assert!(
        !record.contains("4242.25"),
        "arguments are recorded: {record}"
    );
    let carol = world.ok("carol", "audit tail -n 50");
    assert!(
        carol.contains("processes left running on web-01 after its windows: ended sleep ("),
        "{carol}"
    );
    assert!(
        carol.contains("startup files of web-01's managed account changed")
            && carol.contains(": .bashrc, .config/systemd/user, at-jobs"),
        "{carol}"
    );
    // The gateway's own logins left nothing to report: one event only.
    assert_eq!(
        rotation_events(&world, "web-01", "leftover_processes_ended"),
        1
    );
    world.lease_web("zoe", "10m");
    // (Zoe clears the queue, which outlives the test's account.)
    let out = world
        .target_ssh("zoe", "web-01")
        .arg("atrm $(atq | cut -f1) && echo next")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "next");
}

#[test]
fn an_account_that_also_runs_services_can_keep_its_processes() {
    let world = World::with_ssh_target(|t| {
        t.replacen(
            "account = \"jg",
            "end_leftover_processes = false\naccount = \"jg",
            1,
        )
    });
    let web_id = world.lease_web("alice", "10m");
    leave_running(&world, "4243.5");
    world.ok("alice", &format!("checkin {web_id}"));
    assert!(rotated(&world, "web-01", 1), "{}", world.audit_text());
    assert!(runs(&world, "sleep 4243.5"), "the process was ended anyway");
    assert!(!world.audit_text().contains("leftover_processes"));
}

/// A gateway whose web-01 has root as its reconcile account (on that sshd
/// only, with a key of its own, kept in the returned directory).
fn with_root_reconcile() -> (World, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root_key = dir.path().join("root-key");
    jitgate::targets::ensure_ssh_key(&root_key, "reconcile").unwrap();
    let world = World::with_ssh_target(|t| {
        t.replacen(
            "account = \"jg",
            &format!(
                "reconcile_account = \"root\"\nreconcile_credential_file = \"{}\"\naccount = \"jg",
                root_key.display()
            ),
            1,
        )
    });
    let public = std::fs::read_to_string(root_key.with_extension("pub")).unwrap();
    let target = world.ssh_target.as_ref().unwrap();
    target.sshd.allow_root_key(public.trim()).unwrap();
    (world, dir)
}

#[test]
fn a_managed_key_swapped_inside_a_window_is_put_back_by_the_reconcile_account() {
    let (world, _root_key) = with_root_reconcile();
    wait_for_first_baseline(&world);
    let web_id = world.lease_web("alice", "10m");
    leave_running(&world, "4244.5");
    // Alice swaps the gateway's key for her own and breaks her account's
    // shell for everyone who logs in after her.
    let planted = plant_key(&world, "planted", "> ~/.ssh/authorized_keys");
    let status = world
        .direct_ssh(&planted)
        .arg("sed -i '1i echo hijacked; exit 0' ~/.bashrc")
        .status()
        .unwrap();
    assert!(status.success());
    // The gateway's next login is refused, which starts a rotation at
    // once; root puts a fresh gateway key in, her .bashrc notwithstanding.
    let refused = world
        .target_ssh("alice", "web-01")
        .arg("true")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(rotated(&world, "web-01", 1), "{}", world.audit_text());
    let audit = world.audit_text();
    assert!(
        audit.contains(r#""account":"root","resource":"web-01","type":"credential_reconciled""#),
        "{audit}"
    );
    let fingerprint = fingerprint_of(&planted);
    assert!(
        audit.contains(&format!(r#""fingerprint":"{fingerprint}""#)),
        "{audit}"
    );
    assert!(!ssh_direct_works(&world, &planted), "her key survived");
    // Root read her .bashrc, however it now answers logins.
    let changes = startup_changes(&world);
    assert_eq!(changes.len(), 1, "{}", world.audit_text());
    assert_eq!(changes[0]["files"], serde_json::json!([".bashrc"]));
    // Inside her window her processes are hers.
    assert!(runs(&world, "sleep 4244.5"));
    world.ok("alice", &format!("checkin {web_id}"));
    assert!(rotated(&world, "web-01", 2), "{}", world.audit_text());
    // Root ended it, whatever her .bashrc does to the account's logins.
    assert!(
        !runs(&world, "sleep 4244.5"),
        "the leftover process survived"
    );
    assert!(world.audit_text().contains(r#""ended":["sleep ("#));
}

/// Runs `script` as root on the target host, in the managed account's home.
fn as_admin_on_target(world: &World, script: &str) {
    let account = &world.ssh_target.as_ref().unwrap().sshd.account;
    let status = Command::new("sh")
        .args(["-c", &format!("cd ~{account} && {script}")])
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn a_single_user_resource_is_held_back_while_processes_of_its_last_window_survive() {
    let mut world = World::with_ssh_target(|t| {
        t.replacen(
            "mfa_required = false\n",
            "single_user = true\nmfa_required = false\n",
            1,
        )
    });
    let web_id = world.lease_web("alice", "10m");
    leave_running(&world, "4245.5");
    // Without a reconcile account the gateway's looks run through the
    // account's own shell, whose `kill` alice turns into a no-op.
    let status = world
        .target_ssh("alice", "web-01")
        .arg("{ echo 'kill() { :; }'; cat ~/.bashrc; } > ~/.b && mv ~/.b ~/.bashrc")
        .status()
        .unwrap();
    assert!(status.success());
    world.ok("alice", &format!("checkin {web_id}"));
    let could_not_end = |world: &World| {
        world.audit_text().lines().any(|line| {
            line.contains("leftover_processes_ended") && line.contains(r#""remaining":["sleep ("#)
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || could_not_end(&world)),
        "{}",
        world.audit_text()
    );
    let zoe_id = world.request("zoe", "web-01 --for 10m --reason test");
    world.ok("bob", &format!("approve {zoe_id}"));
    let refused = world.refused("zoe", &format!("checkout {zoe_id}"));
    assert!(
        refused.contains(
            "web-01 is held back: processes a window left running on it could not be ended"
        ),
        "{refused}"
    );
    let held = r#"jitgate_rotation_mark{resource="web-01",mark="processes_left_running"}"#;
    assert!(
        world.metrics().contains(&format!("{held} 1")),
        "{}",
        world.metrics()
    );
    let carol = world.ok("carol", "audit tail -n 50");
    assert!(
        carol.contains("processes left running on web-01 after its windows: COULD NOT END sleep ("),
        "{carol}"
    );
    // Still held back after a crash and restart.
    world.kill_hard();
    world.launch();
    let refused = world.refused("zoe", &format!("checkout {zoe_id}"));
    assert!(refused.contains("web-01 is held back"), "{refused}");
    assert!(
        world.metrics().contains(&format!("{held} 1")),
        "{}",
        world.metrics()
    );
    assert!(runs(&world, "sleep 4245.5"));
    let listed = Command::new(common::BIN)
        .args(["vault", "list", "--config"])
        .arg(world.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("rotates again: processes a window left running are not ended yet"),
        "{text}"
    );
    // A damaged record of it refuses the start rather than forgetting it.
    world.signal("TERM");
    world.wait_exit(Duration::from_secs(10));
    let marks = world.path("state/rotation_marks.json");
    let text = std::fs::read_to_string(&marks).unwrap();
    assert!(text.contains("processes_left_running"), "{text}");
    std::fs::write(&marks, &text[..text.len() / 2]).unwrap();
    let out = world.serve_once();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rotation_marks.json"), "{err}");
    std::fs::write(&marks, &text).unwrap();
    world.launch();
    // An administrator repairs the account; the gateway's next try ends
    // the process and web-01 is handed out again.
    as_admin_on_target(&world, "sed -i 1d .bashrc");
    assert!(
        wait_until(Duration::from_secs(60), || world
            .ssh("zoe", &format!("checkout {zoe_id}"))
            .status
            .success()),
        "{}",
        world.audit_text()
    );
    assert!(
        !runs(&world, "sleep 4245.5"),
        "the leftover process survived"
    );
    assert!(
        world.metrics().contains(&format!("{held} 0")),
        "{}",
        world.metrics()
    );
    assert!(world.audit_text().contains(r#""ended":["sleep ("#));
}

#[test]
fn sessions_a_window_opened_past_the_gateway_are_ended_when_it_closes() {
    let admin = tempfile::tempdir().unwrap();
    let admin_file = admin.path().join("orders-admin-password");
    jitgate::secret::write_secret_file(&admin_file, "admin-secret").unwrap();
    let world = World::with_pg_target(&[], |t| with_reconcile_role(&t, &admin_file));
    create_reconcile_role(&world);
    // Inside her window alice gives the managed role her own password and
    // opens a session straight to the database with it.
    let (id, lease_password) = world.lease_pg("alice", "10m");
    set_managed_password_to_mine(&world, &lease_password);
    let mut direct = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p"])
        .arg(world.pg().server.port.to_string())
        .args([
            "-U",
            "orders_app",
            "-d",
            "orders",
            "-c",
            "select pg_sleep(600)",
        ])
        .env("PGPASSWORD", "mine")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || world
        .pg()
        .managed_backends()
        == 1));
    world.ok("alice", &format!("checkin {id}"));
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    // Resetting her password does not end a session already logged in:
    // the rotation does.
    assert!(
        exits_within(&mut direct, Duration::from_secs(10)),
        "her direct session outlived the window"
    );
    let stderr = stderr_of(&mut direct);
    assert!(stderr.contains("administrator command"), "{stderr}");
    let audit = world.audit_text();
    let record = audit
        .lines()
        .find(|line| line.contains("leftover_processes_ended"))
        .unwrap_or_else(|| panic!("{audit}"));
    let event: serde_json::Value = serde_json::from_str(record).unwrap();
    let ended = event["event"]["ended"].as_array().unwrap();
    assert_eq!(ended.len(), 1, "only hers, none of the gateway's: {record}");
    assert!(
        ended[0]
            .as_str()
            .unwrap()
            .starts_with("psql from 127.0.0.1 ("),
        "{record}"
    );
    assert_eq!(world.pg().managed_backends(), 0);
}

/// `roles_changed` records of orders-prod: the roles each names.
fn role_changes(world: &World) -> Vec<serde_json::Value> {
    world
        .audit_text()
        .lines()
        .filter(|line| line.contains(r#""type":"roles_changed""#))
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["event"]["roles"].clone()
        })
        .collect()
}

/// `user` leases orders-prod, runs `sql` through the gateway and checks
/// in; returns the `roles_changed` records once rotation `nth` is done.
fn window_running(world: &World, user: &str, sql: &str, nth: usize) -> Vec<serde_json::Value> {
    let (id, lease_password) = world.lease_pg(user, "10m");
    let (_, err, ok) = world.psql_run(user, &lease_password, sql);
    assert!(ok, "{err}");
    world.ok(user, &format!("checkin {id}"));
    assert!(rotated(world, "orders-prod", nth), "{}", world.audit_text());
    role_changes(world)
}

#[test]
fn roles_a_window_created_or_changed_are_reported_at_the_next_rotation() {
    let world = World::with_pg_target(&[], |t| t);
    // The managed role may create roles; the gateway sees that change
    // too, at the rotation after it.
    world
        .pg()
        .server
        .sql("postgres", "ALTER ROLE orders_app CREATEROLE")
        .unwrap();
    world.ok("root", "rotate orders-prod");
    assert!(rotated(&world, "orders-prod", 1), "{}", world.audit_text());
    let settled = role_changes(&world).len();
    assert!(settled <= 1, "{}", world.audit_text());

    // Alice leaves a login of her own behind.
    let changes = window_running(
        &world,
        "alice",
        "CREATE ROLE backdoor LOGIN PASSWORD 'hers'",
        2,
    );
    assert_eq!(changes.len(), settled + 1, "{}", world.audit_text());
    assert_eq!(changes[settled], serde_json::json!(["backdoor"]));
    let carol = world.ok("carol", "audit tail -n 50");
    assert!(
        carol.contains("roles on orders-prod's target changed") && carol.contains(": backdoor"),
        "{carol}"
    );
    assert!(!world.audit_text().contains("hers"));

    // Zoe changes what the next holder's sessions start with.
    let changes = window_running(
        &world,
        "zoe",
        "ALTER ROLE CURRENT_USER SET search_path = 'mine, public'",
        3,
    );
    assert_eq!(changes.len(), settled + 2, "{}", world.audit_text());
    assert_eq!(changes[settled + 1], serde_json::json!(["orders_app"]));
}
