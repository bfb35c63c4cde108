//! The JPEG → JPEG fast path: requantisation in the DCT-coefficient domain.
//!
//! The quantised coefficients are read with libjpeg, scaled to the output's
//! quantisation tables and written with optimised Huffman tables: no IDCT, colour
//! conversion, resampling or forward DCT. Output is the same as the general path's:
//! baseline, YCbCr 4:2:0, JFIF header only.
//!
//! - **Sources**: YCbCr whose chroma is subsampled 2×2 (4:2:0, edited in place);
//!   with [`Tuning::all_samplings`] also 2×1 (4:2:2), 1×2 (4:4:0), none (4:4:4) and
//!   gray (by default only where libjpeg has no SIMD: see [`all_samplings`]).
//!   Chroma that is not yet 4:2:0 is box-downsampled *in the DCT domain*: the average of two adjacent
//!   8-sample blocks is a fixed linear map of their coefficients (an 8×16 matrix),
//!   applied along the axis being halved. Gray gets all-zero (neutral) chroma.
//! - **Tables**: the standard IJG tables at the requested quality, except that a
//!   coefficient the source already quantised more coarsely keeps its source step
//!   (requantising it could only add error and bytes).
//! - **Rounding**: `|c|·s/t` is rounded up only when its fraction is over
//!   [`ROUND_UP_ABOVE`] (chosen by measurement, see `benches/imaging`).
//! - **Huffman tables**: optimal for the output, from symbol statistics gathered
//!   here ([`super::huffman`]) in a quick pass instead of libjpeg's slow one.
//!
//! Orientation, ICC and CMYK decisions are the caller's ([`super::transform`]).

use super::libjpeg::{
    Block, Budget, Frame, FrameColor, HuffTables, LibjpegError, OutputTables, Plane,
};
use super::quality::{IJG_CHROMA, IJG_LUMA, scaled_table};
use super::{coefficients, huffman, kernels, writer};

/// A requantised magnitude `x = |c|·s/t` becomes `ceil(x − ROUND_UP_ABOVE)`: its
/// integer part, plus one when the fraction is over this. 0.5 is round-half-down
/// (nearest, ties towards zero). Measured on the corpus at q50 against Pillow
/// (bytes, PSNR): ties away from zero −10.8 %, +0.01 dB; 0.5 −12.2 %, −0.02 dB;
/// 0.55 −13.9 %, −0.06 dB; 0.58 −17.4 %, −0.19 dB; 0.6 −22.0 %, −0.38 dB. Ties are
/// common where a source step is half the target's (a q75 source at q50); a dead
/// zone beyond 0.5 trades PSNR fast. 0.5 keeps PSNR level.
pub(crate) const ROUND_UP_ABOVE: f32 = 0.5;

/// [`ROUND_UP_ABOVE`] of a target search's tries (`auto:N`): a dead zone. Where the
/// metric guards the result, a wider dead zone reaches the same SSIMULACRA2 score at a
/// slightly higher quality with fewer bytes, since the coefficients it zeroes cost
/// more bytes than the score they carry. Lowest meeting outputs of the 21 corpus
/// photos against 0.5's (`dead_zone_curves`): at targets 64.56 / 65.56 / 70, 0.55
/// 0.951× / 0.969× / 0.963×; 0.6 0.921× / 0.930× / 0.943×; 0.65 0.908× / 0.922× and
/// 0.7 0.904× / 0.922×, but neither reached 70 on every photo by q76 (the score they
/// can reach falls fastest); each photo at its best of 0.5–0.7, 0.896× / 0.914× /
/// 0.928× for several times the tries. Fixed qualities keep 0.5: no metric checks
/// them.
pub(crate) const TARGET_ROUND_UP_ABOVE: f32 = 0.6;

