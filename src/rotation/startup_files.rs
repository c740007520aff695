//! Startup files of an SSH resource's managed account — shell rc files,
//! `~/.ssh/rc`, its crontab — run again at every later login or on a
//! schedule, so a window that rewrote one keeps a foothold that no
//! credential rotation removes (and can watch the next holder's session).
//! The gateway fingerprints them when it first meets the resource and at
//! each rotation, and audits which changed in between.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::RotationError;
use super::ssh::AccountShell;

/// Relative to the account's home. Shells read these (bash, sh, zsh), or
/// sshd does (`rc`, `environment`) at every login.
const FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".bash_logout",
    ".zshenv",
    ".zshrc",
    ".zprofile",
    ".zlogin",
    ".ssh/rc",
    ".ssh/environment",
];
const CRONTAB: &str = "crontab";

/// Fingerprint per file, `absent`, or `unreadable`.
pub type Fingerprints = BTreeMap<String, String>;

/// Prints `HASH NAME` (or `absent NAME`, `unreadable NAME`) per file, and
/// the crontab's hash where the target has `crontab`.
fn fingerprint_command() -> String {
    let files: Vec<String> = FILES
        .iter()
        .map(|f| shell_words::quote(f).into_owned())
        .collect();
    format!(
        "cd || exit 1; for f in {}; do \
           if [ -e \"$f\" ] || [ -L \"$f\" ]; then \
             h=$(sha256sum < \"$f\" 2>/dev/null | cut -d' ' -f1); echo \"${{h:-unreadable}} $f\"; \
           else echo \"absent $f\"; fi; \
         done; \
         if command -v crontab >/dev/null 2>&1; then \
           echo \"$(crontab -l 2>/dev/null | sha256sum | cut -d' ' -f1) {CRONTAB}\"; \
         fi",
        files.join(" ")
    )
}

pub async fn fingerprint(shell: &AccountShell) -> Result<Fingerprints, RotationError> {
    let output = shell
        .run(&fingerprint_command(), b"")
        .await?
        .success("fingerprinting the account's startup files")?;
    parse(&String::from_utf8_lossy(&output))
}

fn parse(output: &str) -> Result<Fingerprints, RotationError> {
    let mut fingerprints = Fingerprints::new();
    for line in output.lines().filter(|line| !line.trim().is_empty()) {
        let unexpected =
            || RotationError::Target(format!("unexpected startup file listing: {line:?}"));
        let (hash, name) = line.split_once(' ').ok_or_else(unexpected)?;
        let known_name = FILES.contains(&name) || name == CRONTAB;
        let hash_like = matches!(hash, "absent" | "unreadable")
            || (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        if !known_name || !hash_like {
            return Err(unexpected());
        }
        fingerprints.insert(name.to_string(), hash.to_string());
    }
    if FILES.iter().any(|file| !fingerprints.contains_key(*file)) {
        return Err(RotationError::Target(
            "the startup file listing is incomplete".into(),
        ));
    }
    Ok(fingerprints)
}

/// The names whose fingerprint differs between `before` and `after`.
pub fn changed(before: &Fingerprints, after: &Fingerprints) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
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
            path: state_dir.join("startup_files.json"),
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
        crate::fsutil::read_json_state(&self.path).map_err(|problem| self.problem(problem))
    }

    fn problem(&self, problem: String) -> RotationError {
        RotationError::Target(format!("{}: {problem}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(bashrc: &str) -> String {
        let mut text = String::new();
        for file in FILES {
            let hash = if *file == ".bashrc" { bashrc } else { "absent" };
            text.push_str(&format!("{hash} {file}\n"));
        }
        text
    }

    #[test]
    fn a_listing_is_read_and_changes_are_named() {
        let before = parse(&listing(&"a".repeat(64))).unwrap();
        let mut after = parse(&listing(&"b".repeat(64))).unwrap();
        assert_eq!(before.len(), FILES.len());
        assert_eq!(changed(&before, &after), [".bashrc"]);
        after.insert(CRONTAB.into(), "c".repeat(64));
        assert_eq!(changed(&before, &after), [".bashrc", "crontab"]);
        assert!(changed(&before, &before).is_empty());
    }

    #[test]
    fn anything_but_a_whole_listing_is_an_error() {
        let whole = listing("unreadable");
        assert!(parse(&whole).is_ok());
        let cases = [
            String::new(),
            whole.replace("unreadable .bashrc", "hijacked .bashrc"),
            whole.replace(".bashrc", "/etc/passwd"),
            whole.lines().skip(1).collect::<Vec<_>>().join("\n"),
            format!("{whole}hijacked\n"),
        ];
        for case in cases {
            assert!(parse(&case).is_err(), "{case:?} was taken for a listing");
        }
    }

    #[test]
    fn baselines_persist_and_return_what_they_replace() {
        let dir = tempfile::tempdir().unwrap();
        let baselines = Baselines::new(dir.path());
        assert!(!baselines.has("web-01").unwrap());
        let first = parse(&listing(&"a".repeat(64))).unwrap();
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
        let second = parse(&listing(&"b".repeat(64))).unwrap();
        assert_eq!(reopened.replace("web-01", second).unwrap(), Some(first));
        std::fs::write(dir.path().join("startup_files.json"), "{").unwrap();
        assert!(
            reopened.get("web-01").is_err(),
            "a damaged file is no baseline"
        );
    }
}
