//! Baseline JPEG encoding of 8-bit pixels: YCbCr 4:2:0, the standard IJG tables at
//! the requested quality, Huffman tables made for the image, no metadata.
//!
//! libjpeg's pipeline, step for step (colour conversion, 2×2 box downsampling, the
//! accurate integer FDCT, quantisation) in [`kernels`] picked for the CPU at run time,
//! sixteen rows at a time into the blocks [`writer`] writes: the coefficients are
//! those libjpeg computes from the same pixels (a test checks), without its C
//! kernels, which are slow unless it was built with nasm.

use super::decode::Pixels;
use super::kernels::{self, QuantTable};
use super::libjpeg::{Budget, Plane};
use super::quality::{IJG_CHROMA, IJG_LUMA, scaled_table};
use super::writer::{self, Planes420};
use super::{Format, ImagingError, libjpeg_error};

/// libjpeg's largest image side (`JPEG_MAX_DIMENSION`): the limit the service has
/// always had, a little under what the file format can say.
const MAX_SIDE: u32 = 65500;

/// Refuses an image with a side over [`MAX_SIDE`]: no output of it can be written.
/// Asked before decoding too, since nothing of such an image can succeed and its
/// work may cost far more than its pixel count says (the quality metric pads a side
/// under 8 pixels to 8: a 16,000,000×1 image within the pixel limit would be scored
/// as 128 MP, about 15 GB).
pub(crate) fn check_sides(width: u32, height: u32) -> Result<(), ImagingError> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImagingError::Encode(format!(
            "{width}x{height} is over JPEG's limit of {MAX_SIDE} pixels per side"
        )));
    }
    Ok(())
}

/// Encodes `pixels` as a baseline YCbCr JPEG at `quality` (1..=100) with 2×2
/// chroma subsampling (box-averaged). Only a JFIF APP0 header is written: no EXIF
/// (orientation is already applied), no ICC (pixels are sRGB). Gray is written
/// as YCbCr with neutral chroma, so every output has three components.
/// Works under `budget`'s time limit.
pub(crate) fn encode(
    pixels: &Pixels,
    quality: u8,
    budget: &Budget,
) -> Result<Vec<u8>, ImagingError> {
    let (width, height) = pixels.dimensions();
    check_sides(width, height)?;
    let tables = [
        scaled_table(&IJG_LUMA, quality.clamp(1, 100)),
        scaled_table(&IJG_CHROMA, quality.clamp(1, 100)),
    ];
    let mut blocks = Planes420::new(width, height);
    let mut planes = blocks.planes();
    transform(pixels, &tables, &mut planes, budget)?;
    writer::write_420_optimized(width, height, &mut planes, &tables)
        .map_err(|e| ImagingError::Encode(e.to_string()))
}

