//! Reading the chain from a position: what a follower that fell behind
//! (a webhook that was down, or a gateway that was) catches up from.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{AuditRecord, chain_files, last_head_of};

/// Up to `limit` records with a seq above `after`, oldest first, from the
/// rotated files and the current one. Rotated files that end at or before
/// `after` are not read. A last line still being written is left for the
/// next call; a damaged line is skipped (`audit verify` names it).
pub fn records_after(path: &Path, after: u64, limit: usize) -> std::io::Result<Vec<AuditRecord>> {
    let mut found = Vec::new();
    let files = chain_files(path)?;
    let current = files.len().saturating_sub(1);
    for (index, file) in files.iter().enumerate() {
        if index < current && last_head_of(file).is_some_and(|head| head.seq <= after) {
            continue;
        }
        match read_after(file, after, limit - found.len(), &mut found) {
            Ok(()) => {}
            // Rotated away between the listing and the open: the next
            // call lists it under its new name.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
        if found.len() == limit {
            break;
        }
    }
    Ok(found)
}

#[derive(serde::Deserialize)]
struct Position {
    seq: u64,
}

fn read_after(
    path: &Path,
    after: u64,
    limit: usize,
    found: &mut Vec<AuditRecord>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = String::new();
    let mut taken = 0;
    while taken < limit {
        line.clear();
        if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            break;
        }
        // Lines up to `after` are only looked at for their seq.
        let Ok(position) = serde_json::from_str::<Position>(&line) else {
            continue;
        };
        if position.seq <= after {
            continue;
        }
        if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
            found.push(record);
            taken += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};

    fn seqs(records: &[AuditRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn reads_on_from_a_position_across_rotated_files_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Small enough that ten records span several files.
        let (mut log, _) = AuditLog::open(&path, 400).unwrap();
        for _ in 0..10 {
            log.append(AuditEvent::GatewayStopped).unwrap();
        }
        assert!(chain_files(&path).unwrap().len() > 2);
        assert_eq!(
            seqs(&records_after(&path, 0, 100).unwrap()),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&records_after(&path, 3, 4).unwrap()), vec![4, 5, 6, 7]);
        assert_eq!(seqs(&records_after(&path, 9, 100).unwrap()), vec![10]);
        assert!(records_after(&path, 10, 100).unwrap().is_empty());
    }

    #[test]
    fn a_line_still_being_written_is_left_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 20).unwrap();
        log.append(AuditEvent::GatewayStopped).unwrap();
        let whole = std::fs::read_to_string(&path).unwrap();
        let torn = whole.replace("\"seq\":1", "\"seq\":2");
        std::fs::write(&path, format!("{whole}{}", torn.trim_end())).unwrap();
        assert_eq!(seqs(&records_after(&path, 0, 100).unwrap()), vec![1]);
    }
}
