//! Decoding to 8-bit gray or RGB, with every fix the JPEG output needs applied.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{
    DynamicImage, ExtendedColorType, GrayImage, ImageDecoder, ImageError, ImageReader, RgbImage,
};

use super::libjpeg::{self, Budget, DecodeSettings, Depth, PixelLayout};
use super::{
    Format, ImagingError, Limits, check_pixels, check_time, color, jpeg, libjpeg_error, samples,
    sniff,
};

/// libjpeg decode settings of the general path (measured on the corpus, see
/// `benches/imaging`): the accurate IDCT (the fast one saves little with SIMD and
/// costs 0.6 dB), and chroma replicated rather than interpolated: faster (libjpeg
/// merges it with the colour conversion), and since the encoder box-averages chroma
/// again, a 4:2:0 source's chroma survives the round trip instead of being blurred.
pub(crate) const GENERAL_DECODE: DecodeSettings = DecodeSettings {
    fast_idct: false,
    fancy_upsampling: false,
    scale_denom: 1,
};

/// libjpeg decode settings of a viewer (a browser's libjpeg-turbo): the accurate IDCT
/// and interpolated chroma. What the SSIMULACRA2 metric compares an output with, and
/// how it decodes the output: the source as people see it, not as the encoder takes it.
pub(crate) const VIEWER_DECODE: DecodeSettings = DecodeSettings {
    fast_idct: false,
    fancy_upsampling: true,
    scale_denom: 1,
};

/// A JPEG's pixels as a viewer shows them ([`VIEWER_DECODE`], EXIF orientation and
/// ICC profile applied), for the metric's reference on the general path, so that a
/// rotated or tagged photo is scored as an untagged one is on the direct path; `None`
/// for other formats and CMYK (whose decode has no chroma to interpolate here).
pub(crate) fn as_viewed(input: &[u8], budget: &Budget) -> Result<Option<Pixels>, ImagingError> {
    let Ok(header) = jpeg::parse(input) else {
        return Ok(None);
    };
    if header.component_count == 4 {
        return Ok(None);
    }
    let decoded = libjpeg::decode(input, budget, VIEWER_DECODE)
        .map_err(|e| libjpeg_error(Format::Jpeg, e))?;
    Ok(Some(finish_libjpeg(input, &header, decoded, false).pixels))
}

/// Decoded pixels ready for the encoder: gray stays one channel (it is
/// encoded as YCbCr with neutral chroma), everything else is RGB.
pub(crate) enum Pixels {
    /// 8-bit luminance.
    Gray(GrayImage),
    /// 8-bit sRGB.
    Rgb(RgbImage),
}

impl Pixels {
    /// Width and height.
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        match self {
            Pixels::Gray(img) => img.dimensions(),
            Pixels::Rgb(img) => img.dimensions(),
        }
    }
}

/// The decoded image and what was done to get it there (for the report).
pub(crate) struct Decoded {
    pub pixels: Pixels,
    pub rotated: bool,
    pub cmyk_converted: bool,
    pub icc_converted: bool,
    pub alpha_flattened: bool,
    pub frames_dropped: u32,
    pub bit_depth_reduced: bool,
}

/// Room for decoder bookkeeping on top of the pixel buffer (row buffers, LZW tables...).
const ALLOC_SLACK: u64 = 64 * 1024 * 1024;

