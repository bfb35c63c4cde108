//! What the transform produced and what it did, for storage and the API.

use serde::{Deserialize, Serialize};

use super::quality::Target;

/// An input format recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JPEG/JFIF/EXIF (`FF D8 FF`).
    Jpeg,
    /// PNG, including APNG (first frame is used).
    Png,
    /// GIF 87a/89a (first frame is used).
    Gif,
    /// WebP, lossy or lossless (first frame of an animation is used).
    Webp,
    /// Windows bitmap.
    Bmp,
    /// TIFF or BigTIFF (first page is used).
    Tiff,
}

impl Format {
    /// The matching `image` crate format, to pick its decoder without guessing again.
    pub(crate) fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Gif => image::ImageFormat::Gif,
            Format::Webp => image::ImageFormat::WebP,
            Format::Bmp => image::ImageFormat::Bmp,
            Format::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// Which limit decided the output quality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// The fixed (absolute or relative) quality asked for.
    #[default]
    Quality,
    /// The lowest quality of the range reaching the SSIMULACRA2 target.
    Target,
    /// The byte cap: a lower quality than the target or the fixed quality asked
    /// for, or a downscale (`downscaled`).
    MaxBytes,
    /// The top of the quality range, which still misses the target.
    QualityRange,
}

fn one() -> u32 {
    1
}

/// What was done to one image; stored as JSON with the image row and shown by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Format of the input, from its magic bytes.
    pub input_format: Format,
    /// Output width, EXIF orientation applied (also when the original was kept).
    pub width: u32,
    /// Output height, EXIF orientation applied (also when the original was kept).
    pub height: u32,
    /// Size of the input.
    pub input_bytes: u64,
    /// Size of the returned bytes (equals `input_bytes` when `kept_original`).
    pub output_bytes: u64,
    /// The JPEG quality the encoder was run with (also when its result was discarded).
    pub quality: u8,
    /// Estimated IJG quality of a JPEG input (`None` for other formats or unknown tables).
    pub source_quality: Option<u8>,
    /// The re-encode was not smaller than the JPEG input, so the input bytes were returned.
    pub kept_original: bool,
    /// An EXIF orientation other than "normal" was applied to the pixels (a kept
    /// original keeps its orientation tag, which viewers apply: also `true`).
    pub rotated: bool,
    /// The input was a CMYK/YCCK JPEG (or CMYK TIFF) converted to RGB.
    pub cmyk_converted: bool,
    /// An embedded non-sRGB ICC profile was converted to sRGB.
    pub icc_converted: bool,
    /// The input had pixels that were not fully opaque; they were composited onto white.
    pub alpha_flattened: bool,
    /// Frames after the first one of an animation, which were ignored.
    pub frames_dropped: u32,
    /// The input had more than 8 bits per sample.
    pub bit_depth_reduced: bool,
    /// The JPEG → JPEG fast path ran: coefficients requantised without decoding
    /// to pixels (absent in reports stored before it existed: `false`).
    #[serde(default)]
    pub fast_path: bool,
    /// The SSIMULACRA2 target asked for (`quality=auto:N`; a JSON number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// SSIMULACRA2 score of the output against the decoded input (when a target
    /// was asked), at the scoring scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Pixels `score` was taken on: the whole image up to
    /// [`MAX_SCORED_PIXELS`](super::adaptive::MAX_SCORED_PIXELS), a centred window of
    /// that area beyond. Present with `score` (absent in reports stored before it
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored_pixels: Option<u64>,
    /// The byte cap asked for (`max_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Encodes made to choose the quality (1 for a fixed quality without a cap).
    #[serde(default = "one")]
    pub tries: u32,
    /// Which limit decided the quality.
    #[serde(default)]
    pub binding: Binding,
    /// The image was downscaled (to `width` × `height`) to fit `max_bytes`.
    #[serde(default)]
    pub downscaled: bool,
}

impl Report {
    /// The transform's result: `bytes` with this report.
    pub(crate) fn with_bytes(self, bytes: Vec<u8>) -> Transformed {
        Transformed {
            bytes,
            report: self,
        }
    }

    /// Whether the SSIMULACRA2 target was asked for and missed (by the cap or the
    /// top of the quality range).
    pub fn target_missed(&self) -> bool {
        match (self.target, self.score) {
            (Some(t), Some(s)) => s < t.score(),
            (Some(_), None) => !self.kept_original,
            _ => false,
        }
    }
}

/// The result of [`transform`](super::transform): the bytes to store and the report.
#[derive(Clone, Debug)]
pub struct Transformed {
    /// A JPEG: the re-encoded image, or the input itself when `report.kept_original`.
    pub bytes: Vec<u8>,
    /// What was done.
    pub report: Report,
}
