//! Pixel kernels of a baseline 8-bit JPEG codec, bit-exact with libjpeg(-turbo)'s C code:
//!
//! * [`idct_islow`]: dequantisation + inverse DCT + range limiting (`jpeg_idct_islow`, jidctint.c);
//! * [`fdct_quantize`]: level shift + forward DCT + quantisation (`jpeg_fdct_islow`, jfdctint.c,
//!   and `quantize`, jcdctmgr.c);
//! * [`rgb_to_ycbcr`] / [`ycbcr_to_rgb`]: colour conversion (`rgb_ycc_convert`, jccolor.c;
//!   `ycc_rgb_convert`, jdcolor.c, and the merged upsampler of jdmerge.c);
//! * [`downsample_h2v2`] / [`downsample_h2v1`]: chroma downsampling (jcsample.c).
//!
//! Each kernel has a scalar twin (a port of the C) and SSE2/AVX2 versions that equal it bit
//! for bit on every input; the level is chosen at run time ([`Level::get`]) and every kernel
//! also exists as `xxx_at(level, ..)` to run a given level.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod color;
mod dispatch;
mod fdct;
mod idct;
mod sample;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;

pub use color::{rgb_to_ycbcr, ycbcr_to_rgb};
#[cfg(test)]
pub use color::{rgb_to_ycbcr_at, ycbcr_to_rgb_at};
pub use dispatch::{Level, prefetch_block, vectorized};
#[cfg(test)]
pub use fdct::fdct_quantize_at;
pub use fdct::{QuantTable, fdct_quantize};
pub use idct::idct_islow;
#[cfg(test)]
pub use idct::idct_islow_at;
pub use sample::{downsample_h2v1, downsample_h2v2};
#[cfg(test)]
pub use sample::{downsample_h2v1_at, downsample_h2v2_at};

/// 8×8 quantised DCT coefficients in natural (row-major) order, as libjpeg stores them.
pub type Block = [i16; 64];

/// `&s[at..at + N]` as an array reference (panics if out of bounds).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn arr<T, const N: usize>(s: &[T], at: usize) -> &[T; N] {
    s[at..at + N].try_into().unwrap()
}

/// `&mut s[at..at + N]` as an array reference (panics if out of bounds).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn arr_mut<T, const N: usize>(s: &mut [T], at: usize) -> &mut [T; N] {
    (&mut s[at..at + N]).try_into().unwrap()
}