/// Decodes the first frame of `input` and converts it to oriented 8-bit sRGB (or gray).
///
/// `header` is the size [`sniff::dimensions`] read; the decoder is held to it exactly.
/// libjpeg works under `budget`; the `image` decoders cannot be interrupted, so the
/// time is checked after them (their cost is linear in the pixels, already limited).
pub(crate) fn decode(
    input: &[u8],
    format: Format,
    header: (u32, u32),
    limits: &Limits,
    budget: &Budget,
) -> Result<Decoded, ImagingError> {
    let err = |e: ImageError| ImagingError::Decode {
        format,
        reason: e.to_string(),
    };
    let jpeg_header = match format {
        Format::Jpeg => Some(jpeg::parse(input).map_err(|e| ImagingError::Decode {
            format,
            reason: e.to_owned(),
        })?),
        _ => None,
    };
    if jpeg_header
        .as_ref()
        .is_some_and(|header| !jpeg::has_eoi_after_scan(input, header))
    {
        return Err(ImagingError::Decode {
            format,
            reason: "truncated: no end-of-image marker after the image data".to_owned(),
        });
    }
    // Gray, YCbCr and Adobe CMYK/YCCK JPEGs: libjpeg's entropy decoding and our
    // kernels; other gray and YCbCr/RGB JPEGs: libjpeg. Other CMYK/YCCK go on to the
    // `image` decoder below once libjpeg has read every scan. A JPEG libjpeg refuses
    // fails: the `image` crate decodes JPEGs leniently (rows it cannot decode come out
    // gray, with no error), so it would turn a broken file (an unknown marker before
    // cut-off data) into a stored success of made-up pixels.
    if let Some(header) = &jpeg_header {
        let cmyk = header.component_count == 4;
        match samples::decode(input, budget) {
            Ok(Some(decoded)) => return Ok(finish_libjpeg(input, header, decoded, cmyk)),
            Ok(None) => {}
            // The general decoder below gives libjpeg's definitive answer.
            Err(e) if e.is_fatal() => {}
            Err(e) => return Err(libjpeg_error(format, e)),
        }
        if !cmyk {
            return libjpeg::decode(input, budget, GENERAL_DECODE)
                .map(|decoded| finish_libjpeg(input, header, decoded, false))
                .map_err(|e| libjpeg_error(format, e));
        }
        // CMYK/YCCK: libjpeg reads every scan first, for its errors, warnings and limits.
        libjpeg::verify(input, budget, Depth::Coefficients)
            .map_err(|e| libjpeg_error(format, e))?;
    }
    // GIF: its first frame straight from the palette (the `image` decoder expands it
    // to RGBA first, a third of the time on a small GIF); anything the `gif` crate
    // refuses goes on to `image`, for its error.
    if format == Format::Gif {
        let max_alloc = u64::from(header.0) * u64::from(header.1) * 4 + ALLOC_SLACK;
        if let Some(first) = gif_first_frame(input, max_alloc, limits.max_pixels) {
            let (rgb, transparent) =
                first.map_err(|reason| ImagingError::Decode { format, reason })?;
            check_time(budget)?;
            return Ok(Decoded {
                pixels: Pixels::Rgb(rgb),
                rotated: false,
                cmyk_converted: false,
                icc_converted: false,
                alpha_flattened: transparent,
                frames_dropped: sniff::frame_count(input, format) - 1,
                bit_depth_reduced: false,
            });
        }
    }
    // 8 bytes per pixel covers the widest output (RGBA, 16 bits per sample).
    let max_alloc = (u64::from(header.0) * u64::from(header.1)).saturating_mul(8) + ALLOC_SLACK;
    if format == Format::Tiff {
        tiff_chunks_within_budget(input, max_alloc, budget)?;
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(header.0);
    decoder_limits.max_image_height = Some(header.1);
    decoder_limits.max_alloc = Some(max_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(input), format.image_format());
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(err)?;

    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits.max_pixels)?;
    // A broken EXIF or ICC block is not worth failing the image for: use the pixels as they are.
    let orientation = match &jpeg_header {
        // The first `Exif` segment's, as on the other routes (the decoder's is the last's).
        Some(header) => jpeg::orientation(input, header),
        None => decoder.orientation().unwrap_or(Orientation::NoTransforms),
    };
    let icc = decoder.icc_profile().ok().flatten();
    let cmyk_converted = match &jpeg_header {
        Some(header) => header.component_count == 4,
        _ => matches!(
            decoder.original_color_type(),
            ExtendedColorType::Cmyk8 | ExtendedColorType::Cmyk16
        ),
    };

    let image = match format {
        Format::Webp => match webp_pixels(input) {
            Some(image) => image,
            None => DynamicImage::from_decoder(decoder).map_err(err)?,
        },
        _ => DynamicImage::from_decoder(decoder).map_err(err)?,
    };
    check_time(budget)?;
    let (pixels, alpha_flattened, bit_depth_reduced) = to_8bit_flattened(image);
    let (pixels, icc_converted) = match (&icc, cmyk_converted) {
        (Some(profile), false) => color::to_srgb(pixels, profile),
        _ => (pixels, false),
    };
    let pixels = orient(pixels, orientation);

    Ok(Decoded {
        pixels,
        rotated: orientation != Orientation::NoTransforms,
        cmyk_converted,
        icc_converted,
        alpha_flattened,
        frames_dropped: sniff::frame_count(input, format) - 1,
        bit_depth_reduced,
    })
}

