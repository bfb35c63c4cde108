//! Planes: a gray or YCbCr JPEG re-encoded from libjpeg's raw, still-subsampled
//! planes, with no RGB in between.

use std::ffi::{c_int, c_uint};

use mozjpeg_sys as ffi;

use super::guard::{Budget, Compress, Decompress, LibjpegError, guarded};
use crate::imaging::encode::downsample_strip;

/// Decodes a gray or YCbCr JPEG and encodes it again at `quality` (baseline 4:2:0,
/// standard tables, as [`super::encode`]) without the colour round trip: libjpeg's raw,
/// still-subsampled planes go from the decoder to the encoder one 16-line strip
/// at a time, chroma box-averaged to 4:2:0 where the source has more, gray given
/// neutral chroma. No RGB image, upsampling, colour conversion or full-frame buffer.
///
/// `Ok(None)` when the source is not gray/YCbCr with luma at full resolution and
/// chroma at half or full resolution per axis: the caller decodes to RGB instead.
/// Fails on damaged data and spent limits, as [`super::decode`] does.
pub(crate) fn reencode_planes(
    input: &[u8],
    budget: &Budget,
    quality: u8,
    fast_dct: bool,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input, budget);
        src.read_header()?;
        let cinfo = src.cinfo();
        let count = usize::try_from(cinfo.num_components).unwrap_or(0);
        let gray = match (count, cinfo.jpeg_color_space) {
            (1, _) => true,
            (3, ffi::J_COLOR_SPACE::JCS_YCbCr) => false,
            _ => return Ok(None),
        };
        let factors: Vec<(usize, usize)> = (0..count)
            .map(|i| {
                let c = src.component(i);
                let f = |v: c_int| usize::try_from(v).unwrap_or(0);
                (f(c.h_samp_factor), f(c.v_samp_factor))
            })
            .collect();
        // Chroma merge factors (columns, rows) onto 4:2:0.
        let (fx, fy) = if gray {
            (1, 1)
        } else {
            let [(yh, yv), cb, cr] = factors[..] else {
                return Ok(None);
            };
            let (ch, cv) = cb;
            if cb != cr || ch == 0 || cv == 0 || yh % ch != 0 || yv % cv != 0 {
                return Ok(None);
            }
            match (yh / ch, yv / cv) {
                (rh @ 1..=2, rv @ 1..=2) => (2 / rh, 2 / rv),
                _ => return Ok(None),
            }
        };
        let cinfo = src.cinfo();
        cinfo.raw_data_out = 1;
        cinfo.dct_method = ffi::J_DCT_METHOD::JDCT_ISLOW;
        cinfo.do_block_smoothing = 0;
        // SAFETY: header read, output parameters set; errors unwind to `guarded`.
        unsafe { ffi::jpeg_start_decompress(cinfo) };
        let (width, height) = (cinfo.image_width, cinfo.image_height);
        let max_v = usize::try_from(cinfo.max_v_samp_factor).unwrap_or(1).max(1);
        if max_v > 2 {
            return Ok(None);
        }
        // Decoder strips (iMCU rows) are max_v × 8 lines; the encoder's are 16.
        let total_src_rows = height.div_ceil(8 * max_v as u32);
        let strips_per_out = if max_v == 1 { 2 } else { 1 };
        let src_dims: Vec<(usize, usize)> = (0..count)
            .map(|i| {
                let c = src.component(i);
                let w = c.width_in_blocks as usize * 8;
                let v = usize::try_from(c.v_samp_factor).unwrap_or(1).max(1);
                (w, v * 8)
            })
            .collect();

        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_YCbCr, budget);
        let ccinfo = out.cinfo();
        // SAFETY: a set-up compressor.
        unsafe { ffi::jpeg_set_quality(ccinfo, c_int::from(quality.clamp(1, 100)), 1) };
        ccinfo.dct_method = if fast_dct {
            ffi::J_DCT_METHOD::JDCT_IFAST
        } else {
            ffi::J_DCT_METHOD::JDCT_ISLOW
        };
        ccinfo.raw_data_in = 1;
        // SAFETY: parameters set; computes the component geometry.
        unsafe { ffi::jpeg_start_compress(ccinfo, 1) };
        // SAFETY: three components after jpeg_start_compress.
        let out_widths: Vec<usize> = unsafe { std::slice::from_raw_parts(ccinfo.comp_info, 3) }
            .iter()
            .map(|c| c.width_in_blocks as usize * 8)
            .collect();

        // Output strip buffers: Y 16 lines, Cb and Cr 8 lines each.
        let mut y_buf = vec![0u8; out_widths[0] * 16];
        let mut c_bufs = [
            vec![128u8; out_widths[1] * 8],
            vec![128u8; out_widths[2] * 8],
        ];
        // Decoder chroma strips (unless 4:2:0, decoded straight into `c_bufs`).
        let direct_chroma = !gray && (fx, fy) == (1, 1);
        let mut src_c: Vec<Vec<u8>> = if gray || direct_chroma {
            Vec::new()
        } else {
            (1..3)
                .map(|i| vec![0u8; src_dims[i].0 * src_dims[i].1 * strips_per_out])
                .collect()
        };

        let mut src_row = 0u32;
        let mut out_rows = 0u32;
        while out_rows < height {
            for strip in 0..strips_per_out {
                let lines = 8 * max_v;
                if src_row >= total_src_rows {
                    // Past the last decoder strip: repeat the previous lines (they
                    // lie below the image; only their smoothness matters).
                    let prev = lines * strip;
                    if prev > 0 {
                        let w = out_widths[0];
                        y_buf.copy_within((prev - 1) * w..prev * w, prev * w);
                        for r in prev + 1..prev + lines {
                            y_buf.copy_within(prev * w..(prev + 1) * w, r * w);
                        }
                        for (plane, &(w, rows)) in src_c.iter_mut().zip(&src_dims[1..]) {
                            let prev = rows * strip;
                            for r in prev..prev + rows {
                                plane.copy_within((prev - 1) * w..prev * w, r * w);
                            }
                        }
                    }
                    continue;
                }
                let mut ptrs: Vec<Vec<*mut u8>> = Vec::with_capacity(count);
                let y_w = out_widths[0];
                ptrs.push(
                    y_buf[strip * lines * y_w..]
                        .chunks_exact_mut(y_w)
                        .take(src_dims[0].1)
                        .map(<[u8]>::as_mut_ptr)
                        .collect(),
                );
                if !gray {
                    for ci in 1..3 {
                        let (w, rows) = src_dims[ci];
                        let rows_ptrs = if direct_chroma {
                            c_bufs[ci - 1]
                                .chunks_exact_mut(out_widths[ci])
                                .take(rows)
                                .map(<[u8]>::as_mut_ptr)
                                .collect()
                        } else {
                            src_c[ci - 1][strip * rows * w..]
                                .chunks_exact_mut(w)
                                .take(rows)
                                .map(<[u8]>::as_mut_ptr)
                                .collect()
                        };
                        ptrs.push(rows_ptrs);
                    }
                }
                // Our own geometry, not libjpeg's internals: as many row arrays as
                // components, each with that component's v_samp × 8 rows of at least
                // its width_in_blocks × 8 bytes, as `jpeg_read_raw_data` will fill.
                assert_eq!(ptrs.len(), count, "a row array per component");
                for (ci, rows) in ptrs.iter().enumerate() {
                    let comp = src.component(ci);
                    let v = usize::try_from(comp.v_samp_factor).unwrap_or(0);
                    assert_eq!(rows.len(), v * 8, "component {ci}: rows of one strip");
                    let w = if ci == 0 || direct_chroma {
                        out_widths[ci]
                    } else {
                        src_dims[ci].0
                    };
                    assert!(
                        w >= comp.width_in_blocks as usize * 8,
                        "component {ci}: row width"
                    );
                }
                let mut image: Vec<*mut *mut u8> =
                    ptrs.iter_mut().map(|p| p.as_mut_ptr()).collect();
                // SAFETY: one row-pointer array per component, each with that
                // component's v_samp × 8 rows of at least width_in_blocks × 8 bytes.
                let read = unsafe {
                    ffi::jpeg_read_raw_data(src.cinfo(), image.as_mut_ptr(), lines as c_uint)
                };
                if read == 0 {
                    return Err(LibjpegError::fatal("decoder returned no rows"));
                }
                src_row += 1;
            }
            if !gray && !direct_chroma {
                for (plane, out) in src_c.iter().zip(c_bufs.iter_mut()) {
                    let w = src_dims[1].0;
                    downsample_strip(plane, w, out, out_widths[1], (fx, fy));
                }
            }
            let y_rows: Vec<*const u8> = y_buf
                .chunks_exact(out_widths[0])
                .map(<[u8]>::as_ptr)
                .collect();
            let c_rows: Vec<Vec<*const u8>> = c_bufs
                .iter()
                .zip(&out_widths[1..])
                .map(|(b, &w)| b.chunks_exact(w).map(<[u8]>::as_ptr).collect())
                .collect();
            // Our own geometry: 16 luma and 8 chroma rows of the compressor's padded widths.
            assert_eq!(y_rows.len(), 16, "luma rows of one strip");
            assert!(
                c_rows.iter().all(|rows| rows.len() == 8),
                "chroma rows of one strip"
            );
            let image = [y_rows.as_ptr(), c_rows[0].as_ptr(), c_rows[1].as_ptr()];
            // SAFETY: 16 luma and 8 chroma rows of the compressor's padded widths.
            let written = unsafe { ffi::jpeg_write_raw_data(out.cinfo(), image.as_ptr(), 16) };
            if written == 0 {
                return Err(LibjpegError::fatal("encoder took no rows"));
            }
            out_rows += 16;
        }
        // SAFETY: every strip was written; the decoder may have data left (ignored).
        unsafe { ffi::jpeg_finish_compress(out.cinfo()) };
        Ok(Some(out.take_output()))
    })
}
