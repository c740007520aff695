//! Human durations in config files and commands: `30s`, `15m`, `2h`, `1d`, `1h30m`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way operators write them. Parsing is strict: a unit
/// is mandatory and only `s`, `m`, `h` and `d` are known, so `30` or `5x` are
/// mistakes reported by name instead of guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Longest duration accepted anywhere: ten years. Larger values are typos and
/// would overflow instant arithmetic.
const MAX_SECONDS: u64 = 10 * 365 * 86_400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration: write e.g. 30s, 15m, 2h or 1d")]
    Empty,
    #[error("invalid duration {0:?}: write a number followed by s, m, h or d (e.g. 30m)")]
    Malformed(String),
    #[error("duration {0:?} is too long (at most 10 years)")]
    TooLong(String),
}

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let malformed = || DurationError::Malformed(text.to_string());
        let mut total: u64 = 0;
        let mut digits = String::new();
        for ch in text.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(malformed()),
            };
            if digits.is_empty() {
                return Err(malformed());
            }
            // Twelve digits of any unit are already past the maximum.
            if digits.trim_start_matches('0').len() > 12 {
                return Err(DurationError::TooLong(text.to_string()));
            }
            let value: u64 = digits.parse().map_err(|_| malformed())?;
            total = value
                .checked_mul(unit)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| DurationError::TooLong(text.to_string()))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(malformed());
        }
        if total > MAX_SECONDS {
            return Err(DurationError::TooLong(text.to_string()));
        }
        Ok(Self(Duration::from_secs(total)))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl fmt::Display for HumanDuration {
    /// Prints the shortest exact form (`90m` becomes `1h30m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{}", secs / size, unit)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(HumanDuration::parse("30s").unwrap().0.as_secs(), 30);
        assert_eq!(HumanDuration::parse("15m").unwrap().0.as_secs(), 900);
        assert_eq!(HumanDuration::parse("2h").unwrap().0.as_secs(), 7_200);
        assert_eq!(HumanDuration::parse("1d").unwrap().0.as_secs(), 86_400);
        assert_eq!(HumanDuration::parse("1h30m").unwrap().0.as_secs(), 5_400);
    }

    #[test]
    fn refuses_missing_unknown_or_empty_units() {
        for bad in ["30", "5x", "m", "", "  ", "1.5h", "-1m", "1h 30m", "h1"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_overflowing_values() {
        assert!(matches!(
            HumanDuration::parse("999999999999d"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            HumanDuration::parse("3651d"),
            Err(DurationError::TooLong(_))
        ));
        // Too many digits to even multiply is still "too long", not a typo.
        assert!(matches!(
            HumanDuration::parse("99999999999999h"),
            Err(DurationError::TooLong(_))
        ));
        assert_eq!(
            HumanDuration::parse("0000000000000030m")
                .unwrap()
                .0
                .as_secs(),
            1800
        );
    }

    #[test]
    fn displays_in_shortest_form() {
        assert_eq!(HumanDuration::parse("90m").unwrap().to_string(), "1h30m");
        assert_eq!(HumanDuration::from_secs(0).to_string(), "0s");
        assert_eq!(HumanDuration::parse("1d").unwrap().to_string(), "1d");
    }
}
