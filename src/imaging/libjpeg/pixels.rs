//! Pixels: decoding a JPEG to 8-bit gray or RGB, encoding 8-bit pixels as a baseline
//! 4:2:0 JPEG, and checking that a JPEG decodes without a single warning.

use std::ffi::c_int;

use mozjpeg_sys as ffi;

#[cfg(test)]
use super::guard::Compress;
use super::guard::{Budget, Decompress, LibjpegError, guarded};

/// Decoded 8-bit pixels, interleaved.
pub(crate) struct DecodedPixels {
    pub width: u32,
    pub height: u32,
    /// Gray or RGB.
    pub layout: PixelLayout,
    pub data: Vec<u8>,
}

/// How [`decode`] should trade accuracy for speed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeSettings {
    /// Integer "fast" IDCT (`JDCT_IFAST`) instead of the accurate one.
    pub fast_idct: bool,
    /// Triangle-filter chroma upsampling (libjpeg's default) instead of replication.
    pub fancy_upsampling: bool,
    /// Output at 1/`scale_denom` of the size (1, 2, 4 or 8), by libjpeg's scaled
    /// IDCT: a downscaled image for a fraction of a full decode's cost.
    pub scale_denom: u32,
}

/// A rectangle of a decode's output, in output pixels (after any scaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    /// All of a `width × height` image.
    pub(crate) fn whole(width: u32, height: u32) -> Region {
        Region {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    /// This region's pixels out of interleaved `data` of a `width × height` image,
    /// `channels` bytes a pixel; `None` when the region is the whole image.
    pub(crate) fn cut(
        &self,
        data: &[u8],
        (width, height): (u32, u32),
        channels: usize,
    ) -> Option<Vec<u8>> {
        if *self == Region::whole(width, height) {
            return None;
        }
        let stride = width as usize * channels;
        let (x, w) = (self.x as usize * channels, self.width as usize * channels);
        Some(
            data.chunks_exact(stride)
                .skip(self.y as usize)
                .take(self.height as usize)
                .flat_map(|row| &row[x..x + w])
                .copied()
                .collect(),
        )
    }
}

/// Output pixels decoded around a [`Region`] on each side, so that the region's
/// pixels have the same upsampling context (chroma of the neighbouring MCUs) as in a
/// whole decode: one MCU of the largest sampling (16 pixels).
const REGION_CONTEXT: u32 = 16;

/// Decodes a gray, YCbCr or RGB JPEG. CMYK/YCCK are refused (the caller has another
/// path for them). Fails on damaged data ([`LibjpegError::Corrupt`]) and on spent limits.
pub(crate) fn decode(
    input: &[u8],
    budget: &Budget,
    settings: DecodeSettings,
) -> Result<DecodedPixels, LibjpegError> {
    decode_region(input, budget, settings, Region::whole).map(|(pixels, _)| pixels)
}

/// [`decode`] of only the region `choose` picks of the output (given its width and
/// height), and the whole output's size: the same pixels as that region cut from a
/// whole decode, at the cost of the region (plus a margin of [`REGION_CONTEXT`]) for
/// the IDCT, upsampling and colour conversion, and of the region for memory. Every
/// scan is still read, so damaged data anywhere still fails it. Fails when the
/// region is not within the output.
pub(crate) fn decode_region(
    input: &[u8],
    budget: &Budget,
    settings: DecodeSettings,
    choose: impl FnOnce(u32, u32) -> Region,
) -> Result<(DecodedPixels, (u32, u32)), LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input, budget);
        src.read_header()?;
        let cinfo = src.cinfo();
        let (layout, color) = match (cinfo.num_components, cinfo.jpeg_color_space) {
            (1, _) => (PixelLayout::Gray, ffi::J_COLOR_SPACE::JCS_GRAYSCALE),
            (3, ffi::J_COLOR_SPACE::JCS_YCbCr | ffi::J_COLOR_SPACE::JCS_RGB) => {
                (PixelLayout::Rgb, ffi::J_COLOR_SPACE::JCS_RGB)
            }
            (n, space) => {
                return Err(LibjpegError::fatal(format!(
                    "unsupported colour model: {n} components, {space:?}"
                )));
            }
        };
        cinfo.out_color_space = color;
        cinfo.dct_method = if settings.fast_idct {
            ffi::J_DCT_METHOD::JDCT_IFAST
        } else {
            ffi::J_DCT_METHOD::JDCT_ISLOW
        };
        cinfo.do_fancy_upsampling = c_int::from(settings.fancy_upsampling);
        let denom = match settings.scale_denom {
            d @ (1 | 2 | 4 | 8) => d,
            d => return Err(LibjpegError::fatal(format!("unsupported scale 1/{d}"))),
        };
        cinfo.scale_num = 1;
        cinfo.scale_denom = denom;
        // SAFETY: header read, output parameters set.
        unsafe { ffi::jpeg_start_decompress(cinfo) };
        let (width, height) = (cinfo.output_width, cinfo.output_height);
        let channels = if layout == PixelLayout::Gray { 1 } else { 3 };
        if cinfo.output_components != channels
            || (width, height)
                != (
                    cinfo.image_width.div_ceil(denom),
                    cinfo.image_height.div_ceil(denom),
                )
        {
            return Err(LibjpegError::fatal("unexpected output geometry"));
        }
        let region = choose(width, height);
        if region.width == 0
            || region.height == 0
            || u64::from(region.x) + u64::from(region.width) > u64::from(width)
            || u64::from(region.y) + u64::from(region.height) > u64::from(height)
        {
            return Err(LibjpegError::fatal(format!(
                "region {region:?} outside the {width}x{height} output"
            )));
        }
        // The rows and columns decoded: the region and its context, within the image.
        let (rows_from, rows_to) = (
            region.y.saturating_sub(REGION_CONTEXT),
            (region.y + region.height)
                .saturating_add(REGION_CONTEXT)
                .min(height),
        );
        let (mut first_column, mut columns) = {
            let from = region.x.saturating_sub(REGION_CONTEXT);
            let to = (region.x + region.width)
                .saturating_add(REGION_CONTEXT)
                .min(width);
            (from, to - from)
        };
        if columns < width {
            // SAFETY: decompression started, no scanline read yet. libjpeg widens the
            // span to whole iMCUs (moving `first_column` left) and sets output_width.
            unsafe { ffi::jpeg_crop_scanline(cinfo, &mut first_column, &mut columns) };
            if cinfo.output_width != columns
                || first_column > region.x
                || first_column + columns < region.x + region.width
            {
                return Err(LibjpegError::fatal("unexpected cropped geometry"));
            }
        }
        let skip = |cinfo: &mut ffi::jpeg_decompress_struct, lines: u32| {
            if lines == 0 {
                return Ok(());
            }
            // SAFETY: decompression started; a memory source never suspends.
            let skipped = unsafe { ffi::jpeg_skip_scanlines(cinfo, lines) };
            if skipped == lines {
                Ok(())
            } else {
                Err(LibjpegError::fatal("decoder skipped fewer rows than asked"))
            }
        };
        skip(cinfo, rows_from)?;
        let stride = columns as usize * channels as usize;
        let mut data = vec![0u8; stride * (rows_to - rows_from) as usize];
        let mut rows: Vec<*mut u8> = Vec::with_capacity(16);
        while cinfo.output_scanline < rows_to {
            let first = cinfo.output_scanline - rows_from;
            let count = (rows_to - cinfo.output_scanline).min(16);
            rows.clear();
            rows.extend(
                data[first as usize * stride..]
                    .chunks_exact_mut(stride)
                    .take(count as usize)
                    .map(<[u8]>::as_mut_ptr),
            );
            // Our own count, not libjpeg's: `count` rows of `stride` bytes.
            assert_eq!(
                rows.len(),
                count as usize,
                "row pointers for every line asked for"
            );
            // SAFETY: `count` row pointers of `stride` bytes each, inside `data`.
            let read = unsafe { ffi::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), count) };
            if read == 0 || read > count {
                return Err(LibjpegError::fatal("decoder returned no rows"));
            }
        }
        // The rest is still read: damaged data there fails the decode as it would whole.
        skip(cinfo, height - rows_to)?;
        // SAFETY: every scanline was read or skipped.
        unsafe { ffi::jpeg_finish_decompress(cinfo) };
        // The region out of what was decoded around it.
        let within = Region {
            x: region.x - first_column,
            y: region.y - rows_from,
            ..region
        };
        if let Some(cut) = within.cut(&data, (columns, rows_to - rows_from), channels as usize) {
            data = cut;
        }
        Ok((
            DecodedPixels {
                width: region.width,
                height: region.height,
                layout,
                data,
            },
            (width, height),
        ))
    })
}