/// Decodes each strip or tile of a TIFF's first page once, checking the time budget
/// between them, before `image` decodes the page in one call that nothing can stop.
///
/// A chunk's cost is not bounded by the page's pixels: chunks may all point at the
/// same bytes, a PackBits strip may hold millions of no-op runs before its one row,
/// and a Deflate strip is read to the end of its stream, past its byte count. A
/// 1×65535 page of PackBits strips sharing 29 MB would hold a thread for hours. Here
/// the work stops within one chunk of the deadline; `image` then redoes at most what
/// fitted in the budget (TIFF pages cost twice their decode, a price for a rare input).
///
/// A JPEG-compressed page (compression 6 or 7) is refused outright: each chunk is a
/// JPEG of its own that the `tiff` crate decodes whole, up to 16384×16384, outside
/// every limit. Anything this pass cannot read is left to `image`, for its own error.
fn tiff_chunks_within_budget(
    input: &[u8],
    max_alloc: u64,
    budget: &Budget,
) -> Result<(), ImagingError> {
    use tiff::decoder::{ChunkType, Decoder, Limits};
    let Ok(decoder) = Decoder::new(Cursor::new(input)) else {
        return Ok(());
    };
    // The limits `image` gives the same decoder (its `set_limits`), at most.
    let max_alloc = usize::try_from(max_alloc).unwrap_or(usize::MAX);
    let mut limits = Limits::default();
    limits.decoding_buffer_size = max_alloc;
    limits.intermediate_buffer_size = max_alloc;
    limits.ifd_value_size = max_alloc;
    let mut decoder = decoder.with_limits(limits);
    if matches!(decoder.get_tag_u32(tiff::tags::Tag::Compression), Ok(6 | 7)) {
        return Err(ImagingError::Decode {
            format: Format::Tiff,
            reason: "JPEG-compressed TIFF is not supported".to_owned(),
        });
    }
    let chunks = match decoder.get_chunk_type() {
        ChunkType::Strip => decoder.strip_count(),
        ChunkType::Tile => decoder.tile_count(),
    };
    for chunk in 0..chunks.unwrap_or(0) {
        if decoder.read_chunk(chunk).is_err() {
            return Ok(());
        }
        check_time(budget)?;
    }
    Ok(())
}

/// ICC conversion and orientation for a decode of ours or libjpeg's (the same steps as
/// below).
/// `cmyk`: the pixels were converted from CMYK or YCCK (whose ICC profile, a CMYK
/// one, is not applied: the conversion to RGB was already a naive one, as Pillow's).
fn finish_libjpeg(
    input: &[u8],
    header: &jpeg::JpegHeader,
    decoded: libjpeg::DecodedPixels,
    cmyk: bool,
) -> Decoded {
    let (w, h) = (decoded.width, decoded.height);
    let pixels = match decoded.layout {
        PixelLayout::Gray => GrayImage::from_raw(w, h, decoded.data).map(Pixels::Gray),
        PixelLayout::Rgb => RgbImage::from_raw(w, h, decoded.data).map(Pixels::Rgb),
    }
    // Unreachable: libjpeg filled exactly w × h × channels bytes.
    .unwrap_or_else(|| Pixels::Rgb(RgbImage::new(w, h)));
    let orientation = jpeg::orientation(input, header);
    let (pixels, icc_converted) = match jpeg::icc_profile(input, header) {
        Some(profile) if !cmyk => color::to_srgb(pixels, &profile),
        _ => (pixels, false),
    };
    Decoded {
        pixels: orient(pixels, orientation),
        rotated: orientation != Orientation::NoTransforms,
        cmyk_converted: cmyk,
        icc_converted,
        alpha_flattened: false,
        frames_dropped: 0,
        bit_depth_reduced: false,
    }
}

