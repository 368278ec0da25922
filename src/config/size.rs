//! Sizes as operators write them: a whole number of bytes (`32768`) or a
//! string with a binary unit (`"32KiB"`, `"1MiB"`, `"512B"`). Only binary
//! units, spelled out: `"32K"` or `"32kb"` are rejected, so a value never
//! means 32 000 to one reader and 32 768 to another.

const UNITS: [(&str, u64); 4] = [
    ("B", 1),
    ("KiB", 1024),
    ("MiB", 1024 * 1024),
    ("GiB", 1 << 30),
];

/// A size string that is not one (the text as written, for the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size \"{0}\" (use a number of bytes or e.g. \"512B\", \"32KiB\", \"1MiB\")")]
pub struct SizeError(pub String);

pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError(text.to_string());
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(invalid());
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| invalid())?;
    let unit = trimmed[digits..].trim_start();
    let factor = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor)
        .ok_or_else(invalid)?;
    number.checked_mul(factor).ok_or_else(invalid)
}

/// The shortest exact spelling: `"32KiB"`, `"1MiB"`, `"1000B"`.
pub fn format_size(bytes: u64) -> String {
    UNITS
        .iter()
        .rev()
        .find(|(_, factor)| bytes != 0 && bytes.is_multiple_of(*factor))
        .map_or_else(
            || format!("{bytes}B"),
            |(name, factor)| format!("{}{name}", bytes / factor),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_binary_units() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("32 KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    }

    #[test]
    fn rejects_the_unclear() {
        for bad in [
            "",
            "32",
            "32K",
            "32kb",
            "32KB",
            "32kib",
            "1.5KiB",
            "-1KiB",
            "KiB",
            "99999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["0B", "1000B", "32KiB", "1MiB", "3GiB"] {
            let bytes = parse_size(text).unwrap();
            assert_eq!(format_size(bytes), text);
        }
    }
}