/// How thoroughly [`verify`] reads a JPEG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Every scan entropy-decoded to coefficients: where every warning about damaged
    /// data arises, at a fraction of a full decode's cost.
    Coefficients,
    /// Decoded to pixels in libjpeg's default output colour space, as a viewer would.
    Pixels,
}

/// Reads `input` with libjpeg and says whether it is clean: `Ok(true)` when libjpeg
/// had no warning at all, `Ok(false)` when only stray bytes between segments, the
/// one warning decoders shrug off; an error for damaged data, a fatal error or a
/// spent limit. Any colour model.
pub(crate) fn verify(input: &[u8], budget: &Budget, depth: Depth) -> Result<bool, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input, budget);
        src.read_header()?;
        match depth {
            Depth::Coefficients => {
                // SAFETY: header read; errors unwind to `guarded`.
                let arrays = unsafe { ffi::jpeg_read_coefficients(src.cinfo()) };
                if arrays.is_null() {
                    return Err(LibjpegError::fatal("no coefficients"));
                }
            }
            Depth::Pixels => {
                let cinfo = src.cinfo();
                // SAFETY: header read; default output parameters.
                unsafe { ffi::jpeg_start_decompress(cinfo) };
                let components = usize::try_from(cinfo.output_components).unwrap_or(0);
                let stride = cinfo.output_width as usize * components;
                if stride == 0 {
                    return Err(LibjpegError::fatal("unexpected output geometry"));
                }
                let mut row = vec![0u8; stride];
                while cinfo.output_scanline < cinfo.output_height {
                    let mut rows = [row.as_mut_ptr()];
                    // SAFETY: one row pointer to `stride` bytes (output_width × components).
                    let read = unsafe { ffi::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), 1) };
                    if read != 1 {
                        return Err(LibjpegError::fatal("decoder returned no rows"));
                    }
                }
            }
        }
        // SAFETY: the whole image was read.
        unsafe { ffi::jpeg_finish_decompress(src.cinfo()) };
        Ok(src.clean())
    })
}

