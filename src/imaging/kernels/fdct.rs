//! Level shift, forward DCT and quantisation of rows of 8×8 sample blocks: libjpeg's `convsamp`
//! (−128), `jpeg_fdct_islow` (jfdctint.c, `CONST_BITS` 13, `PASS1_BITS` 2) and `quantize`
//! (jcdctmgr.c) with `compute_reciprocal` for the divisor 8·q, i.e.
//! `sign(x)·((|x| + d/2) / d)` with d = 8·q.
//!
//! The scalar twin is the C as this crate's reference build compiles it (32-bit `DCTELEM`,
//! 64-bit `JLONG`, 32-bit reciprocals). The SIMD versions use libjpeg-turbo's 16-bit
//! reciprocal/correction/scale form of the same division (what its `jsimd_quantize` does);
//! both are exact divisions over the whole reachable range (|x| ≤ 8192 after the FDCT of 8-bit
//! samples), which `tests` check exhaustively. Every 8-bit input is valid, so there is no
//! out-of-range case: all levels equal libjpeg's C on every input.

use super::{Block, Level, dispatch};

/// Per-table constants of the quantiser (what libjpeg keeps in `fdct->divisors[]`), for a
/// quantisation table in natural order with values 1..=255.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantTable {
    quant: [u16; 64],
    /// 32-bit `compute_reciprocal` of jcdctmgr.c: reciprocal, correction, total shift.
    recip32: [u32; 64],
    corr32: [u32; 64],
    shift32: [u32; 64],
    /// 16-bit form for the SIMD kernels: reciprocal, correction and scale (2^(32-r)).
    pub(crate) recip16: [u16; 64],
    pub(crate) corr16: [u16; 64],
    pub(crate) scale16: [u16; 64],
}

/// `compute_reciprocal` (jcdctmgr.c) for a `word`-bit `DCTELEM` and a divisor > 1:
/// returns (reciprocal, correction, r) with quotient = ((x + correction) · reciprocal) >> r.
fn compute_reciprocal(divisor: u32, word: u32) -> (u64, u64, u32) {
    debug_assert!(divisor > 1 && divisor <= 0xFFFF);
    let b = 31 - divisor.leading_zeros(); // flss(divisor) - 1
    let mut r = word + b;
    let d = u64::from(divisor);
    let mut fq = (1u64 << r) / d;
    let fr = (1u64 << r) % d;
    let mut c = d / 2;
    if fr == 0 {
        // Power of two: fq would need one bit more than the word has.
        fq >>= 1;
        r -= 1;
    } else if fr <= d / 2 {
        c += 1;
    } else {
        fq += 1;
    }
    (fq, c, r)
}

impl QuantTable {
    /// Precomputes the divisors of a quantisation table (natural order, values 1..=255, as
    /// `cinfo->quant_tbl_ptrs[n]->quantval` holds them for baseline 8-bit JPEG).
    ///
    /// Panics if a value is 0 or above 255.
    pub fn new(quant: &[u16; 64]) -> QuantTable {
        let mut t = QuantTable {
            quant: *quant,
            recip32: [0; 64],
            corr32: [0; 64],
            shift32: [0; 64],
            recip16: [0; 64],
            corr16: [0; 64],
            scale16: [0; 64],
        };
        for (i, &q) in quant.iter().enumerate() {
            assert!(
                (1..=255).contains(&q),
                "quantisation value {q} outside 1..=255"
            );
            let d = u32::from(q) << 3;
            let (fq, c, r) = compute_reciprocal(d, 32);
            t.recip32[i] = fq as u32;
            t.corr32[i] = c as u32;
            t.shift32[i] = r;
            let (fq, c, r) = compute_reciprocal(d, 16);
            t.recip16[i] = fq as u16;
            t.corr16[i] = c as u16;
            t.scale16[i] = (1u32 << (32 - r)) as u16;
        }
        t
    }

    /// Quantises one FDCT output (scaled by 8) at natural-order index `i` exactly as libjpeg's
    /// C `quantize` does (the scalar twin's quantiser).
    pub(crate) fn quantize_scalar(&self, i: usize, x: i32) -> i16 {
        let m = |a: i32| {
            ((u64::from(a as u32 + self.corr32[i]) * u64::from(self.recip32[i])) >> self.shift32[i])
                as i32
        };
        (if x < 0 { -m(-x) } else { m(x) }) as i16
    }