/// The first frame of a GIF on its logical screen, over white: each index's palette
/// colour, white for the transparent index, for an index past the palette and outside
/// the frame (what `image`'s RGBA decode flattened onto white gives; a test checks).
/// Also whether any pixel was transparent. `None` when the `gif` crate refuses it;
/// an error when the frame needs more memory than the screen's size allows (the
/// crate's memory limit does not cover this way of reading a frame, and a frame
/// descriptor may claim 65535×65535 on a 1×1 screen).
fn gif_first_frame(
    input: &[u8],
    max_alloc: u64,
    max_pixels: u64,
) -> Option<Result<(RgbImage, bool), String>> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.set_memory_limit(gif::MemoryLimit::Bytes(max_alloc.try_into().ok()?));
    let mut reader = options.read_info(Cursor::new(input)).ok()?;
    let (w, h) = (usize::from(reader.width()), usize::from(reader.height()));
    let frame = reader.next_frame_info().ok()??;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let transparent = frame.transparent;
    if reader.buffer_size() as u64 > max_alloc {
        return Some(Err(format!(
            "the first frame is {fw}x{fh}, more than a {w}x{h} image may allocate"
        )));
    }
    // Its pixels are decoded before the screen clips them: held to the pixel limit too.
    if (fw * fh) as u64 > max_pixels {
        return Some(Err(format!(
            "the first frame is {fw}x{fh}, more than {max_pixels} pixels"
        )));
    }
    let mut indices = vec![0u8; reader.buffer_size()];
    reader.read_into_buffer(&mut indices).ok()?;
    let palette = reader.palette().ok()?;
    let mut rgb = vec![255u8; w * h * 3];
    let covers = left == 0 && top == 0 && fw >= w && fh >= h;
    let mut any_transparent = !covers;
    for (y, row) in indices
        .chunks_exact(fw.max(1))
        .enumerate()
        .take(h.saturating_sub(top))
    {
        // A frame may reach past the screen: what is past it is cut off.
        let Some(out) = rgb.get_mut(3 * ((top + y) * w + left)..3 * (top + y + 1) * w) else {
            break;
        };
        for (&index, px) in row.iter().zip(out.chunks_exact_mut(3)) {
            let at = 3 * usize::from(index);
            match palette.get(at..at + 3) {
                Some(color) if Some(index) != transparent => px.copy_from_slice(color),
                _ => any_transparent = true,
            }
        }
    }
    Some(Ok((
        RgbImage::from_raw(w as u32, h as u32, rgb)?,
        any_transparent,
    )))
}

/// A still WebP's pixels from libwebp; `None` for animations and for data libwebp
/// refuses (the `image` decoder then decodes it, or says what is wrong).
fn webp_pixels(input: &[u8]) -> Option<DynamicImage> {
    let features = webp::BitstreamFeatures::new(input)?;
    if features.has_animation() {
        return None;
    }
    let decoded = webp::Decoder::new(input).decode()?;
    let (w, h) = (decoded.width(), decoded.height());
    if decoded.is_alpha() {
        image::RgbaImage::from_raw(w, h, decoded.to_vec()).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(w, h, decoded.to_vec()).map(DynamicImage::ImageRgb8)
    }
}

/// Converts any decoded layout to 8-bit gray or RGB in one pass, compositing
/// alpha onto white. Returns (pixels, any pixel was not opaque, had > 8 bits).
fn to_8bit_flattened(image: DynamicImage) -> (Pixels, bool, bool) {
    let (w, h) = (image.width(), image.height());
    let gray = |raw: Vec<u8>| GrayImage::from_raw(w, h, raw).map(Pixels::Gray);
    let rgb = |raw: Vec<u8>| RgbImage::from_raw(w, h, raw).map(Pixels::Rgb);
    let mut translucent = false;
    let converted = match image {
        DynamicImage::ImageLuma8(img) => Some((Pixels::Gray(img), false)),
        DynamicImage::ImageRgb8(img) => Some((Pixels::Rgb(img), false)),
        DynamicImage::ImageLumaA8(img) => {
            let raw = flatten::<2, 255>(img.as_raw(), &mut translucent);
            gray(raw).map(|p| (p, false))
        }
        DynamicImage::ImageRgba8(img) => {
            let raw = flatten::<4, 255>(img.as_raw(), &mut translucent);
            rgb(raw).map(|p| (p, false))
        }
        DynamicImage::ImageLuma16(img) => {
            gray(flatten::<1, 65535>(img.as_raw(), &mut translucent)).map(|p| (p, true))
        }
        DynamicImage::ImageLumaA16(img) => {
            gray(flatten::<2, 65535>(img.as_raw(), &mut translucent)).map(|p| (p, true))
        }
        DynamicImage::ImageRgb16(img) => {
            rgb(flatten::<3, 65535>(img.as_raw(), &mut translucent)).map(|p| (p, true))
        }
        DynamicImage::ImageRgba16(img) => {
            rgb(flatten::<4, 65535>(img.as_raw(), &mut translucent)).map(|p| (p, true))
        }
        // 32-bit float and any future layout: let `image` reduce it, then flatten.
        other => {
            let rgba = other.into_rgba8();
            rgb(flatten::<4, 255>(rgba.as_raw(), &mut translucent)).map(|p| (p, true))
        }
    };
    match converted {
        Some((pixels, reduced)) => (pixels, translucent, reduced),
        // Unreachable: every buffer above has exactly w × h × channels samples.
        None => (Pixels::Rgb(RgbImage::new(w, h)), translucent, false),
    }
}

