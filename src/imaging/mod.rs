//! The per-image transform: any supported image in, a baseline JPEG out.
//!
//! Pure and synchronous (no I/O, no async): callers run [`transform`] on a CPU
//! pool. The pipeline, in order:
//!
//! 1. **Sniff** the format from magic bytes ([`sniff`]); anything that is not JPEG,
//!    PNG, GIF, WebP, BMP or TIFF is [`ImagingError::UnsupportedFormat`].
//! 2. **Limits before work**: the input size, then the pixel count read from the
//!    header alone ([`dimensions`]), are checked before any decoder runs, so a
//!    30000×30000 bomb costs microseconds and no pixel buffer. The decoder also
//!    gets `image` limits (exact dimensions, an allocation cap) as a second line.
//! 3. **Decode** under `catch_unwind`: gray and YCbCr/RGB JPEGs with libjpeg, the
//!    rest with `image`, first frame only for animations; CMYK/YCCK (Adobe-inverted)
//!    is converted to RGB by the decoder; 16-bit, palette, gray+alpha and RGBA become
//!    8-bit gray or RGB in one pass, alpha flattened onto white.
//! 4. **Colour**: an embedded ICC profile that is not sRGB is converted to sRGB
//!    with `qcms`; then the EXIF orientation is applied.
//! 5. **Encode** a baseline JPEG, 4:2:0, no metadata, with libjpeg's fastest settings.
//! 6. **Never larger**: a JPEG input whose re-encode is not smaller is returned
//!    unchanged (`kept_original`).
//!
//! **JPEGs whose pixels need no change** (gray or YCbCr, EXIF orientation 1, no ICC
//! profile other than sRGB) skip steps 3–5:
//! - the **fast path** ([`fastpath`], `Report::fast_path`) requantises the DCT
//!   coefficients of 4:2:0 sources and writes them straight back;
//! - other samplings (gray, 4:2:2, 4:4:4: measured faster this way), and all of them
//!   with [`Route::GeneralOnly`] or when the fast path fails, are decoded by libjpeg to
//!   subsampled YCbCr planes that go straight to its encoder, no RGB in between.
//!
//! libjpeg is mozjpeg-sys, SIMD when nasm was found at build time; its only `unsafe`
//! code is in [`libjpeg`].
//!
//! Every step records what it did in a [`Report`].

mod color;
pub(crate) mod decode;
pub(crate) mod encode;
mod error;
pub(crate) mod fastpath;
mod huffman;
pub(crate) mod jpeg;
pub(crate) mod libjpeg;
mod pool;
mod quality;
mod report;
mod sniff;

#[cfg(test)]
mod tests;

pub use error::ImagingError;
pub use pool::{PoolError, TransformPool};
pub use quality::{Quality, estimate_jpeg_quality};
pub use report::{Format, Report, Transformed};
pub use sniff::{dimensions, sniff};

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Resource limits for one image, checked before the expensive work starts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted `width × height` (before orientation); checked from the header.
    pub max_pixels: u64,
    /// Largest accepted input size in bytes (the downloader enforces it too, while streaming).
    pub max_input_bytes: u64,
}

/// Everything [`transform`] needs to know besides the bytes.
#[derive(Clone, Copy, Debug)]
pub struct TransformOptions {
    /// The quality the request asked for.
    pub quality: Quality,
    /// Used for `Quality::Relative` when the input is not a JPEG (it has no quality of its own).
    pub default_quality: u8,
    /// Size limits for this image.
    pub limits: Limits,
}

/// Which implementation [`transform_with`] may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// The fast path where it applies, else the general path (what [`transform`] does).
    #[default]
    Auto,
    /// Never the coefficient-domain fast path: always decode to pixels and encode
    /// again (for measurements and comparisons).
    GeneralOnly,
}

/// Runs the whole pipeline on one image: bytes in, JPEG bytes and a report out.
///
/// Never panics on bad input (decoder panics are caught and reported as
/// [`ImagingError::Decode`]). Every error is permanent: the same bytes fail the
/// same way, so callers should not retry.
pub fn transform(input: &[u8], opts: &TransformOptions) -> Result<Transformed, ImagingError> {
    transform_with(input, opts, Route::Auto)
}