/// What [`encode`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PixelLayout {
    /// One byte per pixel; written as YCbCr with neutral chroma.
    Gray,
    /// R, G, B.
    Rgb,
}

/// Encodes interleaved 8-bit pixels as a baseline YCbCr 4:2:0 JPEG at `quality`
/// with libjpeg-turbo's defaults: standard IJG tables and Huffman tables, no
/// trellis, no progressive, only a JFIF header. `fast_dct` picks `JDCT_IFAST`.
/// The reference [`crate::imaging::encode`] is held to.
#[cfg(test)]
pub(crate) fn encode(
    pixels: &[u8],
    layout: PixelLayout,
    width: u32,
    height: u32,
    quality: u8,
    fast_dct: bool,
    budget: &Budget,
) -> Result<Vec<u8>, LibjpegError> {
    let channels = if layout == PixelLayout::Gray { 1 } else { 3 };
    let stride = width as usize * channels;
    if width == 0 || height == 0 || pixels.len() != stride * height as usize {
        return Err(LibjpegError::fatal(format!(
            "{} bytes do not make a {width}x{height} image",
            pixels.len()
        )));
    }
    guarded(|| {
        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_RGB, budget);
        let cinfo = out.cinfo();
        // SAFETY: a set-up compressor.
        unsafe { ffi::jpeg_set_quality(cinfo, c_int::from(quality.clamp(1, 100)), 1) };
        cinfo.dct_method = if fast_dct {
            ffi::J_DCT_METHOD::JDCT_IFAST
        } else {
            ffi::J_DCT_METHOD::JDCT_ISLOW
        };
        // SAFETY: parameters set; the destination is ours.
        unsafe { ffi::jpeg_start_compress(cinfo, 1) };
        let mut expanded = Vec::new();
        let mut rows: Vec<*const u8> = Vec::with_capacity(16);
        while cinfo.next_scanline < height {
            let first = cinfo.next_scanline as usize;
            let count = (height as usize - first).min(16);
            let chunk = &pixels[first * stride..(first + count) * stride];
            let (data, row_len) = if layout == PixelLayout::Gray {
                expanded.clear();
                expanded.extend(chunk.iter().flat_map(|&v| [v, v, v]));
                (&expanded[..], stride * 3)
            } else {
                (chunk, stride)
            };
            rows.clear();
            rows.extend(data.chunks_exact(row_len).map(<[u8]>::as_ptr));
            // Our own count, not libjpeg's: `count` rows of `width` × 3 bytes.
            assert_eq!(rows.len(), count, "row pointers for every line given");
            // SAFETY: `count` rows of `width` × 3 bytes; libjpeg only reads them.
            let written = unsafe {
                ffi::jpeg_write_scanlines(cinfo, rows.as_ptr(), count as ffi::JDIMENSION)
            };
            if written == 0 {
                return Err(LibjpegError::fatal("encoder took no rows"));
            }
        }
        // SAFETY: every scanline was written.
        unsafe { ffi::jpeg_finish_compress(cinfo) };
        Ok(out.take_output())
    })
}

