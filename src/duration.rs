//! Durations as users write them in annotations and config: `30s`, `5m`,
//! `1h30m`, `250ms` (the Go `time.ParseDuration` units that make sense here).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty input.
    #[error("empty duration (expected e.g. 30s, 5m, 1h)")]
    Empty,
    /// A number without unit, an unknown unit or stray characters.
    #[error("invalid duration {0:?} (expected a number and a unit: ms, s, m or h, e.g. 30s, 5m, 1h30m)")]
    Invalid(String),
    /// Too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses `1h30m`, `5m`, `30s`, `250ms`. A bare `0` is zero.
///
/// # Errors
/// [`DurationError`] when the text is not a sequence of number+unit pairs.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(s.chars().take(32).collect());
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| DurationError::Overflow(s.into()))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let millis_per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(millis_per)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= u128::from(u64::MAX))
            .ok_or_else(|| DurationError::Overflow(s.into()))?;
    }
    Ok(Duration::from_millis(u64::try_from(total).map_err(|_| DurationError::Overflow(s.into()))?))
}

/// Formats a duration in the largest exact units: `5m`, `1h30m`, `250ms`.
pub fn format(d: Duration) -> String {
    struct F(Duration);
    impl fmt::Display for F {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut ms = self.0.as_millis();
            if ms == 0 {
                return f.write_str("0s");
            }
            for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
                if ms >= per {
                    write!(f, "{}{unit}", ms / per)?;
                    ms %= per;
                }
            }
            Ok(())
        }
    }
    F(d).to_string()
}

/// `serde(with = "sidekey::duration::serde_text")` for durations written as text.
pub mod serde_text {
    use super::*;

    /// Serializes as `5m`.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserializes from `5m`.
    ///
    /// # Errors
    /// When the text is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `serde(with = "sidekey::duration::opt_serde")` for optional durations
/// written as text.
pub mod opt_serde {
    use super::*;

    /// Serializes as `5m`.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from `5m`.
    ///
    /// # Errors
    /// When the text is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        for bad in ["", "5", "m", "5x", "1.5h", "-5s", "5 m", "5mm"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["5m", "1h30m", "250ms", "2m", "1h", "1m1s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
