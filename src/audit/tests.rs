use super::*;

fn event(n: u64) -> AuditEvent {
    AuditEvent::Refused {
        actor: format!("user{n}"),
        command: "approve 1".into(),
        reason: "test".into(),
    }
}

fn write_log(dir: &Path, count: u64) -> PathBuf {
    let path = dir.join("audit.log");
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    for n in 0..count {
        log.append(event(n)).unwrap();
    }
    path
}

fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_files(&chain_files(path).unwrap())
}

/// The hash field of the last line of `path`.
fn last_hash(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["hash"].as_str().unwrap().to_string()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    assert_eq!(
        verify(&path).unwrap(),
        VerifyReport {
            files: 1,
            records: 5,
            last_seq: 5,
            last_hash: last_hash(&path),
        }
    );
}

#[test]
fn removing_the_newest_records_is_caught_only_against_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let head = verify(&path).unwrap();
    let anchor = Anchor {
        seq: head.last_seq,
        hash: head.last_hash.clone(),
    };
    let files = chain_files(&path).unwrap();
    assert!(verify_against(&files, &anchor).is_ok());
    let original = lines(&path);
    let older: Anchor = format!(
        "3:{}",
        serde_json::from_str::<serde_json::Value>(&original[2]).unwrap()["hash"]
            .as_str()
            .unwrap()
    )
    .parse()
    .unwrap();
    assert!(
        verify_against(&files, &older).is_ok(),
        "an older head is still held"
    );

    // Cut off the last two: the chain alone still verifies.
    rewrite(&path, &original[..3]);
    assert_eq!(verify(&path).unwrap().last_seq, 3);
    let error = verify_against(&files, &anchor).unwrap_err();
    assert_eq!(error.line, 3);
    assert!(
        error.problem.contains("records 4 to 5 were removed"),
        "{error}"
    );

    // Cut off and continued: seq 5 exists again, but it is another record.
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    log.append(event(40)).unwrap();
    log.append(event(50)).unwrap();
    assert!(verify(&path).is_ok());
    let error = verify_against(&files, &anchor).unwrap_err();
    assert_eq!(error.line, 5);
    assert!(error.problem.contains("rewritten"), "{error}");
}

#[test]
fn anchors_parse_only_as_seq_and_sha256() {
    let hash = "ab".repeat(32);
    let anchor: Anchor = format!("12:{}", hash.to_uppercase()).parse().unwrap();
    assert_eq!(
        anchor,
        Anchor {
            seq: 12,
            hash: hash.clone()
        }
    );
    assert_eq!(anchor.to_string(), format!("12:{hash}"));
    for bad in [
        String::new(),
        "12".into(),
        format!("0:{hash}"),
        format!("x:{hash}"),
        format!("12:{}", &hash[1..]),
        format!("12:{}z", &hash[1..]),
    ] {
        assert!(bad.parse::<Anchor>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn altering_any_record_is_reported_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let original = lines(&path);
    for index in 0..original.len() {
        let mut altered = original.clone();
        altered[index] = altered[index].replace(&format!("user{index}"), "someone-else");
        rewrite(&path, &altered);
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, index + 1, "{err}");
        assert!(err.problem.contains("altered"), "{err}");
    }
}

#[test]
fn deleting_any_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let original = lines(&path);
    for index in 0..original.len() - 1 {
        let mut shortened = original.clone();
        shortened.remove(index);
        rewrite(&path, &shortened);
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, index + 1, "{err}");
    }
}

#[test]
fn swapping_records_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let original = lines(&path);
    for index in 0..original.len() - 1 {
        let mut swapped = original.clone();
        swapped.swap(index, index + 1);
        rewrite(&path, &swapped);
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, index + 1, "{err}");
    }
}

#[test]
fn recomputing_a_hash_after_an_edit_still_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let mut records = lines(&path);
    let mut value: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    value["event"]["actor"] = "forged".into();
    let hash = record_hash(value.as_object().unwrap());
    value["hash"] = hash.into();
    records[0] = value.to_string();
    rewrite(&path, &records);
    let err = verify(&path).unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 2);
    let (mut log, dropped) = AuditLog::open(&path, 1 << 30).unwrap();
    assert_eq!(dropped, None);
    assert_eq!(log.append(event(9)).unwrap().seq, 3);
    assert_eq!(verify(&path).unwrap().records, 3);
}

#[test]
fn a_torn_last_line_is_dropped_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 10]).unwrap();
    let (mut log, dropped) = AuditLog::open(&path, 1 << 30).unwrap();
    assert!(dropped.unwrap() > 0);
    assert_eq!(log.append(event(9)).unwrap().seq, 3);
    assert_eq!(verify(&path).unwrap().records, 3);
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let (mut log, _) = AuditLog::open(&path, 4096).unwrap();
    for n in 0..100 {
        log.append(event(n)).unwrap();
    }
    drop(log);
    let files = chain_files(&path).unwrap();
    assert!(files.len() > 2, "expected rotation, got {files:?}");
    assert_eq!(
        verify(&path).unwrap(),
        VerifyReport {
            files: files.len(),
            records: 100,
            last_seq: 100,
            last_hash: last_hash(files.last().unwrap()),
        }
    );
    // Reopening after rotation continues from the newest file.
    let (mut log, _) = AuditLog::open(&path, 4096).unwrap();
    log.append(event(100)).unwrap();
    assert_eq!(verify(&path).unwrap().records, 101);
    // Removing a whole rotated file breaks the chain.
    std::fs::remove_file(&files[1]).unwrap();
    assert!(verify(&path).is_err());
}

