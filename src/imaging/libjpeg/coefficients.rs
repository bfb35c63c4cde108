//! Coefficient-domain transcoding: a JPEG's quantised DCT coefficients read, handed
//! to safe code as mutable planes of blocks, and written back as a baseline 4:2:0 JPEG.

use std::ffi::{c_int, c_uint};

use mozjpeg_sys as ffi;

use super::guard::{Budget, Compress, Decompress, LibjpegError, guarded};

/// One 8×8 block of quantised DCT coefficients, in natural (row-major) order.
pub(crate) type Block = [i16; 64];

/// The colour model libjpeg found in a JPEG's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameColor {
    /// One component.
    Gray,
    /// Three components, YCbCr (JFIF, or no marker saying otherwise).
    YCbCr,
    /// RGB, CMYK, YCCK or anything else.
    Other,
}

/// What [`transcode`] shows the planner after reading the headers.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub color: FrameColor,
    /// Sampling factors (h, v) per component, in frame order.
    pub sampling: Vec<(u8, u8)>,
}

/// How the output planes relate to the source's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrangement {
    /// The source is YCbCr 4:2:0: its planes are edited in place and written out.
    InPlace,
    /// Fresh 4:2:0 planes are filled from the source planes.
    Separate,
}

/// One component's coefficient blocks, row by row.
pub(crate) struct Plane<'a> {
    /// Every row of the array, padding included (`rows.len() >= height`).
    pub rows: Vec<&'a mut [Block]>,
    /// Blocks per row that hold image data (each row has at least this many).
    pub width: usize,
    /// Rows that hold image data.
    pub height: usize,
    /// The quantisation table, natural order (all zero for output planes).
    pub quant: [u16; 64],
}