/// [`transform`], choosing the [`Route`].
pub fn transform_with(
    input: &[u8],
    opts: &TransformOptions,
    route: Route,
) -> Result<Transformed, ImagingError> {
    let format = sniff(input).ok_or(ImagingError::UnsupportedFormat)?;
    let input_bytes = input.len() as u64;
    if input_bytes > opts.limits.max_input_bytes {
        return Err(ImagingError::Decode {
            format,
            reason: format!(
                "input is {input_bytes} bytes, over the limit of {} bytes",
                opts.limits.max_input_bytes
            ),
        });
    }
    let (width, height) = dimensions(input, format)?;
    check_pixels(width, height, opts.limits.max_pixels)?;

    let source_quality = match format {
        Format::Jpeg => estimate_jpeg_quality(input),
        _ => None,
    };
    let quality = quality::resolve(opts.quality, opts.default_quality, source_quality);

    if format == Format::Jpeg {
        // A panic would be a bug of ours, not bad input: fall back, never propagate.
        let direct = catch_unwind(AssertUnwindSafe(|| {
            direct_jpeg(input, quality, &opts.limits, route)
        }));
        if let Ok(Some((bytes, fast_path))) = direct {
            let kept_original = bytes.len() as u64 >= input_bytes;
            let bytes = if kept_original { input.to_vec() } else { bytes };
            let report = Report {
                input_format: format,
                width,
                height,
                input_bytes,
                output_bytes: bytes.len() as u64,
                quality,
                source_quality,
                kept_original,
                rotated: false,
                cmyk_converted: false,
                icc_converted: false,
                alpha_flattened: false,
                frames_dropped: 0,
                bit_depth_reduced: false,
                fast_path,
            };
            return Ok(Transformed { bytes, report });
        }
    }

    let caught = catch_unwind(AssertUnwindSafe(|| {
        let decoded = decode::decode(input, format, (width, height), &opts.limits)?;
        let bytes = encode::encode(&decoded.pixels, quality)?;
        Ok::<_, ImagingError>((decoded, bytes))
    }));
    let (decoded, bytes) = match caught {
        Ok(result) => result?,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            return Err(ImagingError::Decode {
                format,
                reason: format!("decoder panicked: {reason}"),
            });
        }
    };

    let (out_width, out_height) = decoded.pixels.dimensions();
    let kept_original = format == Format::Jpeg && bytes.len() as u64 >= input_bytes;
    let bytes = if kept_original { input.to_vec() } else { bytes };
    let report = Report {
        input_format: format,
        width: out_width,
        height: out_height,
        input_bytes,
        output_bytes: bytes.len() as u64,
        quality,
        source_quality,
        kept_original,
        rotated: decoded.rotated,
        cmyk_converted: decoded.cmyk_converted,
        icc_converted: decoded.icc_converted,
        alpha_flattened: decoded.alpha_flattened,
        frames_dropped: decoded.frames_dropped,
        bit_depth_reduced: decoded.bit_depth_reduced,
        fast_path: false,
    };
    Ok(Transformed { bytes, report })
}

/// JPEG → JPEG without RGB pixels, when `input` qualifies: a complete gray or
/// YCbCr JPEG, EXIF orientation 1, no ICC profile other than sRGB (its pixels need
/// no change). First the coefficient-domain fast path (unless `route` says
/// otherwise), else libjpeg's subsampled YCbCr planes straight from decoder to
/// encoder ([`libjpeg::reencode_planes`]). Returns the bytes and whether the fast
/// path made them; `None` sends the image down the RGB pipeline (which also gives
/// the definitive error for bad data).
fn direct_jpeg(
    input: &[u8],
    quality: u8,
    limits: &Limits,
    route: Route,
) -> Option<(Vec<u8>, bool)> {
    let header = jpeg::parse(input).ok()?;
    let eligible = matches!(header.component_count, 1 | 3)
        && jpeg::has_eoi_after_scan(input, &header)
        && jpeg::orientation(input, &header) == image::metadata::Orientation::NoTransforms
        && jpeg::icc_profile(input, &header).is_none_or(|icc| color::says_srgb(&icc));
    if !eligible {
        return None;
    }
    if route == Route::Auto {
        let tuning = fastpath::Tuning::default();
        if let Ok(Some(bytes)) = fastpath::transcode(input, quality, limits.max_pixels, tuning) {
            return Some((bytes, true));
        }
    }
    libjpeg::reencode_planes(input, limits.max_pixels, quality, encode::FAST_FDCT)
        .ok()
        .flatten()
        .map(|bytes| (bytes, false))
}

/// Fails with [`ImagingError::TooManyPixels`] when `width × height` is over `limit`.
fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), ImagingError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limit {
        return Err(ImagingError::TooManyPixels {
            width,
            height,
            pixels,
            limit,
        });
    }
    Ok(())
}