    /// The same quotient by the 16-bit reciprocal form the SIMD kernels use (defined for
    /// |x| ≤ 16384, twice the largest FDCT output).
    #[cfg(test)]
    pub(crate) fn quantize_simd_form(&self, i: usize, x: i32) -> i16 {
        let a = (x.unsigned_abs() as u16).wrapping_add(self.corr16[i]);
        let a = (u32::from(a) * u32::from(self.recip16[i])) >> 16;
        // The kernels' second product is a signed 16-bit one.
        assert!(a < 1 << 15 && self.scale16[i] < 1 << 15);
        let a = (a * u32::from(self.scale16[i])) >> 16;
        (if x < 0 { -(a as i32) } else { a as i32 }) as i16
    }
}

/// Forward DCT + quantisation of a row of 8×8 sample blocks: libjpeg's level shift (−128),
/// `jpeg_fdct_islow` (jfdctint.c) and quantisation by divisor 8·q rounded as libjpeg does
/// (`sign(x)·((|x| + d/2) / d)`, d = 8·q, via the reciprocals of jcdctmgr.c).
/// Reads `samples[r*stride + 8*i + c]` for block i, writes `blocks[i]`.
///
/// Equal to libjpeg's C for every input.
///
/// Panics if `stride < 8 * blocks.len()` or `samples` is shorter than
/// `7 * stride + 8 * blocks.len()` (nothing is checked when `blocks` is empty).
pub fn fdct_quantize(samples: &[u8], stride: usize, table: &QuantTable, blocks: &mut [Block]) {
    fdct_quantize_at(Level::get(), samples, stride, table, blocks);
}

/// [`fdct_quantize`] at a given level (capped at what the CPU supports).
pub fn fdct_quantize_at(
    level: Level,
    samples: &[u8],
    stride: usize,
    table: &QuantTable,
    blocks: &mut [Block],
) {
    if blocks.is_empty() {
        return;
    }
    let width = 8 * blocks.len();
    assert!(stride >= width, "stride {stride} < {width}");
    assert!(
        samples.len() >= 7 * stride + width,
        "sample buffer too short"
    );
    dispatch::fdct_quantize(level, samples, stride, table, blocks);
}

/// The scalar twin: `convsamp`, `jpeg_fdct_islow` and `quantize` ported line by line.
pub(crate) mod scalar {
    use super::super::Block;
    use super::super::idct::fix::*;
    use super::QuantTable;

    const CONST_BITS: u32 = 13;
    const PASS1_BITS: u32 = 2;

    fn descale(x: i64, n: u32) -> i64 {
        (x + (1 << (n - 1))) >> n
    }

    pub(crate) fn fdct_quantize(
        samples: &[u8],
        stride: usize,
        table: &QuantTable,
        blocks: &mut [Block],
    ) {
        for (i, block) in blocks.iter_mut().enumerate() {
            let mut ws = [0i32; 64];
            for r in 0..8 {
                for c in 0..8 {
                    ws[8 * r + c] = i32::from(samples[r * stride + 8 * i + c]) - 128;
                }
            }
            fdct_islow(&mut ws);
            for (k, out) in block.iter_mut().enumerate() {
                *out = table.quantize_scalar(k, ws[k]);
            }
        }
    }

