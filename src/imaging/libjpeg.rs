//! The imaging module's only `unsafe` code: a small safe wrapper around libjpeg
//! (mozjpeg's libjpeg-turbo, via `mozjpeg-sys`), for three jobs:
//!
//! - [`transcode`]: read a JPEG's DCT coefficients, let safe code rewrite them into
//!   4:2:0 YCbCr planes, write a baseline JPEG with optimised Huffman tables;
//! - [`decode`]: decode a gray or YCbCr/RGB JPEG to 8-bit pixels;
//! - [`encode`]: encode 8-bit pixels as a baseline 4:2:0 JPEG with libjpeg-turbo's
//!   fastest settings (no trellis, no progressive, standard IJG tables).
//!
//! **Errors.** libjpeg's default `error_exit` calls `exit()`. Ours formats the message
//! and unwinds with [`resume_unwind`] (no panic hook, nothing printed) through the C
//! frames, which `mozjpeg-sys` compiles with `-fexceptions` and whose callbacks it
//! declares `extern "C-unwind"` for exactly this (its `unwinding` feature, on by
//! default). Every public function here catches that unwind and returns a
//! [`LibjpegError`]. libjpeg objects are owned by guards whose `Drop` runs
//! `jpeg_destroy_*`, so an error anywhere frees everything. Warnings (corrupt data that
//! libjpeg papers over, such as a premature end of the file) are recorded and turned
//! into errors as each caller requires. A panic in our own code is passed on as is.

use std::ffi::{c_int, c_uint, c_ulong};
use std::marker::PhantomData;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use mozjpeg_sys as ffi;

use super::encode::downsample_strip;

/// One 8×8 block of quantised DCT coefficients, in natural (row-major) order.
pub(crate) type Block = [i16; 64];

/// A fatal libjpeg error or a warning that the caller treats as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LibjpegError(pub String);

impl std::fmt::Display for LibjpegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The payload our `error_exit` unwinds with.
struct Fatal(String);

/// A libjpeg warning: its message code and text.
#[derive(Debug, Clone)]
pub(crate) struct Warning {
    /// `JWRN_*` code.
    pub code: c_int,
    /// libjpeg's text for it.
    pub text: String,
}

impl Warning {
    /// Data is missing (the file ends early or a segment is cut short): the pixels
    /// libjpeg would return there are made up.
    pub(crate) fn data_missing(&self) -> bool {
        matches!(self.code, ffi::JWRN_JPEG_EOF | ffi::JWRN_HIT_MARKER)
    }

    /// Harmless: stray bytes between segments, which many cameras write.
    pub(crate) fn harmless(&self) -> bool {
        self.code == ffi::JWRN_EXTRANEOUS_DATA
    }
}

/// libjpeg's error manager plus the first warning; `mgr` must stay the first field
/// (libjpeg holds a pointer to it, the callbacks cast that pointer back).
#[repr(C)]
struct ErrorMgr {
    mgr: ffi::jpeg_error_mgr,
    first_warning: Option<Warning>,
}

impl ErrorMgr {
    fn new_raw() -> *mut ErrorMgr {
        let mut err = Box::new(ErrorMgr {
            // SAFETY: a C struct of integers, pointers and `Option<fn>`s; all-zero is valid.
            mgr: unsafe { mem::zeroed() },
            first_warning: None,
        });
        // SAFETY: fills in the default methods and message table; cannot fail.
        unsafe { ffi::jpeg_std_error(&mut err.mgr) };
        err.mgr.error_exit = Some(error_exit);
        err.mgr.emit_message = Some(emit_message);
        err.mgr.output_message = Some(output_message);
        Box::into_raw(err)
    }
}