/// Turns `N`-channel samples with maximum `MAX` (255 or 65535) into 8-bit
/// samples without alpha. For N = 2 and 4 the last channel is alpha and is
/// composited onto white; `translucent` is set when any alpha was below `MAX`.
/// `MAX` is a const so the divisions below compile to multiplications.
fn flatten<const N: usize, const MAX: u64>(
    samples: &[impl Into<u32> + Copy],
    translucent: &mut bool,
) -> Vec<u8> {
    let colors = if N == 2 || N == 4 { N - 1 } else { N };
    let max64 = MAX;
    let mut out = Vec::with_capacity(samples.len() / N * colors);
    let mut any_translucent = false;
    for px in samples.chunks_exact(N) {
        let alpha = if colors < N {
            u64::from(px[N - 1].into())
        } else {
            max64
        };
        if alpha == max64 && MAX == 255 {
            // Opaque 8-bit: the samples as they are (what the formula gives, faster).
            out.extend(px[..colors].iter().map(|&c| c.into() as u8));
            continue;
        }
        any_translucent |= alpha < max64;
        for &c in &px[..colors] {
            // c·α + white·(1 − α), then rescaled to 0..=255, rounded.
            let blended = u64::from(c.into()) * alpha + max64 * (max64 - alpha);
            out.push(((blended * 255 + max64 * max64 / 2) / (max64 * max64)) as u8);
        }
    }
    *translucent |= any_translucent;
    out
}

/// Applies the EXIF orientation so the pixels are stored the way they are meant to be seen.
fn orient(pixels: Pixels, orientation: Orientation) -> Pixels {
    if orientation == Orientation::NoTransforms {
        return pixels;
    }
    match pixels {
        Pixels::Gray(img) => {
            let (w, h) = img.dimensions();
            let (raw, ow, oh) = orient_raw::<1>(img.as_raw(), w, h, orientation);
            GrayImage::from_raw(ow, oh, raw).map_or(Pixels::Gray(img), Pixels::Gray)
        }
        Pixels::Rgb(img) => {
            let (w, h) = img.dimensions();
            let (raw, ow, oh) = orient_raw::<3>(img.as_raw(), w, h, orientation);
            RgbImage::from_raw(ow, oh, raw).map_or(Pixels::Rgb(img), Pixels::Rgb)
        }
    }
}

/// `orientation` applied to `C`-channel pixels (what `image`'s `apply_orientation`
/// does, a test checks), a 32×32 tile of the output at a time: the rotations read
/// the source across its rows, and tiles keep those reads in cache.
fn orient_raw<const C: usize>(
    src: &[u8],
    width: u32,
    height: u32,
    orientation: Orientation,
) -> (Vec<u8>, u32, u32) {
    use Orientation::*;
    let (w, h) = (width as usize, height as usize);
    let transposed = matches!(
        orientation,
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
    );
    let (ow, oh) = if transposed { (h, w) } else { (w, h) };
    let mut out = vec![0u8; ow * oh * C];
    let (from, to) = (src.as_chunks::<C>().0, out.as_chunks_mut::<C>().0);
    // The index of the source pixel of output pixel (x, y), one closure per case so
    // that each inner loop is compiled for its own.
    match orientation {
        NoTransforms => tiled(from, to, ow, oh, |x, y| y * w + x),
        FlipHorizontal => tiled(from, to, ow, oh, |x, y| y * w + (w - 1 - x)),
        Rotate180 => tiled(from, to, ow, oh, |x, y| (h - 1 - y) * w + (w - 1 - x)),
        FlipVertical => tiled(from, to, ow, oh, |x, y| (h - 1 - y) * w + x),
        Rotate90FlipH => tiled(from, to, ow, oh, |x, y| x * w + y),
        Rotate90 => tiled(from, to, ow, oh, |x, y| (h - 1 - x) * w + y),
        Rotate270FlipH => tiled(from, to, ow, oh, |x, y| (h - 1 - x) * w + (w - 1 - y)),
        Rotate270 => tiled(from, to, ow, oh, |x, y| x * w + (w - 1 - y)),
    }
    (out, ow as u32, oh as u32)
}

