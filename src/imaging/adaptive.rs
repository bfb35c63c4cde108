//! Adaptive quality: the lowest JPEG quality whose output reaches an SSIMULACRA2
//! target (`auto:N`), the highest whose output fits a byte cap (`max_bytes`), or both.
//!
//! The metric, not the encoder, is the cost: a full-scale SSIMULACRA2 of a photo
//! costs 50–100 ms per megapixel for the reference side and 75–190 ms per try
//! (decode of the candidate included) on the hosts measured, against 4–16 ms per
//! megapixel for a whole fixed-quality transcode. What keeps it bounded:
//! - the reference side of the metric is computed once per image
//!   (`fast_ssim2::Ssimulacra2Reference`);
//! - a JPEG source's candidates come from the coefficient path (requantised, no
//!   pixel decode or DCT of the source), with a dead zone that the metric vouches for
//!   ([`super::fastpath::TARGET_ROUND_UP_ABOVE`]: the same score for fewer bytes);
//! - the first guess comes from the score-vs-quality curve of typical photos, and
//!   each next one from interpolating the tries so far (regula falsi), so most
//!   images need two to four tries.
//!
//! Scores are always taken at full resolution, of the whole image up to
//! [`MAX_SCORED_PIXELS`] and of a window that size beyond, which bounds the metric's
//! memory (about 120 bytes per scored pixel). A reduced scale would be a fraction of the
//! cost but is not the same metric: at half size the corpus photos scored 10 to 21
//! points higher than at full size, at a quarter up to 38
//! (`tests::reduced_scale_scores_against_full_scale`), since JPEG's artefacts live at
//! the finest scale. Nor is a sample of full-scale tiles laid side by side: on
//! average 2 to 5 points higher, up to 13 (`tests::sampled_tiles_score_against_full_scale`),
//! as the seams between tiles add structure both sides share.

use std::{borrow::Cow, collections::BTreeMap};

use fast_ssim2::{PixelDescriptor, PixelSlice, Ssimulacra2Reference};

use super::decode::Pixels;
use super::libjpeg::{self, Budget, DecodeSettings, DecodedPixels, PixelLayout, Region};
use super::quality::{AUTO_RANGE, Target};
use super::report::Binding;
use super::{Format, ImagingError, encode, libjpeg_error};

/// Most encodes one search may make (the fallback to the top of the range excluded).
const MAX_TRIES: u32 = 6;

/// A score this close above the target ends the search early: one quality step
/// lower would miss it or save next to nothing.
const CLOSE_ENOUGH: f64 = 0.75;

/// How far above the target the search aims its next try: a try landing just above
/// the target (within [`CLOSE_ENOUGH`]) ends the search, one just below needs
/// another. Chosen on the corpus' score curves (targets 60–80): 3 % fewer tries,
/// weighted by megapixels, than aiming at the target itself, for the same bytes.
const AIM: f64 = 0.15;

/// How much a score typically moves per quality step, in points, around the middle of
/// the range: how far the target search steps before it has a bracket.
const SCORE_PER_STEP: f64 = 0.5;

/// How much the log of an output's bytes typically grows per quality step (bytes grow
/// about exponentially with quality, ~2 % a step): the cap search's first guesses.
const LN_BYTES_PER_STEP: f64 = 0.02;

/// Each downscale step when even the lowest quality is over the cap: 3/4 of the sides.
const DOWNSCALE_STEP: f64 = 0.75;

/// The decode the metric sees, for the source and every candidate alike: the
/// accurate IDCT and the smooth chroma upsampling of a viewer, at 1/`scale_denom`
/// of the size (1 in the product; reduced only to measure what it would change).
fn score_decode(scale_denom: u32) -> DecodeSettings {
    DecodeSettings {
        scale_denom,
        ..super::decode::VIEWER_DECODE
    }
}

/// Most pixels the metric scores of one image (16.8 MP): a 16 MP camera photo
/// (4928×3264) is scored whole. The metric holds about 120 bytes per scored pixel
/// while it works (its reference pyramid and a comparison's planes, against about 3
/// for a fixed-quality transcode): a 48 MP photo scored whole peaked at 5.6 GB, so an
/// image of the 100 MP `MAX_IMAGE_PIXELS` allows would take 12 GB per transform
/// thread. Larger images are scored on a window (see [`scored_window`]): about 2 GB at most.
pub(crate) const MAX_SCORED_PIXELS: u64 = 1 << 24;

/// The part of a `width × height` image the metric scores, the same for the source
/// and every try: all of it up to `max_pixels`, else a centred window of at most that
/// area with the image's proportions, its corner on the 16-pixel grid of a 4:2:0
/// JPEG's MCUs so that the blocks fall in the window as they fall in the image.
/// Scored at full resolution, since JPEG's artefacts live at the finest scale.
fn scored_window(width: u32, height: u32, max_pixels: u64) -> Region {
    let pixels = u64::from(width) * u64::from(height);
    if pixels <= max_pixels {
        return Region::whole(width, height);
    }
    let scale = (max_pixels as f64 / pixels as f64).sqrt();
    // The metric needs 8×8; within the image, the area within the limit.
    let w = ((f64::from(width) * scale) as u32).clamp(8.min(width), width);
    let h = u32::try_from(max_pixels / u64::from(w))
        .unwrap_or(u32::MAX)
        .clamp(8.min(height), height);
    Region {
        x: ((width - w) / 2) & !15,
        y: ((height - h) / 2) & !15,
        width: w,
        height: h,
    }
}

/// `window` of interleaved `data` of an image of `size` as RGB, gray expanded: what
/// the metric takes.
fn rgb_window(window: Region, data: &[u8], size: (u32, u32), gray: bool) -> Cow<'_, [u8]> {
    let cut = window.cut(data, size, if gray { 1 } else { 3 });
    if gray {
        let gray = cut.as_deref().unwrap_or(data);
        Cow::Owned(gray.iter().flat_map(|&v| [v, v, v]).collect())
    } else {
        cut.map_or(Cow::Borrowed(data), Cow::Owned)
    }
}

/// The precomputed reference side of SSIMULACRA2 for one source image.
pub(crate) struct Scorer {
    reference: Ssimulacra2Reference,
    denom: u32,
    /// What is scored, of images of `size`: the source's size at 1/`denom`.
    window: Region,
    size: (u32, u32),
}

/// Interleaved RGB (gray expanded) of a decode, as the metric takes it.
fn rgb_of(decoded: &DecodedPixels) -> Cow<'_, [u8]> {
    match decoded.layout {
        PixelLayout::Gray => Cow::Owned(decoded.data.iter().flat_map(|&v| [v, v, v]).collect()),
        PixelLayout::Rgb => Cow::Borrowed(&decoded.data),
    }
}

/// The decode the metric sees of the window `choose` picks of a JPEG (given the
/// output's width and height), and the output's size. Only the window is converted
/// to pixels ([`libjpeg::decode_region`]): for an image over [`MAX_SCORED_PIXELS`]
/// the rest is read but never held.
fn decode_window(
    input: &[u8],
    budget: &Budget,
    denom: u32,
    choose: impl FnOnce(u32, u32) -> Region,
) -> Result<(DecodedPixels, (u32, u32)), ImagingError> {
    libjpeg::decode_region(input, budget, score_decode(denom), choose)
        .map_err(|e| libjpeg_error(Format::Jpeg, e))
}

fn metric_error(e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Encode(format!("SSIMULACRA2: {e}"))
}

fn slice(data: &[u8], width: u32, height: u32) -> Result<PixelSlice<'_>, ImagingError> {
    PixelSlice::new(
        data,
        width,
        height,
        width as usize * 3,
        PixelDescriptor::RGB8_SRGB,
    )
    .map_err(metric_error)
}

impl Scorer {
    /// The reference of a JPEG source whose pixels need no change.
    pub(crate) fn from_jpeg(input: &[u8], budget: &Budget) -> Result<Scorer, ImagingError> {
        Self::from_jpeg_at(input, 1, MAX_SCORED_PIXELS, budget)
    }

    /// The reference of a JPEG source decoded at 1/`denom` of its size, scoring at
    /// most `max_pixels` of it.
    fn from_jpeg_at(
        input: &[u8],
        denom: u32,
        max_pixels: u64,
        budget: &Budget,
    ) -> Result<Scorer, ImagingError> {
        let mut window = Region::whole(0, 0);
        let (decoded, size) = decode_window(input, budget, denom, |width, height| {
            window = scored_window(width, height, max_pixels);
            window
        })?;
        Self::new(&rgb_of(&decoded), window, size, denom)
    }

