//! `[[webhook]]`: where the gateway POSTs audit records as they happen, so
//! approvers hear of a request in their chat tool and a SIEM gets the
//! stream without tailing a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use axum::http::Uri;
use serde::Deserialize;

use super::validate::Checker;
use super::{ConfigError, Resource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    pub bearer_token_file: Option<PathBuf>,
    pub signing_secret_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: Uri,
    /// Audit record types (or workflow changes) to send; all when `None`.
    pub events: Option<BTreeSet<String>>,
    /// Only records about these resources (their requests, logins,
    /// sessions, rotations); records about any resource, or none, when
    /// `None`.
    pub resources: Option<BTreeSet<String>>,
    /// Sent as `Authorization: Bearer`, read at start.
    pub bearer_token_file: Option<PathBuf>,
    /// Each body is signed with it (HMAC-SHA256, in
    /// `X-Jitgate-Signature-256`), read at start.
    pub signing_secret_file: Option<PathBuf>,
    /// Trusted CAs for an https URL; the system's when absent.
    pub ca_file: Option<PathBuf>,
}

/// Names `events` may list: audit record types, and the workflow changes
/// inside `workflow` records.
pub const EVENT_NAMES: &[&str] = &[
    // Audit record types.
    "gateway_started",
    "gateway_stopped",
    "config_reloaded",
    "torn_tail_dropped",
    "audit_tampered",
    "audit_records_lost",
    "workflow",
    "refused",
    "mfa_failure",
    "mfa_locked",
    "login",
    "login_withdrawn",
    "source_penalized",
    "session_started",
    "session_terminated",
    "channel_ended",
    "target_host_key",
    "credential_imported",
    "rotation_started",
    "rotation_succeeded",
    "rotation_failed",
    "planted_key_removed",
    "leftover_processes_ended",
    "startup_files_changed",
    "roles_changed",
    "account_check_failed",
    "credential_reconciled",
    "session_ended",
    "session_interrupted",
    // Workflow changes.
    "requested",
    "approved",
    "granted",
    "escalated",
    "denied",
    "cancelled",
    "timed_out",
    "checked_out",
    "ended",
    "extension_requested",
    "extended",
    "password_replaced",
    "delegation_granted",
    "delegation_revoked",
    "workflow_changed",
];

/// Validates every `[[webhook]]`. Two with one URL are refused: each
/// webhook's place in the audit log is kept under its URL, so they would
/// share one (list both sets of events in one webhook instead).
pub(super) fn validate_webhooks(
    check: &Checker,
    sections: Vec<WebhookSection>,
    resources: &BTreeMap<String, Resource>,
) -> Result<Vec<Webhook>, ConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::with_capacity(sections.len());
    for (index, section) in sections.into_iter().enumerate() {
        let webhook = validate_webhook(check, index, section, resources)?;
        if let Some(first) = webhooks.iter().position(|w| w.url == webhook.url) {
            return Err(check.invalid(
                format!("webhook[{index}].url"),
                format!(
                    "the same URL as webhook[{first}]: list both sets of events in one webhook"
                ),
            ));
        }
        webhooks.push(webhook);
    }
    Ok(webhooks)
}

fn validate_webhook(
    check: &Checker,
    index: usize,
    section: WebhookSection,
    known_resources: &BTreeMap<String, Resource>,
) -> Result<Webhook, ConfigError> {
    let key = |name: &str| format!("webhook[{index}].{name}");
    let url: Uri = section
        .url
        .parse()
        .map_err(|e| check.invalid(key("url"), format!("not a URL: {e}")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(check.invalid(key("url"), "must be an http:// or https:// URL with a host"));
    }
    // Logged as scheme://authority: credentials there would be logged.
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(check.invalid(
            key("url"),
            "no user or password in the URL: put a token in bearer_token_file",
        ));
    }
    if section.ca_file.is_some() && url.scheme_str() != Some("https") {
        return Err(check.invalid(key("ca_file"), "only for https URLs"));
    }
    let events = match section.events {
        None => None,
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| !EVENT_NAMES.contains(&n.as_str())) {
                return Err(check.invalid(
                    key("events"),
                    format!(
                        "unknown event {unknown:?} (known: {})",
                        EVENT_NAMES.join(", ")
                    ),
                ));
            }
            Some(names.into_iter().collect())
        }
    };
    let resources = match section.resources {
        None => None,
        Some(names) => {
            if let Some(unknown) = names
                .iter()
                .find(|n| !known_resources.contains_key(n.as_str()))
            {
                return Err(
                    check.invalid(key("resources"), format!("unknown resource {unknown:?}"))
                );
            }
            Some(names.into_iter().collect())
        }
    };
    Ok(Webhook {
        url,
        events,
        resources,
        bearer_token_file: section.bearer_token_file.map(|p| check.resolve(&p)),
        signing_secret_file: section.signing_secret_file.map(|p| check.resolve(&p)),
        ca_file: section.ca_file.map(|p| check.resolve(&p)),
    })
}
