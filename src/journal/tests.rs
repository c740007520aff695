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