/// Tunables, for measurements; [`Tuning::default`] is what [`transcode`] uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// See [`ROUND_UP_ABOVE`].
    pub round_up_above: f32,
    /// Keep the source's step where it is coarser than the target's.
    pub keep_coarser: bool,
    /// Compute the Huffman tables here (one fast pass) rather than in libjpeg.
    pub own_huffman: bool,
    /// Count symbols on every n-th MCU row only (1: exactly libjpeg's tables; see
    /// [`huffman::SAMPLE`]).
    pub huffman_sample: usize,
    /// Also take gray, 4:2:2, 4:4:0 and 4:4:4 sources (see [`all_samplings`]).
    pub all_samplings: bool,
    /// The chroma table's quality relative to the luma table's (0: both at the
    /// requested quality).
    pub chroma_offset: i8,
}

impl Tuning {
    /// The tuning of a target search's tries: [`TARGET_ROUND_UP_ABOVE`].
    pub(crate) fn for_target() -> Self {
        Tuning {
            round_up_above: TARGET_ROUND_UP_ABOVE,
            ..Tuning::default()
        }
    }
}

/// Whether sources that are not 4:2:0 take the fast path: where [`super::Codec`]
/// says their chroma goes through the DCT domain.
pub(crate) fn all_samplings() -> bool {
    super::Codec::get().chroma == super::ChromaRoute::Coefficients
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            round_up_above: ROUND_UP_ABOVE,
            keep_coarser: true,
            own_huffman: true,
            huffman_sample: huffman::SAMPLE,
            all_samplings: all_samplings(),
            chroma_offset: 0,
        }
    }
}

/// How the chroma of a source maps onto 4:2:0: blocks to merge across and down (1 or 2).
fn chroma_merge(frame: &Frame) -> Option<(Arrangement, usize, usize)> {
    match frame.color {
        FrameColor::Gray => Some((Arrangement::Separate, 0, 0)),
        FrameColor::YCbCr => {
            let [(yh, yv), cb, cr] = frame.sampling[..] else {
                return None;
            };
            let (ch, cv) = cb;
            // Luma must be the full-resolution component, chroma equal for Cb and Cr.
            if cb != cr || ch == 0 || cv == 0 || yh < ch || yv < cv {
                return None;
            }
            if yh % ch != 0 || yv % cv != 0 {
                return None;
            }
            let (ratio_h, ratio_v) = (yh / ch, yv / cv);
            if !matches!(ratio_h, 1 | 2) || !matches!(ratio_v, 1 | 2) {
                return None;
            }
            let arrangement = if (yh, yv, ch, cv) == (2, 2, 1, 1) {
                Arrangement::InPlace
            } else {
                Arrangement::Separate
            };
            Some((
                arrangement,
                usize::from(2 / ratio_h),
                usize::from(2 / ratio_v),
            ))
        }
        FrameColor::Cmyk | FrameColor::Ycck | FrameColor::Other => None,
    }
}

/// How the output planes relate to the source's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrangement {
    /// The source is YCbCr 4:2:0: all its planes are requantised in place.
    InPlace,
    /// Luma is requantised in place; fresh 4:2:0 chroma planes are filled from the
    /// source's chroma (or left neutral for gray).
    Separate,
}

