//! Fingerprints of what a window could leave behind on a target — an SSH
//! account's startup files and schedules, a Postgres target's roles —
//! kept between looks in the state directory, so each rotation can say
//! what changed since the last one. The first are taken when the gateway
//! first meets a resource, in the background, with no window open.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ssh::AccountShell;
use super::{RotationError, Rotator, pg_roles, postgres, startup_files};
use crate::audit::AuditEvent;
use crate::config::{Resource, ResourceKind};

/// Fingerprint per entry: a hash, `absent`, `present` (a flag) or
/// `unreadable`.
pub type Fingerprints = BTreeMap<String, String>;
/// The fingerprint of nothing: an empty file, crontab or job queue.
pub const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const FILE: &str = "baselines.json";
const LEGACY_FILE: &str = "startup_files.json";
/// The longest wait between tries at a first fingerprint.
const FIRST_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longer than any try at a first fingerprint takes (it reports sooner).
const IN_FLIGHT: Duration = Duration::from_secs(3600);

/// The names whose fingerprint differs between `before` and `after`. A
/// name on one side only (a tool installed or removed since, or a name
/// this version added) counts as a change only if something is there.
pub fn changed(before: &Fingerprints, after: &Fingerprints) -> Vec<String> {
    let nothing = |value: Option<&String>| value.is_none_or(|v| v == "absent" || v == EMPTY);
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| {
            let (was, is) = (before.get(*name), after.get(*name));
            was != is && !(nothing(was) && nothing(is))
        })
        .cloned()
        .collect()
}

/// The last fingerprints of each resource, in the state directory.
pub struct Baselines {
    path: PathBuf,
    /// Resources known to have fingerprints recorded. Held while reading
    /// and writing the file too: resources rotate concurrently.
    recorded: Mutex<HashSet<String>>,
}

impl Baselines {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE),
            recorded: Mutex::default(),
        }
    }

    /// Whether `resource` has fingerprints recorded (read from the file
    /// only until it does).
    pub fn has(&self, resource: &str) -> Result<bool, RotationError> {
        let mut recorded = self.recorded.lock();
        if recorded.contains(resource) {
            return Ok(true);
        }
        let found = self.read()?.contains_key(resource);
        if found {
            recorded.insert(resource.to_string());
        }
        Ok(found)
    }

    #[cfg(test)]
    fn get(&self, resource: &str) -> Result<Option<Fingerprints>, RotationError> {
        let _held = self.recorded.lock();
        Ok(self.read()?.remove(resource))
    }

    /// Records `now` for `resource`; returns what was recorded before.
    pub fn replace(
        &self,
        resource: &str,
        now: Fingerprints,
    ) -> Result<Option<Fingerprints>, RotationError> {
        let mut recorded = self.recorded.lock();
        let mut all = self.read()?;
        let before = all.insert(resource.to_string(), now);
        let bytes = serde_json::to_vec_pretty(&all).map_err(|e| self.problem(e.to_string()))?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
            .map_err(|e| self.problem(e.to_string()))?;
        recorded.insert(resource.to_string());
        Ok(before)
    }

    fn read(&self) -> Result<BTreeMap<String, Fingerprints>, RotationError> {
        let read = |path: &Path| {
            crate::fsutil::read_json_state(path).map_err(|problem| self.problem(problem))
        };
        // Before Postgres roles were compared, only startup files were.
        let legacy = self.path.with_file_name(LEGACY_FILE);
        if !self.path.exists() && legacy.exists() {
            return read(&legacy);
        }
        read(&self.path)
    }

    fn problem(&self, problem: String) -> RotationError {
        RotationError::Target(format!("{}: {problem}", self.path.display()))
    }
}

impl Rotator {
    /// Records what a look found (`now`) for `resource` and audits the
    /// names that changed since the last look with `event`; a failed look
    /// is audited as such (`check` says what it was).
    pub(super) async fn report_changes(
        &self,
        resource: &Resource,
        check: &str,
        now: Result<Fingerprints, RotationError>,
        event: impl FnOnce(Vec<String>) -> AuditEvent,
    ) {
        let compared = now.and_then(|now| {
            let before = self.baselines.replace(&resource.name, now.clone())?;
            Ok(before.map(|before| changed(&before, &now)))
        });
        match compared {
            Ok(Some(names)) if !names.is_empty() => self.audit(event(names)).await,
            Ok(_) => {}
            Err(error) => self.check_failed(resource, check, error).await,
        }
    }

