//! `audit tail --since WHEN`: where in the audit log a moment falls. WHEN
//! is how long ago (`2h`, `1d`), a UTC time today (`14:00`, the day before
//! when that is still to come), a date (`2026-11-29`) or an RFC 3339 time.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::tail_filter::look_back;
use crate::audit::AuditRecord;
use crate::config::HumanDuration;

/// The moment `text` names, as seen at `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(ago) = HumanDuration::parse(text) {
        let ago = chrono::Duration::from_std(ago.as_duration()).map_err(|e| e.to_string())?;
        return Ok(now - ago);
    }
    if let Ok(time) = NaiveTime::parse_from_str(text, "%H:%M") {
        let today = now.date_naive().and_time(time).and_utc();
        return Ok(if today > now {
            today - chrono::Duration::days(1)
        } else {
            today
        });
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "--since {text:?}: write how long ago (2h, 1d), a UTC time (14:00), \
                 a date (2026-11-29) or an RFC 3339 time (2026-11-29T14:00:00Z)"
            )
        })
}

/// The seq after which records written at or after `since` begin, looking
/// back from `head` a window at a time.
pub fn start_of_moment(log: &Path, head: u64, since: DateTime<Utc>) -> std::io::Result<u64> {
    look_back(log, head, |records| {
        let first = records.first()?;
        if written(first).is_some_and(|time| time >= since) {
            return None;
        }
        // The moment is in this window: the last record before it.
        records
            .iter()
            .rev()
            .find(|record| written(record).is_none_or(|time| time < since))
            .map(|record| record.seq)
    })
}

fn written(record: &AuditRecord) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&record.ts)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_moment_is_read_as_ago_a_time_today_a_date_or_rfc_3339() {
        let now = at("2026-11-29T10:30:00Z");
        let cases = [
            ("2h", "2026-11-29T08:30:00Z"),
            ("1d", "2026-11-28T10:30:00Z"),
            ("09:15", "2026-11-29T09:15:00Z"),
            // Still to come today: yesterday's.
            ("23:00", "2026-11-28T23:00:00Z"),
            ("2026-11-01", "2026-11-01T00:00:00Z"),
            ("2026-11-29T10:00:00+01:00", "2026-11-29T09:00:00Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_since(text, now), Ok(at(expected)), "{text}");
        }
        for bad in ["", "yesterday", "25:00", "2026-13-01", "10"] {
            let error = parse_since(bad, now).unwrap_err();
            assert!(error.contains("how long ago"), "{bad}: {error}");
        }
    }
}
