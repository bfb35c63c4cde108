//! JPEG coefficients back to samples, with [`kernels`] picked for the CPU at run time
//! and libjpeg doing only the entropy decoding:
//!
//! - [`decode`]: a gray or YCbCr JPEG to 8-bit gray or RGB pixels, bit for bit what
//!   libjpeg gives with the accurate IDCT and chroma replicated
//!   ([`super::decode::GENERAL_DECODE`]; a test checks);
//! - [`reencode`]: a gray or YCbCr JPEG to a baseline 4:2:0 JPEG through its samples
//!   but without colour conversion (the plane route): each component's samples are
//!   transformed back, chroma box-averaged to 4:2:0 where the source has more.
//!
//! Both take luma at full resolution and chroma at full or half resolution per axis
//! (4:2:0, 4:2:2, 4:4:0, 4:4:4) or gray; anything else is `Ok(None)`, left to
//! libjpeg's own decoder.

use super::coefficients;
use super::kernels::{self, QuantTable};
use super::libjpeg::{Budget, DecodedPixels, Frame, FrameColor, LibjpegError, PixelLayout, Plane};
use super::quality::{IJG_CHROMA, IJG_LUMA, scaled_table};
use super::writer::{self, Planes420};

/// The layout of a frame this module handles: gray, or the chroma step per axis
/// (1 or 2) of a YCbCr frame whose luma has the largest sampling factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Gray,
    YCbCr {
        step_x: usize,
        step_y: usize,
    },
    /// Adobe's inverted CMYK, every component at the same resolution.
    Cmyk,
    /// Adobe's YCCK: Y and K at full resolution, Cb and Cr at `1 / step` per axis.
    Ycck {
        step_x: usize,
        step_y: usize,
    },
}

fn layout(frame: &Frame) -> Option<Layout> {
    // Chroma at a half or the same resolution as a full-resolution luma.
    let steps = |(yh, yv): (u8, u8), chroma: (u8, u8), other: (u8, u8)| {
        let (ch, cv) = chroma;
        if chroma != other || ch == 0 || cv == 0 || !matches!((yh, yv), (1 | 2, 1 | 2)) {
            return None;
        }
        let step = |luma: u8, chroma: u8| {
            (luma.is_multiple_of(chroma) && matches!(luma / chroma, 1 | 2))
                .then_some(usize::from(luma / chroma))
        };
        Some((step(yh, ch)?, step(yv, cv)?))
    };
    match (frame.color, &frame.sampling[..]) {
        (FrameColor::Gray, [_]) => Some(Layout::Gray),
        (FrameColor::YCbCr, &[y, cb, cr]) => {
            let (step_x, step_y) = steps(y, cb, cr)?;
            Some(Layout::YCbCr { step_x, step_y })
        }
        (FrameColor::Cmyk, &[c, m, y, k]) => {
            (c == m && m == y && y == k && matches!(c, (1 | 2, 1 | 2))).then_some(Layout::Cmyk)
        }
        (FrameColor::Ycck, &[y, cb, cr, k]) if k == y => {
            let (step_x, step_y) = steps(y, cb, cr)?;
            Some(Layout::Ycck { step_x, step_y })
        }
        _ => None,
    }
}

/// `a × b / 255`, rounded: one Adobe-inverted ink against inverted black.
#[inline]
fn blinn(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// One component's samples for a band of block rows: `idct` fills it from the
/// component's coefficients.
struct Strip {
    data: Vec<u8>,
    /// Samples per row (the component's blocks per row × 8).
    stride: usize,
}

impl Strip {
    fn new(plane: &Plane<'_>, block_rows: usize) -> Strip {
        let stride = 8 * plane.width.max(1);
        Strip {
            data: vec![0; stride * 8 * block_rows],
            stride,
        }
    }

    /// Inverse-transforms block rows `first..first + n` of `plane` (those that exist)
    /// into rows `0..8n` of the strip.
    fn idct(&mut self, plane: &Plane<'_>, first: usize, n: usize) {
        for i in 0..n {
            let Some(row) = plane
                .rows
                .get(first + i)
                .filter(|_| first + i < plane.height)
            else {
                break;
            };
            let out = &mut self.data[8 * i * self.stride..];
            kernels::idct_islow(&row[..plane.width], &plane.quant, out, self.stride);
        }
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..(r + 1) * self.stride]
    }
}