/// libjpeg's formatted text for the current message code.
fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    // SAFETY: `err` was set by our constructors and outlives `cinfo`.
    let Some(format) = (unsafe { (*cinfo.err).format_message }) else {
        return "libjpeg error".to_owned();
    };
    type FormatMut = unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]);
    // SAFETY: the binding declares the output buffer `&[u8; 80]` although C writes
    // into it; `&` and `&mut` have the same ABI, so call it with the honest type.
    let format: FormatMut = unsafe { mem::transmute(format) };
    let mut buffer = [0u8; 80];
    // SAFETY: writes at most 80 bytes (JMSG_LENGTH_MAX), NUL-terminated.
    unsafe { format(cinfo, &mut buffer) };
    let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let text = message(cinfo);
    resume_unwind(Box::new(Fatal(text)));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return; // trace messages
    }
    let err = cinfo.err.cast::<ErrorMgr>();
    // SAFETY: `cinfo.err` points at the `mgr` field (first, `repr(C)`) of our ErrorMgr.
    unsafe {
        (*err).mgr.num_warnings += 1;
        if (*err).first_warning.is_none() {
            let code = (*err).mgr.msg_code;
            let text = message(cinfo);
            (*err).first_warning = Some(Warning { code, text });
        }
    }
}

extern "C-unwind" fn output_message(_cinfo: &mut ffi::jpeg_common_struct) {}

/// Runs `f`, turning a libjpeg fatal error unwinding out of it into an `Err`.
fn guarded<T>(f: impl FnOnce() -> Result<T, LibjpegError>) -> Result<T, LibjpegError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<Fatal>() {
            Ok(fatal) => Err(LibjpegError(fatal.0)),
            Err(other) => resume_unwind(other),
        },
    }
}

/// Owns a `jpeg_decompress_struct` reading from `input`; destroyed on drop.
struct Decompress<'a> {
    cinfo: *mut ffi::jpeg_decompress_struct,
    err: *mut ErrorMgr,
    _input: PhantomData<&'a [u8]>,
}

impl<'a> Decompress<'a> {
    fn new(input: &'a [u8]) -> Self {
        let this = Decompress {
            err: ErrorMgr::new_raw(),
            // SAFETY: as for the error manager: all-zero is a valid initial value.
            cinfo: Box::into_raw(Box::new(unsafe { mem::zeroed() })),
            _input: PhantomData,
        };
        // SAFETY: both pointers are fresh and valid; libjpeg keeps `err` (freed after
        // the object in Drop) and reads `input`, borrowed for 'a.
        unsafe {
            (*this.cinfo).common.err = &raw mut (*this.err).mgr;
            ffi::jpeg_create_decompress(this.cinfo);
            let len = c_ulong::try_from(input.len()).unwrap_or(c_ulong::MAX);
            ffi::jpeg_mem_src(&mut *this.cinfo, input.as_ptr(), len);
        }
        this
    }

    fn cinfo(&mut self) -> &mut ffi::jpeg_decompress_struct {
        // SAFETY: valid from `new` until drop.
        unsafe { &mut *self.cinfo }
    }

    fn first_warning(&self) -> Option<Warning> {
        // SAFETY: valid from `new` until drop.
        unsafe { (*self.err).first_warning.clone() }
    }

    /// Reads the headers up to the first scan and checks the size against `max_pixels`.
    fn read_header(&mut self, max_pixels: u64) -> Result<(), LibjpegError> {
        let cinfo = self.cinfo();
        // SAFETY: a created object with a source; errors unwind to our caller's guard.
        unsafe { ffi::jpeg_read_header(cinfo, 1) };
        let pixels = u64::from(cinfo.image_width) * u64::from(cinfo.image_height);
        if pixels > max_pixels {
            return Err(LibjpegError(format!(
                "{}x{} is over the limit of {max_pixels} pixels",
                cinfo.image_width, cinfo.image_height
            )));
        }
        Ok(())
    }

    fn component(&self, index: usize) -> &ffi::jpeg_component_info {
        // SAFETY: `comp_info` holds `num_components` entries after `jpeg_read_header`;
        // callers pass index < num_components.
        unsafe {
            let cinfo = &*self.cinfo;
            assert!(index < usize::try_from(cinfo.num_components).unwrap_or(0));
            &*cinfo.comp_info.add(index)
        }
    }
}

