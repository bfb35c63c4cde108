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
//! 3. **Decode** under `catch_unwind`: gray and YCbCr JPEGs with libjpeg's entropy
//!    decoding and our own kernels ([`samples`]: IDCT, chroma replicated, YCbCr → RGB,
//!    bit for bit what libjpeg's accurate decode gives), other gray/RGB JPEGs with
//!    libjpeg, the rest with `image`, first frame only for animations; CMYK/YCCK
//!    (Adobe-inverted) is converted to RGB by the decoder; 16-bit, palette, gray+alpha
//!    and RGBA become 8-bit gray or RGB in one pass, alpha flattened onto white. A
//!    JPEG libjpeg decodes only with warnings about damaged data is
//!    [`ImagingError::Corrupt`].
//! 4. **Colour**: an embedded ICC profile that is not sRGB is converted to sRGB
//!    with `qcms`; then the EXIF orientation is applied.
//! 5. **Encode** a baseline JPEG, 4:2:0, no metadata ([`encode`]: libjpeg's pipeline
//!    in our kernels, the file written by [`writer`] with Huffman tables made for it).
//! 6. **Never larger**: a JPEG input whose re-encode is not smaller is returned
//!    unchanged (`kept_original`), if libjpeg reads it without a single warning.
//!
//! **JPEGs whose pixels need no change** (gray or YCbCr, EXIF orientation 1, no ICC
//! profile other than sRGB) skip steps 3–5:
//! - the **fast path** ([`fastpath`], `Report::fast_path`) requantises their DCT
//!   coefficients and writes them straight back (4:2:2 and 4:4:4 chroma
//!   box-downsampled in the DCT domain, gray given neutral chroma);
//! - with [`Route::GeneralOnly`], or when the fast path fails, each component's
//!   samples are transformed back and encoded again without colour conversion
//!   ([`samples::reencode`]).
//!
//! The kernels are AVX2, SSE2 or plain Rust, picked at run time ([`Codec`] says
//! which); libjpeg only decodes. The crate's `unsafe` code is in [`libjpeg`] (the FFI)
//! and in the kernels' dispatch (calling a kernel the CPU was found to run).
//!
//! Every step records what it did in a [`Report`].

mod adaptive;
mod codec;
mod coefficients;
mod color;
pub(crate) mod decode;
pub(crate) mod encode;
mod error;
pub(crate) mod fastpath;
mod huffman;
pub(crate) mod jpeg;
mod jpegdec;
mod kernels;
#[allow(unsafe_code)]
pub(crate) mod libjpeg;
mod max_bytes;
mod pool;
mod quality;
mod report;
mod samples;
mod sniff;
mod writer;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

pub use codec::{ChromaRoute, Codec};
pub use error::ImagingError;
/// The calling thread's CPU time: the clock of [`TimeBudget`].
pub use libjpeg::thread_cpu_time;
pub use max_bytes::MaxBytes;
pub use pool::{PoolError, TransformPool};
pub use quality::{AUTO_RANGE, DEFAULT_AUTO_TARGET, Quality, Target, estimate_jpeg_quality};
pub use report::{Binding, Format, Report, Transformed};
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
    /// The most bytes the output may have: the highest quality that fits is used,
    /// the image downscaled if even the lowest does not.
    pub max_bytes: Option<MaxBytes>,
}

/// A byte-cap search (`max_bytes`) encodes several times: it gets this many times
/// the image's CPU-time budget.
pub const SEARCH_BUDGET_FACTOR: u32 = 4;

/// A target search (`auto`) also scores every encode at full resolution, which costs
/// 50–100 ms per scored megapixel once and 75–190 ms per try on the hosts measured
/// (against 40 ms per megapixel for the whole fixed-quality budget): six tries on a
/// photo of the most pixels scored ([`adaptive::MAX_SCORED_PIXELS`]; a larger one is
/// scored on a window of that size), the worst an honest image needs, about 21 s at
/// the dearest, fit in 20 times its budget (53 s).
pub const TARGET_BUDGET_FACTOR: u32 = 20;

/// How the output was made, before the "never larger" rule.
struct Outcome {
    quality: u8,
    bytes: Vec<u8>,
    fast_path: bool,
    score: Option<f64>,
    /// Pixels `score` was taken on ([`adaptive::Scorer::scored_pixels`]).
    scored_pixels: Option<u64>,
    tries: u32,
    binding: Binding,
    /// New size, when downscaled to fit the cap.
    downscaled: Option<(u32, u32)>,
}

impl Outcome {
    fn fixed(quality: u8, bytes: Vec<u8>, fast_path: bool) -> Outcome {
        Outcome {
            quality,
            bytes,
            fast_path,
            score: None,
            scored_pixels: None,
            tries: 1,
            binding: Binding::Quality,
            downscaled: None,
        }
    }