    /// Starts taking the first fingerprints of each resource that has
    /// none, with no window open, so the first window is compared against
    /// something too. In the background: an unreachable target must not
    /// hold up rotations. Retried with backoff.
    pub(super) fn start_first_baselines(self: &Arc<Self>) {
        let config = self.gateway.config();
        for resource in config.resources.values() {
            // Cheapest first: once taken, `has` answers from memory.
            if self.baseline_waits(&resource.name)
                || !matches!(self.baselines.has(&resource.name), Ok(false))
                || !self.gateway.vault().contains(&resource.name)
                || self.gateway.window_open(&resource.name)
            {
                continue;
            }
            // In flight: not started again until it reports.
            let backoff = self.baseline_backoff(&resource.name);
            self.baseline_retry
                .lock()
                .insert(resource.name.clone(), (Instant::now() + IN_FLIGHT, backoff));
            let this = self.clone();
            let resource = resource.clone();
            tokio::spawn(async move { this.take_first_baseline(&resource).await });
        }
    }

    fn baseline_waits(&self, name: &str) -> bool {
        self.baseline_retry
            .lock()
            .get(name)
            .is_some_and(|(next, _)| Instant::now() < *next)
    }

    fn baseline_backoff(&self, name: &str) -> Duration {
        self.baseline_retry
            .lock()
            .get(name)
            .map_or(Duration::ZERO, |(_, backoff)| *backoff)
    }

    async fn take_first_baseline(&self, resource: &Resource) {
        // Not beside a rotation of the resource, whose clean-up would take
        // this login's shell for a leftover.
        let lock = self.gateway.rotation_lock(&resource.name);
        let _serialized = lock.lock().await;
        let taken = match self.baselines.has(&resource.name) {
            Ok(true) => Ok(()),
            _ => self.fingerprint_first(resource).await,
        };
        let mut retry = self.baseline_retry.lock();
        match taken {
            Ok(()) => {
                retry.remove(&resource.name);
            }
            Err(error) => {
                tracing::warn!(resource = %resource.name, %error, "cannot take the first fingerprints yet");
                let backoff = retry
                    .get(&resource.name)
                    .map_or(Duration::ZERO, |(_, b)| *b);
                let backoff = (backoff * 2).clamp(Duration::from_secs(1), FIRST_MAX_BACKOFF);
                retry.insert(resource.name.clone(), (Instant::now() + backoff, backoff));
            }
        }
    }

    async fn fingerprint_first(&self, resource: &Resource) -> Result<(), RotationError> {
        let Some(secret) = self.gateway.vault().current(&resource.name) else {
            return Ok(());
        };
        let fingerprints = match resource.kind {
            ResourceKind::Ssh => {
                let shell =
                    AccountShell::open(resource, self.gateway.known_hosts(), &secret).await?;
                let fingerprints = startup_files::fingerprint(&shell).await;
                shell.close().await;
                fingerprints
            }
            ResourceKind::Postgres => {
                let login =
                    postgres::connect(resource, &resource.account, &secret, self.timeout()).await?;
                let fingerprints = pg_roles::fingerprint(&login.client).await;
                login.close().await;
                fingerprints
            }
        };
        self.baselines.replace(&resource.name, fingerprints?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprints(bashrc: &str) -> Fingerprints {
        [(".bashrc", bashrc), (".profile", "absent")]
            .into_iter()
            .map(|(name, hash)| (name.to_string(), hash.to_string()))
            .collect()
    }

    #[test]
    fn a_name_on_one_side_only_is_a_change_only_if_something_is_there() {
        let before = fingerprints("absent");
        let mut after = before.clone();
        after.insert("at-jobs".into(), EMPTY.into());
        assert!(changed(&before, &after).is_empty(), "an empty at queue");
        after.insert("backdoor".into(), "c".repeat(64));
        assert_eq!(changed(&before, &after), ["backdoor"]);
        assert_eq!(changed(&after, &before), ["backdoor"]);
    }

    #[test]
    fn baselines_persist_and_return_what_they_replace() {
        let dir = tempfile::tempdir().unwrap();
        let baselines = Baselines::new(dir.path());
        assert!(!baselines.has("web-01").unwrap());
        let first = fingerprints(&"a".repeat(64));
        assert!(
            baselines
                .replace("web-01", first.clone())
                .unwrap()
                .is_none()
        );
        assert!(baselines.has("web-01").unwrap());
        let reopened = Baselines::new(dir.path());
        assert!(reopened.has("web-01").unwrap());
        assert_eq!(reopened.get("web-01").unwrap(), Some(first.clone()));
        let second = fingerprints(&"b".repeat(64));
        assert_eq!(reopened.replace("web-01", second).unwrap(), Some(first));
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(
            reopened.get("web-01").is_err(),
            "a damaged file is no baseline"
        );
    }

    #[test]
    fn fingerprints_kept_under_the_old_name_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = Baselines::new(dir.path());
        old.replace("web-01", fingerprints(&"a".repeat(64)))
            .unwrap();
        std::fs::rename(dir.path().join(FILE), dir.path().join(LEGACY_FILE)).unwrap();
        let baselines = Baselines::new(dir.path());
        assert!(baselines.has("web-01").unwrap());
        baselines.replace("db", fingerprints("absent")).unwrap();
        let reopened = Baselines::new(dir.path());
        assert!(reopened.has("web-01").unwrap() && reopened.has("db").unwrap());
    }
}
