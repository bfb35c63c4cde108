//! The error guards: libjpeg objects owned by Rust values, errors and limits turned
//! into unwinds that [`guarded`] catches.
//!
//! libjpeg's default `error_exit` calls `exit()`. Ours formats the message and
//! unwinds with [`resume_unwind`] (no panic hook, nothing printed) through the C
//! frames, which `mozjpeg-sys` compiles with `-fexceptions` and whose callbacks it
//! declares `extern "C-unwind"` for exactly this (its `unwinding` feature). The same
//! unwind leaves libjpeg from two more callbacks: `emit_message`, at the first warning
//! about damaged data (a decoder that goes on would only make up pixels), and the
//! progress monitor, which libjpeg calls once per row of blocks in every pass and which
//! stops a decode past its scan limit or an object past its CPU-time [`Budget`].
//! libjpeg's error contract is that `error_exit` never returns and the object is then
//! destroyed: every one of these unwinds ends in a guard's `Drop` running
//! `jpeg_destroy_*`.

#[cfg(test)]
use std::ffi::c_uint;
use std::ffi::{c_int, c_ulong};
use std::marker::PhantomData;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Duration;

use mozjpeg_sys as ffi;

#[cfg(test)]
use super::HuffTables;
use super::clock::thread_cpu_time;

/// Why a libjpeg call did not produce its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LibjpegError {
    /// libjpeg refused the data or the request (its message, or ours).
    Fatal(String),
    /// libjpeg warned about damaged data (its message): the pixels it would return
    /// there are made up.
    Corrupt(String),
    /// The decoder reached a scan past the limit.
    TooManyScans {
        /// The scan libjpeg was starting.
        scans: u32,
        /// The configured maximum.
        limit: u32,
    },
    /// The thread spent more CPU time than the [`Budget`] allows.
    OverBudget(Duration),
}

impl LibjpegError {
    /// A [`LibjpegError::Fatal`] with `text`.
    pub(crate) fn fatal(text: impl Into<String>) -> Self {
        LibjpegError::Fatal(text.into())
    }

    /// Whether another decoder could still succeed: only for a plain refusal. Damaged
    /// data and spent limits stay so whoever looks at the bytes.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, LibjpegError::Fatal(_))
    }
}

impl std::fmt::Display for LibjpegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LibjpegError::Fatal(text) | LibjpegError::Corrupt(text) => f.write_str(text),
            LibjpegError::TooManyScans { scans, limit } => {
                write!(f, "too many scans ({scans} > {limit})")
            }
            LibjpegError::OverBudget(allowed) => write!(
                f,
                "transform over its time budget ({:.2} s of CPU time)",
                allowed.as_secs_f64()
            ),
        }
    }
}

/// What one transform may spend. The deadline is on the CPU clock of the thread that
/// made the budget: a transform runs start to end on one thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Largest `width × height`, checked after libjpeg reads the frame header.
    pub max_pixels: u64,
    /// Most scans a decoder may start (`input_scan_number`).
    pub max_scans: u32,
    /// When CPU work must stop; `None`: no time limit.
    pub deadline: Option<Deadline>,
}

/// A point on this thread's CPU clock, and the allowance it was made from (for the message).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Duration,
    allowed: Duration,
}

impl Budget {
    /// No limit at all (for tests and measurements).
    pub(crate) const UNLIMITED: Budget = Budget {
        max_pixels: u64::MAX,
        max_scans: u32::MAX,
        deadline: None,
    };

    /// A budget of `allowed` CPU time on this thread, from now.
    pub(crate) fn starting_now(max_pixels: u64, max_scans: u32, allowed: Duration) -> Self {
        Budget {
            max_pixels,
            max_scans,
            deadline: Some(Deadline {
                at: thread_cpu_time().saturating_add(allowed),
                allowed,
            }),
        }
    }