/// Decodes a gray or YCbCr `input` to pixels; `Ok(None)` for other colour models and
/// samplings. Damaged data and spent limits are errors, as in libjpeg's decoder.
pub(crate) fn decode(input: &[u8], budget: &Budget) -> Result<Option<DecodedPixels>, LibjpegError> {
    let decoded = coefficients::read(
        input,
        budget,
        |frame| layout(frame).is_some(),
        |frame, planes| {
            let layout = layout(frame).ok_or_else(|| LibjpegError::fatal("unsupported layout"))?;
            decode_planes(frame, layout, &planes, budget)
        },
    )?;
    decoded.transpose()
}

fn decode_planes(
    frame: &Frame,
    layout: Layout,
    planes: &[Plane<'_>],
    budget: &Budget,
) -> Result<DecodedPixels, LibjpegError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    match (layout, planes) {
        (Layout::Gray, [y]) => {
            let mut data = vec![0u8; w * h];
            let mut strip = Strip::new(y, 1);
            for (by, rows) in data.chunks_mut(8 * w).enumerate() {
                strip.idct(y, by, 1);
                for (r, out) in rows.chunks_exact_mut(w).enumerate() {
                    out.copy_from_slice(&strip.row(r)[..w]);
                }
                if by % 128 == 127 {
                    budget.check_time()?;
                }
            }
            Ok(DecodedPixels {
                width: frame.width,
                height: frame.height,
                layout: PixelLayout::Gray,
                data,
            })
        }
        (Layout::YCbCr { step_x, step_y }, [y, cb, cr]) => {
            let mut data = vec![0u8; 3 * w * h];
            // One band: `step_y` luma block rows and one chroma block row.
            let band = 8 * step_y;
            let mut strips = [Strip::new(y, step_y), Strip::new(cb, 1), Strip::new(cr, 1)];
            for (bi, rows) in data.chunks_mut(3 * w * band).enumerate() {
                strips[0].idct(y, step_y * bi, step_y);
                strips[1].idct(cb, bi, 1);
                strips[2].idct(cr, bi, 1);
                for (r, out) in rows.chunks_exact_mut(3 * w).enumerate() {
                    let c = r / step_y;
                    kernels::ycbcr_to_rgb(
                        &strips[0].row(r)[..w],
                        strips[1].row(c),
                        strips[2].row(c),
                        step_x,
                        out,
                    );
                }
                if bi % 64 == 63 {
                    budget.check_time()?;
                }
            }
            Ok(DecodedPixels {
                width: frame.width,
                height: frame.height,
                layout: PixelLayout::Rgb,
                data,
            })
        }
        (Layout::Cmyk | Layout::Ycck { .. }, [c0, c1, c2, k]) => {
            let (step_x, step_y) = match layout {
                Layout::Ycck { step_x, step_y } => (step_x, step_y),
                _ => (1, 1),
            };
            let mut data = vec![0u8; 3 * w * h];
            let band = 8 * step_y;
            let mut strips = [
                Strip::new(c0, step_y),
                Strip::new(c1, 1),
                Strip::new(c2, 1),
                Strip::new(k, step_y),
            ];
            for (bi, rows) in data.chunks_mut(3 * w * band).enumerate() {
                strips[0].idct(c0, step_y * bi, step_y);
                strips[1].idct(c1, bi, 1);
                strips[2].idct(c2, bi, 1);
                strips[3].idct(k, step_y * bi, step_y);
                for (r, out) in rows.chunks_exact_mut(3 * w).enumerate() {
                    let black = &strips[3].row(r)[..w];
                    if layout == Layout::Cmyk {
                        // R, G, B = C, M, Y against K, all stored inverted.
                        let [cyan, magenta, yellow] = [0, 1, 2].map(|i| strips[i].row(r));
                        for (x, px) in out.chunks_exact_mut(3).enumerate() {
                            px[0] = blinn(cyan[x], black[x]);
                            px[1] = blinn(magenta[x], black[x]);
                            px[2] = blinn(yellow[x], black[x]);
                        }
                    } else {
                        // YCbCr of the inverted CMY, converted as libjpeg does, then K.
                        let c = r / step_y;
                        let y = &strips[0].row(r)[..w];
                        kernels::ycbcr_to_rgb(y, strips[1].row(c), strips[2].row(c), step_x, out);
                        for (px, &k) in out.chunks_exact_mut(3).zip(black) {
                            for v in px {
                                *v = blinn(255 - *v, k);
                            }
                        }
                    }
                }
                if bi % 64 == 63 {
                    budget.check_time()?;
                }
            }
            Ok(DecodedPixels {
                width: frame.width,
                height: frame.height,
                layout: PixelLayout::Rgb,
                data,
            })
        }
        _ => Err(LibjpegError::fatal(
            "component count does not match the layout",
        )),
    }
}