/// Transcodes `input` at `quality` in the coefficient domain. `Ok(None)` when the
/// source's colour model or sampling is not one the fast path handles.
pub(crate) fn transcode(
    input: &[u8],
    quality: u8,
    budget: &Budget,
    tuning: Tuning,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    let targets = [
        scaled_table(&IJG_LUMA, quality),
        scaled_table(
            &IJG_CHROMA,
            (i16::from(quality) + i16::from(tuning.chroma_offset)).clamp(1, 100) as u8,
        ),
    ];
    let handled = |frame: &Frame| match chroma_merge(frame) {
        Some((Arrangement::InPlace, _, _)) => true,
        Some((Arrangement::Separate, _, _)) => tuning.all_samplings,
        None => false,
    };
    let written = coefficients::read(input, budget, handled, |frame, planes| {
        budget.check_time()?;
        let Some((arrangement, fx, fy)) = chroma_merge(frame) else {
            return Err(LibjpegError::fatal("sampling changed after the headers"));
        };
        let mut fresh = writer::Planes420::chroma(frame.width, frame.height);
        let mut source = planes.into_iter();
        let (Some(y), cb, cr) = (source.next(), source.next(), source.next()) else {
            return Err(LibjpegError::fatal("no components"));
        };
        let luma = output_table(&targets[0], &[&y.quant], tuning.keep_coarser);
        let (mut planes, chroma, in_place) = match (arrangement, cb, cr) {
            (Arrangement::InPlace, Some(cb), Some(cr)) => {
                let chroma =
                    output_table(&targets[1], &[&cb.quant, &cr.quant], tuning.keep_coarser);
                ([y, cb, cr], chroma, 3)
            }
            (_, cb, cr) => {
                let [_, mut cb_out, mut cr_out] = fresh.planes();
                let chroma = match (&cb, &cr) {
                    (Some(cb), Some(cr)) => rechroma(
                        [cb, cr],
                        [&mut cb_out, &mut cr_out],
                        &targets[1],
                        (fx, fy),
                        tuning,
                    ),
                    // Gray: neutral chroma, every coefficient zero, as the planes start.
                    _ => targets[1],
                };
                ([y, cb_out, cr_out], chroma, 1)
            }
        };
        budget.check_time()?;
        kernels::vectorized(|| {
            requantize_and_write(frame, &mut planes, [luma, chroma], in_place, tuning, budget)
        })
    });
    written?.transpose()
}

