//! Output quality: the per-request choice, and the estimate of a JPEG input's own quality.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::jpeg;

/// Per-request quality choice.
///
/// `Relative` exists because re-encoding an already-compressed JPEG at a fixed
/// quality can make it bigger or needlessly worse; "half of what it had" adapts
/// to each input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quality {
    /// A JPEG quality, 1..=100.
    Absolute(u8),
    /// A percentage (1..=100) of the input's own estimated JPEG quality.
    Relative(u8),
    /// An SSIMULACRA2 score each output must reach against the decoded input: the
    /// lowest JPEG quality of [`AUTO_RANGE`] that does is used.
    Auto(Target),
}

/// An SSIMULACRA2 target from 1 to 100 with at most two decimals (`80`, `65.56`).
///
/// Kept in hundredths, so it compares, prints and parses back exactly: a score is a
/// real number, and a target such as the median of a fixed quality's scores is
/// rarely a whole one. Serialised as a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(u16);

impl Target {
    /// A whole target, 1..=100 (not checked: for constants).
    pub const fn whole(n: u8) -> Self {
        Self(n as u16 * 100)
    }

    /// The target as a score.
    pub fn score(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// Parses `80` or `65.56` (1 to 100, at most two decimals).
    fn parse(s: &str) -> Option<Self> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || !digits(whole) || frac.len() > 2 || !digits(frac)
        {
            return None;
        }
        if s.contains('.') && frac.is_empty() {
            return None;
        }
        // At most 999.99: in u32 the arithmetic cannot overflow (in u16 `auto:700`
        // wrapped to 44.64 and passed the range check).
        let whole: u32 = whole.parse().ok()?;
        let frac: u32 = format!("{frac:0<2}").parse().ok()?;
        let hundredths = u16::try_from(whole * 100 + frac).ok()?;
        (100..=10_000)
            .contains(&hundredths)
            .then_some(Self(hundredths))
    }

    /// From a JSON number (what [`Serialize`] writes), rounded to hundredths.
    fn from_score(score: f64) -> Option<Self> {
        let hundredths = (score * 100.0).round();
        (100.0..=10_000.0)
            .contains(&hundredths)
            .then_some(Self(hundredths as u16))
    }
}

impl fmt::Display for Target {
    /// `80`, `65.5` or `65.56`: the shortest form [`Target::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}"),
            _ if frac % 10 == 0 => write!(f, "{whole}.{}", frac / 10),
            _ => write!(f, "{whole}.{frac:02}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.score())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let score = f64::deserialize(deserializer)?;
        Self::from_score(score)
            .ok_or_else(|| serde::de::Error::custom(format!("target {score} not in 1..=100")))
    }
}

/// The SSIMULACRA2 target of a plain `auto`: 70 is "high" on the metric's scale
/// (90 ≈ visually lossless, 50 ≈ medium).
pub const DEFAULT_AUTO_TARGET: Target = Target::whole(70);

/// The JPEG qualities the adaptive searches (`auto`, `max_bytes`) choose from: below
/// 30 the IJG tables block visibly whatever the metric says, above 95 bytes grow
/// much faster than any score.
pub const AUTO_RANGE: std::ops::RangeInclusive<u8> = 30..=95;

const ALLOWED: &str = "expected a quality from 1 to 100 (e.g. \"50\"), \
                       \"relative:N%\" with N from 1 to 100 (e.g. \"relative:50%\"), \
                       or \"auto\" / \"auto:N\" for an SSIMULACRA2 target N from 1 to 100, \
                       at most two decimals (e.g. \"auto:80\", \"auto:65.5\")";

impl Quality {
    /// Parses `"50"`, `"relative:50%"`, `"auto"`, `"auto:80"` or `"auto:65.56"` (case-insensitive,
    /// spaces trimmed).
    ///
    /// The error message says what is allowed, so it can be shown to the user as is.
    pub fn parse(s: &str) -> Result<Quality, String> {
        let trimmed = s.trim();
        let lower = trimmed.to_ascii_lowercase();
        let shown: String = trimmed.chars().take(32).collect();
        let invalid = || format!("invalid quality {shown:?}: {ALLOWED}");
        if lower == "auto" {
            return Ok(Quality::Auto(DEFAULT_AUTO_TARGET));
        }
        if let Some(rest) = lower.strip_prefix("auto:") {
            return Target::parse(rest.trim())
                .map(Quality::Auto)
                .ok_or_else(invalid);
        }
        let (number, relative) = match lower.strip_prefix("relative:") {
            Some(rest) => {
                let rest = rest.trim();
                (rest.strip_suffix('%').unwrap_or(rest).trim_end(), true)
            }
            None => (lower.as_str(), false),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let value: u8 = match number.parse() {
            Ok(v) if (1..=100).contains(&v) => v,
            _ => return Err(invalid()),
        };
        Ok(if relative {
            Quality::Relative(value)
        } else {
            Quality::Absolute(value)
        })
    }
}

impl fmt::Display for Quality {
    /// Writes the form [`Quality::parse`] reads: `50`, `relative:50%` or `auto:70`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Absolute(q) => write!(f, "{q}"),
            Quality::Relative(p) => write!(f, "relative:{p}%"),
            Quality::Auto(t) => write!(f, "auto:{t}"),
        }
    }
}