impl Drop for Decompress<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`; destroy frees libjpeg's memory, then our boxes.
        unsafe {
            ffi::jpeg_destroy_decompress(&mut *self.cinfo);
            drop(Box::from_raw(self.cinfo));
            drop(Box::from_raw(self.err));
        }
    }
}

/// libjpeg destination writing into a growing `Vec`; `mgr` must stay first.
#[repr(C)]
struct VecDest {
    mgr: ffi::jpeg_destination_mgr,
    buf: Vec<u8>,
}

fn vec_dest(cinfo: &mut ffi::jpeg_compress_struct) -> &mut VecDest {
    // SAFETY: `dest` is the `mgr` field (first, `repr(C)`) of the VecDest set in `Compress::new`.
    unsafe { &mut *cinfo.dest.cast::<VecDest>() }
}

extern "C-unwind" fn init_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    let dest = vec_dest(cinfo);
    dest.mgr.next_output_byte = dest.buf.as_mut_ptr();
    dest.mgr.free_in_buffer = dest.buf.len();
}

extern "C-unwind" fn empty_output_buffer(cinfo: &mut ffi::jpeg_compress_struct) -> ffi::boolean {
    // libjpeg's contract: the whole buffer is full, whatever next_output_byte says.
    let dest = vec_dest(cinfo);
    let used = dest.buf.len();
    dest.buf.resize(used * 2, 0);
    // SAFETY: `used` is within the (grown) buffer.
    dest.mgr.next_output_byte = unsafe { dest.buf.as_mut_ptr().add(used) };
    dest.mgr.free_in_buffer = dest.buf.len() - used;
    1
}

extern "C-unwind" fn term_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    let dest = vec_dest(cinfo);
    let written = dest.buf.len() - dest.mgr.free_in_buffer;
    dest.buf.truncate(written);
    dest.mgr.free_in_buffer = 0;
}

/// Owns a `jpeg_compress_struct` writing into a `Vec`; destroyed on drop.
struct Compress {
    cinfo: *mut ffi::jpeg_compress_struct,
    err: *mut ErrorMgr,
    dest: *mut VecDest,
}

impl Compress {
    /// A compressor set up for 3-component input (`in_color_space`) with
    /// libjpeg-turbo's defaults (`JCP_FASTEST`), YCbCr 4:2:0 output and a JFIF header.
    fn new(width: u32, height: u32, in_color_space: ffi::J_COLOR_SPACE) -> Self {
        // A q50 4:2:0 photo is about 0.1–0.2 bytes per pixel; the buffer grows if needed.
        let initial = (u64::from(width) * u64::from(height) / 6).clamp(16 * 1024, 64 << 20);
        let this = Compress {
            err: ErrorMgr::new_raw(),
            // SAFETY: all-zero is a valid initial value for both C structs.
            cinfo: Box::into_raw(Box::new(unsafe { mem::zeroed() })),
            dest: Box::into_raw(Box::new(VecDest {
                mgr: unsafe { mem::zeroed() },
                buf: vec![0; usize::try_from(initial).unwrap_or(16 * 1024)],
            })),
        };
        // SAFETY: fresh valid pointers, freed after the object in Drop.
        unsafe {
            let cinfo = &mut *this.cinfo;
            cinfo.common.err = &raw mut (*this.err).mgr;
            ffi::jpeg_create_compress(cinfo);
            let dest = &mut *this.dest;
            dest.mgr.init_destination = Some(init_destination);
            dest.mgr.empty_output_buffer = Some(empty_output_buffer);
            dest.mgr.term_destination = Some(term_destination);
            cinfo.dest = &raw mut dest.mgr;
            cinfo.image_width = width;
            cinfo.image_height = height;
            cinfo.input_components = 3;
            cinfo.in_color_space = in_color_space;
            ffi::jpeg_c_set_int_param(
                cinfo,
                ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
                ffi::JCP_FASTEST as c_int,
            );
            ffi::jpeg_set_defaults(cinfo);
            // jpeg_set_defaults picks YCbCr with Y 2×2, Cb and Cr 1×1: 4:2:0. Say it anyway.
            ffi::jpeg_set_colorspace(cinfo, ffi::J_COLOR_SPACE::JCS_YCbCr);
            let comps = std::slice::from_raw_parts_mut(cinfo.comp_info, 3);
            for (comp, factor) in comps.iter_mut().zip([2, 1, 1]) {
                comp.h_samp_factor = factor;
                comp.v_samp_factor = factor;
            }
            cinfo.optimize_coding = 0;
            cinfo.write_JFIF_header = 1;
            cinfo.write_Adobe_marker = 0;
        }
        this
    }

    fn cinfo(&mut self) -> &mut ffi::jpeg_compress_struct {
        // SAFETY: valid from `new` until drop.
        unsafe { &mut *self.cinfo }
    }

    /// Sets tables 0 (luma) and 1 (chroma) from natural-order values (1..=255).
    fn set_tables(&mut self, tables: &[[u16; 64]; 2]) {
        for (which, table) in (0..).zip(tables) {
            let basic: [c_uint; 64] = table.map(c_uint::from);
            // SAFETY: a 64-entry table; scale 100 keeps the values, forced to 1..=255.
            unsafe { ffi::jpeg_add_quant_table(self.cinfo(), which, basic.as_ptr(), 100, 1) };
        }
    }

    /// Sets DC and AC tables 0 (luma) and 1 (chroma), which `jpeg_set_defaults`
    /// assigned to Y and to Cb, Cr.
    fn set_huffman(&mut self, tables: &HuffTables) {
        let cinfo = self.cinfo;
        for (i, ac, table) in [
            (0, false, &tables.dc[0]),
            (1, false, &tables.dc[1]),
            (0, true, &tables.ac[0]),
            (1, true, &tables.ac[1]),
        ] {
            // SAFETY: `cinfo` is valid; a null slot gets a table from libjpeg's
            // permanent pool (freed on destroy); libjpeg validates the counts when
            // it derives the codes.
            unsafe {
                let slot = if ac {
                    &raw mut (*cinfo).ac_huff_tbl_ptrs[i]
                } else {
                    &raw mut (*cinfo).dc_huff_tbl_ptrs[i]
                };
                if (*slot).is_null() {
                    *slot = ffi::jpeg_alloc_huff_table(&mut (*cinfo).common);
                }
                (**slot).bits = table.bits;
                (**slot).huffval = table.huffval;
            }
        }
    }

    /// The bytes written, once `jpeg_finish_compress` has run.
    fn take_output(&mut self) -> Vec<u8> {
        // SAFETY: valid from `new` until drop.
        unsafe { mem::take(&mut (*self.dest).buf) }
    }
}

impl Drop for Compress {
    fn drop(&mut self) {
        // SAFETY: created in `new`; destroy frees libjpeg's memory, then our boxes.
        unsafe {
            ffi::jpeg_destroy_compress(&mut *self.cinfo);
            drop(Box::from_raw(self.cinfo));
            drop(Box::from_raw(self.dest));
            drop(Box::from_raw(self.err));
        }
    }
}

// ---------------------------------------------------------------------------
// Coefficient-domain transcoding

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
/// Any libjpeg warning other than stray bytes between segments is an error here:
/// the caller should fall back to a pixel decoder, which has its own policy.
pub(crate) fn transcode(
    input: &[u8],
    max_pixels: u64,
    plan: impl FnOnce(&Frame) -> Option<Arrangement>,
    convert: impl FnOnce(Planes<'_>) -> OutputCoding,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input);
        src.read_header(max_pixels)?;
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
            return Err(LibjpegError(
                "in-place transcoding needs YCbCr 4:2:0".into(),
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
                    .ok_or_else(|| LibjpegError("no memory manager".into()))?;
                for (slot, &(cols, rows, _, _, access)) in out_arrays.iter_mut().zip(&out_dims) {
                    // Not pre-zeroed: the converter writes every block the compressor reads.
                    *slot = request(&mut cinfo.common, 1, 0, cols, rows, access);
                }
            }
        }

        // SAFETY: headers read; returns one virtual array per component, or errors (unwinds).
        let src_arrays = unsafe { ffi::jpeg_read_coefficients(src.cinfo()) };
        if let Some(w) = src.first_warning().filter(|w| !w.harmless()) {
            return Err(LibjpegError(w.text));
        }
        if src_arrays.is_null() {
            return Err(LibjpegError("no coefficients".into()));
        }

        let mut src_planes = Vec::with_capacity(count);
        for ci in 0..count {
            let comp = src.component(ci);
            let (h, v) = (comp.h_samp_factor.max(1), comp.v_samp_factor.max(1));
            let (w, hgt) = (comp.width_in_blocks, comp.height_in_blocks);
            let cols = w.div_ceil(h as c_uint) * h as c_uint;
            let rows = hgt.div_ceil(v as c_uint) * v as c_uint;
            let quant = if comp.quant_table.is_null() {
                return Err(LibjpegError(
                    "component without a quantisation table".into(),
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
                    .map_err(|_| LibjpegError("expected three components".into()))?;
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
                    .map_err(|_| LibjpegError("expected three planes".into()))?;
                coding = convert(Planes::Separate {
                    src: src_planes,
                    dst,
                });
                write_arrays = out_arrays;
            }
        }

        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_YCbCr);
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
/// hold exactly `cols` blocks per row and `rows` rows; the slices must not outlive
/// the object and no other reference to the blocks may be used meanwhile.
unsafe fn plane_rows<'a>(
    cinfo: *mut ffi::jpeg_decompress_struct,
    array: *mut ffi::jvirt_barray_control,
    cols: c_uint,
    rows: c_uint,
) -> Result<Vec<&'a mut [Block]>, LibjpegError> {
    if array.is_null() {
        return Err(LibjpegError("missing coefficient array".into()));
    }
    // SAFETY: per the contract above.
    unsafe {
        let common = &mut (*cinfo).common;
        let access = (*common.mem)
            .access_virt_barray
            .ok_or_else(|| LibjpegError("no memory manager".into()))?;
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

// ---------------------------------------------------------------------------
// Pixels

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
}

/// Decodes a gray, YCbCr or RGB JPEG. CMYK/YCCK are refused (the caller has another
/// path for them). Fails when data is missing (a truncated file or segment); other
/// warnings are tolerated, as libjpeg's own tools do.
pub(crate) fn decode(
    input: &[u8],
    max_pixels: u64,
    settings: DecodeSettings,
) -> Result<DecodedPixels, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input);
        src.read_header(max_pixels)?;
        let cinfo = src.cinfo();
        let (layout, color) = match (cinfo.num_components, cinfo.jpeg_color_space) {
            (1, _) => (PixelLayout::Gray, ffi::J_COLOR_SPACE::JCS_GRAYSCALE),
            (3, ffi::J_COLOR_SPACE::JCS_YCbCr | ffi::J_COLOR_SPACE::JCS_RGB) => {
                (PixelLayout::Rgb, ffi::J_COLOR_SPACE::JCS_RGB)
            }
            (n, space) => {
                return Err(LibjpegError(format!(
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
        // SAFETY: header read, output parameters set.
        unsafe { ffi::jpeg_start_decompress(cinfo) };
        let (width, height) = (cinfo.output_width, cinfo.output_height);
        let channels = if layout == PixelLayout::Gray { 1 } else { 3 };
        if cinfo.output_components != channels {
            return Err(LibjpegError("unexpected output component count".into()));
        }
        let stride = width as usize * channels as usize;
        let mut data = vec![0u8; stride * height as usize];
        let mut rows: Vec<*mut u8> = Vec::with_capacity(16);
        while cinfo.output_scanline < height {
            let first = cinfo.output_scanline;
            let count = (height - first).min(16);
            rows.clear();
            rows.extend(
                data[first as usize * stride..]
                    .chunks_exact_mut(stride)
                    .take(count as usize)
                    .map(<[u8]>::as_mut_ptr),
            );
            // SAFETY: `count` row pointers of `stride` bytes each, inside `data`.
            let read = unsafe { ffi::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), count) };
            if read == 0 {
                return Err(LibjpegError("decoder returned no rows".into()));
            }
        }
        // SAFETY: every scanline was read.
        unsafe { ffi::jpeg_finish_decompress(cinfo) };
        if let Some(w) = src.first_warning().filter(Warning::data_missing) {
            return Err(LibjpegError(w.text));
        }
        Ok(DecodedPixels {
            width,
            height,
            layout,
            data,
        })
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
pub(crate) fn encode(
    pixels: &[u8],
    layout: PixelLayout,
    width: u32,
    height: u32,
    quality: u8,
    fast_dct: bool,
) -> Result<Vec<u8>, LibjpegError> {
    let channels = if layout == PixelLayout::Gray { 1 } else { 3 };
    let stride = width as usize * channels;
    if width == 0 || height == 0 || pixels.len() != stride * height as usize {
        return Err(LibjpegError(format!(
            "{} bytes do not make a {width}x{height} image",
            pixels.len()
        )));
    }
    guarded(|| {
        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_RGB);
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
            // SAFETY: `count` rows of `width` × 3 bytes; libjpeg only reads them.
            let written = unsafe {
                ffi::jpeg_write_scanlines(cinfo, rows.as_ptr(), count as ffi::JDIMENSION)
            };
            if written == 0 {
                return Err(LibjpegError("encoder took no rows".into()));
            }
        }
        // SAFETY: every scanline was written.
        unsafe { ffi::jpeg_finish_compress(cinfo) };
        Ok(out.take_output())
    })
}

// ---------------------------------------------------------------------------
// Pixels without leaving YCbCr

/// Decodes a gray or YCbCr JPEG and encodes it again at `quality` (baseline 4:2:0,
/// standard tables, as [`encode`]) without the colour round trip: libjpeg's raw,
/// still-subsampled planes go from the decoder to the encoder one 16-line strip
/// at a time, chroma box-averaged to 4:2:0 where the source has more, gray given
/// neutral chroma. No RGB image, upsampling, colour conversion or full-frame buffer.
///
/// `Ok(None)` when the source is not gray/YCbCr with luma at full resolution and
/// chroma at half or full resolution per axis: the caller decodes to RGB instead.
/// Fails when data is missing, as [`decode`] does.
pub(crate) fn reencode_planes(
    input: &[u8],
    max_pixels: u64,
    quality: u8,
    fast_dct: bool,
) -> Result<Option<Vec<u8>>, LibjpegError> {
    guarded(|| {
        let mut src = Decompress::new(input);
        src.read_header(max_pixels)?;
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

        let mut out = Compress::new(width, height, ffi::J_COLOR_SPACE::JCS_YCbCr);
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
                let mut image: Vec<*mut *mut u8> =
                    ptrs.iter_mut().map(|p| p.as_mut_ptr()).collect();
                // SAFETY: one row-pointer array per component, each with that
                // component's v_samp × 8 rows of at least width_in_blocks × 8 bytes.
                let read = unsafe {
                    ffi::jpeg_read_raw_data(src.cinfo(), image.as_mut_ptr(), lines as c_uint)
                };
                if read == 0 {
                    return Err(LibjpegError("decoder returned no rows".into()));
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
            let image = [y_rows.as_ptr(), c_rows[0].as_ptr(), c_rows[1].as_ptr()];
            // SAFETY: 16 luma and 8 chroma rows of the compressor's padded widths.
            let written = unsafe { ffi::jpeg_write_raw_data(out.cinfo(), image.as_ptr(), 16) };
            if written == 0 {
                return Err(LibjpegError("encoder took no rows".into()));
            }
            out_rows += 16;
        }
        // SAFETY: every strip was written; the decoder may have data left (ignored).
        unsafe { ffi::jpeg_finish_compress(out.cinfo()) };
        if let Some(w) = src.first_warning().filter(Warning::data_missing) {
            return Err(LibjpegError(w.text));
        }
        Ok(Some(out.take_output()))
    })
}