    /// Fails once this thread's CPU time is past the deadline.
    pub(crate) fn check_time(&self) -> Result<(), LibjpegError> {
        match self.deadline {
            Some(d) if thread_cpu_time() > d.at => Err(LibjpegError::OverBudget(d.allowed)),
            _ => Ok(()),
        }
    }

    /// Fails when `width × height` is over the pixel limit.
    fn check_pixels(&self, width: u32, height: u32) -> Result<(), LibjpegError> {
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(LibjpegError::fatal(format!(
                "{width}x{height} is over the limit of {} pixels",
                self.max_pixels
            )));
        }
        Ok(())
    }
}

/// The one warning that is not fatal: stray bytes between segments, which many
/// cameras write. The image data is whole, but the file itself is not clean, so it
/// is re-encoded, never kept as it is (see [`Decompress::clean`]).
fn harmless(code: c_int) -> bool {
    code == ffi::JWRN_EXTRANEOUS_DATA
}

/// libjpeg's error manager; `mgr` must stay the first field (libjpeg holds a pointer
/// to it, the callbacks cast that pointer back).
#[repr(C)]
struct ErrorMgr {
    mgr: ffi::jpeg_error_mgr,
}

impl ErrorMgr {
    fn new_raw() -> *mut ErrorMgr {
        let mut err = Box::new(ErrorMgr {
            // SAFETY: a C struct of integers, pointers and `Option<fn>`s; all-zero is valid.
            mgr: unsafe { mem::zeroed() },
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
    resume_unwind(Box::new(LibjpegError::Fatal(text)));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return; // trace messages
    }
    let err = cinfo.err.cast::<ErrorMgr>();
    // SAFETY: `cinfo.err` points at the `mgr` field (first, `repr(C)`) of our ErrorMgr.
    let code = unsafe {
        (*err).mgr.num_warnings += 1;
        (*err).mgr.msg_code
    };
    if !harmless(code) {
        resume_unwind(Box::new(LibjpegError::Corrupt(message(cinfo))));
    }
}

extern "C-unwind" fn output_message(_cinfo: &mut ffi::jpeg_common_struct) {}

/// libjpeg's progress manager plus the limits it enforces; `mgr` must stay first.
#[repr(C)]
struct Progress {
    mgr: ffi::jpeg_progress_mgr,
    budget: Budget,
    /// The object, for a decompressor's scan number; null for a compressor.
    decompress: *const ffi::jpeg_decompress_struct,
}

impl Progress {
    fn new_raw(budget: &Budget, decompress: *const ffi::jpeg_decompress_struct) -> *mut Progress {
        Box::into_raw(Box::new(Progress {
            mgr: ffi::jpeg_progress_mgr {
                progress_monitor: Some(progress_monitor),
                pass_counter: 0,
                pass_limit: 0,
                completed_passes: 0,
                total_passes: 0,
            },
            budget: *budget,
            decompress,
        }))
    }
}

/// Called by libjpeg before each row of blocks it reads or writes, in every pass
/// (a progressive file's scans included): stops the object when it is over a limit.
extern "C-unwind" fn progress_monitor(cinfo: &mut ffi::jpeg_common_struct) {
    // SAFETY: `cinfo.progress` is the `mgr` field (first, `repr(C)`) of our Progress,
    // which outlives the object; `decompress` is the object itself (read, not borrowed:
    // `cinfo` borrows only its first field).
    let (budget, scans) = unsafe {
        let progress = &*cinfo.progress.cast::<Progress>();
        let scans = if progress.decompress.is_null() {
            0
        } else {
            (*progress.decompress).input_scan_number
        };
        (progress.budget, u32::try_from(scans).unwrap_or(0))
    };
    if scans > budget.max_scans {
        resume_unwind(Box::new(LibjpegError::TooManyScans {
            scans,
            limit: budget.max_scans,
        }));
    }
    if let Err(e) = budget.check_time() {
        resume_unwind(Box::new(e));
    }
}

/// Runs `f`, turning a libjpeg error, warning or limit unwinding out of it into an
/// `Err`. A panic of our own code is passed on as it is.
pub(super) fn guarded<T>(f: impl FnOnce() -> Result<T, LibjpegError>) -> Result<T, LibjpegError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<LibjpegError>() {
            Ok(error) => Err(*error),
            Err(other) => resume_unwind(other),
        },
    }
}

