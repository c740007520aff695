//! Startup files of an SSH resource's managed account — shell rc files,
//! `~/.ssh/rc`, systemd user units — and its schedules (crontab, at jobs)
//! run again at every later login or on their own, so a window that
//! rewrote one keeps a foothold that no credential rotation removes (and
//! can watch the next holder's session). The gateway fingerprints them
//! when it first meets the resource and at each rotation, and audits which
//! changed in between.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::RotationError;
use super::ssh::AccountShell;

/// Relative to the account's home. Shells read these (bash, sh, zsh; and
/// Debian's `.bashrc` reads `.bash_aliases`), sshd (`rc`, `environment`)
/// or pam_env (`.pam_environment`) at every login, mail delivery pipes to
/// `.forward`, and systemd starts the units under `.config/systemd/user`
/// (a directory: its files and the links that enable them, as one).
const FILES: &[&str] = &[
    ".bashrc",
    ".bash_aliases",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".bash_logout",
    ".zshenv",
    ".zshrc",
    ".zprofile",
    ".zlogin",
    ".zlogout",
    ".ssh/rc",
    ".ssh/environment",
    ".pam_environment",
    ".forward",
    ".config/systemd/user",
];
/// Whether systemd starts the account's user units at boot, without a
/// login (`loginctl enable-linger`): `present` or `absent`.
const LINGER: &str = "linger";
/// Listed only where the target has the tool.
const CRONTAB: &str = "crontab";
const AT_JOBS: &str = "at-jobs";
/// The fingerprint of nothing: an empty file, crontab or job queue.
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Fingerprint per entry: a hash, `absent`, `present` (linger) or
/// `unreadable`.
pub type Fingerprints = BTreeMap<String, String>;

/// Prints `HASH NAME` (or `absent NAME`, `unreadable NAME`) per file or
/// directory, the linger flag, and the crontab's and at queue's hashes
/// where the target has `crontab` and `atq`.
fn fingerprint_command() -> String {
    let files: Vec<String> = FILES
        .iter()
        .map(|f| shell_words::quote(f).into_owned())
        .collect();
    format!(
        "cd || exit 1; \
         fp() {{ if [ -d \"$1\" ]; then \
             (cd \"$1\" && find . \\( -type f -o -type l \\) -exec sha256sum {{}} + 2>&1 | LC_ALL=C sort) | sha256sum; \
           else sha256sum < \"$1\"; fi 2>/dev/null | cut -d' ' -f1; }}; \
         for f in {}; do \
           if [ -e \"$f\" ] || [ -L \"$f\" ]; then h=$(fp \"$f\"); echo \"${{h:-unreadable}} $f\"; \
           else echo \"absent $f\"; fi; \
         done; \
         if [ -e \"/var/lib/systemd/linger/$(id -un)\" ]; then echo \"present {LINGER}\"; \
         else echo \"absent {LINGER}\"; fi; \
         if command -v crontab >/dev/null 2>&1; then \
           echo \"$(crontab -l 2>/dev/null | sha256sum | cut -d' ' -f1) {CRONTAB}\"; \
         fi; \
         if command -v atq >/dev/null 2>&1; then \
           h=$({{ atq | LC_ALL=C sort; atq | cut -f1 | sort -n | while read -r j; do at -c \"$j\"; done; }} 2>/dev/null | sha256sum | cut -d' ' -f1); \
           echo \"$h {AT_JOBS}\"; \
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
        let known_name = FILES.contains(&name) || [LINGER, CRONTAB, AT_JOBS].contains(&name);
        let hash_like = matches!(hash, "absent" | "present" | "unreadable")
            || (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        if !known_name || !hash_like {
            return Err(unexpected());
        }
        fingerprints.insert(name.to_string(), hash.to_string());
    }
    if FILES
        .iter()
        .chain([&LINGER])
        .any(|name| !fingerprints.contains_key(*name))
    {
        return Err(RotationError::Target(
            "the startup file listing is incomplete".into(),
        ));
    }
    Ok(fingerprints)
}

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
        text.push_str("absent linger\n");
        text
    }

    #[test]
    fn a_listing_is_read_and_changes_are_named() {
        let before = parse(&listing(&"a".repeat(64))).unwrap();
        let mut after = parse(&listing(&"b".repeat(64))).unwrap();
        assert_eq!(before.len(), FILES.len() + 1);
        assert_eq!(changed(&before, &after), [".bashrc"]);
        after.insert(CRONTAB.into(), "c".repeat(64));
        after.insert(LINGER.into(), "present".into());
        assert_eq!(changed(&before, &after), [".bashrc", "crontab", "linger"]);
        assert!(changed(&before, &before).is_empty());
    }

    #[test]
    fn an_entry_on_one_side_only_is_a_change_only_if_something_is_there() {
        let before = parse(&listing("absent")).unwrap();
        let mut after = before.clone();
        after.insert(AT_JOBS.into(), EMPTY.into());
        assert!(changed(&before, &after).is_empty(), "an empty at queue");
        after.insert(CRONTAB.into(), "c".repeat(64));
        assert_eq!(changed(&before, &after), ["crontab"]);
        assert_eq!(changed(&after, &before), ["crontab"]);
    }

    /// Runs the listing command here, as this user, with `home` as HOME.
    fn fingerprint_locally(home: &Path) -> Fingerprints {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &fingerprint_command()])
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    #[test]
    fn the_listing_sees_files_user_units_and_the_links_that_enable_them() {
        let home = tempfile::tempdir().unwrap();
        let first = fingerprint_locally(home.path());
        assert_eq!(first[".config/systemd/user"], "absent");
        assert_eq!(fingerprint_locally(home.path()), first, "stable");
        let units = home.path().join(".config/systemd/user");
        std::fs::create_dir_all(units.join("default.target.wants")).unwrap();
        std::fs::write(units.join("miner.service"), "[Service]\n").unwrap();
        let second = fingerprint_locally(home.path());
        assert_eq!(changed(&first, &second), [".config/systemd/user"]);
        std::os::unix::fs::symlink(
            "../miner.service",
            units.join("default.target.wants/miner.service"),
        )
        .unwrap();
        let third = fingerprint_locally(home.path());
        assert_eq!(changed(&second, &third), [".config/systemd/user"]);
        std::fs::write(home.path().join(".bash_aliases"), "alias ls=x\n").unwrap();
        let fourth = fingerprint_locally(home.path());
        assert_eq!(changed(&third, &fourth), [".bash_aliases"]);
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