/// The scan script of [`encode_gray_progressive`].
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    /// libjpeg's standard progression (6 scans for gray), as encoders write it.
    Standard,
    /// DC, then all AC coefficients, no successive approximation: every scan may be
    /// repeated without libjpeg warning about the progression.
    NoRefinement,
}

/// Encodes 8-bit gray pixels as a progressive gray JPEG with the given scan script:
/// the raw material of the hostile-input tests.
#[cfg(test)]
pub(crate) fn encode_gray_progressive(
    pixels: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    script: Script,
) -> Result<Vec<u8>, LibjpegError> {
    if width == 0 || height == 0 || pixels.len() != width as usize * height as usize {
        return Err(LibjpegError::fatal("pixels do not match the size"));
    }
    let scan = |ss, se| ffi::jpeg_scan_info {
        comps_in_scan: 1,
        component_index: [0; 4],
        Ss: ss,
        Se: se,
        Ah: 0,
        Al: 0,
    };
    let two_scans = [scan(0, 0), scan(1, 63)];
    guarded(|| {
        let mut out = Compress::new(
            width,
            height,
            ffi::J_COLOR_SPACE::JCS_RGB,
            &Budget::UNLIMITED,
        );
        let cinfo = out.cinfo();
        cinfo.input_components = 1;
        cinfo.in_color_space = ffi::J_COLOR_SPACE::JCS_GRAYSCALE;
        // SAFETY: a set-up compressor, now described as gray; `two_scans` outlives
        // the compression; errors unwind to `guarded`.
        unsafe {
            ffi::jpeg_set_defaults(cinfo);
            ffi::jpeg_set_colorspace(cinfo, ffi::J_COLOR_SPACE::JCS_GRAYSCALE);
            ffi::jpeg_set_quality(cinfo, c_int::from(quality.clamp(1, 100)), 1);
            match script {
                Script::Standard => ffi::jpeg_simple_progression(cinfo),
                Script::NoRefinement => {
                    cinfo.scan_info = two_scans.as_ptr();
                    cinfo.num_scans = 2;
                }
            }
            ffi::jpeg_start_compress(cinfo, 1);
        }
        for row in pixels.chunks_exact(width as usize) {
            let rows = [row.as_ptr()];
            // SAFETY: one row of `width` bytes; libjpeg only reads it.
            let written = unsafe { ffi::jpeg_write_scanlines(cinfo, rows.as_ptr(), 1) };
            if written != 1 {
                return Err(LibjpegError::fatal("encoder took no rows"));
            }
        }
        // SAFETY: every scanline was written.
        unsafe { ffi::jpeg_finish_compress(cinfo) };
        Ok(out.take_output())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCURATE: DecodeSettings = DecodeSettings {
        fast_idct: false,
        fancy_upsampling: true,
        scale_denom: 1,
    };

    /// `region` cut by hand out of a whole decode.
    fn cut(whole: &DecodedPixels, r: Region) -> Vec<u8> {
        let pixel = if whole.layout == PixelLayout::Gray {
            1
        } else {
            3
        };
        (r.y..r.y + r.height)
            .flat_map(|y| {
                let from = (y * whole.width + r.x) as usize * pixel;
                whole.data[from..from + r.width as usize * pixel]
                    .iter()
                    .copied()
            })
            .collect()
    }

    #[test]
    fn a_region_decodes_to_the_pixels_a_whole_decode_has_there() {
        let budget = Budget::UNLIMITED;
        // 4:2:0 (odd size), 4:2:2, 4:4:4, progressive, gray; smooth upsampling, which
        // takes its context from the neighbouring MCUs, and scaled output.
        for name in [
            "baseline_420_odd.jpg",
            "baseline_422.jpg",
            "progressive_420.jpg",
            "progressive_444.jpg",
            "gray.jpg",
            "photo_q85.jpg",
        ] {
            let input = crate::imaging::fixtures::fixture(name);
            for settings in [
                ACCURATE,
                DecodeSettings {
                    scale_denom: 2,
                    ..ACCURATE
                },
            ] {
                let whole = decode(&input, &budget, settings).expect("decodes");
                let (w, h) = (whole.width, whole.height);
                for (x, y, width, height) in [
                    (0, 0, w, h),
                    (0, 0, 1, 1),
                    (w - 1, h - 1, 1, 1),
                    (16, 16, w - 32, h - 32),
                    (3, 5, w / 2, h / 3),
                    (w / 2 + 7, 9, w / 2 - 7, h - 9),
                    (0, h / 2, w, 17),
                ] {
                    let region = Region {
                        x,
                        y,
                        width,
                        height,
                    };
                    let (part, size) =
                        decode_region(&input, &budget, settings, |_, _| region).expect("decodes");
                    assert_eq!(size, (w, h), "{name}");
                    assert_eq!((part.width, part.height), (width, height), "{name}");
                    assert_eq!(part.layout, whole.layout);
                    assert!(
                        part.data == cut(&whole, region),
                        "{name} 1/{}: {region:?} of {w}x{h}",
                        settings.scale_denom
                    );
                }
                for outside in [
                    Region {
                        x: 1,
                        y: 0,
                        width: w,
                        height: 1,
                    },
                    Region {
                        x: 0,
                        y: h,
                        width: 1,
                        height: 1,
                    },
                    Region {
                        x: 0,
                        y: 0,
                        width: 0,
                        height: h,
                    },
                ] {
                    let refused = decode_region(&input, &budget, settings, |_, _| outside);
                    assert!(refused.is_err(), "{name}: {outside:?}");
                }
            }
        }
    }
}