/// Fills fresh 4:2:0 chroma planes `to` from the source's chroma `from` and returns
/// their table: requantised copies where the block grids agree, else merged in the
/// DCT domain at the `target` table (merged chroma is new content: the source's
/// steps do not apply).
fn rechroma(
    from: [&Plane<'_>; 2],
    to: [&mut Plane<'_>; 2],
    target: &[u16; 64],
    (fx, fy): (usize, usize),
    tuning: Tuning,
) -> [u16; 64] {
    let offset = rounding_offset(tuning.round_up_above);
    if (fx, fy) == (1, 1) {
        let table = output_table(
            target,
            &[&from[0].quant, &from[1].quant],
            tuning.keep_coarser,
        );
        for (f, t) in from.into_iter().zip(to) {
            copy_requantized(f, t, &table, offset);
        }
        table
    } else {
        let m = merge_matrix();
        for (f, t) in from.into_iter().zip(to) {
            downsample(f, t, target, (fx, fy), &m, offset);
        }
        *target
    }
}

/// Writes the output file: [`writer::write_420`] with `huffman`, or libjpeg's own
/// writer making its own tables for `None` (tests only; the service always makes
/// them here).
#[inline(always)]
fn write(
    frame: &Frame,
    planes: &mut [Plane<'_>; 3],
    quant: OutputTables,
    huffman: Option<&HuffTables>,
    prepare: impl FnMut(usize, usize, &mut Block),
) -> Result<Vec<u8>, LibjpegError> {
    let (width, height) = (frame.width, frame.height);
    match huffman {
        Some(tables) => writer::write_420(width, height, planes, &quant, tables, prepare)
            .map_err(|e| LibjpegError::fatal(e.to_string())),
        #[cfg(test)]
        None => super::libjpeg::write_coefficients(width, height, planes, &quant, None),
        #[cfg(not(test))]
        None => Err(LibjpegError::fatal("no Huffman tables")),
    }
}

/// Requantises the first `in_place` planes (the source's own: luma, and the chroma
/// of a 4:2:0 source) to `quant` and writes the file. Each block is requantised
/// once, while it is in cache: the sampled MCU rows as their symbols are counted, the
/// others as they are written.
#[inline(always)]
fn requantize_and_write(
    frame: &Frame,
    planes: &mut [Plane<'_>; 3],
    quant: OutputTables,
    in_place: usize,
    tuning: Tuning,
    budget: &Budget,
) -> Result<Vec<u8>, LibjpegError> {
    let offset = rounding_offset(tuning.round_up_above);
    let rescale = [
        Rescale::new(&planes[0].quant, &quant[0]),
        Rescale::new(&planes[1].quant, &quant[1]),
        Rescale::new(&planes[2].quant, &quant[1]),
    ];
    let requantize = |ci: usize, block: &mut Block| {
        if ci < in_place {
            rescale[ci].block(block, offset);
        }
    };
    if !tuning.own_huffman {
        for (ci, plane) in planes.iter_mut().enumerate() {
            let (width, height) = (plane.width, plane.height);
            for row in plane.rows.iter_mut().take(height) {
                row.iter_mut().take(width).for_each(|b| requantize(ci, b));
            }
        }
        return write(frame, planes, quant, None, writer::no_prepare);
    }
    let every = huffman::sample_every(planes, tuning.huffman_sample);
    let huffman = huffman::tables_420(planes, every, requantize)
        .ok_or_else(|| LibjpegError::fatal("no Huffman code fits the image"))?;
    budget.check_time()?;
    let unsampled = |ci: usize, mcu_row: usize, block: &mut Block| {
        if !mcu_row.is_multiple_of(every) {
            requantize(ci, block);
        }
    };
    write(frame, planes, quant, Some(&huffman), unsampled)
}

/// The output table for `target`: with `keep_coarser`, each step is at least the
/// coarsest of the `sources`' (clamped to baseline's 1..=255).
fn output_table(target: &[u16; 64], sources: &[&[u16; 64]], keep_coarser: bool) -> [u16; 64] {
    let mut table = *target;
    if keep_coarser {
        for (k, t) in table.iter_mut().enumerate() {
            let coarsest = sources.iter().map(|s| s[k]).max().unwrap_or(0);
            *t = (*t).max(coarsest).clamp(1, 255);
        }
    }
    table
}

/// Largest coefficient magnitude baseline Huffman coding can hold (8-bit samples).
const MAX_COEF: f32 = 1023.0;

/// [`MAX_COEF`] as a coefficient.
const MAX_COEF_I16: i16 = 1023;

/// Below the smallest distance (1/510) between a possible value `|c|·s/t` (t ≤ 255)
/// and a rounding threshold that it does not equal, and above the f32 error of
/// computing it as `c · (s/t)` (< 2⁻¹²): so exact ties resolve as exact ties.
const TIE_MARGIN: f32 = 1.0 / 1024.0;

/// 2²³: adding it to a float in 0..2²² rounds that float to an integer held in
/// the low mantissa bits.
const MAGIC: f32 = 8_388_608.0;

/// Quantises a value `x` already in output steps: `|x|` rounded up when its
/// fraction is over `theta`, sign kept, clamped to ±1023; `offset` is
/// [`rounding_offset`]`(theta)`.
///
/// `floor(|x| + 0.5 − theta − margin)` is computed as a round-to-nearest of
/// `|x| + offset` by the 2²³ trick (the value never lands on a tie: see
/// [`TIE_MARGIN`]) and read from the float's bits. No float-to-int conversion
/// (Rust's saturating one and `ceil` do not vectorise on baseline x86-64), so the
/// 64 lanes of a block do.
#[inline(always)]
fn quantize(x: f32, offset: f32) -> i16 {
    let rounded = (x.abs() + offset).clamp(0.0, MAX_COEF) + MAGIC;
    // In 0..=1023.
    let magnitude = (rounded.to_bits() - MAGIC.to_bits()) as i32;
    let sign = (x.to_bits() as i32) >> 31; // 0 or -1
    ((magnitude ^ sign) - sign) as i16
}

/// The `offset` for [`quantize`]: round up exactly when the fraction is over `theta`.
fn rounding_offset(theta: f32) -> f32 {
    0.5 - theta - TIE_MARGIN
}

/// Per-coefficient factors `s/t` from a source and an output table.
struct Rescale {
    ratio: [f32; 64],
    identity: bool,
}

impl Rescale {
    fn new(source: &[u16; 64], output: &[u16; 64]) -> Self {
        Rescale {
            ratio: std::array::from_fn(|k| f32::from(source[k]) / f32::from(output[k].max(1))),
            identity: source == output,
        }
    }

    /// Rescales one block from the source steps to the output steps, every value
    /// clamped to ±1023: baseline coding (and [`super::huffman`]'s statistics) end
    /// there, while a crafted source can hold any 16-bit value.
    #[inline(always)]
    fn block(&self, block: &mut Block, offset: f32) {
        if self.identity {
            // Same steps: only the clamp (which vectorises; the float path would too,
            // but it is the slower of the two).
            for c in block.iter_mut() {
                *c = (*c).clamp(-MAX_COEF_I16, MAX_COEF_I16);
            }
            return;
        }
        for (c, &r) in block.iter_mut().zip(&self.ratio) {
            *c = quantize(f32::from(*c) * r, offset);
        }
    }
}

fn copy_requantized(from: &Plane<'_>, to: &mut Plane<'_>, output: &[u16; 64], offset: f32) {
    let rescale = Rescale::new(&from.quant, output);
    let width = from.width.min(to.width);
    for (src_row, dst_row) in from.rows.iter().zip(to.rows.iter_mut()).take(to.height) {
        for (s, d) in src_row.iter().zip(dst_row.iter_mut()).take(width) {
            *d = *s;
            rescale.block(d, offset);
        }
    }
}

/// The 8×16 matrix taking the DCT coefficients of two adjacent 8-sample blocks
/// (first block's 8, then the second's) to those of their 2:1 box-downsampled
/// 8 samples: `C · A · diag(Cᵀ, Cᵀ)` with `C` the orthonormal 8-point DCT-II
/// (JPEG's, per axis) and `A` averaging sample pairs.
fn merge_matrix() -> [[f32; 16]; 8] {
    let c = |u: usize, x: usize| {
        let scale = if u == 0 { (0.125f64).sqrt() } else { 0.5 };
        scale * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos()
    };
    let mut m = [[0f32; 16]; 8];
    for (u, row) in m.iter_mut().enumerate() {
        for (k, entry) in row.iter_mut().enumerate() {
            // Input coefficient k of block b = k / 8 contributes to samples
            // 8b + x, which land in output sample (8b + x) / 2 with weight 1/2.
            let (b, kk) = (k / 8, k % 8);
            let mut sum = 0f64;
            for x in 0..8 {
                let out_sample = (8 * b + x) / 2;
                sum += c(u, out_sample) * 0.5 * c(kk, x);
            }
            *entry = sum as f32;
        }
    }
    m
}

/// Merges two blocks along the vertical axis (halving rows): `out = M · [a; b]`
/// per column. Dequantised (real-valued) coefficients, natural order. Dense and
/// branch-free, so the 8 columns vectorise.
fn merge_vertical(a: &[f32; 64], b: &[f32; 64], m: &[[f32; 16]; 8]) -> [f32; 64] {
    let mut out = [0f32; 64];
    for (out_row, weights) in out.chunks_exact_mut(8).zip(m) {
        for (k, &w) in weights.iter().enumerate() {
            let src = if k < 8 { a } else { b };
            let src_row = &src[(k % 8) * 8..(k % 8) * 8 + 8];
            for (o, &v) in out_row.iter_mut().zip(src_row) {
                *o += w * v;
            }
        }
    }
    out
}

fn transpose(block: &[f32; 64]) -> [f32; 64] {
    std::array::from_fn(|k| block[(k % 8) * 8 + k / 8])
}

/// Merges two blocks along the horizontal axis (halving columns), via transposes.
fn merge_horizontal(a: &[f32; 64], b: &[f32; 64], m: &[[f32; 16]; 8]) -> [f32; 64] {
    transpose(&merge_vertical(&transpose(a), &transpose(b), m))
}

fn dequantize(block: &Block, quant: &[u16; 64]) -> [f32; 64] {
    std::array::from_fn(|k| f32::from(block[k]) * f32::from(quant[k]))
}

/// Fills the 4:2:0 chroma plane `to` from `from`, merging `fx` × `fy` source
/// blocks into each output block (edge blocks are repeated past the last one).
fn downsample(
    from: &Plane<'_>,
    to: &mut Plane<'_>,
    output: &[u16; 64],
    (fx, fy): (usize, usize),
    m: &[[f32; 16]; 8],
    offset: f32,
) {
    let inverse: [f32; 64] = std::array::from_fn(|k| 1.0 / f32::from(output[k].max(1)));
    let (last_col, last_row) = (from.width.saturating_sub(1), from.height.saturating_sub(1));
    let fetch =
        |x: usize, y: usize| dequantize(&from.rows[y.min(last_row)][x.min(last_col)], &from.quant);
    let (width, height) = (to.width, to.height);
    for (oy, row) in to.rows.iter_mut().enumerate().take(height) {
        for (ox, block) in row.iter_mut().enumerate().take(width) {
            let (x0, y0) = (ox * fx, oy * fy);
            let top = if fx == 2 {
                merge_horizontal(&fetch(x0, y0), &fetch(x0 + 1, y0), m)
            } else {
                fetch(x0, y0)
            };
            let merged = if fy == 2 {
                let bottom = if fx == 2 {
                    merge_horizontal(&fetch(x0, y0 + 1), &fetch(x0 + 1, y0 + 1), m)
                } else {
                    fetch(x0, y0 + 1)
                };
                merge_vertical(&top, &bottom, m)
            } else {
                top
            };
            for ((c, &v), &inv) in block.iter_mut().zip(&merged).zip(&inverse) {
                *c = quantize(v * inv, offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JPEG 8-point DCT of `samples` (orthonormal), for checking the matrix.
    fn dct(samples: &[f64; 8]) -> [f64; 8] {
        std::array::from_fn(|u| {
            let scale = if u == 0 { (0.125f64).sqrt() } else { 0.5 };
            scale
                * samples
                    .iter()
                    .enumerate()
                    .map(|(x, s)| {
                        s * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos()
                    })
                    .sum::<f64>()
        })
    }

    #[test]
    fn merge_matrix_box_downsamples_in_the_dct_domain() {
        let pixels: [f64; 16] = std::array::from_fn(|i| ((i * 37) % 23) as f64 * 5.0 - 40.0);
        let first = dct(&pixels[..8].try_into().unwrap());
        let second = dct(&pixels[8..].try_into().unwrap());
        let halved: [f64; 8] = std::array::from_fn(|i| (pixels[2 * i] + pixels[2 * i + 1]) / 2.0);
        let expected = dct(&halved);
        let m = merge_matrix();
        for (u, row) in m.iter().enumerate() {
            let got: f64 = row
                .iter()
                .zip(first.iter().chain(&second))
                .map(|(&w, &c)| f64::from(w) * c)
                .sum();
            assert!(
                (got - expected[u]).abs() < 1e-3,
                "u={u}: {got} vs {}",
                expected[u]
            );
        }
    }

    #[test]
    fn quantize_rounds_halves_down_and_clamps() {
        let offset = rounding_offset(0.5);
        assert_eq!(quantize(2.5, offset), 2);
        assert_eq!(quantize(2.51, offset), 3);
        assert_eq!(quantize(-2.5, offset), -2);
        assert_eq!(quantize(-2.7, offset), -3);
        assert_eq!(quantize(0.4, offset), 0);
        assert_eq!(quantize(3.0, offset), 3);
        assert_eq!(quantize(5000.0, offset), 1023);
        assert_eq!(quantize(-5000.0, offset), -1023);
        assert_eq!(quantize(2.65, rounding_offset(0.7)), 2);
        assert_eq!(quantize(2.75, rounding_offset(0.7)), 3);
    }

    use super::super::fixtures::fixture;

    #[test]
    fn own_huffman_tables_equal_libjpegs() {
        // 4:2:0 in place (odd size: dummy blocks), 4:2:2, 4:4:4, 4:4:0, gray.
        for name in [
            "photo_q85.jpg",
            "baseline_420_odd.jpg",
            "progressive_420.jpg",
            "baseline_422.jpg",
            "progressive_444.jpg",
            "exif_orient6.jpg",
            "gray.jpg",
        ] {
            let input = fixture(name);
            let exact = Tuning {
                huffman_sample: 1,
                all_samplings: true,
                ..Tuning::default()
            };
            let ours = transcode(&input, 50, &Budget::UNLIMITED, exact);
            let theirs = Tuning {
                own_huffman: false,
                all_samplings: true,
                ..Tuning::default()
            };
            let libjpegs = transcode(&input, 50, &Budget::UNLIMITED, theirs);
            let ours = ours.expect("transcodes").expect("handled");
            assert_eq!(Some(ours), libjpegs.expect("transcodes"), "{name}");
        }
    }

    #[test]
    fn sampling_support() {
        let frame = |color, sampling: &[(u8, u8)]| Frame {
            width: 64,
            height: 64,
            color,
            sampling: sampling.to_vec(),
        };
        let ycc = |s: &[(u8, u8)]| chroma_merge(&frame(FrameColor::YCbCr, s));
        assert_eq!(
            ycc(&[(2, 2), (1, 1), (1, 1)]),
            Some((Arrangement::InPlace, 1, 1))
        );
        assert_eq!(
            ycc(&[(2, 1), (1, 1), (1, 1)]),
            Some((Arrangement::Separate, 1, 2))
        );
        assert_eq!(
            ycc(&[(1, 2), (1, 1), (1, 1)]),
            Some((Arrangement::Separate, 2, 1))
        );
        assert_eq!(
            ycc(&[(1, 1), (1, 1), (1, 1)]),
            Some((Arrangement::Separate, 2, 2))
        );
        assert_eq!(
            ycc(&[(2, 2), (2, 2), (2, 2)]),
            Some((Arrangement::Separate, 2, 2))
        );
        // 4:1:1, subsampled luma, unequal chroma, other colour models: not handled.
        assert_eq!(ycc(&[(4, 1), (1, 1), (1, 1)]), None);
        assert_eq!(ycc(&[(1, 1), (2, 2), (2, 2)]), None);
        assert_eq!(ycc(&[(2, 2), (1, 1), (2, 1)]), None);
        assert_eq!(chroma_merge(&frame(FrameColor::Other, &[(1, 1); 3])), None);
        assert_eq!(
            chroma_merge(&frame(FrameColor::Gray, &[(1, 1)])),
            Some((Arrangement::Separate, 0, 0))
        );
    }

    #[test]
    fn exact_ties_stay_ties() {
        // Every |c|·s/t that is exactly k + 0.5 rounds down, every other rounds
        // to nearest, although c · (s/t) in f32 is not exact.
        let offset = rounding_offset(0.5);
        for t in 1..=255u16 {
            for s in 1..=t {
                let mut source = [t; 64];
                source[1] = s;
                let rescale = Rescale::new(&source, &[t; 64]);
                for c in [1i16, 2, 3, 5, 7, 31, 100, 255, 1023] {
                    let mut block = [0i16; 64];
                    block[1] = -c;
                    block[2] = 9;
                    rescale.block(&mut block, offset);
                    let twice = 2 * i64::from(c) * i64::from(s);
                    let t2 = 2 * i64::from(t);
                    // Round half down: floor((2cs + t - 1) / 2t).
                    let expected = (twice + i64::from(t) - 1) / t2;
                    assert_eq!(i64::from(-block[1]), expected, "c={c} s={s} t={t}");
                    assert_eq!(block[2], 9);
                }
            }
        }
    }
}