/// Owns a `jpeg_decompress_struct` reading from `input`; destroyed on drop.
pub(super) struct Decompress<'a> {
    pub(super) cinfo: *mut ffi::jpeg_decompress_struct,
    err: *mut ErrorMgr,
    progress: *mut Progress,
    budget: Budget,
    _input: PhantomData<&'a [u8]>,
}

impl<'a> Decompress<'a> {
    /// A decompressor on `input` under `budget`.
    pub(super) fn new(input: &'a [u8], budget: &Budget) -> Self {
        let cinfo: *mut ffi::jpeg_decompress_struct =
            // SAFETY: as for the error manager: all-zero is a valid initial value.
            Box::into_raw(Box::new(unsafe { mem::zeroed() }));
        let this = Decompress {
            err: ErrorMgr::new_raw(),
            cinfo,
            progress: Progress::new_raw(budget, cinfo),
            budget: *budget,
            _input: PhantomData,
        };
        // SAFETY: all pointers are fresh and valid; libjpeg keeps `err` and `progress`
        // (freed after the object in Drop) and reads `input`, borrowed for 'a. The
        // progress manager is set after create, which clears it.
        unsafe {
            (*this.cinfo).common.err = &raw mut (*this.err).mgr;
            ffi::jpeg_create_decompress(this.cinfo);
            (*this.cinfo).common.progress = &raw mut (*this.progress).mgr;
            let len = c_ulong::try_from(input.len()).unwrap_or(c_ulong::MAX);
            ffi::jpeg_mem_src(&mut *this.cinfo, input.as_ptr(), len);
        }
        this
    }

    pub(super) fn cinfo(&mut self) -> &mut ffi::jpeg_decompress_struct {
        // SAFETY: valid from `new` until drop.
        unsafe { &mut *self.cinfo }
    }

    /// Whether libjpeg has had nothing to say about the data so far. (Any warning but
    /// [`harmless`] ones has already ended the call.)
    pub(super) fn clean(&self) -> bool {
        // SAFETY: valid from `new` until drop.
        unsafe { (*self.err).mgr.num_warnings == 0 }
    }

    /// Reads the headers up to the first scan and checks the size against the budget.
    pub(super) fn read_header(&mut self) -> Result<(), LibjpegError> {
        let budget = self.budget;
        let cinfo = self.cinfo();
        // SAFETY: a created object with a source; errors unwind to our caller's guard.
        unsafe { ffi::jpeg_read_header(cinfo, 1) };
        budget.check_pixels(cinfo.image_width, cinfo.image_height)
    }

    /// Component `index` (< `num_components`, asserted) after `jpeg_read_header`.
    pub(super) fn component(&self, index: usize) -> &ffi::jpeg_component_info {
        // SAFETY: `comp_info` holds `num_components` entries after `jpeg_read_header`.
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
            drop(Box::from_raw(self.progress));
            drop(Box::from_raw(self.err));
        }
    }
}

/// libjpeg destination writing into a growing `Vec`; `mgr` must stay first.
#[cfg(test)]
#[repr(C)]
struct VecDest {
    mgr: ffi::jpeg_destination_mgr,
    buf: Vec<u8>,
}

#[cfg(test)]
fn vec_dest(cinfo: &mut ffi::jpeg_compress_struct) -> &mut VecDest {
    // SAFETY: `dest` is the `mgr` field (first, `repr(C)`) of the VecDest set in `Compress::new`.
    unsafe { &mut *cinfo.dest.cast::<VecDest>() }
}

#[cfg(test)]
extern "C-unwind" fn init_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    let dest = vec_dest(cinfo);
    dest.mgr.next_output_byte = dest.buf.as_mut_ptr();
    dest.mgr.free_in_buffer = dest.buf.len();
}

