//! Reading the chain from a position: what a follower that fell behind
//! (a webhook that was down, or a gateway that was) catches up from.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
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
    let file = File::open(path)?;
    let start = start_of_records_after(&file, after)?;
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(start))?;
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

/// Where reading for the records past `after` may start: a line start at
/// or before the first of them, found by bisection over byte offsets (seqs
/// grow along the file), so a position near the end of a large file costs
/// a few small reads rather than the whole file.
fn start_of_records_after(file: &File, after: u64) -> std::io::Result<u64> {
    /// Below this span, reading forward is cheaper than probing again.
    const SPAN: u64 = 64 * 1024;
    let (mut low, mut high) = (0, file.metadata()?.len());
    while high - low > SPAN {
        let middle = low + (high - low) / 2;
        match line_after(file, middle, high)? {
            Some((start, seq)) if seq <= after => low = start,
            _ => high = middle,
        }
    }
    Ok(low)
}

/// The first whole line that starts after `offset` and before `end`: its
/// start and seq (`None` if there is none, or it cannot be read as a
/// record, which leaves the search to read forward instead).
fn line_after(file: &File, offset: u64, end: u64) -> std::io::Result<Option<(u64, u64)>> {
    const CHUNK: usize = 16 * 1024;
    /// Records are far shorter; a longer "line" is not one.
    const LONGEST: usize = 1 << 20;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; CHUNK];
    let mut line_start = None;
    while bytes.len() < LONGEST {
        let read = file.read_at(&mut chunk, offset + bytes.len() as u64)?;
        if read == 0 {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk[..read]);
        let Some(start) = line_start.or_else(|| {
            bytes
                .iter()
                .position(|&b| b == b'\n')
                .map(|newline| newline + 1)
        }) else {
            continue;
        };
        line_start = Some(start);
        if offset + start as u64 >= end {
            return Ok(None);
        }
        if let Some(length) = bytes[start..].iter().position(|&b| b == b'\n') {
            let seq = serde_json::from_slice::<Position>(&bytes[start..start + length])
                .ok()
                .map(|position| (offset + start as u64, position.seq));
            return Ok(seq);
        }
    }
    Ok(None)
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
    fn any_position_in_a_large_file_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path, 1 << 30).unwrap();
        for n in 0..5000 {
            // Lines of varied length, as real records are.
            log.append(AuditEvent::TornTailDropped {
                file: "x".repeat(n % 300),
                bytes: n as u64,
            })
            .unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 4 * 64 * 1024);
        for after in [0, 1, 777, 2500, 4096, 4998, 4999, 5000, 6000] {
            let found = seqs(&records_after(&path, after, 3).unwrap());
            let expected: Vec<u64> = (after + 1..=5000).take(3).collect();
            assert_eq!(found, expected, "after {after}");
        }
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
