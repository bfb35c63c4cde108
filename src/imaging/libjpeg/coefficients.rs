//! A JPEG's quantised DCT coefficients, read by libjpeg (its entropy decoding only)
//! and handed to safe code as mutable planes of blocks.

use std::ffi::{c_int, c_uint};

use mozjpeg_sys as ffi;

#[cfg(test)]
use super::guard::Compress;
use super::guard::{Budget, Decompress, LibjpegError, guarded};

/// One 8×8 block of quantised DCT coefficients, in natural (row-major) order.
pub(crate) type Block = [i16; 64];

/// The colour model libjpeg found in a JPEG's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameColor {
    /// One component.
    Gray,
    /// Three components, YCbCr (JFIF, or no marker saying otherwise).
    YCbCr,
    /// Four components, CMYK (Adobe's, stored inverted).
    Cmyk,
    /// Four components, YCCK (Adobe's transform 2: YCbCr of the inverted CMY, and K).
    Ycck,
    /// RGB or anything else.
    Other,
}

/// What [`read_coefficients`] shows its caller after reading the headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Width and height in pixels.
    pub width: u32,
    pub height: u32,
    pub color: FrameColor,
    /// Sampling factors (h, v) per component, in frame order.
    pub sampling: Vec<(u8, u8)>,
}

/// One component's coefficient blocks, row by row.
pub(crate) struct Plane<'a> {
    /// Every row of the array, padding included (`rows.len() >= height`).
    pub rows: Vec<&'a mut [Block]>,
    /// Blocks per row that hold image data (each row has at least this many).
    pub width: usize,
    /// Rows that hold image data.
    pub height: usize,
    /// The quantisation table, natural order.
    pub quant: [u16; 64],
}

/// Natural-order quantisation tables for the output: `[luma, chroma]`, values 1..=255.
pub(crate) type OutputTables = [[u16; 64]; 2];

/// A Huffman table as stored in DHT: code counts per length 1..=16 (`bits[0]`
/// unused) and the symbols in code order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HuffTable {
    pub bits: [u8; 17],
    pub huffval: [u8; 256],
}

/// `[luma, chroma]` DC and AC Huffman tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HuffTables {
    pub dc: [HuffTable; 2],
    pub ac: [HuffTable; 2],
}

/// Reads the headers of `input` and, when `accept` takes its [`Frame`], its quantised
/// DCT coefficients: libjpeg does the entropy decoding (every scan of a progressive
/// file) and nothing else. `use_planes` gets one [`Plane`] per component, in frame
/// order, to read or rewrite in place; its result is returned. `Ok(None)` when
/// `accept` declines (before any entropy decoding). Damaged data
/// ([`LibjpegError::Corrupt`]) and spent limits end it, as everywhere.
pub(crate) fn read_coefficients<R>(
    input: &[u8],
    budget: &Budget,
    accept: impl FnOnce(&Frame) -> bool,
    use_planes: impl FnOnce(&Frame, Vec<Plane<'_>>) -> R,
) -> Result<Option<R>, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input, budget);
        src.read_header()?;
        let cinfo = src.cinfo();
        let (width, height) = (cinfo.image_width, cinfo.image_height);
        let count = usize::try_from(cinfo.num_components).unwrap_or(0);
        let color = match (count, cinfo.jpeg_color_space) {
            (1, ffi::J_COLOR_SPACE::JCS_GRAYSCALE) => FrameColor::Gray,
            (3, ffi::J_COLOR_SPACE::JCS_YCbCr) => FrameColor::YCbCr,
            (4, ffi::J_COLOR_SPACE::JCS_CMYK) => FrameColor::Cmyk,
            (4, ffi::J_COLOR_SPACE::JCS_YCCK) => FrameColor::Ycck,
            _ => FrameColor::Other,
        };
        let sampling = (0..count)
            .map(|i| {
                let c = src.component(i);
                let factor = |f: c_int| u8::try_from(f).unwrap_or(0);
                (factor(c.h_samp_factor), factor(c.v_samp_factor))
            })
            .collect();
        let frame = Frame {
            width,
            height,
            color,
            sampling,
        };
        if !accept(&frame) {
            return Ok(None);
        }

        // SAFETY: headers read; returns one virtual array per component, or errors (unwinds).
        let src_arrays = unsafe { ffi::jpeg_read_coefficients(src.cinfo()) };
        if src_arrays.is_null() {
            return Err(LibjpegError::fatal("no coefficients"));
        }

        let mut planes = Vec::with_capacity(count);
        for ci in 0..count {
            let comp = src.component(ci);
            let (h, v) = (comp.h_samp_factor.max(1), comp.v_samp_factor.max(1));
            let (w, hgt) = (comp.width_in_blocks, comp.height_in_blocks);
            let cols = w.div_ceil(h as c_uint) * h as c_uint;
            let rows = hgt.div_ceil(v as c_uint) * v as c_uint;
            let quant = if comp.quant_table.is_null() {
                return Err(LibjpegError::fatal(
                    "component without a quantisation table",
                ));
            } else {
                // SAFETY: latched by the decoder for every component that had a scan.
                unsafe { (*comp.quant_table).quantval }
            };
            // SAFETY: `src_arrays` has `count` entries; the array was allocated by
            // jdcoefct.c with exactly `cols` × `rows` blocks.
            let array = unsafe { *src_arrays.add(ci) };
            let plane_rows = unsafe { plane_rows(src.cinfo, array, cols, rows)? };
            planes.push(Plane {
                rows: plane_rows,
                width: w as usize,
                height: hgt as usize,
                quant,
            });
        }
        let result = use_planes(&frame, planes);
        drop(src);
        Ok(Some(result))
    })
}

