//! Turns the parsed file into a typed [`Config`], checking every reference and range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::file::{ConfigFile, GroupSection, ResourceSection, UserSection};
use super::{
    Config, ConfigError, Directory, Listen, Mfa, Permission, PostgresSettings, Principal, Resource,
    Tls, User, WorkflowSettings,
};

pub(super) struct Checker<'a> {
    path: &'a Path,
    base: PathBuf,
}

impl Checker<'_> {
    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn address(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse()
            .map_err(|_| self.invalid(key, format!("{text:?} is not an IP:PORT address")))
    }

    pub(super) fn name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if is_valid_name(name) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!("{name:?} is not a valid name: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
            ))
        }
    }
}

/// Names appear in SSH usernames (`alice+web-01`) and Postgres startup
/// packets, so they are kept to a small, unambiguous alphabet.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn validate(path: &Path, file: ConfigFile) -> Result<Config, ConfigError> {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let check = Checker { path, base };

    let listen = Listen {
        ssh: check.address("listen.ssh", &file.listen.ssh)?,
        postgres: check.address("listen.postgres", &file.listen.postgres)?,
        http: check.address("listen.http", &file.listen.http)?,
    };
    check_limits(&check, &file)?;
    let postgres = validate_postgres(&check, &file.postgres)?;
    let roles = validate_roles(&check, &file.roles)?;
    validate_groups(&check, &file.groups, &roles)?;
    let directory = validate_users(&check, &file, &roles)?;
    let resources = validate_resources(&check, file.resources, &directory)?;

    let webhooks = super::webhook::validate_webhooks(&check, file.webhooks, &resources)?;
    Ok(Config {
        path: path.to_path_buf(),
        state_dir: check.resolve(&file.gateway.state_dir),
        audit_log: check.resolve(&file.gateway.audit_log),
        audit_rotate_bytes: file.gateway.audit_rotate_bytes,
        shutdown_grace: file.gateway.shutdown_grace.as_duration(),
        journal_compact_records: file.gateway.journal_compact_records,
        listen,
        ssh_host_key: check.resolve(&file.ssh.host_key),
        ssh_auth_timeout: file.ssh.auth_timeout.as_duration(),
        ssh_client_alive_interval: file.ssh.client_alive_interval.as_duration(),
        ssh_client_alive_count_max: file.ssh.client_alive_count_max,
        ssh_idle_timeout: file.ssh.idle_timeout.as_duration(),
        recordings_dir: check.resolve(&file.ssh.recordings_dir),
        record_input: file.ssh.record_input,
        record_exec_bytes: file.ssh.record_exec_bytes,
        env_allow: file.ssh.env_allow,
        warn_before: file
            .gateway
            .warn_before
            .iter()
            .map(|d| d.as_duration())
            .collect(),
        tls: file.tls.map(|tls| Tls {
            cert: check.resolve(&tls.cert),
            key: check.resolve(&tls.key),
            client_root_cert: tls.client_root_cert,
            client_host: tls.client_host,
        }),
        postgres,
        vault_path: file
            .vault
            .path
            .as_deref()
            .map(|p| check.resolve(p))
            .unwrap_or_else(|| check.resolve(&file.gateway.state_dir).join("vault.json")),
        vault_master_key_file: file
            .vault
            .master_key_file
            .as_deref()
            .map(|p| check.resolve(p)),
        mfa: Mfa {
            issuer: file.mfa.issuer,
            max_failures: file.mfa.max_failures,
            lockout: file.mfa.lockout.as_duration(),
        },
        directory,
        resources,
        webhooks,
        penalties: super::penalties::validate_penalties(&check, file.penalties)?,
    })
}

/// Numbers that must not be zero (or too small to work).
fn check_limits(check: &Checker, file: &ConfigFile) -> Result<(), ConfigError> {
    if file.mfa.max_failures == 0 {
        return Err(check.invalid("mfa.max_failures", "must be at least 1"));
    }
    if file.gateway.journal_compact_records < 10 {
        return Err(check.invalid("gateway.journal_compact_records", "must be at least 10"));
    }
    if file.gateway.audit_rotate_bytes < 4096 {
        return Err(check.invalid("gateway.audit_rotate_bytes", "must be at least 4096"));
    }
    for (key, value) in [
        ("ssh.client_alive_interval", &file.ssh.client_alive_interval),
        ("ssh.idle_timeout", &file.ssh.idle_timeout),
    ] {
        if value.as_duration().is_zero() {
            return Err(check.invalid(key, "must be longer than 0s"));
        }
    }
    if file.ssh.client_alive_count_max == 0 {
        return Err(check.invalid("ssh.client_alive_count_max", "must be at least 1"));
    }
    Ok(())
}

