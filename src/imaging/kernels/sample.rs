//! Chroma downsampling by 2 horizontally (and 2 vertically): libjpeg's `h2v1_downsample` and
//! `h2v2_downsample` (jcsample.c), whose alternating bias rounds half the outputs up and half
//! down. The caller does libjpeg's `expand_right_edge` (replicating the last column) when the
//! input width is odd. All levels equal the C on every input.

use super::{Level, dispatch};

/// 2×2 box downsampling of two rows into one: libjpeg's `h2v2_downsample` (jcsample.c:
/// `(a+b+c+d+bias)>>2`, bias 1,2,1,2,…). `out.len()` samples are written; the input rows hold
/// at least `2·out.len()` samples (panics otherwise). Equal to libjpeg's C for every input.
pub fn downsample_h2v2(row0: &[u8], row1: &[u8], out: &mut [u8]) {
    downsample_h2v2_at(Level::get(), row0, row1, out);
}

/// [`downsample_h2v2`] at a given level (capped at what the CPU supports).
pub fn downsample_h2v2_at(level: Level, row0: &[u8], row1: &[u8], out: &mut [u8]) {
    let n = out.len();
    assert!(
        row0.len() >= 2 * n && row1.len() >= 2 * n,
        "input rows shorter than 2 * out.len()"
    );
    dispatch::downsample_h2v2(level, &row0[..2 * n], &row1[..2 * n], out);
}

/// 2×1 downsampling: libjpeg's `h2v1_downsample` (`(a+b+bias)>>1`, bias 0,1,0,1,…).
/// `out.len()` samples are written; `row` holds at least `2·out.len()` samples (panics
/// otherwise). Equal to libjpeg's C for every input.
pub fn downsample_h2v1(row: &[u8], out: &mut [u8]) {
    downsample_h2v1_at(Level::get(), row, out);
}

/// [`downsample_h2v1`] at a given level (capped at what the CPU supports).
pub fn downsample_h2v1_at(level: Level, row: &[u8], out: &mut [u8]) {
    let n = out.len();
    assert!(row.len() >= 2 * n, "input row shorter than 2 * out.len()");
    dispatch::downsample_h2v1(level, &row[..2 * n], out);
}

/// The scalar twins, as in jcsample.c. Also finish the SIMD versions' tails; `first` is the
/// index of `out[0]` in the whole row, which fixes the bias phase.
pub(crate) mod scalar {
    pub(crate) fn downsample_h2v2(row0: &[u8], row1: &[u8], out: &mut [u8]) {
        h2v2_from(row0, row1, out, 0);
    }

    pub(crate) fn downsample_h2v1(row: &[u8], out: &mut [u8]) {
        h2v1_from(row, out, 0);
    }

    pub(crate) fn h2v2_from(row0: &[u8], row1: &[u8], out: &mut [u8], first: usize) {
        let mut bias = 1 + (first as u32 & 1); // 1, 2, 1, 2, ...
        for (i, o) in out.iter_mut().enumerate() {
            let s = u32::from(row0[2 * i]) + u32::from(row0[2 * i + 1]);
            let s = s + u32::from(row1[2 * i]) + u32::from(row1[2 * i + 1]);
            *o = ((s + bias) >> 2) as u8;
            bias ^= 3;
        }
    }

    pub(crate) fn h2v1_from(row: &[u8], out: &mut [u8], first: usize) {
        let mut bias = first as u32 & 1; // 0, 1, 0, 1, ...
        for (i, o) in out.iter_mut().enumerate() {
            *o = ((u32::from(row[2 * i]) + u32::from(row[2 * i + 1]) + bias) >> 1) as u8;
            bias ^= 1;
        }
    }
}