    /// `jpeg_fdct_islow`: in-place, output scaled up by 8.
    pub(crate) fn fdct_islow(data: &mut [i32; 64]) {
        // Pass 1: rows, results scaled by 2^PASS1_BITS.
        for r in 0..8 {
            let d = |k: usize| i64::from(data[8 * r + k]);
            let out = one_d(d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7));
            let e = |v: i64| descale(v, CONST_BITS - PASS1_BITS) as i32;
            let row = &mut data[8 * r..8 * r + 8];
            row[0] = (out.0 << PASS1_BITS) as i32;
            row[4] = (out.1 << PASS1_BITS) as i32;
            row[2] = e(out.2);
            row[6] = e(out.3);
            row[7] = e(out.4);
            row[5] = e(out.5);
            row[3] = e(out.6);
            row[1] = e(out.7);
        }
        // Pass 2: columns, removing PASS1_BITS but leaving the overall factor of 8.
        for c in 0..8 {
            let d = |k: usize| i64::from(data[8 * k + c]);
            let out = one_d(d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7));
            let e = |v: i64| descale(v, CONST_BITS + PASS1_BITS) as i32;
            data[c] = descale(out.0, PASS1_BITS) as i32;
            data[32 + c] = descale(out.1, PASS1_BITS) as i32;
            data[16 + c] = e(out.2);
            data[48 + c] = e(out.3);
            data[56 + c] = e(out.4);
            data[40 + c] = e(out.5);
            data[24 + c] = e(out.6);
            data[8 + c] = e(out.7);
        }
    }

    /// The common body of both passes of jfdctint.c before descaling: returns
    /// (tmp10 + tmp11, tmp10 − tmp11, out2, out6, out7, out5, out3, out1).
    #[allow(clippy::too_many_arguments)]
    fn one_d(
        d0: i64,
        d1: i64,
        d2: i64,
        d3: i64,
        d4: i64,
        d5: i64,
        d6: i64,
        d7: i64,
    ) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
        let f = i64::from;
        let (tmp0, tmp7) = (d0 + d7, d0 - d7);
        let (tmp1, tmp6) = (d1 + d6, d1 - d6);
        let (tmp2, tmp5) = (d2 + d5, d2 - d5);
        let (tmp3, tmp4) = (d3 + d4, d3 - d4);
        // Even part per LL&M figure 1.
        let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
        let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
        let z1 = (tmp12 + tmp13) * f(F0_541);
        let out2 = z1 + tmp13 * f(F0_765);
        let out6 = z1 + tmp12 * -f(F1_847);
        // Odd part per figure 8.
        let z1 = tmp4 + tmp7;
        let z2 = tmp5 + tmp6;
        let z3 = tmp4 + tmp6;
        let z4 = tmp5 + tmp7;
        let z5 = (z3 + z4) * f(F1_175);
        let tmp4 = tmp4 * f(F0_298);
        let tmp5 = tmp5 * f(F2_053);
        let tmp6 = tmp6 * f(F3_072);
        let tmp7 = tmp7 * f(F1_501);
        let z1 = z1 * -f(F0_899);
        let z2 = z2 * -f(F2_562);
        let z3 = z3 * -f(F1_961) + z5;
        let z4 = z4 * -f(F0_390) + z5;
        (
            tmp10 + tmp11,
            tmp10 - tmp11,
            out2,
            out6,
            tmp4 + z1 + z3,
            tmp5 + z2 + z4,
            tmp6 + z2 + z3,
            tmp7 + z1 + z4,
        )
    }
}

