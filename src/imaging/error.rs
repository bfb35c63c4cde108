//! The one error type of the imaging pipeline.

use super::Format;
use crate::domain::FailureCode;

/// Why an image could not be transformed.
///
/// Every variant is **permanent**: the transform is a pure function of the
/// input bytes, so retrying the same bytes fails the same way. Callers should
/// fail the image at once (no backoff) and show the message to the user.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The magic bytes are none of JPEG, PNG, GIF, WebP, BMP or TIFF.
    #[error("unsupported format")]
    UnsupportedFormat,
    /// The header announces more pixels than allowed; nothing was decoded.
    #[error("image is {width}x{height} ({pixels} pixels), over the limit of {limit} pixels")]
    TooManyPixels {
        /// Width from the header (before orientation).
        width: u32,
        /// Height from the header (before orientation).
        height: u32,
        /// `width × height`.
        pixels: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// The bytes are damaged, truncated, over the byte limit, or use a feature the decoder lacks.
    #[error("cannot decode {format:?} image: {reason}")]
    Decode {
        /// The format the magic bytes announced.
        format: Format,
        /// A human-readable cause.
        reason: String,
    },
    /// The decoded image cannot be written as JPEG (e.g. a side over the encoder's 65,500 pixels).
    #[error("cannot encode JPEG: {0}")]
    Encode(String),
    /// A JPEG has more scans than allowed: each scan makes the decoder walk every
    /// block of its components again, so their number bounds the work per pixel.
    #[error("too many scans ({scans} > {limit})")]
    TooManyScans {
        /// Scans counted (in the file, or by libjpeg when it reached the limit).
        scans: u32,
        /// The configured maximum.
        limit: u32,
    },
    /// The transform used up its CPU-time budget and was stopped.
    #[error("transform over its time budget ({:.2} s of CPU time)", budget.as_secs_f64())]
    OverBudget {
        /// The budget of this image.
        budget: std::time::Duration,
    },
    /// libjpeg decodes the JPEG only with warnings about damaged data (its text):
    /// part of the picture would be made up, and the bytes are not fit to keep.
    #[error("corrupt image data: {0}")]
    Corrupt(String),
}

impl ImagingError {
    /// Always `false`: no imaging error goes away on retry (see the type's docs).
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The stable code of this kind of failure.
    pub fn code(&self) -> FailureCode {
        match self {
            Self::UnsupportedFormat => FailureCode::UnsupportedFormat,
            Self::TooManyPixels { .. } => FailureCode::TooManyPixels,
            Self::Decode { .. } | Self::Corrupt(_) => FailureCode::Undecodable,
            Self::Encode(_) => FailureCode::EncodeFailed,
            Self::TooManyScans { .. } => FailureCode::TooManyScans,
            Self::OverBudget { .. } => FailureCode::OverBudget,
        }
    }
}
