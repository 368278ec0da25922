//! Durations as operators write them: `"250ms"`, `"10s"`, `"5m"`, `"24h"`,
//! and compounds like `"1h30m"`. Whole numbers only: `"1.5s"` is rejected in
//! favour of `"1500ms"`, so every value has one obvious spelling.

use std::time::Duration;

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// A duration string that is not one (the text as written, for the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration \"{0}\" (use e.g. \"250ms\", \"10s\", \"5m\", \"1h30m\")")]
pub struct DurationError(pub String);

pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(invalid)?;
        total_ms = number
            .checked_mul(factor)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(invalid)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A spelling `parse_duration` reads back to the same value, largest units
/// first (`"1h30m"`, `"1s500ms"`); sub-millisecond parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, factor) in UNITS {
        if ms >= factor {
            out.push_str(&format!("{}{name}", ms / factor));
            ms %= factor;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1_500)));
    }

    #[test]
    fn rejects_the_unclear() {
        for bad in [
            "",
            "10",
            "1.5s",
            "-1s",
            "5 minutes",
            "s",
            "10x",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "30s", "5m", "1h30m", "24h", "1s500ms", "0s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