    /// What a search chose, its score taken by `scorer`.
    fn chosen(c: adaptive::Choice, scorer: Option<&adaptive::Scorer>) -> Outcome {
        Outcome {
            quality: c.quality,
            bytes: c.encoded.bytes,
            fast_path: c.encoded.fast_path,
            scored_pixels: c.score.and(scorer.map(adaptive::Scorer::scored_pixels)),
            score: c.score,
            tries: c.tries,
            binding: c.binding,
            downscaled: None,
        }
    }
}

/// What the direct JPEG path did.
enum Direct {
    Done(Outcome),
    /// Not for the direct path: the general one takes it; `too_big` (with the
    /// tries spent) when the direct path's search found even the lowest quality
    /// over the cap.
    General {
        too_big: Option<u32>,
    },
}

/// Bumped whenever the transform's output for the same input and options changes (a
/// new encoder setting, a fix to colour handling): it is part of
/// [`TransformOptions::fingerprint`], so outputs made before are not reused after.
/// 2: the encoder's accurate FDCT and Huffman tables made per image.
/// 3: half-step target searches (taken out again).
/// 4: the target search's aim above the target and its bracket rule.
/// 5: the target search's dead zone ([`fastpath::TARGET_ROUND_UP_ABOVE`]).
/// 6: the orientation from the first Exif segment, a profile named sRGB that is not
///    converted, a fixed quality under 30 as the cap's floor, the cap search's floor
///    try. The digests of `outputs_are_those_of_this_output_version` catch the next
///    change that forgets to bump this.
pub const OUTPUT_VERSION: u32 = 6;

