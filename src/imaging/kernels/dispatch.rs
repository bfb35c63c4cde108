//! Run-time selection of the implementation level, and the only place where a
//! `#[target_feature]` kernel is called: every such call is preceded by a check that the CPU
//! has the feature (`std::arch::is_x86_feature_detected!`, cached once per process).
//!
//! This file reproduces no libjpeg function; it plays the role of libjpeg-turbo's `jsimd_*`
//! capability checks (`simd/x86_64/jsimd.c`), including its environment override.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use super::Block;
use super::fdct::QuantTable;

/// Which implementation runs: detected once per process, the best of avx2 > sse2 > scalar.
///
/// The environment variable `PIXBATCH_KERNELS=scalar|sse2|avx2` lowers the choice (never above
/// what the CPU has), so tests and benchmarks can run every level on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, a line-by-line port of libjpeg's C.
    Scalar,
    /// 128-bit SSE2 kernels.
    Sse2,
    /// 256-bit AVX2 kernels.
    Avx2,
}

impl Level {
    /// The level the plain kernel functions use: [`Level::detected`], lowered by
    /// `PIXBATCH_KERNELS` if that names a lower level. Computed once per process.
    pub fn get() -> Level {
        #[cfg(test)]
        if let Some(level) = TEST_LEVEL.get() {
            return level.min(Level::detected());
        }
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = Level::detected();
            match std::env::var("PIXBATCH_KERNELS") {
                Ok(name) => Level::parse(&name).map_or(best, |wanted| wanted.min(best)),
                Err(_) => best,
            }
        })
    }

    /// The best level this CPU supports, ignoring the environment. Computed once per process.
    pub fn detected() -> Level {
        static DETECTED: OnceLock<Level> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Every level this CPU supports, lowest first (always starts with [`Level::Scalar`]).
    #[cfg(test)]
    pub fn available() -> Vec<Level> {
        [Level::Scalar, Level::Sse2, Level::Avx2]
            .into_iter()
            .filter(|&l| l <= Level::detected())
            .collect()
    }

    /// The level's name as accepted by `PIXBATCH_KERNELS`: `"scalar"`, `"sse2"` or `"avx2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Sse2 => "sse2",
            Level::Avx2 => "avx2",
        }
    }

    /// Parses a name as returned by [`Level::as_str`] (surrounding blanks and case ignored).
    pub fn parse(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Level::Scalar),
            "sse2" => Some(Level::Sse2),
            "avx2" => Some(Level::Avx2),
            _ => None,
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The level [`Level::get`] answers on this thread, for tests that run a whole
    /// pipeline at every level ([`Level::run_each`]).
    static TEST_LEVEL: std::cell::Cell<Option<Level>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
impl Level {
    /// Runs `f` once per level this CPU has, with [`Level::get`] answering that level
    /// on this thread.
    pub fn run_each(mut f: impl FnMut(Level)) {
        for level in Level::available() {
            TEST_LEVEL.set(Some(level));
            f(level);
        }
        TEST_LEVEL.set(None);
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    // Avx2 also promises the bit-manipulation extensions every AVX2 CPU of note has
    // (x86-64-v3), for [`vectorized`].
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("lzcnt")
    {
        Level::Avx2
    } else if std::arch::is_x86_feature_detected!("sse2") {
        Level::Sse2
    } else {
        Level::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Scalar
}

/// Runs `f` with the widest vector extension this CPU has enabled for what the
/// compiler inlines into it: plain Rust loops (the fast path's requantisation, the
/// Huffman coder's bit scans) that LLVM vectorises by itself, compiled once more
/// for AVX2 and BMI. The same code, so the same results at every level; below
/// [`Level::Avx2`] it runs as compiled for the baseline.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if Level::get() == Level::Avx2 {
        // SAFETY: `Level::get` is `Avx2` only if `detect` found AVX2, BMI1, BMI2 and
        // LZCNT on this CPU.
        return unsafe { avx2_bmi(f) };
    }
    f()
}

/// Asks the CPU to bring `block` (two cache lines) into cache without waiting for it,
/// for loops whose next blocks the hardware prefetcher does not see coming soon enough.
/// A plain load would stall the loop until the data came.
#[inline(always)]
pub fn prefetch_block(block: &Block) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = block.as_ptr().cast::<i8>();
        // SAFETY: SSE, which has the prefetch instruction, is part of x86-64's baseline,
        // and a prefetch neither reads into the program nor faults, at any address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt")]
fn avx2_bmi<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Defines `dispatch::$name(level, args..)`, which runs `$module::{avx2, sse2, scalar}::$name`
/// for `level` capped at what the CPU has.
macro_rules! kernel {
    ($name:ident, $module:ident, ($($arg:ident: $ty:ty),*)) => {
        pub(crate) fn $name(level: Level, $($arg: $ty),*) {
            match level.min(Level::detected()) {
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => {
                    // SAFETY: the level is capped at `Level::detected()`, which is `Avx2` only
                    // if `is_x86_feature_detected!("avx2")` returned true on this CPU.
                    unsafe { super::$module::avx2::$name($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                Level::Sse2 => {
                    // SAFETY: the level is capped at `Level::detected()`, which is `Sse2` or
                    // higher only if `is_x86_feature_detected!("sse2")` returned true.
                    unsafe { super::$module::sse2::$name($($arg),*) }
                }
                _ => super::$module::scalar::$name($($arg),*),
            }
        }
    };
}

kernel!(idct_islow, idct, (blocks: &[Block], quant: &[u16; 64], out: &mut [u8], stride: usize));
kernel!(fdct_quantize, fdct, (samples: &[u8], stride: usize, table: &QuantTable, blocks: &mut [Block]));
kernel!(rgb_to_ycbcr, color, (rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]));
kernel!(ycbcr_to_rgb, color, (y: &[u8], cb: &[u8], cr: &[u8], chroma_step: usize, rgb: &mut [u8]));
kernel!(downsample_h2v2, sample, (row0: &[u8], row1: &[u8], out: &mut [u8]));
kernel!(downsample_h2v1, sample, (row: &[u8], out: &mut [u8]));
