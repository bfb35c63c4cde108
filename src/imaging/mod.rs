//! The per-image transform: any supported image in, a baseline JPEG out.
//!
//! Pure and synchronous (no I/O, no async): callers run [`transform`] on a CPU
//! pool. The pipeline, in order:
//!
//! 1. **Sniff** the format from magic bytes ([`sniff`]); anything that is not JPEG,
//!    PNG, GIF, WebP, BMP or TIFF is [`ImagingError::UnsupportedFormat`].
//! 2. **Limits before work**: the input size, then the pixel count read from the
//!    header alone ([`dimensions`]), are checked before any decoder runs, so a
//!    30000×30000 bomb costs microseconds and no pixel buffer; a JPEG's scans are
//!    counted from its markers ([`Limits::max_scans`]). The decoder also gets `image`
//!    limits (exact dimensions, an allocation cap) as a second line, and libjpeg a
//!    progress monitor that holds the scan limit and the CPU-time budget
//!    ([`TimeBudget`]) once per row of blocks.
//! 3. **Decode** under `catch_unwind`: gray and YCbCr/RGB JPEGs with libjpeg, the
//!    rest with `image`, first frame only for animations; CMYK/YCCK (Adobe-inverted)
//!    is converted to RGB by the decoder; 16-bit, palette, gray+alpha and RGBA become
//!    8-bit gray or RGB in one pass, alpha flattened onto white. A JPEG libjpeg
//!    decodes only with warnings about damaged data is [`ImagingError::Corrupt`].
//! 4. **Colour**: an embedded ICC profile that is not sRGB is converted to sRGB
//!    with `qcms`; then the EXIF orientation is applied.
//! 5. **Encode** a baseline JPEG, 4:2:0, no metadata, with libjpeg's fastest settings.
//! 6. **Never larger**: a JPEG input whose re-encode is not smaller is returned
//!    unchanged (`kept_original`), if libjpeg reads it without a single warning.
//!
//! **JPEGs whose pixels need no change** (gray or YCbCr, EXIF orientation 1, no ICC
//! profile other than sRGB) skip steps 3–5:
//! - the **fast path** ([`fastpath`], `Report::fast_path`) requantises the DCT
//!   coefficients of 4:2:0 sources and writes them straight back;
//! - other samplings (gray, 4:2:2, 4:4:4: measured faster this way), and all of them
//!   with [`Route::GeneralOnly`] or when the fast path fails, are decoded by libjpeg to
//!   subsampled YCbCr planes that go straight to its encoder, no RGB in between.
//!
//! libjpeg is mozjpeg-sys, SIMD when nasm was found at build time; the crate's only
//! `unsafe` code is in [`libjpeg`].
//!
//! Every step records what it did in a [`Report`].

mod color;
pub(crate) mod decode;
pub(crate) mod encode;
mod error;
pub(crate) mod fastpath;
mod huffman;
pub(crate) mod jpeg;
#[allow(unsafe_code)]
pub(crate) mod libjpeg;
mod pool;
mod quality;
mod report;
mod sniff;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

pub use error::ImagingError;
/// The calling thread's CPU time: the clock of [`TimeBudget`].
pub use libjpeg::thread_cpu_time;
pub use pool::{PoolError, TransformPool};
pub use quality::{Quality, estimate_jpeg_quality};
pub use report::{Format, Report, Transformed};
pub use sniff::{dimensions, sniff};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use libjpeg::{Budget, Depth, LibjpegError};

/// Resource limits for one image, checked before the expensive work starts and, for
/// scans and time, inside libjpeg's loops while it works.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted `width × height` (before orientation); checked from the header.
    pub max_pixels: u64,
    /// Largest accepted input size in bytes (the downloader enforces it too, while streaming).
    pub max_input_bytes: u64,
    /// Most scans a JPEG may have. Each scan of a progressive JPEG makes the decoder
    /// walk every block of its components once more, so a few hundred kilobytes of
    /// repeated scans can hold a core for minutes; encoders write at most a few dozen.
    pub max_scans: u32,
    /// The CPU time one image may use.
    pub time: TimeBudget,
}

impl Default for Limits {
    /// The service's defaults (`MAX_IMAGE_PIXELS`, `MAX_IMAGE_BYTES`, `MAX_IMAGE_SCANS`,
    /// `IMAGE_TIME_BUDGET`, `IMAGE_TIME_PER_MEGAPIXEL`).
    fn default() -> Self {
        Limits {
            max_pixels: 100_000_000,
            max_input_bytes: 30 * 1024 * 1024,
            max_scans: DEFAULT_MAX_SCANS,
            time: TimeBudget::default(),
        }
    }
}

