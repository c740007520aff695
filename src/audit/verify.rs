//! `jitgate audit verify`: walks the hash chain and names the first broken link.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Anchor, GENESIS, record_hash, rotation_number};

#[derive(Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: usize,
    pub records: u64,
    pub last_seq: u64,
    /// The hash of the last record (the chain's head), to be kept elsewhere.
    pub last_hash: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {problem}", file.display())]
pub struct VerifyError {
    pub file: PathBuf,
    pub line: usize,
    pub problem: String,
}

/// The files of one chain, oldest first: `FILE.1`, `FILE.2`, …, then `FILE`.
pub fn chain_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let candidate = entry?.path();
        if let Some(number) = rotation_number(path, &candidate) {
            rotated.push((number, candidate));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Verifies the chain across `files` in order; it must start at seq 1.
pub fn verify_files(files: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    verify_chain(files, None)
}

/// Verifies the chain and that it still holds `anchor`: the record at the
/// anchor's seq exists and has the anchor's hash.
pub fn verify_against(files: &[PathBuf], anchor: &Anchor) -> Result<VerifyReport, VerifyError> {
    verify_chain(files, Some(anchor))
}

fn verify_chain(files: &[PathBuf], anchor: Option<&Anchor>) -> Result<VerifyReport, VerifyError> {
    let mut expected_seq = 1u64;
    let mut prev = GENESIS.to_string();
    let mut records = 0u64;
    let mut end = (files.last().cloned().unwrap_or_default(), 0);
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| VerifyError {
            file: file.clone(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        for (index, line) in text.lines().enumerate() {
            let fail = |problem: String| VerifyError {
                file: file.clone(),
                line: index + 1,
                problem,
            };
            let (seq, hash) = check_record(line, expected_seq, &prev).map_err(fail)?;
            if let Some(anchor) = anchor.filter(|a| a.seq == seq && a.hash != hash) {
                return Err(fail(format!(
                    "record seq {seq} is not the one anchored as {anchor}: the log was rewritten from here on"
                )));
            }
            prev = hash;
            expected_seq = seq + 1;
            records += 1;
            end = (file.clone(), index + 1);
        }
    }
    let last_seq = expected_seq - 1;
    if let Some(anchor) = anchor.filter(|a| a.seq > last_seq) {
        return Err(VerifyError {
            file: end.0,
            line: end.1,
            problem: format!(
                "the log ends at seq {last_seq} but seq {} was anchored: records {} to {} were removed",
                anchor.seq,
                last_seq + 1,
                anchor.seq
            ),
        });
    }
    Ok(VerifyReport {
        files: files.len(),
        records,
        last_seq,
        last_hash: prev,
    })
}

fn check_record(line: &str, expected_seq: u64, prev: &str) -> Result<(u64, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("record has no seq")?;
    let hash = object
        .get("hash")
        .and_then(Value::as_str)
        .ok_or("record has no hash")?;
    let claimed_prev = object
        .get("prev")
        .and_then(Value::as_str)
        .ok_or("record has no prev")?;
    if seq != expected_seq {
        return Err(format!(
            "record seq {seq} where {expected_seq} was expected: records were removed, reordered or inserted"
        ));
    }
    if claimed_prev != prev {
        return Err(format!(
            "record seq {seq} does not follow the previous record: its prev hash does not match"
        ));
    }
    if record_hash(object) != hash {
        return Err(format!(
            "record seq {seq} was altered: its content does not match its hash"
        ));
    }
    let event = object.get("event");
    if event.and_then(|e| e.get("type")).and_then(Value::as_str) == Some("audit_tampered") {
        let problem = event
            .and_then(|e| e.get("problem"))
            .and_then(Value::as_str)
            .unwrap_or("records were removed");
        return Err(format!(
            "record seq {seq}: the gateway found at its start that {problem}"
        ));
    }
    Ok((seq, hash.to_string()))
}
