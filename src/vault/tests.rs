use super::*;

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

fn secret(text: &str) -> Secret {
    Secret::new(text.to_string())
}

#[test]
fn secrets_survive_reopening_and_never_appear_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.json");
    let vault = Vault::open(&path, key(1)).unwrap();
    vault
        .set(
            "orders-prod",
            CredentialKind::Password,
            secret("hunter2-very-secret"),
        )
        .unwrap();
    // A real private key, made here rather than kept in the repository.
    let ssh_key = crate::rotation::generate_ssh_key();
    vault
        .set("web-01", CredentialKind::SshKey, ssh_key.clone())
        .unwrap();
    drop(vault);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("hunter2"));
    assert!(!text.contains("OPENSSH"));
    let vault = Vault::open(&path, key(1)).unwrap();
    assert_eq!(
        vault.current("orders-prod").unwrap().expose(),
        "hunter2-very-secret"
    );
    assert_eq!(vault.kind("web-01"), Some(CredentialKind::SshKey));
    assert_eq!(vault.current("web-01").unwrap(), ssh_key);
    let listed = vault.list();
    assert_eq!(listed.len(), 2);
    assert!(!format!("{listed:?}").contains("hunter2"));
}

#[test]
fn a_wrong_key_or_a_tampered_or_swapped_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.json");
    let vault = Vault::open(&path, key(1)).unwrap();
    vault
        .set("a", CredentialKind::Password, secret("alpha"))
        .unwrap();
    vault
        .set("b", CredentialKind::Password, secret("bravo"))
        .unwrap();
    drop(vault);
    assert!(matches!(
        Vault::open(&path, key(2)),
        Err(VaultError::WrongKey { .. })
    ));

    let original = std::fs::read_to_string(&path).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&original).unwrap();
    let b = value["records"]["b"]["current"].clone();
    value["records"]["a"]["current"] = b;
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    assert!(
        matches!(Vault::open(&path, key(1)), Err(VaultError::Tampered { resource, .. }) if resource == "a")
    );

    let mut value: serde_json::Value = serde_json::from_str(&original).unwrap();
    let ciphertext = value["records"]["b"]["current"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        if ciphertext.starts_with('A') {
            "B"
        } else {
            "A"
        },
        &ciphertext[1..]
    );
    value["records"]["b"]["current"]["ciphertext"] = flipped.into();
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    assert!(matches!(
        Vault::open(&path, key(1)),
        Err(VaultError::Tampered { .. })
    ));

    for bad in [&original[..original.len() / 2], "", "{}"] {
        std::fs::write(&path, bad).unwrap();
        assert!(
            matches!(
                Vault::open(&path, key(1)),
                Err(VaultError::Corrupted { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn rotation_is_two_phase_and_survives_reopening_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.json");
    let vault = Vault::open(&path, key(1)).unwrap();
    vault
        .set("db", CredentialKind::Password, secret("old"))
        .unwrap();
    vault.begin_rotation("db", secret("new")).unwrap();
    drop(vault);
    let vault = Vault::open(&path, key(1)).unwrap();
    assert_eq!(vault.current("db").unwrap().expose(), "old");
    assert_eq!(vault.pending("db").unwrap().expose(), "new");
    assert_eq!(vault.list()[0].state(), "rotation pending");
    vault.promote("db").unwrap();
    drop(vault);
    let vault = Vault::open(&path, key(1)).unwrap();
    assert_eq!(vault.current("db").unwrap().expose(), "new");
    assert!(vault.pending("db").is_none());
    assert_eq!(vault.list()[0].version, 2);
    assert!(vault.last_rotation("db").is_some());
    vault.begin_rotation("db", secret("newer")).unwrap();
    vault.abandon_pending("db").unwrap();
    assert_eq!(vault.current("db").unwrap().expose(), "new");
}

#[test]
fn a_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.json");
    let vault = Vault::open(&path, key(1)).unwrap();
    vault
        .set("db", CredentialKind::Password, secret("old"))
        .unwrap();
    // The directory disappears: the write fails and memory stays as disk was.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path(), b"not a directory").unwrap_or(());
    assert!(vault.begin_rotation("db", secret("new")).is_err());
    assert!(vault.pending("db").is_none());
    let _ = std::fs::remove_file(dir.path());
}

#[test]
fn master_keys_must_be_private_and_exactly_32_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    generate_key_file(&path).unwrap();
    read_master_key(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        read_master_key(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600")
    );
    for bad in [&b"abcd"[..], &[7u8; 31][..], b"zz"] {
        std::fs::write(&path, bad).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            read_master_key(&path)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
    assert!(read_master_key(&dir.path().join("missing")).is_err());
}