/// The planes handed to the converter.
pub(crate) enum Planes<'a> {
    /// Y, Cb, Cr of a 4:2:0 source: rewrite in place.
    InPlace([Plane<'a>; 3]),
    /// Read `src` (frame order), write `dst` (Y, Cb, Cr at 4:2:0). `dst` starts
    /// uninitialised (any values): every block within `width` × `height` must be written.
    Separate {
        src: Vec<Plane<'a>>,
        dst: [Plane<'a>; 3],
    },
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

/// What the converter of [`transcode`] decided for the output.
pub(crate) struct OutputCoding {
    /// Quantisation tables.
    pub quant: OutputTables,
    /// Huffman tables that fit the output coefficients exactly (every symbol
    /// used has a code), or `None` to let libjpeg compute optimal ones (a second pass).
    pub huffman: Option<HuffTables>,
}

/// Reads the DCT coefficients of `input` and writes them back as a baseline YCbCr
/// 4:2:0 JPEG with optimised Huffman tables and only a JFIF header (no metadata).
///
/// After the headers, `plan` sees the [`Frame`] and says how to arrange the output,
/// or `None` to stop (then the result is `Ok(None)`). After the coefficients are read,
/// `convert` rewrites them into the output planes and returns the output tables.
/// The Huffman tables it returns must cover every symbol the scan uses: libjpeg-turbo
/// does not check, a missing code would corrupt the output.
/// Damaged data ([`LibjpegError::Corrupt`]) and spent limits end it, as everywhere.
pub(crate) fn transcode(
    input: &[u8],
    budget: &Budget,
    plan: impl FnOnce(&Frame) -> Option<Arrangement>,
    convert: impl FnOnce(Planes<'_>) -> OutputCoding,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input, budget);
        src.read_header()?;
        let cinfo = src.cinfo();
        let (width, height) = (cinfo.image_width, cinfo.image_height);
        let count = usize::try_from(cinfo.num_components).unwrap_or(0);
        let color = match (count, cinfo.jpeg_color_space) {
            (1, ffi::J_COLOR_SPACE::JCS_GRAYSCALE) => FrameColor::Gray,
            (3, ffi::J_COLOR_SPACE::JCS_YCbCr) => FrameColor::YCbCr,
            _ => FrameColor::Other,
        };
        let sampling = (0..count)
            .map(|i| {
                let c = src.component(i);
                let factor = |f: c_int| u8::try_from(f).unwrap_or(0);
                (factor(c.h_samp_factor), factor(c.v_samp_factor))
            })
            .collect();
        let frame = Frame { color, sampling };
        let Some(arrangement) = plan(&frame) else {
            return Ok(None);
        };
        if arrangement == Arrangement::InPlace
            && (frame.color != FrameColor::YCbCr || frame.sampling != [(2, 2), (1, 1), (1, 1)])
        {
            return Err(LibjpegError::fatal(
                "in-place transcoding needs YCbCr 4:2:0",
            ));
        }

        // Output 4:2:0 geometry: Y in 2×2 groups of blocks, chroma one block per 16×16.
        let mcu_cols = width.div_ceil(16);
        let mcu_rows = height.div_ceil(16);
        let out_dims = [
            (
                2 * mcu_cols,
                2 * mcu_rows,
                width.div_ceil(8),
                height.div_ceil(8),
                2,
            ),
            (mcu_cols, mcu_rows, mcu_cols, mcu_rows, 1),
            (mcu_cols, mcu_rows, mcu_cols, mcu_rows, 1),
        ];
        let mut out_arrays = [std::ptr::null_mut(); 3];
        if arrangement == Arrangement::Separate {
            let cinfo = src.cinfo();
            // SAFETY: `mem` is set by create; requesting before jpeg_read_coefficients
            // (which realizes every requested array) is the documented order.
            unsafe {
                let request = (*cinfo.common.mem)
                    .request_virt_barray
                    .ok_or_else(|| LibjpegError::fatal("no memory manager"))?;
                for (slot, &(cols, rows, _, _, access)) in out_arrays.iter_mut().zip(&out_dims) {
                    // Pre-zeroed: every block is initialised before a slice of it is
                    // made (the converter overwrites them all; the cost is one memset).
                    *slot = request(&mut cinfo.common, 1, 1, cols, rows, access);
                }
            }
        }

        // SAFETY: headers read; returns one virtual array per component, or errors (unwinds).
        let src_arrays = unsafe { ffi::jpeg_read_coefficients(src.cinfo()) };
        if src_arrays.is_null() {
            return Err(LibjpegError::fatal("no coefficients"));
        }

        let mut src_planes = Vec::with_capacity(count);
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
            src_planes.push(Plane {
                rows: plane_rows,
                width: w as usize,
                height: hgt as usize,
                quant,
            });
        }

        let coding;
        let write_arrays: [*mut ffi::jvirt_barray_control; 3];
        match arrangement {
            Arrangement::InPlace => {
                let planes: [Plane<'_>; 3] = src_planes
                    .try_into()
                    .map_err(|_| LibjpegError::fatal("expected three components"))?;
                coding = convert(Planes::InPlace(planes));
                // SAFETY: three entries (checked above).
                write_arrays = unsafe { [*src_arrays, *src_arrays.add(1), *src_arrays.add(2)] };
            }
            Arrangement::Separate => {
                let mut dst = Vec::with_capacity(3);
                for (&array, &(cols, rows, w, h, _)) in out_arrays.iter().zip(&out_dims) {
                    // SAFETY: requested above with exactly `cols` × `rows` blocks.
                    let plane_rows = unsafe { plane_rows(src.cinfo, array, cols, rows)? };
                    dst.push(Plane {
                        rows: plane_rows,
                        width: w as usize,
                        height: h as usize,
                        quant: [0; 64],
                    });
                }
                let dst: [Plane<'_>; 3] = dst
                    .try_into()
                    .map_err(|_| LibjpegError::fatal("expected three planes"))?;
                coding = convert(Planes::Separate {
                    src: src_planes,
                    dst,
                });
                write_arrays = out_arrays;
            }
        }

        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_YCbCr, budget);
        out.set_tables(&coding.quant);
        match &coding.huffman {
            Some(tables) => out.set_huffman(tables),
            None => out.cinfo().optimize_coding = 1,
        }
        let cinfo = out.cinfo();
        let mut arrays = write_arrays;
        // SAFETY: three arrays of the 4:2:0 geometry the compressor computes for
        // width × height, realized and filled; they outlive the compressor's use
        // (the source object is dropped after `out`).
        unsafe {
            ffi::jpeg_write_coefficients(cinfo, arrays.as_mut_ptr());
            ffi::jpeg_finish_compress(cinfo);
        }
        let bytes = out.take_output();
        drop(out);
        drop(src);
        Ok(Some(bytes))
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