    /// The reference of decoded pixels.
    pub(crate) fn from_pixels(pixels: &Pixels) -> Result<Scorer, ImagingError> {
        Self::from_pixels_within(pixels, MAX_SCORED_PIXELS)
    }

    /// The reference of decoded pixels, scoring at most `max_pixels` of them.
    fn from_pixels_within(pixels: &Pixels, max_pixels: u64) -> Result<Scorer, ImagingError> {
        let size = pixels.dimensions();
        let window = scored_window(size.0, size.1, max_pixels);
        let rgb = match pixels {
            Pixels::Rgb(img) => rgb_window(window, img.as_raw(), size, false),
            Pixels::Gray(img) => rgb_window(window, img.as_raw(), size, true),
        };
        Self::new(&rgb, window, size, 1)
    }

    fn new(
        rgb: &[u8],
        window: Region,
        size: (u32, u32),
        denom: u32,
    ) -> Result<Scorer, ImagingError> {
        let reference = Ssimulacra2Reference::new(&slice(rgb, window.width, window.height)?)
            .map_err(metric_error)?;
        Ok(Scorer {
            reference,
            denom,
            window,
            size,
        })
    }

    /// Pixels each score is taken on: the window's.
    pub(crate) fn scored_pixels(&self) -> u64 {
        u64::from(self.window.width) * u64::from(self.window.height)
    }

    /// The SSIMULACRA2 score of the JPEG `candidate` against the source (of the
    /// window, for an image over [`MAX_SCORED_PIXELS`]).
    pub(crate) fn score(&self, candidate: &[u8], budget: &Budget) -> Result<f64, ImagingError> {
        // A try of another size (never one of ours) is decoded whole, then refused.
        let (decoded, size) = decode_window(candidate, budget, self.denom, |width, height| {
            if (width, height) == self.size {
                self.window
            } else {
                Region::whole(width, height)
            }
        })?;
        if size != self.size {
            return Err(metric_error(format!(
                "a try of {}x{} against a source of {}x{}",
                size.0, size.1, self.size.0, self.size.1
            )));
        }
        let rgb = rgb_of(&decoded);
        self.reference
            .compare(&slice(&rgb, self.window.width, self.window.height)?)
            .map_err(metric_error)
    }
}

/// One encode the search made.
#[derive(Clone, Debug)]
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    /// Made by the coefficient-domain fast path.
    pub fast_path: bool,
}

/// What a search chose.
#[derive(Debug)]
pub(crate) struct Choice {
    pub quality: u8,
    pub encoded: Encoded,
    /// The chosen output's score, when a target was asked.
    pub score: Option<f64>,
    /// Encodes made (each scored when a target was asked).
    pub tries: u32,
    pub binding: Binding,
}

/// What the caller asks of a search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Goal {
    /// SSIMULACRA2 target (`auto:N`); `None` for a fixed quality.
    pub target: Option<Target>,
    /// The fixed quality when there is no target.
    pub fixed: u8,
    /// Byte cap of the output.
    pub max_bytes: Option<u64>,
}

impl Goal {
    /// The lowest quality a cap may take an output to before it is downscaled: the
    /// bottom of [`AUTO_RANGE`], or the fixed quality asked for when that is lower
    /// (never a higher quality, and so more bytes, than was asked).
    pub(crate) fn floor(&self) -> u8 {
        let bottom = *AUTO_RANGE.start();
        match self.target {
            Some(_) => bottom,
            None => bottom.min(self.fixed),
        }
    }
}

/// The outcome of [`search`].
pub(crate) enum Searched {
    /// A quality in range meets the goal's cap (if any).
    Chosen(Choice),
    /// Even the lowest quality of the range is over the cap: downscale
    /// ([`downscale_to_fit`]). Carries the tries spent.
    TooBig { tries: u32 },
    /// The encoder declined (`Ok(None)`): the caller takes another path.
    Declined,
}

/// Where the target search starts: (quality, score) points of a typical photo's
/// curve, interpolated linearly. At each quality, the score that 40 % of the 21
/// corpus photos' outputs stay under (the ninth lowest; the coefficient path, the
/// product's scorer), so that the first try tends to land a little above the target,
/// where it can end the search ([`CLOSE_ENOUGH`]). Replayed on the photos' curves
/// with each photo left out of the points it is guessed from, it took 10 % fewer
/// tries × megapixels over the targets 60–80 than the curve it replaced, and none
/// more at any one target; the median took 8 % fewer but 10 % more at 65
/// (`search_replayed_on_score_curves`). Fitted before the tries took the dead zone
/// ([`super::fastpath::TARGET_ROUND_UP_ABOVE`]); replayed on the dead zone's curves it
/// still takes fewer tries × megapixels (1,544) than curves refitted on them with
/// each photo left out (1,599 at the 40th percentile, 1,579 at the median).
const TYPICAL: [(f64, f64); 7] = [
    (30.0, 46.6),
    (40.0, 56.5),
    (50.0, 65.1),
    (60.0, 68.2),
    (70.0, 73.8),
    (80.0, 83.4),
    (90.0, 89.9),
];

/// The quality at which the piecewise-linear `points` (quality, score) reach
/// `target`, clamped to [`AUTO_RANGE`].
fn interpolate_q(points: &[(f64, f64)], target: f64) -> u8 {
    let (lo, hi) = (f64::from(*AUTO_RANGE.start()), f64::from(*AUTO_RANGE.end()));
    let q = match points.windows(2).find(|w| target <= w[1].1) {
        _ if target <= points[0].1 => points[0].0,
        Some(w) => {
            let ((q0, s0), (q1, s1)) = (w[0], w[1]);
            q0 + (target - s0) * (q1 - q0) / (s1 - s0).max(1e-6)
        }
        None => hi,
    };
    // Clamped to the range, the cast cannot truncate.
    q.round().clamp(lo, hi) as u8
}

/// A JPEG → its SSIMULACRA2 score against the source ([`Scorer::score`]).
pub(crate) type ScoreFn<'a> = &'a dyn Fn(&[u8]) -> Result<f64, ImagingError>;

/// A quality → its JPEG; `None` when the encoder declines.
pub(crate) type EncodeFn<'a> = &'a mut dyn FnMut(u8) -> Result<Option<Encoded>, ImagingError>;

/// A downscaled output: its bytes, its size, the encodes made.
pub(crate) type Downscaled = (Vec<u8>, (u32, u32), u32);

/// Memoised encodes (and scores) by quality.
struct Tries<'a> {
    encode: EncodeFn<'a>,
    score: Option<ScoreFn<'a>>,
    done: BTreeMap<u8, (Encoded, Option<f64>)>,
}

impl Tries<'_> {
    /// The encode at `q` (and its score when there is a scorer); `None` when declined.
    fn at(&mut self, q: u8) -> Result<Option<(u64, Option<f64>)>, ImagingError> {
        if let Some((e, s)) = self.done.get(&q) {
            return Ok(Some((e.bytes.len() as u64, *s)));
        }
        let Some(encoded) = (self.encode)(q)? else {
            return Ok(None);
        };
        let score = match self.score {
            Some(score) => Some(score(&encoded.bytes)?),
            None => None,
        };
        let len = encoded.bytes.len() as u64;
        self.done.insert(q, (encoded, score));
        Ok(Some((len, score)))
    }

    /// The size of the encode at `q`, `u64::MAX` when the encoder declines (never
    /// under a cap).
    fn size(&mut self, q: u8) -> Result<u64, ImagingError> {
        Ok(self.at(q)?.map_or(u64::MAX, |(len, _)| len))
    }

    /// The size of the encode at `q`, if it was made.
    fn made_size(&self, q: u8) -> Option<u64> {
        self.done.get(&q).map(|(e, _)| e.bytes.len() as u64)
    }

    fn count(&self) -> u32 {
        self.done.len() as u32
    }

    fn choose(mut self, quality: u8, binding: Binding) -> Choice {
        let tries = self.count();
        let (encoded, score) = self
            .done
            .remove(&quality)
            .expect("chosen quality was tried");
        Choice {
            quality,
            encoded,
            score,
            tries,
            binding,
        }
    }
}

/// Runs the search for `goal` with `encode` (a quality → JPEG) and, for a
/// target, `score` (a JPEG → its SSIMULACRA2 against the source, [`Scorer::score`]).
pub(crate) fn search(
    goal: Goal,
    encode: EncodeFn<'_>,
    score: Option<ScoreFn<'_>>,
) -> Result<Searched, ImagingError> {
    search_from(&TYPICAL, goal, encode, score)
}