/// Default of [`Limits::max_scans`]: libjpeg's progressive script writes 10 scans for
/// colour and 6 for gray, mozjpeg's searched ones about a dozen, baseline files one per
/// component at most; 100 leaves room for any encoder and still bounds the work per
/// pixel to about 100 passes.
pub const DEFAULT_MAX_SCANS: u32 = 100;

/// A CPU-time allowance of `base` plus `per_megapixel` for every million pixels of
/// the header's size: big images may take longer, none without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBudget {
    /// Allowed to every image.
    pub base: Duration,
    /// Allowed in addition per million pixels.
    pub per_megapixel: Duration,
}

impl TimeBudget {
    /// Default of [`TimeBudget::base`], see [`TimeBudget::default`].
    pub const DEFAULT_BASE: Duration = Duration::from_secs(2);
    /// Default of [`TimeBudget::per_megapixel`], see [`TimeBudget::default`].
    pub const DEFAULT_PER_MEGAPIXEL: Duration = Duration::from_millis(40);

    /// No limit (`Duration::MAX`), for measurements.
    pub const UNLIMITED: TimeBudget = TimeBudget {
        base: Duration::MAX,
        per_megapixel: Duration::ZERO,
    };

    /// The allowance for an image of `pixels` pixels.
    pub fn for_pixels(&self, pixels: u64) -> Duration {
        let extra = self.per_megapixel.as_secs_f64() * pixels as f64 / 1e6;
        self.base
            .saturating_add(Duration::try_from_secs_f64(extra).unwrap_or(Duration::MAX))
    }
}

impl Default for TimeBudget {
    /// 2 s + 40 ms per megapixel: 6 s at the 100 MP limit. Measured on one core
    /// without SIMD (release build), an honest 64 MP gray progressive JPEG (6 scans)
    /// takes 1.0 s against its 4.6 s, a 2.4 MP WebP 0.1 s against 2.1 s: room for
    /// colour, slower machines and a loaded host, and still a bound of seconds.
    fn default() -> Self {
        TimeBudget {
            base: Self::DEFAULT_BASE,
            per_megapixel: Self::DEFAULT_PER_MEGAPIXEL,
        }
    }
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

/// Bumped whenever the transform's output for the same input and options changes (a
/// new encoder setting, a fix to colour handling): it is part of
/// [`TransformOptions::fingerprint`], so outputs made before are not reused after.
pub const OUTPUT_VERSION: u32 = 1;

impl TransformOptions {
    /// Everything that shapes the output bytes for a given input, as one string: the
    /// quality as asked (`50`, `relative:50%`), the fallback a relative quality uses,
    /// and [`OUTPUT_VERSION`]. Limits are not part of it: they decide whether an image
    /// fails, never what a success looks like. Two images with the same input bytes and
    /// the same fingerprint have the same output, which is what reuse relies on.
    pub fn fingerprint(&self) -> String {
        match self.quality {
            Quality::Absolute(_) => format!("v{OUTPUT_VERSION};quality={}", self.quality),
            Quality::Relative(_) => format!(
                "v{OUTPUT_VERSION};quality={};fallback={}",
                self.quality, self.default_quality
            ),
        }
    }
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
/// same way, so callers should not retry. Every JPEG it returns, re-encoded or the
/// input kept as it is, decodes with libjpeg without a warning.
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
    let pixels = u64::from(width) * u64::from(height);
    let budget = Budget::starting_now(
        opts.limits.max_pixels,
        opts.limits.max_scans,
        opts.limits.time.for_pixels(pixels),
    );

    let jpeg_header = match format {
        Format::Jpeg => jpeg::parse(input).ok(),
        _ => None,
    };
    if let Some(header) = &jpeg_header {
        // Counted from the markers before any decoder runs (libjpeg's progress
        // monitor enforces the same limit while it decodes, and the `image` crate's
        // decoder has no such hook).
        let scans = jpeg::count_scans(input, header);
        if scans > opts.limits.max_scans {
            return Err(ImagingError::TooManyScans {
                scans,
                limit: opts.limits.max_scans,
            });
        }
    }

    let source_quality = match format {
        Format::Jpeg => estimate_jpeg_quality(input),
        _ => None,
    };
    let quality = quality::resolve(opts.quality, opts.default_quality, source_quality);

    if let Some(header) = &jpeg_header {
        // A panic would be a bug of ours, not bad input: fall back, never propagate.
        let direct = catch_unwind(AssertUnwindSafe(|| {
            direct_jpeg(input, header, quality, &budget, route)
        }));
        match direct {
            Ok(Ok(Some((bytes, fast_path)))) => {
                let kept_original = keep_original(input, bytes.len(), &budget)?;
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
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) | Err(_) => {}
        }
    }