/// Re-encodes a gray or YCbCr `input` at `quality` as baseline 4:2:0 (standard IJG
/// tables, Huffman tables made for the image) through its samples, without colour
/// conversion: luma and 4:2:0 chroma block for block (IDCT, FDCT), other chroma
/// box-averaged to 4:2:0 first, gray given neutral chroma. `Ok(None)` for other colour
/// models and samplings.
pub(crate) fn reencode(
    input: &[u8],
    quality: u8,
    budget: &Budget,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    let quality = quality.clamp(1, 100);
    let tables = [
        scaled_table(&IJG_LUMA, quality),
        scaled_table(&IJG_CHROMA, quality),
    ];
    let written = coefficients::read(
        input,
        budget,
        |frame| matches!(layout(frame), Some(Layout::Gray | Layout::YCbCr { .. })),
        |frame, planes| {
            let layout = layout(frame).ok_or_else(|| LibjpegError::fatal("unsupported layout"))?;
            let mut out = Planes420::new(frame.width, frame.height);
            let mut dst = out.planes();
            reencode_planes(layout, &planes, &tables, &mut dst, budget)?;
            writer::write_420_optimized(frame.width, frame.height, &mut dst, &tables)
                .map_err(|e| LibjpegError::fatal(e.to_string()))
        },
    )?;
    written.transpose()
}

