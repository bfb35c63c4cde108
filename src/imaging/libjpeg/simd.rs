//! Whether the linked libjpeg has its SIMD kernels.
//!
//! `mozjpeg-sys` assembles libjpeg-turbo's x86 SIMD kernels only when `nasm` is on
//! PATH at build time, and otherwise compiles `jsimd_none.c` without a word. Both
//! define the same `jsimd_can_*` probes; the real ones check the CPU at run time, the
//! stubs always say no. Asking one of them is the only way to know which build this is.

use std::ffi::c_int;

unsafe extern "C" {
    /// libjpeg-turbo's probe for its SIMD accurate IDCT: 1 when the kernel exists
    /// and this CPU runs it (SSE2 or AVX2 on x86-64, NEON on ARM), 0 otherwise.
    fn jsimd_can_idct_islow() -> c_int;
}

/// True when libjpeg runs SIMD kernels on this machine (built with nasm, CPU able).
pub(crate) fn libjpeg_has_simd() -> bool {
    // SAFETY: a C function without arguments that reads libjpeg's own CPU flags
    // (initialised once, under its own guard) and returns an int.
    unsafe { jsimd_can_idct_islow() != 0 }
}