impl TransformOptions {
    /// Everything that shapes the output bytes for a given input, as one string: the
    /// quality as asked (`50`, `relative:50%`, `auto:70`), the fallback a relative
    /// quality uses, the byte cap, and [`OUTPUT_VERSION`]. Limits are not part of it: they decide whether an image
    /// fails, never what a success looks like. Two images with the same input bytes and
    /// the same fingerprint have the same output, which is what reuse relies on.
    pub fn fingerprint(&self) -> String {
        let mut f = format!("v{OUTPUT_VERSION};quality={}", self.quality);
        if let Quality::Relative(_) = self.quality {
            f.push_str(&format!(";fallback={}", self.default_quality));
        }
        if let Some(cap) = self.max_bytes {
            f.push_str(&format!(";max_bytes={}", cap.get()));
        }
        f
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
    encode::check_sides(width, height)?;
    let pixels = u64::from(width) * u64::from(height);
    let searching = matches!(opts.quality, Quality::Auto(_)) || opts.max_bytes.is_some();
    let allowed = opts.limits.time.for_pixels(pixels);
    let factor = match (opts.quality, opts.max_bytes) {
        (Quality::Auto(_), _) => TARGET_BUDGET_FACTOR,
        (_, Some(_)) => SEARCH_BUDGET_FACTOR,
        _ => 1,
    };
    let budget = Budget::starting_now(
        opts.limits.max_pixels,
        opts.limits.max_scans,
        allowed.saturating_mul(factor),
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

    let goal = adaptive::Goal {
        target: match opts.quality {
            Quality::Auto(t) => Some(t),
            _ => None,
        },
        fixed: quality,
        max_bytes: opts.max_bytes.map(MaxBytes::get),
    };
    // The "never larger" rule may keep the input only when it fits the cap, and not
    // when it is arithmetic-coded, which many viewers cannot show.
    let may_keep = goal.max_bytes.is_none_or(|cap| input_bytes <= cap)
        && !jpeg_header
            .as_ref()
            .is_some_and(jpeg::JpegHeader::is_arithmetic);
    let finish = |outcome: Outcome, kept_original: bool, fixes: Option<&decode::Decoded>| {
        // A kept original is reported at its own size (its EXIF orientation applied, as
        // a viewer shows it), not downscaled, whatever the encode that lost to it went
        // through.
        let (bytes, downscaled) = if kept_original {
            (input.to_vec(), None)
        } else {
            (outcome.bytes, outcome.downscaled)
        };
        let (out_width, out_height) = match (downscaled, fixes) {
            (Some(size), _) => size,
            (None, Some(d)) => d.pixels.dimensions(),
            (None, None) => (width, height),
        };
        // What the decode converted describes the re-encode only: a kept original is the
        // input's own bytes, its colour space and profile untouched. (Its orientation
        // tag is kept too, and viewers apply it: it is reported upright and `rotated`,
        // as the re-encode would have been.)
        let fixes_stored = fixes.filter(|_| !kept_original);
        let fix = |f: fn(&decode::Decoded) -> bool| fixes_stored.is_some_and(f);
        Report {
            input_format: format,
            width: out_width,
            height: out_height,
            input_bytes,
            output_bytes: bytes.len() as u64,
            quality: outcome.quality,
            source_quality,
            kept_original,
            rotated: fixes.is_some_and(|d| d.rotated),
            cmyk_converted: fix(|d| d.cmyk_converted),
            icc_converted: fix(|d| d.icc_converted),
            alpha_flattened: fix(|d| d.alpha_flattened),
            frames_dropped: fixes_stored.map_or(0, |d| d.frames_dropped),
            bit_depth_reduced: fix(|d| d.bit_depth_reduced),
            fast_path: outcome.fast_path,
            target: goal.target,
            // An input kept as it is is its own perfect copy, whole: it meets any
            // target, whatever the encode that lost to it missed.
            score: if kept_original && goal.target.is_some() {
                Some(100.0)
            } else {
                outcome.score
            },
            scored_pixels: if kept_original && goal.target.is_some() {
                Some(u64::from(out_width) * u64::from(out_height))
            } else {
                outcome.scored_pixels
            },
            max_bytes: goal.max_bytes,
            tries: outcome.tries,
            binding: if kept_original && goal.target.is_some() {
                Binding::Target
            } else {
                outcome.binding
            },
            downscaled: downscaled.is_some(),
        }
        .with_bytes(bytes)
    };

    let mut too_big = None;
    if let Some(header) = &jpeg_header {
        // A panic would be a bug of ours, not bad input: fall back, never propagate.
        let direct = catch_unwind(AssertUnwindSafe(|| {
            direct_outcome(input, header, quality, goal, &budget, route)
        }));
        match direct {
            Ok(Ok(Direct::Done(outcome))) => {
                let kept_original = may_keep && keep_original(input, outcome.bytes.len(), &budget)?;
                return Ok(finish(outcome, kept_original, None));
            }
            Ok(Ok(Direct::General { too_big: t })) => too_big = t,
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
    }

    let caught = catch_unwind(AssertUnwindSafe(|| {
        let decoded = decode::decode(input, format, (width, height), &opts.limits, &budget)?;
        check_time(&budget)?;
        let outcome = if searching {
            // The metric's reference, when a target is searched for: for a JPEG, the
            // source as a viewer sees it, as on the direct path (the encoder's pixels
            // have their chroma replicated, not interpolated). That second decode is
            // dropped once the reference (of at most the scored window) is taken.
            let scorer = match (goal.target, too_big) {
                (Some(_), None) => {
                    let viewed = match format {
                        Format::Jpeg => decode::as_viewed(input, &budget)?,
                        _ => None,
                    };
                    let reference = viewed.as_ref().unwrap_or(&decoded.pixels);
                    Some(adaptive::Scorer::from_pixels(reference)?)
                }
                _ => None,
            };
            general_search(&decoded.pixels, scorer, goal, too_big, &budget)?
        } else {
            Outcome::fixed(
                quality,
                encode::encode(&decoded.pixels, quality, &budget)?,
                false,
            )
        };
        Ok::<_, ImagingError>((decoded, outcome))
    }));
    let (decoded, outcome) = match caught {
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

    // An input within the cap is kept rather than downscaled: the cap is met at the
    // input's full size (a heavily compressed JPEG that no quality of the range
    // re-encodes as small).
    let kept_original = format == Format::Jpeg
        && may_keep
        && match outcome.downscaled {
            Some(_) => clean_jpeg(input, &budget)?,
            None => keep_original(input, outcome.bytes.len(), &budget)?,
        };
    Ok(finish(outcome, kept_original, Some(&decoded)))
}

/// The adaptive search on decoded pixels, then the downscale when even the lowest
/// quality is over the cap (`too_big`: the direct path's search already found so).
/// Tries are scored with `scorer` (given when a target is searched for).
fn general_search(
    pixels: &decode::Pixels,
    scorer: Option<adaptive::Scorer>,
    goal: adaptive::Goal,
    too_big: Option<u32>,
    budget: &Budget,
) -> Result<Outcome, ImagingError> {
    let mut tries = too_big.unwrap_or(0);
    if too_big.is_none() {
        let score = |b: &[u8]| match &scorer {
            Some(s) => s.score(b, budget),
            None => Ok(f64::NAN),
        };
        let mut encode = |q: u8| {
            encode::encode(pixels, q, budget).map(|bytes| {
                Some(adaptive::Encoded {
                    bytes,
                    fast_path: false,
                })
            })
        };
        match adaptive::search(goal, &mut encode, Some(&score))? {
            adaptive::Searched::Chosen(c) => return Ok(Outcome::chosen(c, scorer.as_ref())),
            adaptive::Searched::TooBig { tries: t } => tries = t,
            adaptive::Searched::Declined => {
                return Err(ImagingError::Encode("the encoder declined".to_owned()));
            }
        }
    }
    let cap = goal.max_bytes.unwrap_or(u64::MAX);
    let quality = goal.floor();
    let (bytes, size, more) = adaptive::downscale_to_fit(pixels, quality, cap, budget)?;
    Ok(Outcome {
        quality,
        bytes,
        fast_path: false,
        score: None,
        scored_pixels: None,
        tries: tries + more,
        binding: Binding::MaxBytes,
        downscaled: Some(size),
    })
}

/// The direct JPEG path ([`direct_jpeg`]) at the fixed quality, or its adaptive
/// search: tries requantise the source's coefficients, and the metric's reference
/// is the source decoded once.
fn direct_outcome(
    input: &[u8],
    header: &jpeg::JpegHeader,
    quality: u8,
    goal: adaptive::Goal,
    budget: &Budget,
    route: Route,
) -> Result<Direct, ImagingError> {
    // A target's tries take the dead zone the metric vouches for; a fixed quality and a
    // cap alone keep the usual rounding (nothing checks what a wider one would cost).
    let tuning = match goal.target {
        Some(_) => fastpath::Tuning::for_target(),
        None => fastpath::Tuning::default(),
    };
    if goal.target.is_none() && goal.max_bytes.is_none() {
        return Ok(
            match direct_jpeg(input, header, quality, budget, route, tuning)? {
                Some((bytes, fast)) => Direct::Done(Outcome::fixed(quality, bytes, fast)),
                None => Direct::General { too_big: None },
            },
        );
    }
    if !direct_eligible(input, header) {
        return Ok(Direct::General { too_big: None });
    }
    let scorer = match goal.target {
        Some(_) => Some(adaptive::Scorer::from_jpeg(input, budget)?),
        None => None,
    };
    let score = |b: &[u8]| match &scorer {
        Some(s) => s.score(b, budget),
        None => Ok(f64::NAN),
    };
    let mut encode = |q: u8| {
        direct_jpeg(input, header, q, budget, route, tuning)
            .map(|r| r.map(|(bytes, fast_path)| adaptive::Encoded { bytes, fast_path }))
    };
    Ok(match adaptive::search(goal, &mut encode, Some(&score))? {
        adaptive::Searched::Chosen(c) => Direct::Done(Outcome::chosen(c, scorer.as_ref())),
        adaptive::Searched::TooBig { tries } => Direct::General {
            too_big: Some(tries),
        },
        adaptive::Searched::Declined => Direct::General { too_big: None },
    })
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
    clean_jpeg(input, budget)
}

/// Whether the JPEG `input` reads without a warning, so that it may be stored as it is.
fn clean_jpeg(input: &[u8], budget: &Budget) -> Result<bool, ImagingError> {
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
/// no change). First the coefficient-domain fast path with `tuning` (unless `route` says
/// otherwise), else the plane route: the samples of each component, transformed back
/// without colour conversion ([`samples::reencode`]). Returns the bytes and whether the fast
/// path made them; `Ok(None)` sends the image down the RGB pipeline (which also gives
/// the definitive error for data libjpeg refuses). Damaged data and spent limits are
/// errors here: no other decoder would do better with the same bytes.
fn direct_jpeg(
    input: &[u8],
    header: &jpeg::JpegHeader,
    quality: u8,
    budget: &Budget,
    route: Route,
    tuning: fastpath::Tuning,
) -> Result<Option<(Vec<u8>, bool)>, ImagingError> {
    if !direct_eligible(input, header) {
        return Ok(None);
    }
    let definitive = |e: LibjpegError| (!e.is_fatal()).then(|| libjpeg_error(Format::Jpeg, e));
    if route == Route::Auto {
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
    match samples::reencode(input, quality, budget) {
        Ok(bytes) => Ok(bytes.map(|bytes| (bytes, false))),
        Err(e) => definitive(e).map_or(Ok(None), Err),
    }
}

/// Whether `input` may take the direct path: a complete gray or YCbCr JPEG, EXIF
/// orientation 1, no ICC profile other than sRGB.
fn direct_eligible(input: &[u8], header: &jpeg::JpegHeader) -> bool {
    matches!(header.component_count, 1 | 3)
        && jpeg::has_eoi_after_scan(input, header)
        && jpeg::orientation(input, header) == image::metadata::Orientation::NoTransforms
        && jpeg::icc_profile(input, header).is_none_or(|icc| color::is_srgb(&icc))
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