fn validate_groups(
    check: &Checker,
    groups: &BTreeMap<String, GroupSection>,
    roles: &BTreeMap<String, BTreeSet<Permission>>,
) -> Result<(), ConfigError> {
    for (group, section) in groups {
        check.name(&format!("groups.{group}"), group)?;
        for role in &section.roles {
            if !roles.contains_key(role) {
                return Err(check.invalid(
                    format!("groups.{group}.roles"),
                    format!("unknown role {role:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_resources(
    check: &Checker,
    sections: Vec<ResourceSection>,
    directory: &Directory,
) -> Result<BTreeMap<String, Resource>, ConfigError> {
    let mut resources = BTreeMap::new();
    for (index, section) in sections.into_iter().enumerate() {
        let resource = super::resource::validate_resource(check, index, section, directory)?;
        if resources.contains_key(&resource.name) {
            return Err(check.invalid(
                format!("resource[{index}].name"),
                format!("duplicate resource name {:?}", resource.name),
            ));
        }
        // Each rotation replaces the account's whole credential (all of
        // authorized_keys, the role's password): two resources on one
        // account would lock each other out at every rotation.
        if let Some(other) = resources.values().find(|other: &&Resource| {
            other.kind == resource.kind
                && other.address == resource.address
                && other.account == resource.account
        }) {
            return Err(check.invalid(
                format!("resource[{index}].account"),
                format!(
                    "{} at {} is already managed by resource {:?}; two resources cannot share an account",
                    resource.account, resource.address, other.name
                ),
            ));
        }
        resources.insert(resource.name.clone(), resource);
    }

    Ok(resources)
}

fn validate_postgres(
    check: &Checker,
    section: &super::file::PostgresSection,
) -> Result<PostgresSettings, ConfigError> {
    if section.max_connections_per_user == 0 {
        return Err(check.invalid("postgres.max_connections_per_user", "must be at least 1"));
    }
    if !(1024..=(1 << 30)).contains(&section.max_message_bytes) {
        return Err(check.invalid(
            "postgres.max_message_bytes",
            "must be between 1024 and 1073741824 (PostgreSQL's own limit)",
        ));
    }
    for (key, value) in [
        ("postgres.idle_timeout", &section.idle_timeout),
        ("postgres.auth_timeout", &section.auth_timeout),
        ("postgres.connect_timeout", &section.connect_timeout),
    ] {
        if value.as_duration().is_zero() {
            return Err(check.invalid(key, "must be longer than 0s"));
        }
    }
    Ok(PostgresSettings {
        client_auth: section.client_auth,
        query_log_dir: check.resolve(&section.query_log_dir),
        log_parameters: section.log_parameters,
        max_connections_per_user: section.max_connections_per_user,
        idle_timeout: section.idle_timeout.as_duration(),
        auth_timeout: section.auth_timeout.as_duration(),
        connect_timeout: section.connect_timeout.as_duration(),
        max_message_bytes: section.max_message_bytes as usize,
    })
}

fn validate_roles(
    check: &Checker,
    roles: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, BTreeSet<Permission>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (role, permissions) in roles {
        check.name(&format!("roles.{role}"), role)?;
        let parsed = permissions
            .iter()
            .map(|p| {
                Permission::parse(p).ok_or_else(|| {
                    check.invalid(
                        format!("roles.{role}"),
                        format!("unknown permission {p:?}: use request, approve, manage_workflow, audit or admin"),
                    )
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        out.insert(role.clone(), parsed);
    }
    Ok(out)
}

fn validate_users(
    check: &Checker,
    file: &ConfigFile,
    roles: &BTreeMap<String, BTreeSet<Permission>>,
) -> Result<Directory, ConfigError> {
    let mut users = BTreeMap::new();
    for (index, section) in file.users.iter().enumerate() {
        let user = validate_user(check, index, section, file, roles)?;
        if users.contains_key(&user.name) {
            return Err(check.invalid(
                format!("user[{index}].name"),
                format!("duplicate user name {:?}", user.name),
            ));
        }
        users.insert(user.name.clone(), user);
    }
    let groups = file
        .groups
        .keys()
        .cloned()
        .chain(users.values().flat_map(|u| u.groups.iter().cloned()))
        .collect();
    Ok(Directory { users, groups })
}

fn validate_user(
    check: &Checker,
    index: usize,
    section: &UserSection,
    file: &ConfigFile,
    roles: &BTreeMap<String, BTreeSet<Permission>>,
) -> Result<User, ConfigError> {
    let key = |field: &str| format!("user[{index}].{field}");
    check.name(&key("name"), &section.name)?;
    let mut permissions = BTreeSet::new();
    let mut role_names: Vec<&String> = section.roles.iter().collect();
    for group in &section.groups {
        check.name(&key("groups"), group)?;
        if let Some(g) = file.groups.get(group) {
            role_names.extend(g.roles.iter());
        }
    }
    for role in role_names {
        let granted = roles
            .get(role)
            .ok_or_else(|| check.invalid(key("roles"), format!("unknown role {role:?}")))?;
        permissions.extend(granted.iter().copied());
    }
    let mut ssh_keys = Vec::new();
    for text in &section.ssh_keys {
        ssh_keys.push(normalize_public_key(text).map_err(|p| check.invalid(key("ssh_keys"), p))?);
    }
    for key_file in &section.ssh_key_files {
        let resolved = check.resolve(key_file);
        let text = std::fs::read_to_string(&resolved).map_err(|e| {
            check.invalid(
                key("ssh_key_files"),
                format!("cannot read {}: {e}", resolved.display()),
            )
        })?;
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            ssh_keys.push(
                normalize_public_key(line).map_err(|p| check.invalid(key("ssh_key_files"), p))?,
            );
        }
    }
    Ok(User {
        name: section.name.clone(),
        groups: section.groups.iter().cloned().collect(),
        permissions,
        ssh_keys,
        totp_secret_file: section
            .totp_secret_file
            .as_deref()
            .map(|p| check.resolve(p)),
    })
}

/// Keeps `TYPE BASE64` of an OpenSSH public key line, dropping the comment.
pub fn normalize_public_key(line: &str) -> Result<String, String> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{line:?} is not an OpenSSH public key (TYPE BASE64 [COMMENT])"
        ));
    };
    russh::keys::parse_public_key_base64(body)
        .map_err(|e| format!("public key {kind} ...: {e}"))?;
    Ok(format!("{kind} {body}"))
}

/// Checks workflow settings against the directory. Shared by config loading
/// and runtime `workflow set`, so both refuse the same mistakes.
pub fn validate_workflow(
    key: &str,
    settings: &WorkflowSettings,
    directory: &Directory,
) -> Result<(), (String, String)> {
    let fail = |field: String, problem: String| Err((field, problem));
    if settings.max_duration.as_duration().is_zero() {
        return fail(
            format!("{key}.max_duration"),
            "must be longer than 0s".into(),
        );
    }
    if settings.default_duration.as_duration().is_zero() {
        return fail(
            format!("{key}.default_duration"),
            "must be longer than 0s".into(),
        );
    }
    if settings.default_duration > settings.max_duration {
        return fail(
            format!("{key}.default_duration"),
            format!(
                "{} exceeds max_duration {}",
                settings.default_duration, settings.max_duration
            ),
        );
    }
    if settings.pending_timeout.as_duration().is_zero() {
        return fail(
            format!("{key}.pending_timeout"),
            "must be longer than 0s".into(),
        );
    }
    for (level_index, level) in settings.approval_levels.iter().enumerate() {
        let level_key = format!("{key}.approval_levels[{level_index}]");
        if level.approvers.is_empty() {
            return fail(
                format!("{level_key}.approvers"),
                "needs at least one approver".into(),
            );
        }
        if level.required == 0 {
            return fail(format!("{level_key}.required"), "must be at least 1".into());
        }
        for principal in level.approvers.iter().chain(&level.escalate_to) {
            let known = match principal {
                Principal::User(name) => directory.users.contains_key(name),
                Principal::Group(name) => directory.groups.contains(name),
            };
            if !known {
                return fail(
                    format!("{level_key}.approvers"),
                    format!("unknown approver {principal}"),
                );
            }
        }
        if level.escalate_after.is_some() && level.escalate_to.is_empty() {
            return fail(
                format!("{level_key}.escalate_to"),
                "escalate_after needs escalate_to".into(),
            );
        }
    }
    Ok(())
}
