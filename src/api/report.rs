//! The transform report as the images API shows it: [`imaging::Report`] with a
//! schema of its own in the OpenAPI document, so clients get typed fields (the
//! quality chosen, the SSIMULACRA2 score, which limit was binding) instead of a
//! free-form object.

use poem_openapi::{Enum, Object, types::Example};

use crate::imaging::{self, Binding, Format};

/// Format of an input, from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum InputFormat {
    /// JPEG/JFIF/EXIF.
    Jpeg,
    /// PNG (the first frame of an APNG).
    Png,
    /// GIF (the first frame).
    Gif,
    /// WebP, lossy or lossless (the first frame).
    Webp,
    /// Windows bitmap.
    Bmp,
    /// TIFF or BigTIFF (the first page).
    Tiff,
}

impl From<Format> for InputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Jpeg => InputFormat::Jpeg,
            Format::Png => InputFormat::Png,
            Format::Gif => InputFormat::Gif,
            Format::Webp => InputFormat::Webp,
            Format::Bmp => InputFormat::Bmp,
            Format::Tiff => InputFormat::Tiff,
        }
    }
}

/// Which limit decided the output quality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum BindingLimit {
    /// The fixed quality asked for (`quality=50`, or relative `-10`).
    Quality,
    /// The lowest quality of the range whose output reaches the SSIMULACRA2 target
    /// (`quality=auto:N`) and fits `max_bytes` when one is set.
    Target,
    /// The byte cap (`max_bytes`): a lower quality than asked for, or a downscale
    /// (`downscaled`). With a target, the target was missed.
    MaxBytes,
    /// The top of the quality range (95), which still misses the target.
    QualityRange,
}

impl From<Binding> for BindingLimit {
    fn from(b: Binding) -> Self {
        match b {
            Binding::Quality => BindingLimit::Quality,
            Binding::Target => BindingLimit::Target,
            Binding::MaxBytes => BindingLimit::MaxBytes,
            Binding::QualityRange => BindingLimit::QualityRange,
        }
    }
}

/// What the transform did to one image.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ImageReport {
    /// Format of the input, from its magic bytes.
    input_format: InputFormat,
    /// Output width, EXIF orientation applied (also when the original was kept).
    width: u32,
    /// Output height, EXIF orientation applied.
    height: u32,
    /// Size of the input in bytes.
    input_bytes: u64,
    /// Size of the stored output in bytes (equals `input_bytes` when `kept_original`).
    output_bytes: u64,
    /// The JPEG quality chosen (also when its result was discarded for the original).
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    quality: u8,
    /// Estimated IJG quality of a JPEG input, when its tables are the standard ones scaled.
    source_quality: Option<u8>,
    /// The re-encode was not smaller than the JPEG input, so the input was stored.
    kept_original: bool,
    /// An EXIF orientation other than "normal" was applied to the pixels (a kept
    /// original keeps its orientation tag, which viewers apply: also `true`).
    rotated: bool,
    /// A CMYK/YCCK input was converted to RGB (never for a kept original: the input's
    /// own bytes, stored as they are).
    cmyk_converted: bool,
    /// An embedded non-sRGB ICC profile was converted to sRGB (never for a kept original).
    icc_converted: bool,
    /// Transparent pixels were composited onto white.
    alpha_flattened: bool,
    /// Frames after the first one of an animation, which were ignored.
    frames_dropped: u32,
    /// The input had more than 8 bits per sample.
    bit_depth_reduced: bool,
    /// A JPEG input was requantised in the DCT domain, without decoding to pixels.
    fast_path: bool,
    /// The SSIMULACRA2 target asked for (`quality=auto:N`, up to two decimals; `auto`
    /// is 70).
    target: Option<f64>,
    /// SSIMULACRA2 score of the output against the decoded input, at full size, when
    /// a target was asked (90 ≈ visually lossless, 70 ≈ high, 50 ≈ medium). Absent for
    /// a downscaled output, which has no same-size source to be scored against.
    score: Option<f64>,
    /// Pixels `score` was taken on: the whole image up to 16,777,216 (16.8 MP), a
    /// centred window of that area with the image's proportions beyond (the metric's
    /// memory grows with the pixels it scores). Present with `score` (but in reports
    /// stored before the field existed).
    scored_pixels: Option<u64>,
    /// The byte cap asked for (`max_bytes`).
    max_bytes: Option<u64>,
    /// Encodes made to choose the quality (1 for a fixed quality that fits).
    tries: u32,
    /// Which limit decided the quality.
    binding: BindingLimit,
    /// The image was downscaled (to `width` × `height`) to fit `max_bytes`.
    downscaled: bool,
}

impl Example for ImageReport {
    /// A photo uploaded with `quality=auto:70` and `max_bytes=150KB`: quality 58 is
    /// the lowest that reaches the target, found in three encodes.
    fn example() -> Self {
        ImageReport {
            input_format: InputFormat::Jpeg,
            width: 2560,
            height: 1600,
            input_bytes: 351_588,
            output_bytes: 131_072,
            quality: 58,
            source_quality: Some(85),
            kept_original: false,
            rotated: false,
            cmyk_converted: false,
            icc_converted: false,
            alpha_flattened: false,
            frames_dropped: 0,
            bit_depth_reduced: false,
            fast_path: true,
            target: Some(70.0),
            score: Some(70.4),
            scored_pixels: Some(4_096_000),
            max_bytes: Some(150_000),
            tries: 3,
            binding: BindingLimit::Target,
            downscaled: false,
        }
    }
}

impl From<imaging::Report> for ImageReport {
    fn from(r: imaging::Report) -> Self {
        ImageReport {
            input_format: r.input_format.into(),
            width: r.width,
            height: r.height,
            input_bytes: r.input_bytes,
            output_bytes: r.output_bytes,
            quality: r.quality,
            source_quality: r.source_quality,
            kept_original: r.kept_original,
            rotated: r.rotated,
            cmyk_converted: r.cmyk_converted,
            icc_converted: r.icc_converted,
            alpha_flattened: r.alpha_flattened,
            frames_dropped: r.frames_dropped,
            bit_depth_reduced: r.bit_depth_reduced,
            fast_path: r.fast_path,
            target: r.target.map(imaging::Target::score),
            score: r.score,
            scored_pixels: r.scored_pixels,
            max_bytes: r.max_bytes,
            tries: r.tries,
            binding: r.binding.into(),
            downscaled: r.downscaled,
        }
    }
}

impl ImageReport {
    /// The report stored with an image row. A row that does not parse (written by
    /// a version that stored something else) shows no report rather than failing
    /// the whole page.
    pub fn from_stored(value: serde_json::Value) -> Option<ImageReport> {
        match serde_json::from_value::<imaging::Report>(value) {
            Ok(r) => Some(r.into()),
            Err(e) => {
                tracing::warn!(error = %e, "stored transform report does not parse; not shown");
                None
            }
        }
    }
}
