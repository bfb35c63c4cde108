//! The per-request byte cap of each output (`max_bytes`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest size one output JPEG may have, in bytes.
///
/// Parsed from `150000`, `150KB`, `150kB` or `2MB`: decimal units (1 KB = 1000 bytes,
/// 1 MB = 1 000 000), as storage and network sizes are quoted, so `150KB` is exactly
/// `150000`. At least [`MaxBytes::MIN`]: below that not even a tiny thumbnail's
/// JPEG headers and tables fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxBytes(u64);

const ALLOWED: &str = "expected a byte count from 2000 to 1000000000, \
                       optionally with KB (1000 bytes) or MB (1000000 bytes), \
                       e.g. \"150000\", \"150KB\" or \"2MB\"";

impl MaxBytes {
    /// The smallest cap accepted: a baseline JPEG's markers and standard tables
    /// alone take about 600 bytes.
    pub const MIN: u64 = 2000;
    /// The largest cap accepted (1 GB, far above any input the service accepts).
    pub const MAX: u64 = 1_000_000_000;

    /// Parses a cap; the error says what is allowed, so it can be shown as is.
    pub fn parse(s: &str) -> Result<MaxBytes, String> {
        let trimmed = s.trim();
        let shown: String = trimmed.chars().take(32).collect();
        let invalid = || format!("invalid max_bytes {shown:?}: {ALLOWED}");
        let lower = trimmed.to_ascii_lowercase();
        let (number, unit) = if let Some(n) = lower.strip_suffix("kb") {
            (n, 1000)
        } else if let Some(n) = lower.strip_suffix("mb") {
            (n, 1_000_000)
        } else if let Some(n) = lower.strip_suffix('b') {
            (n, 1)
        } else {
            (lower.as_str(), 1)
        };
        let number = number.trim_end();
        if number.is_empty() || number.len() > 12 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(Self::from_bytes)
            .ok_or_else(invalid)
    }

    /// A cap of `bytes`, if within [`MaxBytes::MIN`]..=[`MaxBytes::MAX`] (e.g. one
    /// stored with a request).
    pub fn from_bytes(bytes: u64) -> Option<MaxBytes> {
        (Self::MIN..=Self::MAX)
            .contains(&bytes)
            .then_some(MaxBytes(bytes))
    }

    /// The cap in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MaxBytes {
    /// The plain byte count, which [`MaxBytes::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for MaxBytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MaxBytes::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_plain_and_decimal_units() {
        assert_eq!(MaxBytes::parse("150000").map(MaxBytes::get), Ok(150_000));
        assert_eq!(MaxBytes::parse(" 150KB ").map(MaxBytes::get), Ok(150_000));
        assert_eq!(MaxBytes::parse("150kb").map(MaxBytes::get), Ok(150_000));
        assert_eq!(MaxBytes::parse("2MB").map(MaxBytes::get), Ok(2_000_000));
        assert_eq!(MaxBytes::parse("2 mb").map(MaxBytes::get), Ok(2_000_000));
        assert_eq!(MaxBytes::parse("5000b").map(MaxBytes::get), Ok(5000));
        assert_eq!(MaxBytes::parse("2000").map(MaxBytes::get), Ok(2000));
    }

    #[test]
    fn parse_rejects_everything_else_and_says_what_is_allowed() {
        for bad in [
            "",
            "-1",
            "10",
            "1999",
            "1KB",
            "abc",
            "1.5MB",
            "150 KiB",
            "2GB",
            "1001MB",
            "+5000",
            "99999999999999999999",
            "KB",
        ] {
            let err = MaxBytes::parse(bad).expect_err(bad);
            assert!(err.contains("max_bytes") && err.contains("150KB"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        let cap = MaxBytes::parse("150KB").unwrap();
        assert_eq!(cap.to_string(), "150000");
        assert_eq!(MaxBytes::parse(&cap.to_string()), Ok(cap));
    }
}
