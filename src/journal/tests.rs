use super::*;

type Record = String;
type State = Vec<String>;

fn open(dir: &Path) -> (Journal, Recovered<State, Record>) {
    Journal::open(dir).unwrap()
}

#[test]
fn appended_records_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, recovered) = open(dir.path());
    assert!(recovered.records.is_empty() && recovered.snapshot.is_none());
    for i in 0..5 {
        journal.append(&format!("record {i}")).unwrap();
    }
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.records,
        (0..5).map(|i| format!("record {i}")).collect::<Vec<_>>()
    );
    assert_eq!(recovered.dropped_tail, None);
}

#[test]
fn truncation_at_every_byte_of_the_last_record_keeps_all_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    for i in 0..3 {
        journal.append(&format!("complete {i}")).unwrap();
    }
    let path = dir.path().join(JOURNAL_FILE);
    let complete_len = std::fs::metadata(&path).unwrap().len();
    journal.append(&"the last one, torn".to_string()).unwrap();
    drop(journal);
    let full = std::fs::read(&path).unwrap();
    for cut in complete_len..full.len() as u64 {
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        let (mut journal, recovered) = open(dir.path());
        assert_eq!(recovered.records.len(), 3, "cut at {cut}");
        assert_eq!(
            recovered.dropped_tail,
            (cut > complete_len).then_some(cut - complete_len)
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            complete_len,
            "torn tail removed"
        );
        // The journal stays appendable after recovery.
        journal.append(&"after".to_string()).unwrap();
        drop(journal);
        let (_, again) = open(dir.path());
        assert_eq!(again.records.last().map(String::as_str), Some("after"));
        std::fs::write(&path, &full[..complete_len as usize]).unwrap();
    }
}

#[test]
fn corruption_before_the_end_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"one".to_string()).unwrap();
    journal.append(&"two".to_string()).unwrap();
    drop(journal);
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[18] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Journal::open::<State, Record>(dir.path()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn compaction_folds_records_into_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    let mut state = State::new();
    for i in 0..4 {
        let record = format!("r{i}");
        journal.append(&record).unwrap();
        state.push(record);
    }
    journal.compact(&state).unwrap();
    assert_eq!(journal.records_since_snapshot(), 0);
    journal.append(&"r4".to_string()).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot, Some(state));
    assert_eq!(recovered.records, vec!["r4".to_string()]);
}

#[test]
fn a_crash_between_snapshot_and_truncation_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"r0".to_string()).unwrap();
    journal.append(&"r1".to_string()).unwrap();
    let journal_bytes = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
    journal
        .compact(&vec!["r0".to_string(), "r1".to_string()])
        .unwrap();
    drop(journal);
    // Simulate the crash: the old journal is still there next to the snapshot.
    std::fs::write(dir.path().join(JOURNAL_FILE), journal_bytes).unwrap();
    let (mut journal, recovered) = open(dir.path());
    assert!(recovered.records.is_empty());
    journal.append(&"r2".to_string()).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec!["r2".to_string()]);
}

/// Bytes a failed append may leave after the last whole frame: part of a
/// frame (a full disk), or a whole one whose fsync failed and which was
/// reported as not recorded.
fn leave_after_failure(dir: &Path, journal: &mut Journal, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.join(JOURNAL_FILE))
        .unwrap();
    file.write_all(bytes).unwrap();
    journal.unsure = true;
}

#[test]
fn a_partly_written_frame_is_cut_off_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"first".to_string()).unwrap();
    let frame = encode_frame(2, b"\"lost\"");
    leave_after_failure(dir.path(), &mut journal, &frame[..frame.len() / 2]);
    journal.append(&"second".to_string()).unwrap();
    drop(journal);
    // Left in place, the half frame would sit before "second": corruption
    // that stops the gateway from starting.
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, ["first", "second"]);
}

#[test]
fn an_append_reported_as_failed_is_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"first".to_string()).unwrap();
    leave_after_failure(dir.path(), &mut journal, &encode_frame(2, b"\"refused\""));
    journal.append(&"second".to_string()).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, ["first", "second"]);
}

#[test]
fn while_the_file_cannot_be_cut_back_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"first".to_string()).unwrap();
    // Every write and cut fails on /dev/full, as on a disk that is full.
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let real = std::mem::replace(&mut journal.file, full);
    assert!(journal.append(&"refused".to_string()).is_err());
    assert!(journal.unsure);
    assert!(journal.append(&"refused too".to_string()).is_err());
    journal.file = real;
    journal.append(&"second".to_string()).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, ["first", "second"]);
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[test]
fn records_kept_in_the_reserve_are_appended_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&"before".to_string()).unwrap();
    // The journal could not take these; the reserve did.
    journal
        .reserve(&strings(&["waited 1", "waited 2"]))
        .unwrap();
    drop(journal);

    let (mut journal, recovered) = open(dir.path());
    assert_eq!(
        recovered.records,
        strings(&["before", "waited 1", "waited 2"])
    );
    assert_eq!(recovered.from_reserve, 2);
    assert!(!recovered.still_reserved);
    journal.append(&"after".to_string()).unwrap();
    drop(journal);
    // In the journal now, once each, and the reserve is empty.
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.records,
        strings(&["before", "waited 1", "waited 2", "after"])
    );
    assert_eq!(recovered.from_reserve, 0);
}

#[test]
fn reserved_records_the_journal_took_since_are_not_replayed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    let waiting = strings(&["waited 1", "waited 2"]);
    journal.reserve(&waiting).unwrap();
    // The journal works again and takes the first; the reserve still
    // holds both (as after a crash right then).
    journal.append(&waiting[0]).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, waiting);
    assert_eq!(recovered.from_reserve, 1);

    // Also across a compaction, which leaves the journal empty.
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.reserve(&waiting).unwrap();
    for record in &waiting {
        journal.append(record).unwrap();
    }
    journal.compact(&waiting).unwrap();
    drop(journal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot, Some(waiting));
    assert!(recovered.records.is_empty());
}

#[test]
fn a_reserve_that_skips_records_the_journal_lacks_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    let path = dir.path().join(JOURNAL_FILE);
    journal.append(&"one".to_string()).unwrap();
    let one_record = std::fs::metadata(&path).unwrap().len();
    journal.append(&"two".to_string()).unwrap();
    journal.reserve(&strings(&["three"])).unwrap();
    drop(journal);
    // Record two is gone (a journal restored from an older copy): the
    // reserve's record three cannot follow record one.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(one_record)
        .unwrap();
    let error = Journal::open::<State, Record>(dir.path()).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("holds record 3 where what it serves continues with 2"),
        "{error}"
    );
}