#[test]
fn records_never_carry_lease_secret_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    let change = crate::workflow::Event::CheckedOut {
        id: 1,
        window_end: chrono::Utc::now(),
        mfa_passed: true,
        secret_hash: Some("abcdef0123".into()),
        at: chrono::Utc::now(),
    };
    log.append(AuditEvent::Workflow {
        actor: Some("alice".into()),
        change: change.redacted(),
    })
    .unwrap();
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("abcdef0123")
    );
}

#[test]
fn a_saved_head_finds_records_cut_off_or_rewritten_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let (log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    let saved = log.head().unwrap();
    drop(log);
    let anchor_file = anchor_path(dir.path());
    save_anchor(&anchor_file, &saved).unwrap();
    assert_eq!(load_anchor(&anchor_file).unwrap(), Some(saved.clone()));
    let head = |path: &Path| AuditLog::open(path, 1 << 30).unwrap().0.head();

    // Untouched, and grown past the saved head (a crash before the next save).
    assert_eq!(check_anchor(&path, head(&path).as_ref(), &saved), None);
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    log.append(event(7)).unwrap();
    drop(log);
    assert_eq!(check_anchor(&path, head(&path).as_ref(), &saved), None);

    // Cut back to four records.
    let original = lines(&path);
    rewrite(&path, &original[..4]);
    let problem = check_anchor(&path, head(&path).as_ref(), &saved).unwrap();
    assert!(problem.contains("records 5 to 6 were removed"), "{problem}");

    // Cut, then continued past the saved seq with other records.
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    for n in 0..3 {
        log.append(event(100 + n)).unwrap();
    }
    drop(log);
    let problem = check_anchor(&path, head(&path).as_ref(), &saved).unwrap();
    assert!(problem.contains("rewritten"), "{problem}");

    // Gone altogether.
    std::fs::remove_file(&path).unwrap();
    let problem = check_anchor(&path, None, &saved).unwrap();
    assert!(problem.contains("records 1 to 6 were removed"), "{problem}");
    std::fs::write(&anchor_file, "garbage").unwrap();
    assert!(load_anchor(&anchor_file).is_err());
    assert_eq!(load_anchor(&dir.path().join("none")).unwrap(), None);
    // What a power loss can leave of an unsynced save: no head, no alarm.
    std::fs::write(&anchor_file, "").unwrap();
    assert_eq!(load_anchor(&anchor_file).unwrap(), None);
    save_anchor(&anchor_file, &saved).unwrap();
    assert_eq!(load_anchor(&anchor_file).unwrap(), Some(saved));
}

#[test]
fn verify_fails_at_a_tampering_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 2);
    let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
    log.append(AuditEvent::AuditTampered {
        anchor: format!("9:{}", "0".repeat(64)),
        problem: "records 3 to 9 were removed".into(),
    })
    .unwrap();
    let error = verify(&path).unwrap_err();
    assert_eq!(error.line, 3);
    assert!(
        error.problem.contains("records 3 to 9 were removed"),
        "{error}"
    );
}

#[test]
fn the_last_line_is_read_from_the_end_of_files_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let check = |text: &str, expected: Option<&str>| {
        std::fs::write(&path, text).unwrap();
        assert_eq!(super::last_line(&path).unwrap().as_deref(), expected);
    };
    check("", None);
    check("one\n", Some("one"));
    check("one\ntwo\n", Some("two"));
    check("one\ntwo", Some("two"));
    // Lines longer than the block read at a time, across block edges.
    let long = "x".repeat(150_000);
    check(&format!("{long}\n{long}y\n"), Some(&format!("{long}y")[..]));
    check(&format!("short\n{long}\n"), Some(&long[..]));
}

#[test]
fn session_records_from_before_the_owner_fields_still_read() {
    let old = r#"{"type":"session_ended","session":"s-1","bytes_from_client":1,"bytes_to_client":2,"duration_ms":3}"#;
    let event: AuditEvent = serde_json::from_str(old).unwrap();
    assert_eq!(event.session(), Some("s-1"));
    assert!(event.users().is_empty());
    assert_eq!(event.resource(), None);
    // Written back, it is the same record: its hash does not change.
    let again: serde_json::Value = serde_json::to_value(&event).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<serde_json::Value>(old).unwrap()
    );
    let new = r#"{"type":"channel_ended","session":"s-2","user":"alice","resource":"web-01","kind":"exec","bytes_from_client":0,"bytes_to_client":0}"#;
    let event: AuditEvent = serde_json::from_str(new).unwrap();
    assert_eq!(
        (event.users(), event.resource(), event.session()),
        (vec!["alice"], Some("web-01"), Some("s-2"))
    );
}