/// The quality to encode with: absolute as given, relative as a rounded
/// percentage of the source's quality (or `default` when it has none), clamped to
/// 1..=100; for `auto`, the top of [`AUTO_RANGE`] (the search starts elsewhere,
/// this is its fallback).
pub(crate) fn resolve(quality: Quality, default: u8, source: Option<u8>) -> u8 {
    let q = match (quality, source) {
        (Quality::Auto(_), _) => u32::from(*AUTO_RANGE.end()),
        (Quality::Absolute(q), _) => u32::from(q),
        (Quality::Relative(p), Some(s)) => (u32::from(s) * u32::from(p) + 50) / 100,
        (Quality::Relative(_), None) => u32::from(default),
    };
    // Clamped to 1..=100, so the cast cannot truncate.
    q.clamp(1, 100) as u8
}

/// The IJG (Annex K.1) luminance table, in natural (row-major) order.
pub(crate) const IJG_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, //
    12, 12, 14, 19, 26, 58, 60, 55, //
    14, 13, 16, 24, 40, 57, 69, 56, //
    14, 17, 22, 29, 51, 87, 80, 62, //
    18, 22, 37, 56, 68, 109, 103, 77, //
    24, 35, 55, 64, 81, 104, 113, 92, //
    49, 64, 78, 87, 103, 121, 120, 101, //
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The IJG (Annex K.2) chrominance table, in natural (row-major) order.
pub(crate) const IJG_CHROMA: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, //
    18, 21, 26, 66, 99, 99, 99, 99, //
    24, 26, 56, 99, 99, 99, 99, 99, //
    47, 66, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99,
];

/// libjpeg's `jpeg_quality_scaling` percentage for a quality 1..=100.
fn quality_scale(quality: u32) -> u32 {
    let quality = quality.clamp(1, 100);
    if quality < 50 {
        5000 / quality
    } else {
        200 - 2 * quality
    }
}

/// `base` scaled to `quality` as libjpeg's `jpeg_set_quality` does with
/// `force_baseline`: rounded, clamped to 1..=255.
pub(crate) fn scaled_table(base: &[u16; 64], quality: u8) -> [u16; 64] {
    let scale = quality_scale(u32::from(quality));
    // Clamped to 1..=255: the cast cannot truncate.
    base.map(|v| ((u32::from(v) * scale + 50) / 100).clamp(1, 255) as u16)
}