/// [`search`] with its first guess at a target taken from the `typical` curve.
fn search_from(
    typical: &[(f64, f64)],
    goal: Goal,
    encode: EncodeFn<'_>,
    score: Option<ScoreFn<'_>>,
) -> Result<Searched, ImagingError> {
    let mut tries = Tries {
        encode,
        score: if goal.target.is_some() { score } else { None },
        done: BTreeMap::new(),
    };
    // The highest quality the cap still has to be checked at, and why.
    let (upper, binding) = match goal.target {
        None => (goal.fixed, Binding::Quality),
        Some(target) => match lowest_meeting(&mut tries, typical, target.score())? {
            None => return Ok(Searched::Declined),
            Some(q) => {
                let binding = if tries.done[&q].1.is_some_and(|s| s >= target.score()) {
                    Binding::Target
                } else {
                    Binding::QualityRange
                };
                (q, binding)
            }
        },
    };
    let Some(cap) = goal.max_bytes else {
        if tries.at(upper)?.is_none() {
            return Ok(Searched::Declined);
        }
        return Ok(Searched::Chosen(tries.choose(upper, binding)));
    };
    let Some((len, _)) = tries.at(upper)? else {
        return Ok(Searched::Declined);
    };
    if len <= cap {
        return Ok(Searched::Chosen(tries.choose(upper, binding)));
    }
    // Over the cap: the highest quality below `upper` that fits.
    match highest_fitting(&mut tries, goal.floor().min(upper), upper, cap)? {
        None => Ok(Searched::TooBig {
            tries: tries.count(),
        }),
        Some(q) => {
            // The target search stops at a quality close enough above the target, so
            // the step below it that the cap asks for may still meet the target: then
            // the cap cost nothing the target asked for, and the report must not say
            // the target was missed.
            let meets = goal
                .target
                .is_some_and(|t| tries.done[&q].1.is_some_and(|s| s >= t.score()));
            let binding = if meets {
                Binding::Target
            } else {
                Binding::MaxBytes
            };
            Ok(Searched::Chosen(tries.choose(q, binding)))
        }
    }
}

/// The lowest quality of the range whose score reaches `target`, or the top when
/// none does, starting from where the `typical` curve reaches it; `None` when the
/// encoder declined.
fn lowest_meeting(
    tries: &mut Tries<'_>,
    typical: &[(f64, f64)],
    target: f64,
) -> Result<Option<u8>, ImagingError> {
    let (bottom, top) = (*AUTO_RANGE.start(), *AUTO_RANGE.end());
    // Highest quality known to miss, lowest known to meet (with their scores).
    let mut miss: Option<(u8, f64)> = None;
    let mut meet: Option<(u8, f64)> = None;
    let mut q = interpolate_q(typical, target);
    loop {
        let Some((_, score)) = tries.at(q)? else {
            return Ok(None);
        };
        let score = score.unwrap_or(f64::NAN);
        if score >= target {
            if meet.is_none_or(|(m, _)| q < m) {
                meet = Some((q, score));
            }
        } else if miss.is_none_or(|(m, _)| q > m) {
            miss = Some((q, score));
        }
        let next = match (miss, meet) {
            (_, Some((m, s))) if s - target < CLOSE_ENOUGH || m == bottom => break,
            (Some((lo, _)), Some((hi, _))) if hi - lo <= 1 => break,
            (Some((lo, sl)), Some((hi, sh))) => {
                // Where the line through the bracket says even one step below `hi`
                // misses, `hi` is taken without trying that step.
                let below_hi = sl + (sh - sl) * f64::from(hi - 1 - lo) / f64::from(hi - lo);
                if below_hi < target {
                    break;
                }
                // Regula falsi inside the bracket, kept strictly inside it.
                let at =
                    f64::from(lo) + (target + AIM - sl) * f64::from(hi - lo) / (sh - sl).max(1e-6);
                (at.ceil() as u8).clamp(lo + 1, hi - 1)
            }
            (Some((lo, sl)), None) => {
                if lo == top {
                    break;
                }
                // Below target: step up by the typical slope, at least 2.
                let step = ((target + AIM - sl) / SCORE_PER_STEP).ceil().max(2.0);
                (f64::from(lo) + step).min(f64::from(top)) as u8
            }
            (None, Some((hi, sh))) => {
                let step = ((sh - target - AIM) / SCORE_PER_STEP).floor().max(2.0);
                (f64::from(hi) - step).max(f64::from(bottom)) as u8
            }
            (None, None) => break,
        };
        if tries.count() >= MAX_TRIES || tries.done.contains_key(&next) {
            break;
        }
        q = next;
    }
    Ok(Some(match meet {
        Some((q, _)) => q,
        None => {
            if tries.at(top)?.is_none() {
                return Ok(None);
            }
            top
        }
    }))
}

/// The highest quality in `floor..upper` whose output is at most `cap` bytes (the
/// output at `upper` is over it); `None` when even `floor`'s is over. Starts from
/// what the tries made so far (a target search's) already say, and never answers
/// `None` without having tried `floor` itself.
fn highest_fitting(
    tries: &mut Tries<'_>,
    floor: u8,
    upper: u8,
    cap: u64,
) -> Result<Option<u8>, ImagingError> {
    if upper <= floor {
        return Ok(None);
    }
    let ln = |b: u64| (b.max(1) as f64).ln();
    // The highest tried quality that fits, and the lowest tried above it that is over.
    let mut fits: Option<(u8, u64)> = (floor..upper)
        .rev()
        .find_map(|q| tries.made_size(q).filter(|&l| l <= cap).map(|l| (q, l)));
    let mut over = (fits.map_or(floor, |(q, _)| q + 1)..=upper)
        .find_map(|q| tries.made_size(q).filter(|&l| l > cap).map(|l| (q, l)))
        .unwrap_or((upper, u64::MAX));
    let mut first = true;
    loop {
        let next = match fits {
            Some((lo, _)) if over.0 - lo <= 1 => break,
            Some((lo, lo_len)) => {
                // Interpolate on log(bytes) inside the bracket.
                let (hi, hi_len) = over;
                let t = (ln(cap) - ln(lo_len)) / (ln(hi_len) - ln(lo_len)).max(1e-9);
                let at = f64::from(lo) + t * f64::from(hi - lo);
                (at.floor() as u8).clamp(lo + 1, hi - 1)
            }
            None if over.0 == floor => return Ok(None),
            None if first => {
                // The first step down: where ~2 % a step says the cap is reached.
                let at = f64::from(over.0) - (ln(over.1) - ln(cap)) / LN_BYTES_PER_STEP;
                (at.floor().max(f64::from(floor)) as u8).min(over.0 - 1)
            }
            None => {
                // Still over: twice the estimated distance down, at least 4 steps.
                let guess =
                    f64::from(over.0) - 2.0 * ((ln(over.1) - ln(cap)) / LN_BYTES_PER_STEP).max(4.0);
                (guess.max(f64::from(floor)) as u8).min(over.0 - 1)
            }
        };
        // One try kept for the floor while it is untried (below).
        let budget = if tries.done.contains_key(&floor) {
            MAX_TRIES + 4
        } else {
            MAX_TRIES + 3
        };
        if tries.count() >= budget {
            break;
        }
        first = false;
        let len = tries.size(next)?;
        if len <= cap {
            fits = Some((next, len));
        } else {
            over = (next, len);
        }
    }
    if fits.is_none() && !tries.done.contains_key(&floor) {
        // Out of tries before the floor: try it, rather than downscale an image whose
        // full size may fit.
        let len = tries.size(floor)?;
        if len <= cap {
            fits = Some((floor, len));
        }
    }
    Ok(fits.map(|(q, _)| q))
}