#[cfg(test)]
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

#[cfg(test)]
extern "C-unwind" fn term_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    let dest = vec_dest(cinfo);
    let written = dest.buf.len() - dest.mgr.free_in_buffer;
    dest.buf.truncate(written);
    dest.mgr.free_in_buffer = 0;
}

/// Owns a `jpeg_compress_struct` writing into a `Vec`; destroyed on drop.
#[cfg(test)]
pub(super) struct Compress {
    cinfo: *mut ffi::jpeg_compress_struct,
    err: *mut ErrorMgr,
    progress: *mut Progress,
    dest: *mut VecDest,
}

#[cfg(test)]
impl Compress {
    /// A compressor set up for 3-component input (`in_color_space`) with
    /// libjpeg-turbo's defaults (`JCP_FASTEST`), YCbCr 4:2:0 output and a JFIF
    /// header, held to `budget`'s time limit.
    pub(super) fn new(
        width: u32,
        height: u32,
        in_color_space: ffi::J_COLOR_SPACE,
        budget: &Budget,
    ) -> Self {
        // A q50 4:2:0 photo is about 0.1–0.2 bytes per pixel; the buffer grows if needed.
        let initial = (u64::from(width) * u64::from(height) / 6).clamp(16 * 1024, 64 << 20);
        let this = Compress {
            err: ErrorMgr::new_raw(),
            // SAFETY: all-zero is a valid initial value for both C structs.
            cinfo: Box::into_raw(Box::new(unsafe { mem::zeroed() })),
            progress: Progress::new_raw(budget, std::ptr::null()),
            dest: Box::into_raw(Box::new(VecDest {
                mgr: unsafe { mem::zeroed() },
                buf: vec![0; usize::try_from(initial).unwrap_or(16 * 1024)],
            })),
        };
        // SAFETY: fresh valid pointers, freed after the object in Drop; the progress
        // manager is set after create, which clears it.
        unsafe {
            let cinfo = &mut *this.cinfo;
            cinfo.common.err = &raw mut (*this.err).mgr;
            ffi::jpeg_create_compress(cinfo);
            cinfo.common.progress = &raw mut (*this.progress).mgr;
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
            assert_eq!(cinfo.num_components, 3, "YCbCr has three components");
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

    pub(super) fn cinfo(&mut self) -> &mut ffi::jpeg_compress_struct {
        // SAFETY: valid from `new` until drop.
        unsafe { &mut *self.cinfo }
    }

    /// Sets tables 0 (luma) and 1 (chroma) from natural-order values (1..=255).
    #[cfg(test)]
    pub(super) fn set_tables(&mut self, tables: &[[u16; 64]; 2]) {
        for (which, table) in (0..).zip(tables) {
            let basic: [c_uint; 64] = table.map(c_uint::from);
            // SAFETY: a 64-entry table; scale 100 keeps the values, forced to 1..=255.
            unsafe { ffi::jpeg_add_quant_table(self.cinfo(), which, basic.as_ptr(), 100, 1) };
        }
    }

    /// Sets DC and AC tables 0 (luma) and 1 (chroma), which `jpeg_set_defaults`
    /// assigned to Y and to Cb, Cr.
    #[cfg(test)]
    pub(super) fn set_huffman(&mut self, tables: &HuffTables) {
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
    pub(super) fn take_output(&mut self) -> Vec<u8> {
        // SAFETY: valid from `new` until drop.
        unsafe { mem::take(&mut (*self.dest).buf) }
    }
}

#[cfg(test)]
impl Drop for Compress {
    fn drop(&mut self) {
        // SAFETY: created in `new`; destroy frees libjpeg's memory, then our boxes.
        unsafe {
            ffi::jpeg_destroy_compress(&mut *self.cinfo);
            drop(Box::from_raw(self.cinfo));
            drop(Box::from_raw(self.dest));
            drop(Box::from_raw(self.progress));
            drop(Box::from_raw(self.err));
        }
    }
}