/// Colour conversion, downsampling, FDCT and quantisation of every 16-row strip
/// into `planes`. Past the right and bottom edges the last column and row repeat,
/// as libjpeg repeats them; Y blocks past the image are left to the writer (its
/// dummy blocks), as libjpeg leaves them.
fn transform(
    pixels: &Pixels,
    tables: &[[u16; 64]; 2],
    planes: &mut [Plane<'_>; 3],
    budget: &Budget,
) -> Result<(), ImagingError> {
    let (width, height) = pixels.dimensions();
    let (w, h) = (width as usize, height as usize);
    let quant = [QuantTable::new(&tables[0]), QuantTable::new(&tables[1])];
    let [y_plane, cb_plane, cr_plane] = planes;
    let mcu_cols = cb_plane.width;
    let padded = 16 * mcu_cols;
    let y_blocks = y_plane.width;
    let mut y = vec![0u8; 16 * padded];
    let mut full = [vec![0u8; 16 * padded], vec![0u8; 16 * padded]];
    let mut half = [vec![0u8; 8 * padded / 2], vec![0u8; 8 * padded / 2]];
    for strip in 0..cb_plane.height {
        for r in 0..16 {
            let src = (16 * strip + r).min(h - 1);
            let row = r * padded..(r + 1) * padded;
            let (yr, [cb, cr]) = (&mut y[row.clone()], &mut full);
            match pixels {
                Pixels::Rgb(img) => {
                    let rgb = &img.as_raw()[3 * w * src..3 * w * (src + 1)];
                    let (cb, cr) = (&mut cb[row.clone()], &mut cr[row]);
                    kernels::rgb_to_ycbcr(rgb, &mut yr[..w], &mut cb[..w], &mut cr[..w]);
                    for plane in [&mut *yr, cb, cr] {
                        let last = plane[w - 1];
                        plane[w..].fill(last);
                    }
                }
                Pixels::Gray(img) => {
                    yr[..w].copy_from_slice(&img.as_raw()[w * src..w * (src + 1)]);
                    let last = yr[w - 1];
                    yr[w..].fill(last);
                }
            }
        }
        for half_row in 0..2 {
            let by = 2 * strip + half_row;
            if by >= y_plane.height {
                break;
            }
            let samples = &y[8 * half_row * padded..];
            kernels::fdct_quantize(
                samples,
                padded,
                &quant[0],
                &mut y_plane.rows[by][..y_blocks],
            );
        }
        // Gray: chroma stays all zero, which is neutral (128) chroma.
        if let Pixels::Rgb(_) = pixels {
            // As libjpeg: the image's rows, made even, are downsampled; below them the
            // last downsampled row repeats.
            let rows = (h - 16 * strip).min(16).div_ceil(2);
            let chroma = [&mut *cb_plane, &mut *cr_plane];
            for ((full, half), plane) in full.iter().zip(&mut half).zip(chroma) {
                let width = padded / 2;
                for (r, out) in half.chunks_exact_mut(width).enumerate().take(rows) {
                    let (a, b) = (2 * r * padded, (2 * r + 1) * padded);
                    kernels::downsample_h2v2(&full[a..a + padded], &full[b..b + padded], out);
                }
                for r in rows..8 {
                    half.copy_within((rows - 1) * width..rows * width, r * width);
                }
                let blocks = &mut plane.rows[strip][..mcu_cols];
                kernels::fdct_quantize(half, width, &quant[1], blocks);
            }
        }
        if strip % 16 == 15 {
            budget
                .check_time()
                .map_err(|e| libjpeg_error(Format::Jpeg, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::libjpeg::{self, PixelLayout};
    use image::{GrayImage, RgbImage};

    #[test]
    fn encodes_rgb_and_gray_as_three_component_420() {
        let rgb = RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 10, 90]));
        let gray = GrayImage::from_fn(17, 9, |x, _| image::Luma([x as u8 * 15]));
        for pixels in [Pixels::Rgb(rgb), Pixels::Gray(gray)] {
            let jpeg = encode(&pixels, 50, &Budget::UNLIMITED).expect("encodes");
            let header = super::super::jpeg::parse(&jpeg).expect("parses");
            assert_eq!(
                (u32::from(header.width), u32::from(header.height)),
                pixels.dimensions()
            );
            assert_eq!(header.component_count, 3);
            assert_eq!((header.components[0].h, header.components[0].v), (2, 2));
            assert_eq!((header.components[1].h, header.components[1].v), (1, 1));
            assert_eq!(header.sof, 0xC0);
            super::super::verify_jpeg(&jpeg).expect("decodes cleanly");
        }
    }

    #[test]
    fn refuses_sizes_jpeg_cannot_hold() {
        let wide = Pixels::Gray(GrayImage::new(70_000, 1));
        assert!(matches!(
            encode(&wide, 50, &Budget::UNLIMITED),
            Err(ImagingError::Encode(_))
        ));
    }

    /// The quantised coefficients of a JPEG, plane by plane.
    fn coefficients(jpeg: &[u8]) -> Vec<Vec<[i16; 64]>> {
        libjpeg::read_coefficients(
            jpeg,
            &Budget::UNLIMITED,
            |_| true,
            |_, planes| {
                planes
                    .iter()
                    .map(|p| {
                        p.rows
                            .iter()
                            .take(p.height)
                            .flat_map(|row| row[..p.width].iter().copied())
                            .collect()
                    })
                    .collect()
            },
        )
        .expect("reads")
        .expect("accepted")
    }

    /// libjpeg's C encoder (accurate FDCT) and ours make the same coefficients from the
    /// same pixels, at every size around the MCU edges, in colour and gray, with every
    /// kernel level this CPU has.
    #[test]
    fn coefficients_equal_libjpegs() {
        kernels::Level::run_each(coefficients_equal_libjpegs_at);
    }

    fn coefficients_equal_libjpegs_at(level: kernels::Level) {
        for (w, h) in [
            (1, 1),
            (7, 9),
            (16, 16),
            (17, 15),
            (33, 47),
            (64, 8),
            (250, 131),
        ] {
            let rgb = RgbImage::from_fn(w, h, |x, y| {
                let v = (x * 7 + y * 13) as u8;
                image::Rgb([v, v.wrapping_mul(3) ^ (y as u8), (x * y) as u8])
            });
            let gray = GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
            for (pixels, layout) in [
                (Pixels::Rgb(rgb), PixelLayout::Rgb),
                (Pixels::Gray(gray), PixelLayout::Gray),
            ] {
                for quality in [10, 50, 90] {
                    let ours = encode(&pixels, quality, &Budget::UNLIMITED).expect("encodes");
                    let raw = match &pixels {
                        Pixels::Rgb(img) => img.as_raw(),
                        Pixels::Gray(img) => img.as_raw(),
                    };
                    let theirs =
                        libjpeg::encode(raw, layout, w, h, quality, false, &Budget::UNLIMITED)
                            .expect("libjpeg encodes");
                    assert_eq!(
                        coefficients(&ours),
                        coefficients(&theirs),
                        "{w}x{h} {layout:?} q{quality} {level:?}"
                    );
                }
            }
        }
    }
}
