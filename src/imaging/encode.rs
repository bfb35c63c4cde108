//! Baseline JPEG encoding with jpeg-encoder: 4:2:0, standard IJG tables, no metadata.
//!
//! `image`'s own JPEG encoder only does 4:4:4 (files ~30 % larger), hence jpeg-encoder.

use jpeg_encoder::{
    ChromaSubsamplingMethod, ColorType, Encoder, EncodingError, ImageBuffer, JpegColorType,
    SamplingFactor,
};

use super::ImagingError;
use super::decode::Pixels;

/// Encodes `pixels` as a baseline YCbCr JPEG at `quality` (1..=100) with 2×2
/// chroma subsampling (box-averaged, like libjpeg). Only a JFIF APP0 header is
/// written: no EXIF (orientation is already applied), no ICC (pixels are sRGB).
pub(crate) fn encode(pixels: &Pixels, quality: u8) -> Result<Vec<u8>, ImagingError> {
    let (width, height) = pixels.dimensions();
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(ImagingError::Encode(format!(
            "{width}x{height} is over JPEG's limit of 65535 pixels per side"
        )));
    };
    // A q50 4:2:0 photo is typically 0.1–0.2 bytes per pixel.
    let mut out = Vec::with_capacity(usize::from(w) * usize::from(h) / 6 + 1024);
    let mut encoder = Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    let result = match pixels {
        Pixels::Rgb(img) => encoder.encode(img.as_raw(), w, h, ColorType::Rgb),
        Pixels::Gray(img) => encoder.encode_image(GrayAsYcbcr {
            luma: img.as_raw(),
            width: w,
            height: h,
        }),
    };
    result.map_err(|e: EncodingError| ImagingError::Encode(e.to_string()))?;
    Ok(out)
}

/// Feeds gray pixels to the encoder as YCbCr with neutral chroma, so the
/// output has the three components every consumer expects without first
/// tripling the buffer.
struct GrayAsYcbcr<'a> {
    luma: &'a [u8],
    width: u16,
    height: u16,
}

impl ImageBuffer for GrayAsYcbcr<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let width = usize::from(self.width);
        let start = usize::from(y) * width;
        let row = self.luma.get(start..start + width).unwrap_or_default();
        buffers[0].extend_from_slice(row);
        buffers[1].resize(buffers[1].len() + row.len(), 128);
        buffers[2].resize(buffers[2].len() + row.len(), 128);
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
            let jpeg = encode(&pixels, 50).expect("encodes");
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
        assert!(matches!(encode(&wide, 50), Err(ImagingError::Encode(_))));
    }
}