/// libjpeg's own writer, for tests to hold [`crate::imaging::writer`] to it: `planes`
/// (Y, Cb, Cr at 4:2:0) written by `jpeg_write_coefficients` with `quant` and
/// `huffman`, or with tables libjpeg computes itself (`optimize_coding`) for `None`.
#[cfg(test)]
pub(crate) fn write_coefficients(
    width: u32,
    height: u32,
    planes: &[Plane<'_>; 3],
    quant: &OutputTables,
    huffman: Option<&HuffTables>,
) -> Result<Vec<u8>, LibjpegError> {
    guarded(|| {
        let budget = Budget::UNLIMITED;
        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_YCbCr, &budget);
        out.set_tables(quant);
        match huffman {
            Some(tables) => out.set_huffman(tables),
            None => out.cinfo().optimize_coding = 1,
        }
        // Output 4:2:0 geometry: Y in 2×2 groups of blocks, chroma one block per 16×16.
        let (mcu_cols, mcu_rows) = (width.div_ceil(16), height.div_ceil(16));
        let dims = [
            (2 * mcu_cols, 2 * mcu_rows),
            (mcu_cols, mcu_rows),
            (mcu_cols, mcu_rows),
        ];
        let cinfo = out.cinfo();
        let mut arrays = [std::ptr::null_mut(); 3];
        // SAFETY: `mem` is set by create; arrays requested before
        // jpeg_write_coefficients (which realizes them), filled before
        // jpeg_finish_compress reads them, every block within their size.
        unsafe {
            let mem = &*cinfo.common.mem;
            let request = mem
                .request_virt_barray
                .ok_or_else(|| LibjpegError::fatal("no memory manager"))?;
            for (slot, &(cols, rows)) in arrays.iter_mut().zip(&dims) {
                *slot = request(&mut cinfo.common, 1, 1, cols, rows, rows);
            }
            ffi::jpeg_write_coefficients(cinfo, arrays.as_mut_ptr());
            let access = mem
                .access_virt_barray
                .ok_or_else(|| LibjpegError::fatal("no memory manager"))?;
            for ((&array, &(cols, rows)), plane) in arrays.iter().zip(&dims).zip(planes) {
                for row in 0..rows {
                    let ptrs = access(&mut cinfo.common, array, row, 1, 1);
                    let dst = std::slice::from_raw_parts_mut(*ptrs, cols as usize);
                    if let Some(src) = plane.rows.get(row as usize) {
                        let n = src.len().min(dst.len());
                        dst[..n].copy_from_slice(&src[..n]);
                    }
                }
            }
            ffi::jpeg_finish_compress(cinfo);
        }
        Ok(out.take_output())
    })
}

/// Every row of a realized, in-memory virtual block array as a mutable slice.
///
/// # Safety
/// `array` must belong to (or have been realized by) `cinfo`'s memory manager and
/// hold exactly `cols` blocks per row and `rows` rows, every block initialised (the
/// decoder's arrays and ours are requested pre-zeroed); the slices must not outlive
/// the object and no other reference to the blocks may be used meanwhile.
unsafe fn plane_rows<'a>(
    cinfo: *mut ffi::jpeg_decompress_struct,
    array: *mut ffi::jvirt_barray_control,
    cols: c_uint,
    rows: c_uint,
) -> Result<Vec<&'a mut [Block]>, LibjpegError> {
    if array.is_null() {
        return Err(LibjpegError::fatal("missing coefficient array"));
    }
    // SAFETY: per the contract above.
    unsafe {
        let common = &mut (*cinfo).common;
        let access = (*common.mem)
            .access_virt_barray
            .ok_or_else(|| LibjpegError::fatal("no memory manager"))?;
        let mut out = Vec::with_capacity(rows as usize);
        for row in 0..rows {
            // One row at a time: within every array's `maxaccess`; in-memory arrays
            // return stable pointers into one allocation, distinct per row.
            let ptrs = access(common, array, row, 1, 1);
            let first = *ptrs;
            out.push(std::slice::from_raw_parts_mut(first, cols as usize));
        }
        Ok(out)
    }
}