/// SSE2: 16 outputs per iteration.
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2 {
    use super::super::simd::sse2::*;
    use super::super::{arr, arr_mut};
    use super::scalar::{h2v1_from, h2v2_from};
    use safe_unaligned_simd::x86_64 as mem;

    /// Sums of adjacent byte pairs as 16-bit lanes.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn pairs(v: V) -> V {
        add16(and(v, splat16(0xFF)), srli16::<8>(v))
    }

    #[target_feature(enable = "sse2")]
    pub(crate) fn downsample_h2v2(row0: &[u8], row1: &[u8], out: &mut [u8]) {
        let n = out.len() / 16 * 16;
        let bias = pair16(1, 2);
        for i in (0..n).step_by(16) {
            let a0 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row0, 2 * i)));
            let a1 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row0, 2 * i + 16)));
            let b0 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row1, 2 * i)));
            let b1 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row1, 2 * i + 16)));
            let lo = srli16::<2>(add16(add16(a0, b0), bias));
            let hi = srli16::<2>(add16(add16(a1, b1), bias));
            mem::_mm_storeu_si128(arr_mut::<u8, 16>(out, i), packus16(lo, hi));
        }
        h2v2_from(&row0[2 * n..], &row1[2 * n..], &mut out[n..], n);
    }

    #[target_feature(enable = "sse2")]
    pub(crate) fn downsample_h2v1(row: &[u8], out: &mut [u8]) {
        let n = out.len() / 16 * 16;
        let bias = pair16(0, 1);
        for i in (0..n).step_by(16) {
            let a0 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row, 2 * i)));
            let a1 = pairs(mem::_mm_loadu_si128(arr::<u8, 16>(row, 2 * i + 16)));
            let lo = srli16::<1>(add16(a0, bias));
            let hi = srli16::<1>(add16(a1, bias));
            mem::_mm_storeu_si128(arr_mut::<u8, 16>(out, i), packus16(lo, hi));
        }
        h2v1_from(&row[2 * n..], &mut out[n..], n);
    }
}

/// AVX2: 32 outputs per iteration.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::simd::avx2::*;
    use super::super::{arr, arr_mut};
    use super::scalar::{h2v1_from, h2v2_from};
    use safe_unaligned_simd::x86_64 as mem;

    /// Sums of adjacent byte pairs as 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pairs(v: V) -> V {
        add16(and(v, splat16(0xFF)), srli16::<8>(v))
    }

    /// Packs two vectors of 16 results to 32 bytes in order (packus works per 128-bit lane).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack_ordered(lo: V, hi: V) -> V {
        _mm256_permute4x64_epi64::<0b11_01_10_00>(packus16(lo, hi))
    }

    #[target_feature(enable = "avx2")]
    pub(crate) fn downsample_h2v2(row0: &[u8], row1: &[u8], out: &mut [u8]) {
        let n = out.len() / 32 * 32;
        let bias = pair16(1, 2);
        for i in (0..n).step_by(32) {
            let a0 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row0, 2 * i)));
            let a1 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row0, 2 * i + 32)));
            let b0 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row1, 2 * i)));
            let b1 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row1, 2 * i + 32)));
            let lo = srli16::<2>(add16(add16(a0, b0), bias));
            let hi = srli16::<2>(add16(add16(a1, b1), bias));
            mem::_mm256_storeu_si256(arr_mut::<u8, 32>(out, i), pack_ordered(lo, hi));
        }
        h2v2_from(&row0[2 * n..], &row1[2 * n..], &mut out[n..], n);
    }

    #[target_feature(enable = "avx2")]
    pub(crate) fn downsample_h2v1(row: &[u8], out: &mut [u8]) {
        let n = out.len() / 32 * 32;
        let bias = pair16(0, 1);
        for i in (0..n).step_by(32) {
            let a0 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row, 2 * i)));
            let a1 = pairs(mem::_mm256_loadu_si256(arr::<u8, 32>(row, 2 * i + 32)));
            let lo = srli16::<1>(add16(a0, bias));
            let hi = srli16::<1>(add16(a1, bias));
            mem::_mm256_storeu_si256(arr_mut::<u8, 32>(out, i), pack_ordered(lo, hi));
        }
        h2v1_from(&row[2 * n..], &mut out[n..], n);
    }
}
