//! Each class of config mistake is refused with an error naming the key.

use super::*;

const BASE: &str = r#"
[roles]
engineer = ["request"]
approver = ["approve"]
[groups.sre]
roles = ["approver"]
[[user]]
name = "alice"
roles = ["engineer"]
[[user]]
name = "bob"
groups = ["sre"]
[[resource]]
name = "web-01"
kind = "ssh"
address = "127.0.0.1:22"
account = "deploy"
[resource.workflow]
approval_levels = [{ approvers = ["group:sre"] }]
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/jitgate/jitgate.toml"), text)
}

fn problem(text: &str) -> String {
    load(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jitgate.example.toml");
    let config = Config::load(&path).unwrap();
    assert!(config.resources.contains_key("orders-prod"));
    assert!(config.directory.has("carol", Permission::Audit));
    assert!(config.directory.has("bob", Permission::Approve));
}

#[test]
fn defaults_fill_in_and_paths_resolve_against_the_file() {
    let config = load(BASE).unwrap();
    assert_eq!(config.listen.ssh.port(), 2222);
    assert_eq!(config.listen.postgres.port(), 6432);
    assert_eq!(config.state_dir, Path::new("/etc/jitgate/state"));
    assert_eq!(config.mfa.max_failures, 5);
    assert_eq!(
        config.resources["web-01"].workflow.default_duration,
        HumanDuration::from_secs(1800)
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let message = problem("[gateway\nstate_dir = 1");
    assert!(
        message.starts_with("/etc/jitgate/jitgate.toml:"),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn unknown_keys_are_refused() {
    let message = problem(&format!("{BASE}\n[mfa]\nmax_fialures = 3\n"));
    assert!(message.contains("max_fialures"), "{message}");
    let message = problem(&BASE.replace(
        "account = \"deploy\"",
        "account = \"deploy\"\nacount = \"x\"",
    ));
    assert!(message.contains("acount"), "{message}");
}

#[test]
fn malformed_durations_are_refused_with_the_key() {
    let message = problem(&BASE.replace(
        "approval_levels",
        "max_duration = \"8 hours\"\napproval_levels",
    ));
    assert!(
        message.contains("max_duration") || message.contains("8 hours"),
        "{message}"
    );
    assert!(message.contains("invalid duration"), "{message}");
}

#[test]
fn out_of_range_values_are_refused() {
    let cases = [
        (
            BASE.replace(
                "approval_levels",
                "default_duration = \"9h\"\napproval_levels",
            ),
            "default_duration",
        ),
        (
            BASE.replace("approval_levels", "max_duration = \"0s\"\napproval_levels"),
            "max_duration",
        ),
        (
            BASE.replace("[\"group:sre\"] }", "[\"group:sre\"], required = 0 }"),
            "required",
        ),
        (
            format!("{BASE}\n[mfa]\nmax_failures = 0\n"),
            "mfa.max_failures",
        ),
        (
            format!("[listen]\nssh = \"0.0.0.0:99999\"\n{BASE}"),
            "listen.ssh",
        ),
        (
            format!("[ssh]\nclient_alive_interval = \"0s\"\n{BASE}"),
            "ssh.client_alive_interval",
        ),
        (
            format!("[ssh]\nclient_alive_count_max = 0\n{BASE}"),
            "ssh.client_alive_count_max",
        ),
        (
            format!("[ssh]\nidle_timeout = \"0s\"\n{BASE}"),
            "ssh.idle_timeout",
        ),
    ];
    for (text, key) in cases {
        let message = problem(&text);
        assert!(message.contains(key), "expected {key} in {message}");
    }
}

#[test]
fn unknown_references_are_refused() {
    let cases = [
        (
            BASE.replace("roles = [\"engineer\"]", "roles = [\"wizard\"]"),
            "unknown role \"wizard\"",
        ),
        (
            BASE.replace("group:sre", "group:nobody"),
            "unknown approver group:nobody",
        ),
        (
            BASE.replace("group:sre", "user:mallory"),
            "unknown approver mallory",
        ),
        (
            BASE.replace("approver = [\"approve\"]", "approver = [\"fly\"]"),
            "unknown permission \"fly\"",
        ),
        (
            BASE.replace("kind = \"ssh\"", "kind = \"rdp\""),
            "\"rdp\" is not ssh or postgres",
        ),
        (
            BASE.replace("kind = \"ssh\"", "kind = \"postgres\""),
            "database",
        ),
    ];
    for (text, expected) in cases {
        let message = problem(&text);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
    }
}

#[test]
fn duplicate_and_invalid_names_are_refused() {
    let dup_user = format!("{BASE}\n[[user]]\nname = \"alice\"\n");
    assert!(problem(&dup_user).contains("duplicate user name \"alice\""));
    let dup_resource = format!(
        "{BASE}\n[[resource]]\nname = \"web-01\"\nkind = \"ssh\"\naddress = \"h:22\"\naccount = \"x\"\n"
    );
    assert!(problem(&dup_resource).contains("duplicate resource name \"web-01\""));
    let plus = BASE.replace("name = \"web-01\"", "name = \"web+01\"");
    assert!(problem(&plus).contains("resource[0].name"));
}

#[test]
fn bad_addresses_and_keys_are_refused() {
    assert!(problem(&BASE.replace("127.0.0.1:22", "localhost")).contains("resource[0].address"));
    let bad_key = BASE.replace(
        "roles = [\"engineer\"]",
        "roles = [\"engineer\"]\nssh_keys = [\"ssh-ed25519 notbase64!\"]",
    );
    assert!(problem(&bad_key).contains("user[0].ssh_keys"));
    let missing_file = BASE.replace(
        "roles = [\"engineer\"]",
        "roles = [\"engineer\"]\nssh_key_files = [\"nope.pub\"]",
    );
    assert!(problem(&missing_file).contains("user[0].ssh_key_files"));
}

#[test]
fn a_reconcile_account_comes_with_its_credential() {
    let postgres = BASE.replace(
        "kind = \"ssh\"\naddress = \"127.0.0.1:22\"\naccount = \"deploy\"",
        "kind = \"postgres\"\naddress = \"127.0.0.1:5432\"\naccount = \"app\"\ndatabase = \"db\"",
    );
    let with = |base: &str, keys: &str| {
        base.replace(
            "[resource.workflow]",
            &format!("{keys}\n[resource.workflow]"),
        )
    };
    let both = "reconcile_account = \"admin\"\nreconcile_credential_file = \"credentials/admin\"";
    let ssh = load(&with(BASE, both)).unwrap();
    assert_eq!(
        ssh.resources["web-01"].reconcile.clone().unwrap().account,
        "admin"
    );
    let config = load(&with(&postgres, both)).unwrap();
    let reconcile = config.resources["web-01"].reconcile.clone().unwrap();
    assert_eq!(reconcile.account, "admin");
    assert_eq!(
        reconcile.credential_file,
        Path::new("/etc/jitgate/credentials/admin")
    );
    assert!(
        load(&postgres).unwrap().resources["web-01"]
            .reconcile
            .is_none()
    );
    let cases = [
        (
            with(&postgres, "reconcile_account = \"admin\""),
            "reconcile_credential_file",
        ),
        (
            with(&postgres, "reconcile_credential_file = \"admin\""),
            "reconcile_account",
        ),
        (
            with(&postgres, &both.replace("\"admin\"", "\"app\"")),
            "other than the managed account",
        ),
    ];
    for (text, expected) in cases {
        let message = problem(&text);
        assert!(
            message.contains(expected),
            "expected {expected} in {message}"
        );
    }
}

#[test]
fn leftover_processes_and_sessions_are_ended_unless_turned_off() {
    let with = |base: &str, keys: &str| {
        base.replace(
            "[resource.workflow]",
            &format!("{keys}\n[resource.workflow]"),
        )
    };
    assert!(load(BASE).unwrap().resources["web-01"].end_leftover_processes);
    let off = load(&with(BASE, "end_leftover_processes = false")).unwrap();
    assert!(!off.resources["web-01"].end_leftover_processes);
    let postgres = BASE.replace(
        "kind = \"ssh\"\naddress = \"127.0.0.1:22\"\naccount = \"deploy\"",
        "kind = \"postgres\"\naddress = \"127.0.0.1:5432\"\naccount = \"app\"\ndatabase = \"db\"",
    );
    assert!(load(&postgres).unwrap().resources["web-01"].end_leftover_processes);
    let off = load(&with(&postgres, "end_leftover_processes = false")).unwrap();
    assert!(!off.resources["web-01"].end_leftover_processes);
}

#[test]
fn two_resources_cannot_manage_one_account() {
    let second = BASE.to_string()
        + "\n[[resource]]\nname = \"web-01-tunnel\"\nkind = \"ssh\"\naddress = \"127.0.0.1:22\"\naccount = \"deploy\"\n";
    let message = problem(&second);
    assert!(
        message.contains("resource[1].account")
            && message.contains("already managed by resource \"web-01\""),
        "{message}"
    );
    let other_account = second.replace(
        "name = \"web-01-tunnel\"\nkind = \"ssh\"\naddress = \"127.0.0.1:22\"\naccount = \"deploy\"",
        "name = \"web-01-tunnel\"\nkind = \"ssh\"\naddress = \"127.0.0.1:22\"\naccount = \"tunnel\"",
    );
    assert_eq!(load(&other_account).unwrap().resources.len(), 2);
}

#[test]
fn webhooks_need_an_http_url_without_credentials_and_known_event_names() {
    let with = |section: &str| format!("{BASE}\n[[webhook]]\n{section}\n");
    let ok = load(&with(
        "url = \"https://hooks.example.com/T0/B0/secret\"\nevents = [\"requested\", \"workflow\"]",
    ))
    .unwrap();
    assert_eq!(ok.webhooks[0].url.host(), Some("hooks.example.com"));
    assert_eq!(ok.webhooks[0].events.as_ref().unwrap().len(), 2);
    for (section, expected) in [
        ("url = \"ftp://example.com/\"", "http:// or https://"),
        (
            "url = \"https://user:pw@example.com/\"",
            "no user or password",
        ),
        (
            "url = \"http://example.com/\"\nca_file = \"ca.crt\"",
            "only for https",
        ),
        (
            "url = \"http://example.com/\"\nevents = [\"aproved\"]",
            "unknown event",
        ),
        ("url = \"http://example.com/\"\nretries = 3", "retries"),
        (
            "url = \"http://example.com/a\"\n[[webhook]]\nurl = \"http://example.com/a\"",
            "webhook[1].url: the same URL as webhook[0]",
        ),
    ] {
        let message = problem(&with(section));
        assert!(message.contains(expected), "{section}: {message}");
    }
}

#[test]
fn penalties_default_to_on_with_loopback_exempt_and_refuse_bad_settings() {
    let config = load(BASE).unwrap();
    assert!(config.penalties.enabled());
    assert!(config.penalties.exempts("127.0.0.1".parse().unwrap()));
    assert!(config.penalties.exempts("::1".parse().unwrap()));
    assert!(!config.penalties.exempts("192.0.2.1".parse().unwrap()));

    let with = |section: &str| format!("{BASE}\n[penalties]\n{section}\n");
    let off = load(&with("per_failure = \"0s\"")).unwrap();
    assert!(!off.penalties.enabled());
    let nets = load(&with("exempt = [\"10.0.0.0/8\", \"2001:db8::1\"]")).unwrap();
    assert!(nets.penalties.exempts("10.9.8.7".parse().unwrap()));
    assert!(nets.penalties.exempts("2001:db8::1".parse().unwrap()));
    assert!(!nets.penalties.exempts("127.0.0.1".parse().unwrap()));

    let message = problem(&with("exempt = [\"10.0.0.0/33\"]"));
    assert!(
        message.contains("penalties.exempt") && message.contains("10.0.0.0/33"),
        "{message}"
    );
    let message = problem(&with("threshold = \"10m\"\nmax = \"5m\""));
    assert!(message.contains("penalties.max"), "{message}");
}

/// The names serde knows for an internally tagged enum's variants, read
/// from the error a made-up tag gets, so no variant can be left out of
/// the webhook event names unnoticed.
fn variant_names<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let error = serde_json::from_str::<T>(r#"{"type":"no such variant"}"#).unwrap_err();
    let message = error.to_string();
    let (_, listed) = message
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{message}"));
    listed
        .split(", ")
        .map(|name| name.split('`').nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn webhooks_may_ask_for_every_audit_record_type_and_workflow_change() {
    let audit = variant_names::<crate::audit::AuditEvent>();
    let workflow = variant_names::<crate::workflow::Event>();
    assert!(
        audit.len() > 20 && workflow.len() > 10,
        "{audit:?} {workflow:?}"
    );
    for name in audit.iter().chain(&workflow) {
        assert!(
            webhook::EVENT_NAMES.contains(&name.as_str()),
            "{name} is missing from the webhook event names"
        );
    }
    assert_eq!(webhook::EVENT_NAMES.len(), audit.len() + workflow.len());
}