/// Natural-order index of the n-th coefficient in zigzag order (DQT stores zigzag).
pub(crate) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Estimated IJG quality of a JPEG from its DQT luminance table, `None` when
/// not a JPEG or no table.
///
/// Inverts libjpeg's `jpeg_quality_scaling`: the standard luminance table is
/// scaled for every quality 1..=100 and the quality whose table is closest
/// (sum of absolute differences; ties go to the higher quality) wins. Exact for
/// files written by libjpeg, ImageMagick, Pillow, jpeg-encoder and most
/// cameras' IJG-style encoders; an approximation for custom tables.
pub fn estimate_jpeg_quality(bytes: &[u8]) -> Option<u8> {
    let header = jpeg::parse(bytes).ok()?;
    let table = header.luma_table()?;
    let max = if table.sixteen_bit { 32767 } else { 255 };
    let mut best: Option<(u64, u8)> = None;
    for quality in (1..=100u32).rev() {
        let scale = quality_scale(quality);
        let error: u64 = ZIGZAG
            .iter()
            .zip(table.values)
            .map(|(&natural, actual)| {
                let expected = ((u32::from(IJG_LUMA[natural]) * scale + 50) / 100).clamp(1, max);
                u64::from(expected.abs_diff(u32::from(actual)))
            })
            .sum();
        if best.is_none_or(|(e, _)| error < e) {
            // quality is 1..=100, the cast cannot truncate.
            best = Some((error, quality as u8));
        }
    }
    best.map(|(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_absolute_and_relative_forms() {
        assert_eq!(Quality::parse("50"), Ok(Quality::Absolute(50)));
        assert_eq!(Quality::parse(" 1 "), Ok(Quality::Absolute(1)));
        assert_eq!(Quality::parse("100"), Ok(Quality::Absolute(100)));
        assert_eq!(Quality::parse("relative:50%"), Ok(Quality::Relative(50)));
        assert_eq!(
            Quality::parse("  RELATIVE:75%  "),
            Ok(Quality::Relative(75))
        );
        assert_eq!(Quality::parse("Relative: 20 %"), Ok(Quality::Relative(20)));
        assert_eq!(Quality::parse("relative:100"), Ok(Quality::Relative(100)));
        assert_eq!(
            Quality::parse("auto"),
            Ok(Quality::Auto(DEFAULT_AUTO_TARGET))
        );
        let auto = |h| Ok(Quality::Auto(Target(h)));
        assert_eq!(Quality::parse(" AUTO:80 "), auto(8000));
        assert_eq!(Quality::parse("auto: 1"), auto(100));
        assert_eq!(Quality::parse("auto:100"), auto(10_000));
        assert_eq!(Quality::parse("auto:65.56"), auto(6556));
        assert_eq!(Quality::parse("auto:65.5"), auto(6550));
        assert_eq!(Quality::parse("auto:065.50"), auto(6550));
        assert_eq!(Quality::parse("auto:100.00"), auto(10_000));
    }

    #[test]
    fn parse_rejects_everything_else_and_says_what_is_allowed() {
        for bad in [
            "",
            "0",
            "101",
            "256",
            "-5",
            "+5",
            "50.5",
            "fifty",
            "relative:",
            "relative:0%",
            "relative:101%",
            "relative:%",
            "rel:50%",
            "50%",
            "relative:50%%",
            "99999999999",
            "auto:0",
            "auto:abc",
            "auto:",
            "auto:101",
            "auto:-1",
            "auto:0.99",
            "auto:100.01",
            "auto:700",
            "auto:655.36",
            "auto:999.99",
            "auto:65.556",
            "auto:65.",
            "auto:.5",
            "auto:65,5",
            "auto:1e2",
            "autox",
        ] {
            let err = Quality::parse(bad).expect_err(bad);
            assert!(
                err.contains("1 to 100") && err.contains("relative:N%") && err.contains("auto:N"),
                "{err}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for q in [
            Quality::Absolute(50),
            Quality::Relative(50),
            Quality::Absolute(1),
            Quality::Auto(Target(8000)),
            Quality::Auto(Target(6556)),
            Quality::Auto(Target(6550)),
            Quality::Auto(Target(105)),
        ] {
            assert_eq!(Quality::parse(&q.to_string()), Ok(q));
        }
        assert_eq!(Quality::Absolute(50).to_string(), "50");
        assert_eq!(Quality::Relative(50).to_string(), "relative:50%");
        assert_eq!(Quality::Auto(Target(8000)).to_string(), "auto:80");
        assert_eq!(Quality::Auto(Target(6550)).to_string(), "auto:65.5");
        assert_eq!(Quality::Auto(Target(6556)).to_string(), "auto:65.56");
        assert_eq!(Quality::Auto(Target(105)).to_string(), "auto:1.05");
    }

    #[test]
    fn targets_are_json_numbers_and_whole_ones_read_as_before() {
        let q: Quality = serde_json::from_str(r#"{"Auto":70}"#).expect("a whole target");
        assert_eq!(q, Quality::Auto(Target(7000)));
        let json = serde_json::to_string(&Quality::Auto(Target(6556))).unwrap();
        assert_eq!(json, r#"{"Auto":65.56}"#);
        assert_eq!(
            serde_json::from_str::<Quality>(&json).unwrap(),
            Quality::Auto(Target(6556))
        );
        assert!(serde_json::from_str::<Quality>(r#"{"Auto":0.5}"#).is_err());
    }

    #[test]
    fn resolve_scales_clamps_and_falls_back() {
        assert_eq!(resolve(Quality::Absolute(50), 70, Some(90)), 50);
        assert_eq!(resolve(Quality::Absolute(0), 70, None), 1);
        assert_eq!(resolve(Quality::Absolute(200), 70, None), 100);
        assert_eq!(resolve(Quality::Relative(50), 70, Some(85)), 43);
        assert_eq!(resolve(Quality::Relative(50), 70, Some(90)), 45);
        assert_eq!(resolve(Quality::Relative(1), 70, Some(30)), 1);
        assert_eq!(resolve(Quality::Relative(100), 70, Some(100)), 100);
        assert_eq!(resolve(Quality::Relative(50), 70, None), 70);
        assert_eq!(resolve(Quality::Relative(50), 0, None), 1);
    }

    /// A JPEG header holding only a DQT for `quality` and a gray SOF.
    fn header_with_table(quality: u32) -> Vec<u8> {
        let scale = if quality < 50 {
            5000 / quality
        } else {
            200 - 2 * quality
        };
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0];
        j.extend(
            ZIGZAG
                .iter()
                .map(|&n| ((u32::from(IJG_LUMA[n]) * scale + 50) / 100).clamp(1, 255) as u8),
        );
        j.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
        j
    }

    #[test]
    fn estimate_is_exact_for_every_ijg_quality() {
        for q in 1..=100u32 {
            assert_eq!(estimate_jpeg_quality(&header_with_table(q)), Some(q as u8));
        }
    }

    #[test]
    fn estimate_needs_a_jpeg_with_a_table() {
        assert_eq!(estimate_jpeg_quality(b"GIF89a"), None);
        assert_eq!(estimate_jpeg_quality(&[]), None);
        let no_dqt = [0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0];
        assert_eq!(estimate_jpeg_quality(&no_dqt), None);
    }
}