fn reencode_planes(
    layout: Layout,
    src: &[Plane<'_>],
    tables: &[[u16; 64]; 2],
    dst: &mut [Plane<'_>; 3],
    budget: &Budget,
) -> Result<(), LibjpegError> {
    let quant = [QuantTable::new(&tables[0]), QuantTable::new(&tables[1])];
    let [y_out, cb_out, cr_out] = dst;
    // Luma: the same block grid in and out.
    let y = &src[0];
    let mut strip = Strip::new(y, 1);
    for by in 0..y_out.height.min(y.height) {
        strip.idct(y, by, 1);
        let width = y_out.width.min(y.width);
        kernels::fdct_quantize(
            &strip.data,
            strip.stride,
            &quant[0],
            &mut y_out.rows[by][..width],
        );
        if by % 128 == 127 {
            budget.check_time()?;
        }
    }
    let Layout::YCbCr { step_x, step_y } = layout else {
        // Gray: the chroma planes stay all zero, which is neutral chroma.
        return Ok(());
    };
    // Chroma: `(2 / step_x) × (2 / step_y)` source samples per output sample.
    let merge = (2 / step_x, 2 / step_y);
    for (from, to) in [(&src[1], cb_out), (&src[2], cr_out)] {
        chroma_to_420(from, to, merge, &quant[1], budget)?;
    }
    Ok(())
}

/// Fills the 4:2:0 chroma plane `to` from the source chroma plane `from`, whose
/// samples are `fx × fy` to one of the output's (1 or 2 per axis): inverse DCT,
/// box average (libjpeg's alternating rounding; the last column and row repeated
/// past the source's edge), forward DCT and quantisation with `quant`.
fn chroma_to_420(
    from: &Plane<'_>,
    to: &mut Plane<'_>,
    (fx, fy): (usize, usize),
    quant: &QuantTable,
    budget: &Budget,
) -> Result<(), LibjpegError> {
    let mut strip = Strip::new(from, fy);
    let out_stride = 8 * to.width;
    let mut half = vec![0u8; 8 * out_stride];
    // Source samples per output row, the last column repeated past the edge.
    let wide = 8 * to.width * fx;
    let mut rows = [vec![0u8; wide], vec![0u8; wide]];
    for oy in 0..to.height {
        if (fx, fy) == (1, 1) {
            strip.idct(from, oy, 1);
            kernels::fdct_quantize(
                &strip.data,
                strip.stride,
                quant,
                &mut to.rows[oy][..to.width],
            );
            continue;
        }
        strip.idct(from, fy * oy, fy);
        // Source rows past the last block row repeat the last one.
        let last_row = 8 * from.height.saturating_sub(fy * oy).min(fy);
        for (r, out) in half.chunks_exact_mut(out_stride).enumerate() {
            for (i, row) in rows.iter_mut().enumerate().take(fy) {
                let sr = (fy * r + i).min(last_row.max(1) - 1);
                let src_row = strip.row(sr);
                let n = src_row.len().min(wide);
                row[..n].copy_from_slice(&src_row[..n]);
                let edge = row[n - 1];
                row[n..].fill(edge);
            }
            match (fx, fy) {
                (2, 2) => kernels::downsample_h2v2(&rows[0], &rows[1], out),
                (2, 1) => kernels::downsample_h2v1(&rows[0], out),
                _ => {
                    // Vertical only (4:2:2 sources): the mean of two rows.
                    for ((o, &a), &b) in out.iter_mut().zip(&rows[0]).zip(&rows[1]) {
                        *o = ((u16::from(a) + u16::from(b) + 1) >> 1) as u8;
                    }
                }
            }
        }
        kernels::fdct_quantize(&half, out_stride, quant, &mut to.rows[oy][..to.width]);
        if oy % 64 == 63 {
            budget.check_time()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::decode::GENERAL_DECODE;
    use crate::imaging::libjpeg;

    use super::super::fixtures::fixture_file as fixture;

    /// 4:2:0 (even and odd sizes), 4:2:2, 4:4:4 and gray, baseline and progressive.
    const SOURCES: [&str; 8] = [
        "imaging/photo_q85.jpg",
        "imaging/baseline_420_odd.jpg",
        "imaging/progressive_420.jpg",
        "imaging/baseline_422.jpg",
        "imaging/progressive.jpg",
        "imaging/progressive_444.jpg",
        "imaging/gray.jpg",
        "photos/small_picos.jpg",
    ];

    #[test]
    fn pixels_equal_libjpegs() {
        kernels::Level::run_each(|level| {
            for name in SOURCES {
                pixels_equal_libjpegs_for(name, level);
            }
        });
    }

    fn pixels_equal_libjpegs_for(name: &str, level: kernels::Level) {
        {
            let input = fixture(name);
            let ours = decode(&input, &Budget::UNLIMITED)
                .expect("decodes")
                .expect("a layout of ours");
            let theirs =
                libjpeg::decode(&input, &Budget::UNLIMITED, GENERAL_DECODE).expect("decodes");
            assert_eq!(
                (ours.width, ours.height),
                (theirs.width, theirs.height),
                "{name}"
            );
            assert_eq!(ours.layout, theirs.layout, "{name}");
            assert!(
                ours.data == theirs.data,
                "{name}: pixels differ at {level:?}"
            );
        }
    }

    #[test]
    fn reencoded_planes_decode_close_to_the_source() {
        for name in SOURCES {
            let input = fixture(name);
            let jpeg = reencode(&input, 90, &Budget::UNLIMITED)
                .expect("re-encodes")
                .expect("a layout of ours");
            crate::imaging::verify_jpeg(&jpeg).expect("decodes cleanly");
            let a = libjpeg::decode(&input, &Budget::UNLIMITED, GENERAL_DECODE).expect("decodes");
            let b = libjpeg::decode(&jpeg, &Budget::UNLIMITED, GENERAL_DECODE).expect("decodes");
            assert_eq!((a.width, a.height), (b.width, b.height), "{name}");
            // Luma only (gray sources come back as YCbCr with neutral chroma).
            let luma = |d: &DecodedPixels| -> Vec<f64> {
                match d.layout {
                    PixelLayout::Gray => d.data.iter().map(|&v| f64::from(v)).collect(),
                    PixelLayout::Rgb => d
                        .data
                        .chunks_exact(3)
                        .map(|p| {
                            0.299 * f64::from(p[0])
                                + 0.587 * f64::from(p[1])
                                + 0.114 * f64::from(p[2])
                        })
                        .collect(),
                }
            };
            let (la, lb) = (luma(&a), luma(&b));
            let mse = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                / la.len() as f64;
            let psnr = 10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10();
            assert!(psnr > 34.0, "{name}: {psnr:.1} dB");
        }
    }

    /// Adobe YCCK (4:2:0 chroma) decodes to RGB as `image`'s decoder converts it (its
    /// IDCT and upsampling differ a little); it is not re-encoded on the plane route.
    #[test]
    fn ycck_decodes_like_images_decoder() {
        let input = fixture("imaging/cmyk_ycck.jpg");
        let ours = decode(&input, &Budget::UNLIMITED)
            .expect("decodes")
            .expect("ours");
        let theirs = image::load_from_memory(&input)
            .expect("decodes")
            .into_rgb8();
        assert_eq!((ours.width, ours.height), theirs.dimensions());
        let diff: f64 = ours
            .data
            .iter()
            .zip(theirs.as_raw())
            .map(|(&a, &b)| f64::from(a.abs_diff(b)))
            .sum::<f64>()
            / ours.data.len() as f64;
        assert!(diff < 2.0, "mean difference {diff:.2}");
        let reencoded = reencode(&input, 50, &Budget::UNLIMITED).expect("reads");
        assert!(reencoded.is_none());
    }
}