/// The SIMD body, written once against `simd.rs` (see idct.rs for the scheme). Samples are
/// at most 8 bits, so every 16-bit sum below is in range: pass-1 outputs are within ±4096 and
/// their sums of eight within −32768..=32640.
#[cfg(target_arch = "x86_64")]
macro_rules! fdct_simd {
    ($feat:literal) => {
        use super::super::idct::fix::*;
        use super::super::simd::transpose8x16;

        #[inline]
        #[target_feature(enable = $feat)]
        fn k(lo: i32, hi: i32) -> V {
            pair16(lo as i16, hi as i16)
        }

        /// The four 32-bit odd-part sums of four lanes, from pairs (tmp4,tmp5), (tmp6,tmp7):
        /// out7, out5, out3, out1.
        #[inline]
        #[target_feature(enable = $feat)]
        fn odd(p45: V, p67: V) -> [V; 4] {
            [
                add32(
                    madd(p45, k(ODD[0][0], ODD[0][1])),
                    madd(p67, k(ODD[0][2], ODD[0][3])),
                ),
                add32(
                    madd(p45, k(ODD[1][0], ODD[1][1])),
                    madd(p67, k(ODD[1][2], ODD[1][3])),
                ),
                add32(
                    madd(p45, k(ODD[2][0], ODD[2][1])),
                    madd(p67, k(ODD[2][2], ODD[2][3])),
                ),
                add32(
                    madd(p45, k(ODD[3][0], ODD[3][1])),
                    madd(p67, k(ODD[3][2], ODD[3][3])),
                ),
            ]
        }

        /// `(x + round) >> SHIFT` of 32-bit sums of the low and high halves, packed to 16 bits.
        #[inline]
        #[target_feature(enable = $feat)]
        fn descale<const SHIFT: i32>(lo: V, hi: V, round: V) -> V {
            packs32(
                srai32::<SHIFT>(add32(lo, round)),
                srai32::<SHIFT>(add32(hi, round)),
            )
        }

        /// One pass of jfdctint.c across eight vectors of 16-bit lanes. `FIRST`: pass 1
        /// (outputs 0/4 shifted left by PASS1_BITS, others descaled by 11); otherwise pass 2
        /// (outputs 0/4 descaled by PASS1_BITS, others by 15).
        #[inline]
        #[target_feature(enable = $feat)]
        fn pass<const SHIFT: i32, const FIRST: bool>(d: [V; 8]) -> [V; 8] {
            let round = splat32(1 << (SHIFT - 1));
            let (tmp0, tmp7) = (add16(d[0], d[7]), sub16(d[0], d[7]));
            let (tmp1, tmp6) = (add16(d[1], d[6]), sub16(d[1], d[6]));
            let (tmp2, tmp5) = (add16(d[2], d[5]), sub16(d[2], d[5]));
            let (tmp3, tmp4) = (add16(d[3], d[4]), sub16(d[3], d[4]));
            let (tmp10, tmp13) = (add16(tmp0, tmp3), sub16(tmp0, tmp3));
            let (tmp11, tmp12) = (add16(tmp1, tmp2), sub16(tmp1, tmp2));
            let (out0, out4) = if FIRST {
                (
                    slli16::<2>(add16(tmp10, tmp11)),
                    slli16::<2>(sub16(tmp10, tmp11)),
                )
            } else {
                let two = splat16(2);
                (
                    srai16::<2>(add16(add16(tmp10, tmp11), two)),
                    srai16::<2>(add16(sub16(tmp10, tmp11), two)),
                )
            };
            let (e_lo, e_hi) = (unpacklo16(tmp12, tmp13), unpackhi16(tmp12, tmp13));
            let k2 = k(F0_541, F0_541 + F0_765);
            let k6 = k(F0_541 - F1_847, F0_541);
            let out2 = descale::<SHIFT>(madd(e_lo, k2), madd(e_hi, k2), round);
            let out6 = descale::<SHIFT>(madd(e_lo, k6), madd(e_hi, k6), round);
            let lo = odd(unpacklo16(tmp4, tmp5), unpacklo16(tmp6, tmp7));
            let hi = odd(unpackhi16(tmp4, tmp5), unpackhi16(tmp6, tmp7));
            [
                out0,
                descale::<SHIFT>(lo[3], hi[3], round),
                out2,
                descale::<SHIFT>(lo[2], hi[2], round),
                out4,
                descale::<SHIFT>(lo[1], hi[1], round),
                out6,
                descale::<SHIFT>(lo[0], hi[0], round),
            ]
        }

        /// libjpeg-turbo's 16-bit reciprocal quantisation of one row of coefficients. The
        /// second product is signed: both factors are below 2^15 here, and the unsigned form
        /// makes LLVM widen it to 32 bits.
        #[inline]
        #[target_feature(enable = $feat)]
        fn quantize(x: V, recip: V, corr: V, scale: V) -> V {
            let a = mulhi16(mulhi_u16(add16(abs16(x), corr), recip), scale);
            copysign16(a, x)
        }

        /// Level-shifted sample rows (16-bit, one row per vector) to quantised coefficient rows.
        #[inline]
        #[target_feature(enable = $feat)]
        fn fdct_rows(rows: [V; 8], t: &Tables) -> [V; 8] {
            let cols = transpose8x16!(rows);
            let ws = pass::<11, true>(cols);
            let ws = transpose8x16!(ws);
            let c = pass::<15, false>(ws);
            [
                quantize(c[0], t.recip[0], t.corr[0], t.scale[0]),
                quantize(c[1], t.recip[1], t.corr[1], t.scale[1]),
                quantize(c[2], t.recip[2], t.corr[2], t.scale[2]),
                quantize(c[3], t.recip[3], t.corr[3], t.scale[3]),
                quantize(c[4], t.recip[4], t.corr[4], t.scale[4]),
                quantize(c[5], t.recip[5], t.corr[5], t.scale[5]),
                quantize(c[6], t.recip[6], t.corr[6], t.scale[6]),
                quantize(c[7], t.recip[7], t.corr[7], t.scale[7]),
            ]
        }

        /// The quantiser constants as vectors, one per coefficient row.
        struct Tables {
            recip: [V; 8],
            corr: [V; 8],
            scale: [V; 8],
        }
    };
}