    let caught = catch_unwind(AssertUnwindSafe(|| {
        let decoded = decode::decode(input, format, (width, height), &opts.limits, &budget)?;
        check_time(&budget)?;
        let bytes = encode::encode(&decoded.pixels, quality, &budget)?;
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
    let kept_original = format == Format::Jpeg && keep_original(input, bytes.len(), &budget)?;
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

/// Checks that `jpeg` decodes with libjpeg, to pixels, without a single warning: what
/// every JPEG [`transform`] returns satisfies (tests and the fuzzer hold it to that).
pub fn verify_jpeg(jpeg: &[u8]) -> Result<(), ImagingError> {
    match libjpeg::verify(jpeg, &Budget::UNLIMITED, Depth::Pixels) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ImagingError::Corrupt(
            "stray bytes between segments".to_owned(),
        )),
        Err(e) => Err(libjpeg_error(Format::Jpeg, e)),
    }
}

/// Whether the JPEG `input` may be stored instead of its re-encode of `encoded_len`
/// bytes (never larger, SPEC §5.6): only when the re-encode is not smaller and
/// libjpeg reads every scan of the input without a warning. Damaged data fails the
/// image; stray bytes between segments, or data libjpeg cannot read at all (another
/// decoder made the pixels), leave the re-encode as the output.
fn keep_original(input: &[u8], encoded_len: usize, budget: &Budget) -> Result<bool, ImagingError> {
    if (encoded_len as u64) < input.len() as u64 {
        return Ok(false);
    }
    match libjpeg::verify(input, budget, Depth::Coefficients) {
        Ok(clean) => Ok(clean),
        Err(e) if e.is_fatal() => Ok(false),
        Err(e) => Err(libjpeg_error(Format::Jpeg, e)),
    }
}

/// Fails once the thread is over the budget's CPU time (between steps that libjpeg's
/// progress monitor does not watch).
pub(crate) fn check_time(budget: &Budget) -> Result<(), ImagingError> {
    budget
        .check_time()
        .map_err(|e| libjpeg_error(Format::Jpeg, e))
}

/// The imaging error for a libjpeg one about an image in `format`.
pub(crate) fn libjpeg_error(format: Format, e: LibjpegError) -> ImagingError {
    match e {
        LibjpegError::Fatal(reason) => ImagingError::Decode { format, reason },
        LibjpegError::Corrupt(text) => ImagingError::Corrupt(text),
        LibjpegError::TooManyScans { scans, limit } => ImagingError::TooManyScans { scans, limit },
        LibjpegError::OverBudget(budget) => ImagingError::OverBudget { budget },
    }
}

/// JPEG → JPEG without RGB pixels, when `input` qualifies: a complete gray or
/// YCbCr JPEG, EXIF orientation 1, no ICC profile other than sRGB (its pixels need
/// no change). First the coefficient-domain fast path (unless `route` says
/// otherwise), else libjpeg's subsampled YCbCr planes straight from decoder to
/// encoder ([`libjpeg::reencode_planes`]). Returns the bytes and whether the fast
/// path made them; `Ok(None)` sends the image down the RGB pipeline (which also gives
/// the definitive error for data libjpeg refuses). Damaged data and spent limits are
/// errors here: no other decoder would do better with the same bytes.
fn direct_jpeg(
    input: &[u8],
    header: &jpeg::JpegHeader,
    quality: u8,
    budget: &Budget,
    route: Route,
) -> Result<Option<(Vec<u8>, bool)>, ImagingError> {
    let eligible = matches!(header.component_count, 1 | 3)
        && jpeg::has_eoi_after_scan(input, header)
        && jpeg::orientation(input, header) == image::metadata::Orientation::NoTransforms
        && jpeg::icc_profile(input, header).is_none_or(|icc| color::says_srgb(&icc));
    if !eligible {
        return Ok(None);
    }
    let definitive = |e: LibjpegError| (!e.is_fatal()).then(|| libjpeg_error(Format::Jpeg, e));
    if route == Route::Auto {
        let tuning = fastpath::Tuning::default();
        match fastpath::transcode(input, quality, budget, tuning) {
            Ok(Some(bytes)) => return Ok(Some((bytes, true))),
            Ok(None) => {}
            Err(e) => {
                if let Some(e) = definitive(e) {
                    return Err(e);
                }
            }
        }
    }
    match libjpeg::reencode_planes(input, budget, quality, encode::FAST_FDCT) {
        Ok(bytes) => Ok(bytes.map(|bytes| (bytes, false))),
        Err(e) => definitive(e).map_or(Ok(None), Err),
    }
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