/// Downscales `pixels` in steps of [`DOWNSCALE_STEP`] until their encode at
/// `quality` (the goal's [`Goal::floor`]) fits `cap`. Returns the bytes, their size in pixels and the
/// encodes made. An image already 16×16 or smaller that does not fit is an error
/// (caps below [`super::MaxBytes::MIN`] are refused before this).
pub(crate) fn downscale_to_fit(
    pixels: &Pixels,
    quality: u8,
    cap: u64,
    budget: &Budget,
) -> Result<Downscaled, ImagingError> {
    let (width, height) = pixels.dimensions();
    let mut factor = 1.0;
    let mut tries = 0;
    loop {
        factor *= DOWNSCALE_STEP;
        let w = ((f64::from(width) * factor).round() as u32).max(1);
        let h = ((f64::from(height) * factor).round() as u32).max(1);
        // Area averaging straight into the smaller image: a filtered resize first
        // resamples one axis into a buffer of 16 bytes per pixel over the source's
        // width (1.2 GB for the first step down from 10000×10000).
        let small = match pixels {
            Pixels::Rgb(img) => Pixels::Rgb(image::imageops::thumbnail(img, w, h)),
            Pixels::Gray(img) => Pixels::Gray(image::imageops::thumbnail(img, w, h)),
        };
        let bytes = encode::encode(&small, quality, budget)?;
        tries += 1;
        if bytes.len() as u64 <= cap {
            return Ok((bytes, (w, h), tries));
        }
        if w <= 16 && h <= 16 {
            return Err(ImagingError::Encode(format!(
                "no output fits in {cap} bytes, even at {w}x{h}"
            )));
        }
        super::check_time(budget)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn window_is_the_whole_image_up_to_the_limit_else_a_centred_part_on_the_mcu_grid() {
        let whole = scored_window(4928, 3264, MAX_SCORED_PIXELS);
        assert_eq!(
            (whole.x, whole.y, whole.width, whole.height),
            (0, 0, 4928, 3264)
        );
        for (width, height, limit) in [
            (9296, 5229, MAX_SCORED_PIXELS),
            (10_000, 10_000, MAX_SCORED_PIXELS),
            (65_535, 300, 1_000_000),
            (300, 65_535, 1_000_000),
            (640, 480, 100_000),
        ] {
            let w = scored_window(width, height, limit);
            let area = u64::from(w.width) * u64::from(w.height);
            assert!(
                area <= limit && area > limit * 9 / 10,
                "{w:?} of {width}x{height}"
            );
            assert!(w.x + w.width <= width && w.y + w.height <= height, "{w:?}");
            assert_eq!((w.x % 16, w.y % 16), (0, 0), "{w:?}");
            // Centred to within the grid, and with the image's proportions.
            assert!((width - w.width) / 2 - w.x < 16 && (height - w.height) / 2 - w.y < 16);
            let (shape, image) = (
                f64::from(w.width) / f64::from(w.height),
                f64::from(width) / f64::from(height),
            );
            assert!(
                (shape / image - 1.0).abs() < 0.05,
                "{w:?} of {width}x{height}"
            );
        }
    }

    /// The window's pixels of a decode, cut here by hand as RGB.
    fn cut_by_hand(decoded: &DecodedPixels, w: Region) -> Vec<u8> {
        let mut out = Vec::new();
        for y in w.y..w.y + w.height {
            for x in w.x..w.x + w.width {
                let i = (y * decoded.width + x) as usize;
                match decoded.layout {
                    PixelLayout::Rgb => out.extend_from_slice(&decoded.data[3 * i..3 * i + 3]),
                    PixelLayout::Gray => out.extend_from_slice(&[decoded.data[i]; 3]),
                }
            }
        }
        out
    }

    #[test]
    fn an_image_over_the_limit_is_scored_on_its_window() {
        let input = super::super::fixtures::fixture("photo_q85.jpg");
        let budget = Budget::UNLIMITED;
        let candidate = super::super::fastpath::transcode(
            &input,
            40,
            &budget,
            super::super::fastpath::Tuning::default(),
        )
        .expect("transcodes")
        .expect("fast path applies");
        let limit = 100_000; // of 640×480
        let source = libjpeg::decode(&input, &budget, score_decode(1)).expect("decodes");
        let window = scored_window(source.width, source.height, limit);
        assert!(window.width < source.width && window.height < source.height);
        let expected = {
            let decoded = libjpeg::decode(&candidate, &budget, score_decode(1)).expect("decodes");
            let (w, h) = (window.width, window.height);
            let reference = cut_by_hand(&source, window);
            let reference = Ssimulacra2Reference::new(&slice(&reference, w, h).unwrap()).unwrap();
            reference
                .compare(&slice(&cut_by_hand(&decoded, window), w, h).unwrap())
                .unwrap()
        };
        let scorer = Scorer::from_jpeg_at(&input, 1, limit, &budget).expect("reference");
        assert_eq!(scorer.window, window);
        assert_eq!(
            scorer.scored_pixels(),
            u64::from(window.width) * u64::from(window.height)
        );
        assert_eq!(scorer.score(&candidate, &budget).unwrap(), expected);
        // Decoded pixels take the same window.
        let pixels = Pixels::Rgb(
            image::RgbImage::from_raw(source.width, source.height, source.data.clone())
                .expect("RGB"),
        );
        let scorer = Scorer::from_pixels_within(&pixels, limit).expect("reference");
        assert_eq!(scorer.score(&candidate, &budget).unwrap(), expected);
        // And the whole image scores otherwise.
        let whole = Scorer::from_jpeg_at(&input, 1, u64::MAX, &budget).expect("reference");
        assert_ne!(whole.score(&candidate, &budget).unwrap(), expected);
        // A try of another size is refused, not scored.
        let other =
            super::super::encode::encode(&Pixels::Rgb(image::RgbImage::new(64, 48)), 50, &budget)
                .expect("encodes");
        assert!(scorer.score(&other, &budget).is_err());
    }

    /// The benchmark corpus' photos (`../shared/corpus/*.jpg` but the `var_` inputs),
    /// sorted; `None`, said, when there is no corpus.
    fn corpus_photos() -> Option<Vec<std::path::PathBuf>> {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        let Ok(dir) = std::fs::read_dir(&corpus) else {
            eprintln!("no corpus at {}: nothing measured", corpus.display());
            return None;
        };
        let mut paths: Vec<_> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.ends_with(".jpg") && !name.starts_with("var_")
            })
            .collect();
        paths.sort();
        Some(paths)
    }

    /// Reduced-scale scoring (1/2 for photos over 2.5 MP, 1/4 over 10 MP) against full
    /// scale on the corpus photos, at the qualities a search visits: why the product
    /// scores at full size. A measurement, not a check: `cargo test --release --lib -- --ignored --nocapture
    /// reduced_scale_scores_against_full_scale` (reads `../shared/corpus`).
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn reduced_scale_scores_against_full_scale() {
        let Some(paths) = corpus_photos() else {
            return;
        };
        let budget = Budget::UNLIMITED;
        let cpu = super::super::libjpeg::thread_cpu_time;
        let mut worst: f64 = 0.0;
        let mut timings = Vec::new();
        println!("| photo | MP | scale | quality | full | reduced | reduced − full |");
        println!("|---|---|---|---|---|---|---|");
        for path in paths {
            let input = std::fs::read(&path).expect("reads");
            let header = super::super::jpeg::parse(&input).expect("a JPEG");
            let (width, height) = (u32::from(header.width), u32::from(header.height));
            let pixels = u64::from(width) * u64::from(height);
            let denom = match pixels {
                0..=2_500_000 => continue,
                2_500_001..=10_000_000 => 2,
                _ => 4,
            };
            let t = cpu();
            let full = Scorer::from_jpeg_at(&input, 1, u64::MAX, &budget).expect("reference");
            let full_ref = cpu() - t;
            let reduced =
                Scorer::from_jpeg_at(&input, denom, u64::MAX, &budget).expect("reference");
            let reduced_ref = (cpu() - t) - full_ref;
            let (mut full_cmp, mut reduced_cmp) = (Duration::ZERO, Duration::ZERO);
            for q in [30u8, 40, 50, 60, 70, 80, 90] {
                let tuning = super::super::fastpath::Tuning {
                    all_samplings: true,
                    ..Default::default()
                };
                let Some(candidate) = super::super::fastpath::transcode(&input, q, &budget, tuning)
                    .expect("transcodes")
                else {
                    continue;
                };
                let t = cpu();
                let f = full.score(&candidate, &budget).expect("scores");
                full_cmp += cpu() - t;
                let t = cpu();
                let r = reduced.score(&candidate, &budget).expect("scores");
                reduced_cmp += cpu() - t;
                worst = worst.max((r - f).abs());
                println!(
                    "| {} | {:.2} | 1/{denom} | {q} | {f:.2} | {r:.2} | {:+.2} |",
                    path.file_stem().unwrap_or_default().to_string_lossy(),
                    f64::from(width) * f64::from(height) / 1e6,
                    r - f
                );
            }
            let mp = f64::from(width) * f64::from(height) / 1e6;
            timings.push(format!(
                "{}: ms per MP of the photo: reference full {:.0}, 1/{denom} {:.0}; a try full {:.0}, 1/{denom} {:.0}",
                path.file_stem().unwrap_or_default().to_string_lossy(),
                full_ref.as_secs_f64() * 1e3 / mp,
                reduced_ref.as_secs_f64() * 1e3 / mp,
                full_cmp.as_secs_f64() * 1e3 / mp / 7.0,
                reduced_cmp.as_secs_f64() * 1e3 / mp / 7.0,
            ));
        }
        for t in &timings {
            println!("{t}");
        }
        println!("largest |reduced − full|: {worst:.2}");
    }

    /// Scoring a sample of the image, tiles cut on the MCU grid from a stratified grid
    /// and laid side by side (a mosaic of about 2¹⁸ or 2¹⁹ pixels), against full scale
    /// on the corpus photos: why the product does not score a sample. A measurement:
    /// `cargo test --release --lib -- --ignored --nocapture
    /// sampled_tiles_score_against_full_scale` (reads `../shared/corpus`).
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn sampled_tiles_score_against_full_scale() {
        let Some(paths) = corpus_photos() else {
            return;
        };
        let budget = Budget::UNLIMITED;
        // (tile side, pixels sampled)
        const SAMPLES: [(u32, u64); 5] = [
            (64, 1 << 18),
            (128, 1 << 18),
            (256, 1 << 18),
            (128, 1 << 19),
            (256, 1 << 19),
        ];
        let (mut worst, mut sum, mut count) = ([0f64; 5], [0f64; 5], 0);
        println!(
            "| photo | quality | full | {} |",
            SAMPLES
                .map(|(t, n)| format!("{t}² tiles, {n} px: sample − full (share)"))
                .join(" | ")
        );
        println!("|---|---|---|{}", "---|".repeat(SAMPLES.len()));
        for path in paths {
            let input = std::fs::read(&path).expect("reads");
            let source = libjpeg::decode(&input, &budget, score_decode(1)).expect("decodes");
            let (w, h) = (source.width, source.height);
            let source = rgb_of(&source).into_owned();
            let full = Ssimulacra2Reference::new(&slice(&source, w, h).unwrap()).unwrap();
            let samples = SAMPLES.map(|(tile, pixels)| {
                let mosaic = Mosaic::of(w, h, tile, pixels);
                let (mw, mh) = mosaic.size();
                let cut = mosaic.cut(&source, w);
                let reference = Ssimulacra2Reference::new(&slice(&cut, mw, mh).unwrap());
                (mosaic, reference.unwrap())
            });
            let name = path.file_stem().unwrap_or_default().to_string_lossy();
            for q in [35u8, 45, 50, 55, 65, 80] {
                let tuning = super::super::fastpath::Tuning {
                    all_samplings: true,
                    ..Default::default()
                };
                let candidate = super::super::fastpath::transcode(&input, q, &budget, tuning)
                    .expect("transcodes")
                    .expect("fast path applies");
                let decoded =
                    libjpeg::decode(&candidate, &budget, score_decode(1)).expect("decodes");
                let decoded = rgb_of(&decoded).into_owned();
                let f = full.compare(&slice(&decoded, w, h).unwrap()).unwrap();
                let mut line = format!("| {name} | {q} | {f:.2} |");
                for (i, (mosaic, reference)) in samples.iter().enumerate() {
                    let (mw, mh) = mosaic.size();
                    let cut = mosaic.cut(&decoded, w);
                    let s = reference.compare(&slice(&cut, mw, mh).unwrap()).unwrap();
                    worst[i] = worst[i].max((s - f).abs());
                    sum[i] += s - f;
                    let share = f64::from(mw) * f64::from(mh) / (f64::from(w) * f64::from(h));
                    line += &format!(" {:+.2} ({share:.3}) |", s - f);
                }
                count += 1;
                println!("{line}");
            }
        }
        for (i, (tile, pixels)) in SAMPLES.iter().enumerate() {
            println!(
                "{tile}² tiles, {pixels} px: mean sample − full {:+.2}, largest |sample − full| {:.2}",
                sum[i] / f64::from(count),
                worst[i]
            );
        }
    }

    /// Tiles of `tile × tile`, one from the middle of each cell of a grid over the
    /// image (corners on the 16-pixel grid), laid out in the grid's shape.
    struct Mosaic {
        tile: u32,
        cols: u32,
        rows: u32,
        corners: Vec<(u32, u32)>,
    }

    impl Mosaic {
        /// About `pixels` of a `width × height` image in tiles of `tile`.
        fn of(width: u32, height: u32, tile: u32, pixels: u64) -> Mosaic {
            let tiles = (pixels / u64::from(tile * tile)).max(1) as f64;
            let aspect = f64::from(width) / f64::from(height);
            let cols = ((tiles * aspect).sqrt().round() as u32).clamp(1, width / tile);
            let rows = ((tiles / f64::from(cols)).round() as u32).clamp(1, height / tile);
            let middle = |i: u32, n: u32, side: u32| {
                let centre = u64::from(side) * u64::from(2 * i + 1) / u64::from(2 * n);
                (centre as u32).saturating_sub(tile / 2).min(side - tile) & !15
            };
            let corners = (0..rows)
                .flat_map(|r| (0..cols).map(move |c| (c, r)))
                .map(|(c, r)| (middle(c, cols, width), middle(r, rows, height)))
                .collect();
            Mosaic {
                tile,
                cols,
                rows,
                corners,
            }
        }

        fn size(&self) -> (u32, u32) {
            (self.cols * self.tile, self.rows * self.tile)
        }

        /// The mosaic of interleaved RGB `rgb`, `width` pixels a row.
        fn cut(&self, rgb: &[u8], width: u32) -> Vec<u8> {
            let t = self.tile as usize;
            let row_bytes = self.cols as usize * t * 3;
            let mut out = vec![0u8; row_bytes * self.rows as usize * t];
            for (i, &(x, y)) in self.corners.iter().enumerate() {
                let (c, r) = (i % self.cols as usize, i / self.cols as usize);
                for dy in 0..t {
                    let from = ((y as usize + dy) * width as usize + x as usize) * 3;
                    let to = (r * t + dy) * row_bytes + c * t * 3;
                    out[to..to + t * 3].copy_from_slice(&rgb[from..from + t * 3]);
                }
            }
            out
        }
    }

    /// Where a try's CPU time goes (decode of the candidate, the comparison whole
    /// and in strips), on four corpus photos at q50. A measurement: `cargo test
    /// --release --lib -- --ignored --nocapture cost_of_a_try`.
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn cost_of_a_try() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        let budget = Budget::UNLIMITED;
        let cpu = super::super::libjpeg::thread_cpu_time;
        for name in ["aqua", "fig", "life", "seeding"] {
            let Ok(input) = std::fs::read(corpus.join(format!("{name}.jpg"))) else {
                eprintln!("no {name}.jpg in {}: skipped", corpus.display());
                continue;
            };
            let tuning = super::super::fastpath::Tuning {
                all_samplings: true,
                ..Default::default()
            };
            let candidate = super::super::fastpath::transcode(&input, 50, &budget, tuning)
                .expect("transcodes")
                .expect("fast path applies");
            let t = cpu();
            let scorer = Scorer::from_jpeg(&input, &budget).expect("reference");
            let reference = cpu() - t;
            let t = cpu();
            let decoded = libjpeg::decode(&candidate, &budget, score_decode(1)).expect("decodes");
            let decode = cpu() - t;
            let (w, h) = (decoded.width, decoded.height);
            let data = rgb_of(&decoded);
            let pixels = slice(&data, w, h).expect("slice");
            let t = cpu();
            let whole = scorer.reference.compare(&pixels).expect("compares");
            let compare = cpu() - t;
            let t = cpu();
            let strips = scorer
                .reference
                .compare_with_config(&pixels, &fast_ssim2::Ssimulacra2Config::strips(256))
                .expect("compares");
            let striped = cpu() - t;
            let mp = f64::from(w) * f64::from(h) / 1e6;
            let per = |d: Duration| d.as_secs_f64() * 1e3 / mp;
            println!(
                "{name} ({mp:.1} MP), ms per MP: reference {:.0}, decode {:.0}, compare {:.0} \
                 (score {whole:.3}), in 256-row strips {:.0} (score {strips:.3})",
                per(reference),
                per(decode),
                per(compare),
                per(striped)
            );
        }
    }

    /// [`search`] on an encoder whose output at quality `q` is `len(q)` bytes scoring
    /// `score(q)`: the first byte of each "JPEG" is its quality, so the scorer can read
    /// it back.
    fn search_on(goal: Goal, len: impl Fn(u8) -> usize, score: impl Fn(u8) -> f64) -> Searched {
        search_on_from(&TYPICAL, goal, len, score)
    }

    /// [`search_on`] with its first guess from the `typical` curve.
    fn search_on_from(
        typical: &[(f64, f64)],
        goal: Goal,
        len: impl Fn(u8) -> usize,
        score: impl Fn(u8) -> f64,
    ) -> Searched {
        let mut encode = |q: u8| {
            let mut bytes = vec![0u8; len(q)];
            bytes[0] = q;
            Ok(Some(Encoded {
                bytes,
                fast_path: false,
            }))
        };
        let score = |b: &[u8]| Ok(score(b[0]));
        search_from(typical, goal, &mut encode, Some(&score)).expect("model search")
    }

    /// One corpus photo's outputs at every quality of [`AUTO_RANGE`] by the direct
    /// path (bytes and full-scale score): what a search of it can visit.
    struct Curve {
        name: String,
        scored_pixels: u64,
        /// (bytes, score) by quality.
        at: BTreeMap<u8, (usize, f64)>,
    }

    /// Where a corpus measurement named `name` is kept between runs:
    /// `target/{name}-v{OUTPUT_VERSION}.tsv`, so that a codec change starts afresh.
    fn kept_in_target(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/{name}-v{}.tsv",
            super::super::OUTPUT_VERSION
        ))
    }

    /// The text at `path` when it is there, else the lines `measure` gives for each
    /// corpus photo (its name, bytes and [`Scorer`]), measured on two threads, written
    /// there; `None`, said, when there is neither.
    fn cached_lines(
        path: &std::path::Path,
        measure: impl Fn(&str, &[u8], &Scorer) -> Vec<String> + Sync,
    ) -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(text);
        }
        let photos = corpus_photos()?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let lines = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let order = std::sync::atomic::Ordering::Relaxed;
                    while let Some(photo) = photos.get(next.fetch_add(1, order)) {
                        let input = std::fs::read(photo).expect("reads");
                        let scorer =
                            Scorer::from_jpeg(&input, &Budget::UNLIMITED).expect("reference");
                        let name = photo.file_stem().unwrap_or_default().to_string_lossy();
                        let measured = measure(&name, &input, &scorer);
                        lines.lock().expect("lines").extend(measured);
                    }
                });
            }
        });
        let text: String = lines.into_inner().expect("lines").concat();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("makes the folder");
        }
        std::fs::write(path, &text).expect("writes the measurements");
        Some(text)
    }

    /// The corpus photos' [`Curve`]s: read from `path` when it is there (a TSV of
    /// photo, quality, bytes, score, scored pixels), else computed (about 10 minutes
    /// on 2 cores) and written there.
    fn corpus_curves(path: &std::path::Path) -> Option<Vec<Curve>> {
        let mut curves: BTreeMap<String, Curve> = BTreeMap::new();
        let text = cached_lines(path, |name, input, scorer| {
            let header = super::super::jpeg::parse(input).expect("a JPEG");
            let budget = Budget::UNLIMITED;
            AUTO_RANGE
                .map(|q| {
                    let route = super::super::Route::Auto;
                    let tuning = super::super::fastpath::Tuning::for_target();
                    let (bytes, _) =
                        super::super::direct_jpeg(input, &header, q, &budget, route, tuning)
                            .expect("transcodes")
                            .expect("the direct path applies");
                    let score = scorer.score(&bytes, &budget).expect("scores");
                    format!(
                        "{name}\t{q}\t{}\t{score:.4}\t{}\n",
                        bytes.len(),
                        scorer.scored_pixels()
                    )
                })
                .collect()
        })?;
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let curve = curves.entry(f[0].to_string()).or_insert_with(|| Curve {
                name: f[0].to_string(),
                scored_pixels: f[4].parse().expect("pixels"),
                at: BTreeMap::new(),
            });
            let q = f[1].parse().expect("quality");
            curve.at.insert(
                q,
                (f[2].parse().expect("bytes"), f[3].parse().expect("score")),
            );
        }
        Some(curves.into_values().collect())
    }

    /// The product's search replayed on the corpus photos' score curves, for targets
    /// 60–80: bytes and tries against the lowest meeting quality of each photo (what
    /// a search that tried everything would choose), and `auto:65`'s bytes against
    /// the smallest fixed quality that gets every photo to 65 on this scorer, then
    /// where the first guess starts ([`first_guesses_on`]). What the search's rules
    /// ([`TYPICAL`], [`AIM`], [`CLOSE_ENOUGH`], the bracket rule) were chosen on. A
    /// measurement: `cargo test --release --lib -- --ignored --nocapture
    /// search_replayed_on_score_curves` (reads `../shared/corpus`; keeps the curves in
    /// `target/score-curves-v{OUTPUT_VERSION}.tsv`).
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn search_replayed_on_score_curves() {
        let cache = kept_in_target("score-curves");
        let Some(curves) = corpus_curves(&cache) else {
            return;
        };
        println!("{} photos, curves in {}", curves.len(), cache.display());
        let mut all_tries = 0.0;
        println!("| target | bytes | lowest meeting | over | tries | tries × MP |");
        println!("|---|---|---|---|---|---|");
        for target in [60u8, 65, 70, 75, 80] {
            let t = f64::from(target);
            let (mut bytes, mut lowest, mut tries, mut weighted) = (0, 0, 0, 0.0);
            for curve in &curves {
                let goal = Goal {
                    target: Some(Target::whole(target)),
                    fixed: 50,
                    max_bytes: None,
                };
                let c = match search_on(goal, |q| curve.at[&q].0, |q| curve.at[&q].1) {
                    Searched::Chosen(c) => c,
                    _ => panic!("{}: no choice", curve.name),
                };
                bytes += c.encoded.bytes.len();
                tries += c.tries;
                weighted += f64::from(c.tries) * curve.scored_pixels as f64 / 1e6;
                let best = curve.at.values().find(|(_, s)| *s >= t);
                lowest += best.unwrap_or(&curve.at[AUTO_RANGE.end()]).0;
            }
            println!(
                "| {target} | {bytes} | {lowest} | {:+.2} % | {tries} | {weighted:.0} |",
                (bytes as f64 / lowest as f64 - 1.0) * 100.0
            );
            all_tries += weighted;
        }
        println!("tries × MP over the five targets: {all_tries:.0}");
        let total = |q: u8| curves.iter().map(|c| c.at[&q].0).sum::<usize>();
        let fixed = AUTO_RANGE
            .clone()
            .find(|q| curves.iter().all(|c| c.at[q].1 >= 65.0))
            .expect("a quality of the range gets every photo to 65");
        println!(
            "fixed q50: {} bytes; q{fixed}, the smallest fixed quality with every photo ≥ 65 here: {} bytes",
            total(50),
            total(fixed)
        );
        first_guesses_on(&curves);
    }

    /// The first guess's curve before [`TYPICAL`] (fitted on an earlier codec and scorer).
    const REPLACED: [(f64, f64); 7] = [
        (30.0, 52.0),
        (40.0, 60.0),
        (50.0, 65.0),
        (60.0, 68.5),
        (70.0, 72.0),
        (80.0, 77.0),
        (90.0, 85.0),
    ];

    /// Where the target search starts, replayed for targets 60–80: tries × megapixels
    /// with [`TYPICAL`], with the curve it replaced, and with curves made like it (a
    /// percentile of the scores at q30, q40, … q90) from the other 20 photos only, for
    /// each photo (left-one-out: what a curve fitted elsewhere would do here). Part of
    /// [`search_replayed_on_score_curves`].
    fn first_guesses_on(curves: &[Curve]) {
        let percentile = |skip: usize, p: f64| -> Vec<(f64, f64)> {
            (30u8..=90)
                .step_by(10)
                .map(|q| {
                    let mut v: Vec<f64> = (curves.iter().enumerate())
                        .filter_map(|(j, c)| (j != skip).then_some(c.at[&q].1))
                        .collect();
                    v.sort_by(f64::total_cmp);
                    let at = p * (v.len() - 1) as f64;
                    let (lo, f) = (at.floor() as usize, at.fract());
                    let score = v[lo] + f * (v[(lo + 1).min(v.len() - 1)] - v[lo]);
                    (f64::from(q), score)
                })
                .collect()
        };
        // What TYPICAL is made from: the curve of every photo (none left out).
        let all = percentile(usize::MAX, 0.4);
        let points: Vec<String> = all
            .iter()
            .map(|(q, s)| format!("({q:.1}, {s:.1})"))
            .collect();
        println!("40th percentile of all photos: [{}]", points.join(", "));
        println!(
            "| target | TYPICAL | replaced | 40th percentile, left-one-out | median, left-one-out |"
        );
        println!("|---|---|---|---|---|");
        // Each photo's four curves to start from, the same for every target.
        let guides: Vec<[Vec<(f64, f64)>; 4]> = (0..curves.len())
            .map(|i| {
                [
                    TYPICAL.to_vec(),
                    REPLACED.to_vec(),
                    percentile(i, 0.4),
                    percentile(i, 0.5),
                ]
            })
            .collect();
        let mut sums = [0.0; 4];
        for target in [60u8, 65, 70, 75, 80] {
            let goal = Goal {
                target: Some(Target::whole(target)),
                fixed: 50,
                max_bytes: None,
            };
            let mut row = [0.0; 4];
            for (c, guides) in curves.iter().zip(&guides) {
                for (k, typical) in guides.iter().enumerate() {
                    let Searched::Chosen(choice) =
                        search_on_from(typical, goal, |q| c.at[&q].0, |q| c.at[&q].1)
                    else {
                        panic!("{}: no choice", c.name);
                    };
                    row[k] += f64::from(choice.tries) * c.scored_pixels as f64 / 1e6;
                }
            }
            println!(
                "| {target} | {:.0} | {:.0} | {:.0} | {:.0} |",
                row[0], row[1], row[2], row[3]
            );
            sums.iter_mut().zip(row).for_each(|(s, r)| *s += r);
        }
        println!(
            "| all | {:.0} | {:.0} | {:.0} | {:.0} |",
            sums[0], sums[1], sums[2], sums[3]
        );
        // Every whole target of 60–80, each curve fitted on all the photos.
        let fitted: Vec<(String, Vec<(f64, f64)>)> = [0.3, 0.4, 0.5]
            .into_iter()
            .map(|p| {
                (
                    format!("{}th percentile", p * 100.0),
                    percentile(usize::MAX, p),
                )
            })
            .chain([("TYPICAL".to_string(), TYPICAL.to_vec())])
            .collect();
        for (name, typical) in &fitted {
            let (mut weighted, mut tries) = (0.0, 0);
            for target in 60u8..=80 {
                let goal = Goal {
                    target: Some(Target::whole(target)),
                    fixed: 50,
                    max_bytes: None,
                };
                for c in curves {
                    let Searched::Chosen(choice) =
                        search_on_from(typical, goal, |q| c.at[&q].0, |q| c.at[&q].1)
                    else {
                        panic!("{}: no choice", c.name);
                    };
                    tries += choice.tries;
                    weighted += f64::from(choice.tries) * c.scored_pixels as f64 / 1e6;
                }
            }
            println!(
                "targets 60–80, each whole one: {name}: {tries} tries, {weighted:.0} tries × MP"
            );
        }
    }

    /// Chroma offsets measured by [`chroma_split_curves`].
    const CHROMA_OFFSETS: [i8; 6] = [-16, -8, 0, 8, 16, 30];

    /// A tuning of the fast path measured by [`tuned_curves`], and its name there.
    type Variant = (String, super::super::fastpath::Tuning);

    /// Each corpus photo's (bytes, score) by luma quality (40–76, every third), for
    /// each [`Variant`] measured: by (photo, variant's name).
    type TunedCurves = BTreeMap<(String, String), BTreeMap<u8, (usize, f64)>>;

    /// The corpus photos' [`TunedCurves`] for `variants`: read from `path` when it is
    /// there (a TSV of photo, quality, variant, bytes, score), else computed (about 8
    /// seconds per variant and photo on 2 cores) and written there.
    fn tuned_curves(path: &std::path::Path, variants: &[Variant]) -> Option<TunedCurves> {
        let text = cached_lines(path, |name, input, scorer| {
            let budget = Budget::UNLIMITED;
            let mut lines = Vec::new();
            for q in (40u8..=76).step_by(3) {
                for (variant, tuning) in variants {
                    let bytes = super::super::fastpath::transcode(input, q, &budget, *tuning)
                        .expect("transcodes")
                        .expect("the fast path applies");
                    let score = scorer.score(&bytes, &budget).expect("scores");
                    lines.push(format!(
                        "{name}\t{q}\t{variant}\t{}\t{score:.4}\n",
                        bytes.len()
                    ));
                }
            }
            lines
        })?;
        let mut curves = TunedCurves::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let key = (f[0].to_string(), f[2].to_string());
            curves.entry(key).or_default().insert(
                f[1].parse().expect("quality"),
                (f[3].parse().expect("bytes"), f[4].parse().expect("score")),
            );
        }
        Some(curves)
    }

    /// The curves of `variants` (kept in `target/{name}-v…tsv`), then [`best_of_sets`].
    fn measure_variants(
        name: &str,
        variants: &[Variant],
        base: &str,
        sets: &[&[&str]],
        targets: &[f64],
    ) {
        let cache = kept_in_target(name);
        let Some(curves) = tuned_curves(&cache, variants) else {
            return;
        };
        println!("curves in {}", cache.display());
        best_of_sets(&curves, base, sets, targets);
    }

    /// For each target, the bytes of every photo's lowest meeting output with each
    /// set of `variants` (each photo at its best of the set) against `base` alone.
    fn best_of_sets(curves: &TunedCurves, base: &str, sets: &[&[&str]], targets: &[f64]) {
        let photos: std::collections::BTreeSet<&String> = curves.keys().map(|(p, _)| p).collect();
        for &target in targets {
            let total = |set: &[&str]| -> f64 {
                photos
                    .iter()
                    .map(|&p| {
                        set.iter()
                            .filter_map(|&v| {
                                lowest_whole(&curves[&(p.clone(), v.to_string())], target)
                            })
                            .fold(f64::INFINITY, f64::min)
                    })
                    .sum()
            };
            let reference = total(&[base]);
            let ratios: Vec<String> = sets
                .iter()
                .map(|set| format!("{set:?} {:.3}×", total(set) / reference))
                .collect();
            println!(
                "target {target}: {base} {reference:.0} bytes; {}",
                ratios.join(", ")
            );
        }
    }

    /// The bytes of the lowest whole quality whose score reaches `target` on a curve
    /// measured every few qualities (score and log-bytes interpolated linearly between
    /// its points; its first point when that already reaches it); `None` when none does.
    fn lowest_whole(curve: &BTreeMap<u8, (usize, f64)>, target: f64) -> Option<f64> {
        let (&first, &(bytes, score)) = curve.first_key_value()?;
        if score >= target {
            return Some(bytes as f64);
        }
        let points: Vec<_> = curve
            .iter()
            .map(|(&q, &(b, s))| (q, (b as f64).ln(), s))
            .collect();
        points.windows(2).find_map(|w| {
            let ((q0, b0, s0), (q1, b1, s1)) = (w[0], w[1]);
            (q0.max(first)..=q1).find_map(|q| {
                let f = f64::from(q - q0) / f64::from(q1 - q0);
                (s0 + f * (s1 - s0) >= target).then(|| (b0 + f * (b1 - b0)).exp())
            })
        })
    }

    /// What balancing the two tables per photo could save for a target: the lowest
    /// meeting outputs with the chroma table at the best of a set of offsets from the
    /// luma's, against offset 0 (every photo's own best of the six, a few sets, each
    /// offset alone). A measurement: `cargo test --release --lib -- --ignored
    /// --nocapture chroma_split_curves` (reads `../shared/corpus`; keeps the curves in
    /// `target/chroma-split-v{OUTPUT_VERSION}.tsv`).
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn chroma_split_curves() {
        let variants: Vec<Variant> = CHROMA_OFFSETS
            .iter()
            .map(|&offset| {
                let tuning = super::super::fastpath::Tuning {
                    chroma_offset: offset,
                    ..Default::default()
                };
                (offset.to_string(), tuning)
            })
            .collect();
        let sets: [&[&str]; 5] = [
            &["-16", "-8", "0", "8", "16", "30"],
            &["0", "8"],
            &["0", "16"],
            &["0", "16", "30"],
            &["16"],
        ];
        measure_variants("chroma-split", &variants, "0", &sets, &[65.56, 66.0, 70.0]);
    }

    /// Dead zones measured by [`dead_zone_curves`]: the fraction over which a
    /// requantised magnitude rounds up ([`super::super::fastpath::ROUND_UP_ABOVE`]).
    const DEAD_ZONES: [f32; 5] = [0.5, 0.55, 0.6, 0.65, 0.7];

    /// What a wider dead zone in requantisation saves at the same score: the lowest
    /// meeting outputs with each rounding threshold of [`DEAD_ZONES`] against 0.5's
    /// (each alone, and every photo at its best of a few). A measurement: `cargo test
    /// --release --lib -- --ignored --nocapture dead_zone_curves` (reads
    /// `../shared/corpus`; keeps the curves in `target/dead-zone-v{OUTPUT_VERSION}.tsv`).
    #[test]
    #[ignore = "measurement on the benchmark corpus"]
    fn dead_zone_curves() {
        let variants: Vec<Variant> = DEAD_ZONES
            .iter()
            .map(|&theta| {
                let tuning = super::super::fastpath::Tuning {
                    round_up_above: theta,
                    ..Default::default()
                };
                (theta.to_string(), tuning)
            })
            .collect();
        let sets: [&[&str]; 6] = [
            &["0.55"],
            &["0.6"],
            &["0.65"],
            &["0.7"],
            &["0.5", "0.6", "0.7"],
            &["0.5", "0.55", "0.6", "0.65", "0.7"],
        ];
        measure_variants("dead-zone", &variants, "0.5", &sets, &[64.56, 65.56, 70.0]);
    }

    #[test]
    fn first_guess_follows_the_curve_and_stays_in_range() {
        let first_guess = |target| interpolate_q(&TYPICAL, target);
        assert_eq!(first_guess(65.0), 50);
        assert_eq!(first_guess(10.0), *AUTO_RANGE.start());
        assert_eq!(first_guess(99.0), *AUTO_RANGE.end());
        assert!(first_guess(70.0) > 50 && first_guess(70.0) < 70);
    }

    /// A model encoder: score = 30 + 0.6·q, bytes = 1000·1.03^q ([`search_on`]).
    fn model_score(q: u8) -> f64 {
        30.0 + 0.6 * f64::from(q)
    }
    fn model_len(q: u8) -> usize {
        (1000.0 * 1.03f64.powi(i32::from(q))) as usize
    }
    fn run(goal: Goal) -> Searched {
        search_on(goal, model_len, model_score)
    }
    fn chosen(s: Searched) -> Choice {
        match s {
            Searched::Chosen(c) => c,
            Searched::TooBig { tries } => panic!("too big after {tries}"),
            Searched::Declined => panic!("declined"),
        }
    }

    #[test]
    fn target_search_finds_the_lowest_meeting_quality_in_few_tries() {
        for target in [50u8, 55, 60, 62, 70, 75, 80, 86] {
            let c = chosen(run(Goal {
                target: Some(Target::whole(target)),
                fixed: 50,
                max_bytes: None,
            }));
            let t = f64::from(target);
            assert!(model_score(c.quality) >= t, "{target}: q{}", c.quality);
            // Within one quality step of the lowest meeting one, or close enough.
            assert!(
                model_score(c.quality - 1) < t || model_score(c.quality) - t < CLOSE_ENOUGH + 0.6,
                "{target}: q{}",
                c.quality
            );
            assert!(c.tries <= MAX_TRIES, "{target}: {} tries", c.tries);
            assert_eq!(c.binding, Binding::Target);
            assert_eq!(c.score, Some(model_score(c.quality)));
        }
    }

    #[test]
    fn target_above_the_range_uses_the_top_and_says_so() {
        let c = chosen(run(Goal {
            target: Some(Target::whole(95)),
            fixed: 50,
            max_bytes: None,
        }));
        assert_eq!(c.quality, *AUTO_RANGE.end());
        assert_eq!(c.binding, Binding::QualityRange);
    }

    #[test]
    fn cap_search_finds_the_highest_fitting_quality() {
        for (fixed, cap) in [(50u8, 3000u64), (90, 5000), (95, 10_000), (80, 2500)] {
            let c = chosen(run(Goal {
                target: None,
                fixed,
                max_bytes: Some(cap),
            }));
            assert!(model_len(c.quality) as u64 <= cap);
            if c.binding == Binding::MaxBytes {
                assert!(
                    model_len(c.quality + 1) as u64 > cap,
                    "{fixed}/{cap}: q{}",
                    c.quality
                );
            } else {
                assert_eq!((c.binding, c.quality), (Binding::Quality, fixed));
            }
            assert!(c.tries <= MAX_TRIES + 4);
        }
    }

    /// A flat score curve: the target search stops at a quality close enough above the
    /// target, and a cap one byte under that output takes the step below, which still
    /// meets the target. It was reported as the cap binding (the target missed).
    #[test]
    fn a_capped_choice_that_still_meets_the_target_reports_the_target() {
        let score = |q: u8| 70.0 + 0.1 * (f64::from(q) - 55.0);
        let goal = |max_bytes| Goal {
            target: Some(Target::whole(70)),
            fixed: 50,
            max_bytes,
        };
        let free = chosen(search_on(goal(None), model_len, score));
        assert_eq!(free.binding, Binding::Target);
        assert!(
            score(free.quality - 1) >= 70.0,
            "the case needs a meeting step below q{}",
            free.quality
        );
        let cap = model_len(free.quality) as u64 - 1;
        let c = chosen(search_on(goal(Some(cap)), model_len, score));
        assert_eq!(c.quality, free.quality - 1);
        assert_eq!(
            (c.binding, c.score),
            (Binding::Target, Some(score(c.quality)))
        );
        // One step further down misses: then the cap is what bound it.
        let low = chosen(search_on(
            goal(Some(model_len(55) as u64 - 1)),
            model_len,
            score,
        ));
        assert_eq!((low.quality, low.binding), (54, Binding::MaxBytes));
    }

    /// Sizes that grow slower than the cap search's 2 % a step (a low-quality source
    /// on the coefficient path), after a target search: the cap search's guesses land
    /// on qualities already tried, and before it looked at them it gave up and asked
    /// for a downscale, though quality 31 fits at full size.
    #[test]
    fn cap_search_after_a_target_uses_what_the_tries_say_and_never_gives_up_above_the_floor() {
        let len = |q: u8| (100_000.0 * (0.006 * (f64::from(q) - 30.0)).exp()) as usize;
        let score = |q: u8| f64::from(q) - 20.0;
        for cap in [100_700u64, 100_100, 104_000, 110_000, 130_000] {
            let c = chosen(search_on(
                Goal {
                    target: Some(Target::whole(60)),
                    fixed: 95,
                    max_bytes: Some(cap),
                },
                len,
                score,
            ));
            assert_eq!(c.binding, Binding::MaxBytes, "{cap}");
            assert!(len(c.quality) as u64 <= cap, "{cap}: q{}", c.quality);
            assert!(
                len(c.quality + 1) as u64 > cap,
                "{cap}: q{} is not the highest",
                c.quality
            );
            assert!(c.tries <= MAX_TRIES + 4, "{cap}: {} tries", c.tries);
        }
        // Under the floor's size: a downscale, once the floor itself was tried.
        let mut tried = Vec::new();
        let mut encode = |q: u8| {
            tried.push(q);
            Ok(Some(Encoded {
                bytes: vec![q; len(q)],
                fast_path: false,
            }))
        };
        let goal = Goal {
            target: None,
            fixed: 95,
            max_bytes: Some(99_000),
        };
        assert!(matches!(
            search(goal, &mut encode, None).unwrap(),
            Searched::TooBig { .. }
        ));
        assert!(tried.contains(&30), "{tried:?}");
        assert!(tried.len() as u32 <= MAX_TRIES + 4, "{tried:?}");
    }

    /// A fixed quality under the range's bottom with a cap: the cap search never goes
    /// above it, and the downscale encodes at it.
    #[test]
    fn a_fixed_quality_below_the_range_is_the_floor() {
        let goal = Goal {
            target: None,
            fixed: 20,
            max_bytes: Some(1000),
        };
        assert_eq!(goal.floor(), 20);
        assert!(matches!(run(goal), Searched::TooBig { .. }));
        let goal = Goal {
            target: Some(Target::whole(70)),
            fixed: 20,
            max_bytes: Some(1000),
        };
        assert_eq!(goal.floor(), *AUTO_RANGE.start());
    }

    #[test]
    fn cap_wins_over_target_and_too_small_a_cap_asks_for_downscaling() {
        let c = chosen(run(Goal {
            target: Some(Target::whole(80)),
            fixed: 50,
            max_bytes: Some(4000),
        }));
        assert_eq!(c.binding, Binding::MaxBytes);
        assert!(model_len(c.quality) as u64 <= 4000);
        assert!(c.score.is_some_and(|s| s < 80.0));
        assert!(matches!(
            run(Goal {
                target: None,
                fixed: 50,
                max_bytes: Some(1500),
            }),
            Searched::TooBig { .. }
        ));
    }
}