/// SSE2: one block per iteration.
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2 {
    use super::super::simd::sse2::*;
    use super::super::{Block, arr, arr_mut};
    use super::QuantTable;
    use safe_unaligned_simd::x86_64 as mem;

    fdct_simd!("sse2");

    #[target_feature(enable = "sse2")]
    pub(crate) fn fdct_quantize(
        samples: &[u8],
        stride: usize,
        table: &QuantTable,
        blocks: &mut [Block],
    ) {
        let mut t = Tables {
            recip: [zero(); 8],
            corr: [zero(); 8],
            scale: [zero(); 8],
        };
        for r in 0..8 {
            t.recip[r] = mem::_mm_loadu_si128(arr::<u16, 8>(&table.recip16, 8 * r));
            t.corr[r] = mem::_mm_loadu_si128(arr::<u16, 8>(&table.corr16, 8 * r));
            t.scale[r] = mem::_mm_loadu_si128(arr::<u16, 8>(&table.scale16, 8 * r));
        }
        let center = splat16(128);
        for (i, block) in blocks.iter_mut().enumerate() {
            let mut rows = [zero(); 8];
            for (r, v) in rows.iter_mut().enumerate() {
                let s = mem::_mm_loadu_si64(arr::<u8, 8>(samples, r * stride + 8 * i));
                *v = sub16(unpacklo8(s, zero()), center);
            }
            let out = fdct_rows(rows, &t);
            for (r, v) in out.into_iter().enumerate() {
                mem::_mm_storeu_si128(arr_mut::<i16, 8>(block, 8 * r), v);
            }
        }
    }
}

/// AVX2: two blocks per iteration, block `2i` in the low 128-bit lane and `2i+1` in the high.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::simd::avx2::*;
    use super::super::{Block, arr, arr_mut};
    use super::QuantTable;
    use safe_unaligned_simd::x86_64 as mem;

    fdct_simd!("avx2");

    #[target_feature(enable = "avx2")]
    pub(crate) fn fdct_quantize(
        samples: &[u8],
        stride: usize,
        table: &QuantTable,
        blocks: &mut [Block],
    ) {
        let mut t = Tables {
            recip: [zero(); 8],
            corr: [zero(); 8],
            scale: [zero(); 8],
        };
        for r in 0..8 {
            let row = arr::<u16, 8>(&table.recip16, 8 * r);
            t.recip[r] = mem::_mm256_loadu2_m128i(row, row);
            let row = arr::<u16, 8>(&table.corr16, 8 * r);
            t.corr[r] = mem::_mm256_loadu2_m128i(row, row);
            let row = arr::<u16, 8>(&table.scale16, 8 * r);
            t.scale[r] = mem::_mm256_loadu2_m128i(row, row);
        }
        let n = blocks.len();
        let mut pairs = blocks.chunks_exact_mut(2);
        for (i, pair) in (&mut pairs).enumerate() {
            let (a, b) = pair.split_at_mut(1);
            pair_at(samples, 16 * i, stride, &t, &mut a[0], &mut b[0]);
        }
        if let [last] = pairs.into_remainder() {
            // Odd count: run the last block beside a copy of itself in a scratch buffer.
            let mut tmp = [0u8; 8 * 16];
            for r in 0..8 {
                let src = &samples[r * stride + 8 * (n - 1)..][..8];
                tmp[16 * r..16 * r + 8].copy_from_slice(src);
                tmp[16 * r + 8..16 * r + 16].copy_from_slice(src);
            }
            let mut spare = [0i16; 64];
            pair_at(&tmp, 0, 16, &t, last, &mut spare);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn pair_at(
        samples: &[u8],
        col: usize,
        stride: usize,
        t: &Tables,
        a: &mut Block,
        b: &mut Block,
    ) {
        let center = splat16(128);
        let mut rows = [zero(); 8];
        for (r, v) in rows.iter_mut().enumerate() {
            let s = mem::_mm_loadu_si128(arr::<u8, 16>(samples, r * stride + col));
            *v = sub16(_mm256_cvtepu8_epi16(s), center);
        }
        let out = fdct_rows(rows, t);
        for (r, v) in out.into_iter().enumerate() {
            mem::_mm_storeu_si128(arr_mut::<i16, 8>(a, 8 * r), _mm256_castsi256_si128(v));
            mem::_mm_storeu_si128(
                arr_mut::<i16, 8>(b, 8 * r),
                _mm256_extracti128_si256::<1>(v),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::QuantTable;

    /// Both reciprocal forms equal the rounded division libjpeg specifies, for every table
    /// value and every |x| up to twice the largest FDCT output.
    #[test]
    fn reciprocals_are_exact_divisions() {
        for q in 1..=255u16 {
            let t = QuantTable::new(&[q; 64]);
            let d = 8 * i32::from(q);
            for x in -16384..=16384i32 {
                let want = (x.signum() * ((x.abs() + d / 2) / d)) as i16;
                assert_eq!(t.quantize_scalar(0, x), want, "q {q}, x {x}");
                assert_eq!(t.quantize_simd_form(0, x), want, "q {q}, x {x}");
            }
        }
    }

    #[test]
    #[should_panic]
    fn zero_quant_value_is_rejected() {
        QuantTable::new(&[0; 64]);
    }
}
