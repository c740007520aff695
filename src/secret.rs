//! Secrets read from files and wrapped so they never reach a log, an error or a `Debug` print.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print a placeholder; the only way to
/// the bytes is `expose`, which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    /// Secrets do not linger in freed memory.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret file {path} is readable or writable by other users (mode {mode:o}): chmod 600 it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("secret file {path} is empty")]
    Empty { path: PathBuf },
}

/// Reads a secret from `path`, refusing files that other users can read or
/// write: a leaked secret file defeats the whole gateway.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let unreadable = |source| SecretFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(value))
}

/// Writes `value` to `path` with mode 0600, replacing any previous content
/// atomically (temporary file, fsync, rename).
pub fn write_secret_file(path: &Path, value: &str) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, format!("{value}\n").as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn refuses_world_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::TooOpen { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose(), "abc");
    }

    #[test]
    fn written_secret_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_secret_file(&path, "xyz").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&path).unwrap().expose(), "xyz");
    }
}
