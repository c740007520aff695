//! Startup files of an SSH resource's managed account — shell rc files,
//! `~/.ssh/rc`, systemd user units — and its schedules (crontab, at jobs)
//! run again at every later login or on their own, so a window that
//! rewrote one keeps a foothold that no credential rotation removes (and
//! can watch the next holder's session). The gateway fingerprints them
//! when it first meets the resource and at each rotation, and audits which
//! changed in between.

use super::RotationError;
use super::baseline::Fingerprints;
use super::ssh::AccountShell;

/// Relative to the account's home. Shells read these (bash, sh, zsh; and
/// Debian's `.bashrc` reads `.bash_aliases`), sshd (`rc`, `environment`)
/// or pam_env (`.pam_environment`) at every login, mail delivery pipes to
/// `.forward`, and systemd starts the units under `.config/systemd/user`
/// (a directory: its files and the links that enable them, as one). The
/// last four let others log in without a key where the target accepts
/// Kerberos or host-based authentication.
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
    ".k5login",
    ".k5users",
    ".rhosts",
    ".shosts",
];
/// Whether systemd starts the account's user units at boot, without a
/// login (`loginctl enable-linger`): `present` or `absent`.
const LINGER: &str = "linger";
/// Listed only where the target has the tool.
const CRONTAB: &str = "crontab";
const AT_JOBS: &str = "at-jobs";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::baseline::changed;
    use std::path::Path;

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
}
