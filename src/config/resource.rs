//! One `[[resource]]` section checked into a typed [`Resource`].

use super::file::ResourceSection;
use super::validate::{Checker, normalize_public_key, validate_workflow};
use super::{ConfigError, Directory, Reconcile, Resource, ResourceKind};

pub(super) fn validate_resource(
    check: &Checker,
    index: usize,
    section: ResourceSection,
    directory: &Directory,
) -> Result<Resource, ConfigError> {
    let key = |field: &str| format!("resource[{index}].{field}");
    check.name(&key("name"), &section.name)?;
    let kind = match section.kind.as_str() {
        "ssh" => ResourceKind::Ssh,
        "postgres" => ResourceKind::Postgres,
        other => {
            return Err(check.invalid(key("kind"), format!("{other:?} is not ssh or postgres")));
        }
    };
    if section
        .address
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(check.invalid(
            key("address"),
            format!("{:?} is not HOST:PORT", section.address),
        ));
    }
    if section.account.is_empty() {
        return Err(check.invalid(key("account"), "must not be empty"));
    }
    if kind == ResourceKind::Postgres && section.database.is_none() {
        return Err(check.invalid(key("database"), "required for a postgres resource"));
    }
    validate_workflow(&key("workflow"), &section.workflow, directory)
        .map_err(|(field, problem)| check.invalid(field, problem))?;
    let host_key = match &section.host_key {
        Some(_) if kind != ResourceKind::Ssh => {
            return Err(check.invalid(key("host_key"), "only for ssh resources"));
        }
        Some(text) => {
            Some(normalize_public_key(text).map_err(|p| check.invalid(key("host_key"), p))?)
        }
        None => None,
    };
    if section.upstream_tls_ca.is_some() && kind != ResourceKind::Postgres {
        return Err(check.invalid(key("upstream_tls_ca"), "only for postgres resources"));
    }
    let reconcile = reconcile_of(check, &section, &key)?;
    Ok(Resource {
        name: section.name,
        kind,
        address: section.address,
        account: section.account,
        database: section.database,
        credential_file: section.credential_file.as_deref().map(|p| check.resolve(p)),
        allow_port_forwarding: section.allow_port_forwarding,
        host_key,
        upstream_tls_ca: section.upstream_tls_ca.as_deref().map(|p| check.resolve(p)),
        rotation_interval: match section.rotation_interval {
            Some(interval) if interval.as_duration() < std::time::Duration::from_secs(10) => {
                return Err(check.invalid(key("rotation_interval"), "must be at least 10s"));
            }
            other => other.map(|i| i.as_duration()),
        },
        reconcile,
        end_leftover_processes: section.end_leftover_processes.unwrap_or(true),
        workflow: section.workflow,
    })
}

/// `reconcile_account` and `reconcile_credential_file` come together,
/// naming an account other than the managed one.
fn reconcile_of(
    check: &Checker,
    section: &ResourceSection,
    key: &impl Fn(&str) -> String,
) -> Result<Option<Reconcile>, ConfigError> {
    let (account, file) = match (
        &section.reconcile_account,
        &section.reconcile_credential_file,
    ) {
        (None, None) => return Ok(None),
        (Some(account), Some(file)) => (account, file),
        (Some(_), None) => {
            return Err(check.invalid(
                key("reconcile_credential_file"),
                "required with reconcile_account",
            ));
        }
        (None, Some(_)) => {
            return Err(check.invalid(
                key("reconcile_account"),
                "required with reconcile_credential_file",
            ));
        }
    };
    if account.is_empty() || *account == section.account {
        return Err(check.invalid(
            key("reconcile_account"),
            "must name an account other than the managed account",
        ));
    }
    Ok(Some(Reconcile {
        account: account.clone(),
        credential_file: check.resolve(file),
    }))
}
