//! Reasons to rotate a resource that neither the journal nor the vault
//! holds: the target refused the managed credential, or processes a window
//! left running could not be ended. Kept in the state directory, so a
//! restart does not hand a single-user resource out before they are dealt
//! with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationMark {
    /// The target refused the managed credential at a login.
    CredentialRefused,
    /// With no window open, processes of the managed account outlived the
    /// rotation's attempts to end them, or could not be looked at.
    ProcessesLeftRunning,
}

impl RotationMark {
    const ALL: [Self; 2] = [Self::CredentialRefused, Self::ProcessesLeftRunning];

    fn label(self) -> &'static str {
        match self {
            Self::CredentialRefused => "credential_refused",
            Self::ProcessesLeftRunning => "processes_left_running",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::CredentialRefused => "the target refused the managed credential",
            Self::ProcessesLeftRunning => "processes a window left running are not ended yet",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read {path}: {problem} (restore it from a backup; removing it forgets which resources must rotate before they are handed out again)"
)]
pub struct RotationMarksError {
    path: PathBuf,
    problem: String,
}

type Marks = BTreeMap<String, BTreeSet<RotationMark>>;

pub struct RotationMarks {
    path: PathBuf,
    marks: Mutex<Marks>,
}

impl RotationMarks {
    /// A damaged file is an error, not an empty set: that would hand out a
    /// resource whose last window is not cleaned up.
    pub fn load(state_dir: &Path) -> Result<Self, RotationMarksError> {
        let path = state_dir.join("rotation_marks.json");
        let marks: Marks =
            crate::fsutil::read_json_state(&path).map_err(|problem| RotationMarksError {
                path: path.clone(),
                problem,
            })?;
        for (resource, set) in &marks {
            for mark in RotationMark::ALL {
                publish(resource, mark, set.contains(&mark));
            }
        }
        Ok(Self {
            path,
            marks: Mutex::new(marks),
        })
    }

    /// Why `resource` must rotate again, as `vault list` says it.
    pub fn reasons(&self, resource: &str) -> Vec<&'static str> {
        self.marks
            .lock()
            .get(resource)
            .map(|marks| marks.iter().map(|mark| mark.reason()).collect())
            .unwrap_or_default()
    }

    pub fn contains(&self, resource: &str, mark: RotationMark) -> bool {
        self.marks
            .lock()
            .get(resource)
            .is_some_and(|marks| marks.contains(&mark))
    }

    /// Sets or clears `mark` on `resource`; returns whether that changed
    /// anything. The change holds in memory even when the file cannot be
    /// written (logged): failing to persist must not lift a mark early.
    pub fn set(&self, resource: &str, mark: RotationMark, on: bool) -> bool {
        let mut marks = self.marks.lock();
        let changed = if on {
            marks.entry(resource.to_string()).or_default().insert(mark)
        } else {
            let removed = marks.get_mut(resource).is_some_and(|set| set.remove(&mark));
            if marks.get(resource).is_some_and(BTreeSet::is_empty) {
                marks.remove(resource);
            }
            removed
        };
        if changed {
            self.persist(&marks);
            publish(resource, mark, on);
        }
        changed
    }

    fn persist(&self, marks: &Marks) {
        let written = serde_json::to_vec_pretty(marks)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::fsutil::write_atomic(&self.path, &bytes, 0o600));
        if let Err(error) = written {
            tracing::error!(path = %self.path.display(), %error, "cannot record a rotation mark");
        }
    }
}

/// The `jitgate_rotation_mark` gauge, for alerting on a resource held
/// back (the audit log says why).
fn publish(resource: &str, mark: RotationMark, on: bool) {
    metrics::gauge!(
        "jitgate_rotation_mark",
        "resource" => resource.to_string(),
        "mark" => mark.label()
    )
    .set(if on { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_reopen_and_clearing_one_keeps_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let marks = RotationMarks::load(dir.path()).unwrap();
        assert!(marks.set("web-01", RotationMark::ProcessesLeftRunning, true));
        assert!(!marks.set("web-01", RotationMark::ProcessesLeftRunning, true));
        assert!(marks.set("web-01", RotationMark::CredentialRefused, true));
        assert!(marks.set("web-01", RotationMark::CredentialRefused, false));
        assert!(!marks.set("db", RotationMark::CredentialRefused, false));
        let reopened = RotationMarks::load(dir.path()).unwrap();
        assert!(reopened.contains("web-01", RotationMark::ProcessesLeftRunning));
        assert!(!reopened.contains("web-01", RotationMark::CredentialRefused));
        assert!(reopened.set("web-01", RotationMark::ProcessesLeftRunning, false));
        let text = std::fs::read_to_string(dir.path().join("rotation_marks.json")).unwrap();
        assert_eq!(text.trim(), "{}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rotation_marks.json"), "{\"web-01\": [").unwrap();
        let error = RotationMarks::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("rotation_marks.json"), "{error}");
    }
}