/// Fills `to` (`ow × oh` pixels) tile by tile with `from[source(x, y)]`.
#[inline(always)]
fn tiled<const C: usize>(
    from: &[[u8; C]],
    to: &mut [[u8; C]],
    ow: usize,
    oh: usize,
    source: impl Fn(usize, usize) -> usize,
) {
    const TILE: usize = 32;
    for ty in (0..oh).step_by(TILE) {
        for tx in (0..ow).step_by(TILE) {
            for y in ty..(ty + TILE).min(oh) {
                let row = &mut to[y * ow + tx..y * ow + (tx + TILE).min(ow)];
                for (i, px) in row.iter_mut().enumerate() {
                    *px = from[source(tx + i, y)];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_first_frame_is_images_own_over_white() {
        let input = super::super::fixtures::fixture("anim3.gif");
        let (ours, transparent) = gif_first_frame(&input, u64::MAX, u64::MAX)
            .expect("decodes")
            .expect("fits");
        let image = image::load_from_memory(&input).expect("decodes");
        let (theirs, translucent, _) = to_8bit_flattened(image);
        let Pixels::Rgb(theirs) = theirs else {
            panic!("RGB")
        };
        assert_eq!(ours, theirs);
        assert_eq!(transparent, translucent);
    }

    #[test]
    fn orientation_is_images_own() {
        use Orientation::*;
        let rgb = RgbImage::from_fn(37, 21, |x, y| image::Rgb([x as u8, y as u8, (x * y) as u8]));
        let gray = GrayImage::from_fn(5, 70, |x, y| image::Luma([(x * 31 + y) as u8]));
        for o in [
            FlipHorizontal,
            Rotate180,
            FlipVertical,
            Rotate90FlipH,
            Rotate90,
            Rotate270FlipH,
            Rotate270,
        ] {
            let mut expected = DynamicImage::ImageRgb8(rgb.clone());
            expected.apply_orientation(o);
            let Pixels::Rgb(ours) = orient(Pixels::Rgb(rgb.clone()), o) else {
                panic!("stays RGB")
            };
            assert_eq!(ours, expected.into_rgb8(), "{o:?}");
            let mut expected = DynamicImage::ImageLuma8(gray.clone());
            expected.apply_orientation(o);
            let Pixels::Gray(ours) = orient(Pixels::Gray(gray.clone()), o) else {
                panic!("stays gray")
            };
            assert_eq!(ours, expected.into_luma8(), "{o:?}");
        }
    }

    #[test]
    fn flatten_composites_onto_white() {
        let mut translucent = false;
        let rgba: [u8; 12] = [255, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 128];
        let out = flatten::<4, 255>(&rgba, &mut translucent);
        assert_eq!(out, [255, 0, 0, 255, 255, 255, 127, 127, 255]);
        assert!(translucent);

        let mut translucent = false;
        let opaque: [u16; 4] = [65535, 0, 32768, 65535];
        assert_eq!(
            flatten::<4, 65535>(&opaque, &mut translucent),
            [255, 0, 128]
        );
        assert!(!translucent);

        let gray16: [u16; 3] = [0, 257, 65535];
        assert_eq!(flatten::<1, 65535>(&gray16, &mut translucent), [0, 1, 255]);
        let la: [u8; 4] = [0, 0, 100, 255];
        assert_eq!(flatten::<2, 255>(&la, &mut translucent), [255, 100]);
        assert!(translucent);
    }
}
