//! Baseline JPEG encoding with libjpeg: 4:2:0, standard IJG tables, no metadata.
//!
//! libjpeg-turbo's fastest settings (`JCP_FASTEST`: no trellis, no progressive,
//! standard Huffman tables), as Pillow uses them, so sizes match Pillow's.

use super::decode::Pixels;
use super::libjpeg::{self, Budget, LibjpegError, PixelLayout};
use super::{Format, ImagingError, libjpeg_error};

/// libjpeg's largest image side (`JPEG_MAX_DIMENSION`).
const MAX_SIDE: u32 = 65500;

/// Integer "fast" forward DCT: with SIMD it is the quicker one, and at the
/// qualities this service uses its error is far below the quantisation error.
pub(crate) const FAST_FDCT: bool = true;

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
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImagingError::Encode(format!(
            "{width}x{height} is over JPEG's limit of {MAX_SIDE} pixels per side"
        )));
    }
    let (raw, layout) = match pixels {
        Pixels::Rgb(img) => (img.as_raw(), PixelLayout::Rgb),
        Pixels::Gray(img) => (img.as_raw(), PixelLayout::Gray),
    };
    libjpeg::encode(raw, layout, width, height, quality, FAST_FDCT, budget).map_err(|e| match e {
        LibjpegError::Fatal(text) => ImagingError::Encode(text),
        other => libjpeg_error(Format::Jpeg, other),
    })
}

/// Box-averages one strip of a chroma plane to 4:2:0: `out` gets 8 rows of
/// `out_width`, each sample the mean of `fx` × `fy` samples of `src` (rows of
/// `src_width`; columns past its end repeat the last one).
pub(crate) fn downsample_strip(
    src: &[u8],
    src_width: usize,
    out: &mut [u8],
    out_width: usize,
    (fx, fy): (usize, usize),
) {
    let rows = src.chunks_exact(src_width);
    let at = |row: &[u8], x: usize| u16::from(row[x.min(src_width - 1)]);
    match (fx, fy) {
        (1, 2) => {
            let mut rows = rows;
            for out_row in out.chunks_exact_mut(out_width).take(8) {
                let (Some(a), Some(b)) = (rows.next(), rows.next()) else {
                    return;
                };
                for ((o, &p), &q) in out_row.iter_mut().zip(a).zip(b) {
                    *o = ((u16::from(p) + u16::from(q) + 1) >> 1) as u8;
                }
            }
        }
        (2, 1) => {
            for (out_row, a) in out.chunks_exact_mut(out_width).zip(rows).take(8) {
                for (x, o) in out_row.iter_mut().enumerate() {
                    *o = ((at(a, 2 * x) + at(a, 2 * x + 1) + 1) >> 1) as u8;
                }
            }
        }
        _ => {
            let mut rows = rows;
            for out_row in out.chunks_exact_mut(out_width).take(8) {
                let (Some(a), Some(b)) = (rows.next(), rows.next()) else {
                    return;
                };
                for (x, o) in out_row.iter_mut().enumerate() {
                    let sum = at(a, 2 * x) + at(a, 2 * x + 1) + at(b, 2 * x) + at(b, 2 * x + 1);
                    *o = ((sum + 2) >> 2) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
