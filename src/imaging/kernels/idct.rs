//! Dequantisation, inverse DCT and range limiting of rows of 8×8 blocks: libjpeg's
//! `jpeg_idct_islow` (jidctint.c, 8-bit samples: `CONST_BITS` 13, `PASS1_BITS` 2) with the
//! output range limit of `prepare_range_limit_table` (jdmaster.c).
//!
//! The C computes in 64-bit `JLONG`s and never saturates; to make every level agree on every
//! input, three values are saturated:
//!
//! 1. each dequantised coefficient `coef · quant` to `i16` (−32768..=32767);
//! 2. each value handed from the column pass to the row pass (the C's `workspace`) to `i16`;
//! 3. each output sample to 0..=255. The C's table wraps modulo 1024 instead once the
//!    descaled value leaves −512..=511 (the sample leaves −384..=639), as corrupt data can
//!    make it do; libjpeg-turbo's SIMD kernels saturate there too.
//!
//! For coefficients that quantise the DCT of 8-bit samples with a table of values ≤ 255, 1 and
//! 2 never bind (|coef · quant| ≤ about 1152 and the inter-pass values stay within about
//! ±9900, against ±32767), and 3 differs from the C only if the quantisation errors of a block
//! add up to push a sample more than 384 outside 0..=255.
//!
//! With those inputs bounded, every final sum before a descaling shift fits in `i32`
//! (|sum| ≤ 61213 · 32768 + 2^17 + 128 · 2^18 < 2^31), which is what lets the SIMD versions use
//! 16-bit `madd` with 32-bit accumulation and stay exact.

use super::{Block, Level, dispatch};

/// libjpeg's 13-bit fixed-point constants of jidctint.c / jfdctint.c (`FIX(x)` = round(x·2^13)).
pub(crate) mod fix {
    pub(crate) const F0_298: i32 = 2446;
    pub(crate) const F0_390: i32 = 3196;
    pub(crate) const F0_541: i32 = 4433;
    pub(crate) const F0_765: i32 = 6270;
    pub(crate) const F0_899: i32 = 7373;
    pub(crate) const F1_175: i32 = 9633;
    pub(crate) const F1_501: i32 = 12299;
    pub(crate) const F1_847: i32 = 15137;
    pub(crate) const F1_961: i32 = 16069;
    pub(crate) const F2_053: i32 = 16819;
    pub(crate) const F2_562: i32 = 20995;
    pub(crate) const F3_072: i32 = 25172;

    /// The odd part of the 8-point LL&M (I)DCT with its multiplications folded together:
    /// `ODD[k]` are the coefficients of (i0, i1, i2, i3) in output k of the C's final
    /// `tmp0..tmp3` (IDCT: i = z7, z5, z3, z1; FDCT: i = tmp4, tmp5, tmp6, tmp7). Expanding
    /// the C's expressions gives exactly these integer combinations, so the sums are equal.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) const ODD: [[i32; 4]; 4] = [
        [
            F0_298 - F0_899 - F1_961 + F1_175,
            F1_175,
            F1_175 - F1_961,
            F1_175 - F0_899,
        ],
        [
            F1_175,
            F2_053 - F2_562 + F1_175 - F0_390,
            F1_175 - F2_562,
            F1_175 - F0_390,
        ],
        [
            F1_175 - F1_961,
            F1_175 - F2_562,
            F3_072 - F2_562 + F1_175 - F1_961,
            F1_175,
        ],
        [
            F1_175 - F0_899,
            F1_175 - F0_390,
            F1_175,
            F1_501 - F0_899 + F1_175 - F0_390,
        ],
    ];
}

/// Inverse DCT of a row of blocks: libjpeg's `jpeg_idct_islow` (jidctint.c), dequantisation and
/// range limiting included. Block i's 8×8 samples go to `out[r*stride + 8*i + c]`.
///
/// Equal to libjpeg's C whenever every `coef · quant` and every value between the two passes
/// fits in `i16` and every sample lies within −384..=639 before range limiting (the C wraps
/// there, this saturates; any 8-bit JPEG data meets the first two, see the module notes).
/// Every level gives the same result for every input.
///
/// Panics if `stride < 8 * blocks.len()` or `out` is shorter than
/// `7 * stride + 8 * blocks.len()` (nothing is checked when `blocks` is empty).
pub fn idct_islow(blocks: &[Block], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    idct_islow_at(Level::get(), blocks, quant, out, stride);
}

/// [`idct_islow`] at a given level (capped at what the CPU supports).
pub fn idct_islow_at(
    level: Level,
    blocks: &[Block],
    quant: &[u16; 64],
    out: &mut [u8],
    stride: usize,
) {
    if blocks.is_empty() {
        return;
    }
    let width = 8 * blocks.len();
    assert!(stride >= width, "stride {stride} < {width}");
    assert!(out.len() >= 7 * stride + width, "output buffer too short");
    dispatch::idct_islow(level, blocks, quant, out, stride);
}

/// The scalar twin: a line-by-line port of `jpeg_idct_islow`, plus the saturations above.
pub(crate) mod scalar {
    use super::super::Block;
    use super::fix::*;

    const CONST_BITS: u32 = 13;
    const PASS1_BITS: u32 = 2;

    fn descale(x: i64, n: u32) -> i64 {
        (x + (1 << (n - 1))) >> n
    }

    fn sat16(x: i64) -> i32 {
        x.clamp(-32768, 32767) as i32
    }

    /// `DEQUANTIZE` (jidctint.c), saturated to `i16`.
    fn dequantize(coef: i16, quant: u16) -> i64 {
        i64::from(sat16(i64::from(coef) * i64::from(quant)))
    }

    /// `range_limit[x & RANGE_MASK]` of the IDCT (jdmaster.c), saturating outside −512..=511.
    fn range_limit(x: i64) -> u8 {
        (x + 128).clamp(0, 255) as u8
    }

    pub(crate) fn idct_islow(blocks: &[Block], quant: &[u16; 64], out: &mut [u8], stride: usize) {
        for (i, block) in blocks.iter().enumerate() {
            idct_block(block, quant, &mut out[8 * i..], stride);
        }
    }

    /// One block; `out[r*stride + c]` receives sample (r, c).
    pub(crate) fn idct_block(coef: &Block, quant: &[u16; 64], out: &mut [u8], stride: usize) {
        let (f0541, f0765, f1847) = (i64::from(F0_541), i64::from(F0_765), i64::from(F1_847));
        let mut ws = [0i32; 64];

        // Pass 1: columns from input, into the work array scaled by 2^PASS1_BITS.
        for c in 0..8 {
            let z = |k: usize| dequantize(coef[8 * k + c], quant[8 * k + c]);
            if (1..8).all(|k| coef[8 * k + c] == 0) {
                let dcval = sat16(z(0) << PASS1_BITS);
                for k in 0..8 {
                    ws[8 * k + c] = dcval;
                }
                continue;
            }
            // Even part.
            let (z2, z3) = (z(2), z(6));
            let z1 = (z2 + z3) * f0541;
            let tmp2 = z1 + z3 * -f1847;
            let tmp3 = z1 + z2 * f0765;
            let (z2, z3) = (z(0), z(4));
            let tmp0 = (z2 + z3) << CONST_BITS;
            let tmp1 = (z2 - z3) << CONST_BITS;
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            // Odd part.
            let (tmp0, tmp1, tmp2, tmp3) = odd(z(7), z(5), z(3), z(1));
            let put = |v: i64| sat16(descale(v, CONST_BITS - PASS1_BITS));
            ws[c] = put(tmp10 + tmp3);
            ws[56 + c] = put(tmp10 - tmp3);
            ws[8 + c] = put(tmp11 + tmp2);
            ws[48 + c] = put(tmp11 - tmp2);
            ws[16 + c] = put(tmp12 + tmp1);
            ws[40 + c] = put(tmp12 - tmp1);
            ws[24 + c] = put(tmp13 + tmp0);
            ws[32 + c] = put(tmp13 - tmp0);
        }

        // Pass 2: rows from the work array; descale by 8 and undo PASS1_BITS.
        for r in 0..8 {
            let w = |k: usize| i64::from(ws[8 * r + k]);
            let row = &mut out[r * stride..r * stride + 8];
            if (1..8).all(|k| ws[8 * r + k] == 0) {
                row.fill(range_limit(descale(w(0), PASS1_BITS + 3)));
                continue;
            }
            let (z2, z3) = (w(2), w(6));
            let z1 = (z2 + z3) * f0541;
            let tmp2 = z1 + z3 * -f1847;
            let tmp3 = z1 + z2 * f0765;
            let tmp0 = (w(0) + w(4)) << CONST_BITS;
            let tmp1 = (w(0) - w(4)) << CONST_BITS;
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            let (tmp0, tmp1, tmp2, tmp3) = odd(w(7), w(5), w(3), w(1));
            let put = |v: i64| range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
            row[0] = put(tmp10 + tmp3);
            row[7] = put(tmp10 - tmp3);
            row[1] = put(tmp11 + tmp2);
            row[6] = put(tmp11 - tmp2);
            row[2] = put(tmp12 + tmp1);
            row[5] = put(tmp12 - tmp1);
            row[3] = put(tmp13 + tmp0);
            row[4] = put(tmp13 - tmp0);
        }
    }

    /// The odd part exactly as written in jidctint.c ("per figure 8"); inputs are
    /// (tmp0, tmp1, tmp2, tmp3) = (z7, z5, z3, z1), outputs the final tmp0..tmp3.
    fn odd(tmp0: i64, tmp1: i64, tmp2: i64, tmp3: i64) -> (i64, i64, i64, i64) {
        let z1 = tmp0 + tmp3;
        let z2 = tmp1 + tmp2;
        let z3 = tmp0 + tmp2;
        let z4 = tmp1 + tmp3;
        let z5 = (z3 + z4) * i64::from(F1_175);
        let tmp0 = tmp0 * i64::from(F0_298);
        let tmp1 = tmp1 * i64::from(F2_053);
        let tmp2 = tmp2 * i64::from(F3_072);
        let tmp3 = tmp3 * i64::from(F1_501);
        let z1 = z1 * -i64::from(F0_899);
        let z2 = z2 * -i64::from(F2_562);
        let z3 = z3 * -i64::from(F1_961) + z5;
        let z4 = z4 * -i64::from(F0_390) + z5;
        (
            tmp0 + z1 + z3,
            tmp1 + z2 + z4,
            tmp2 + z2 + z3,
            tmp3 + z1 + z4,
        )
    }
}

/// The SIMD body, written once against the vocabulary of `simd.rs` and instantiated for
/// SSE2 (one block per 128-bit vector) and AVX2 (two blocks, one per 128-bit lane).
#[cfg(target_arch = "x86_64")]
macro_rules! idct_simd {
    ($feat:literal) => {
        use super::super::idct::fix::*;
        use super::super::simd::transpose8x16;

        /// Saturating `coef · quant` of one row; `qhigh` is all ones where `quant` ≥ 32768,
        /// whose signed high half `mulhi16` misses by `coef`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn dequant(c: V, q: V, qhigh: V) -> V {
            let lo = mullo16(c, q);
            let hi = add16(mulhi16(c, q), and(c, qhigh));
            packs32(unpacklo16(lo, hi), unpackhi16(lo, hi))
        }

        /// Dequantised rows of a block (pair): the plain 16-bit products when none of them
        /// overflows, which is the usual case and needs no shuffles, else `dequant`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn dequant_rows(raw: &[V; 8], q: &[V; 8], qhigh: &[V; 8]) -> [V; 8] {
            let mut rows = [zero(); 8];
            let mut overflow = zero();
            for (r, row) in rows.iter_mut().enumerate() {
                let lo = mullo16(raw[r], q[r]);
                let hi = add16(mulhi16(raw[r], q[r]), and(raw[r], qhigh[r]));
                overflow = or(overflow, xor(hi, srai16::<15>(lo)));
                *row = lo;
            }
            if !all_zero(overflow) {
                for (r, row) in rows.iter_mut().enumerate() {
                    *row = dequant(raw[r], q[r], qhigh[r]);
                }
            }
            rows
        }

        /// `madd` multiplier for an `ODD`/even coefficient pair.
        #[inline]
        #[target_feature(enable = $feat)]
        fn k(lo: i32, hi: i32) -> V {
            pair16(lo as i16, hi as i16)
        }

        /// One 1-D pass over four columns given as interleaved pairs (r0,r4), (r2,r6), (r7,r5),
        /// (r3,r1); returns the eight 32-bit outputs `(sum + round) >> SHIFT`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn half<const SHIFT: i32>(p04: V, p26: V, p75: V, p31: V, round: V) -> [V; 8] {
            let one = 1 << 13;
            let tmp0 = add32(madd(p04, k(one, one)), round);
            let tmp1 = add32(madd(p04, k(one, -one)), round);
            let tmp2 = madd(p26, k(F0_541, F0_541 - F1_847));
            let tmp3 = madd(p26, k(F0_541 + F0_765, F0_541));
            let (tmp10, tmp13) = (add32(tmp0, tmp3), sub32(tmp0, tmp3));
            let (tmp11, tmp12) = (add32(tmp1, tmp2), sub32(tmp1, tmp2));
            let o0 = add32(
                madd(p75, k(ODD[0][0], ODD[0][1])),
                madd(p31, k(ODD[0][2], ODD[0][3])),
            );
            let o1 = add32(
                madd(p75, k(ODD[1][0], ODD[1][1])),
                madd(p31, k(ODD[1][2], ODD[1][3])),
            );
            let o2 = add32(
                madd(p75, k(ODD[2][0], ODD[2][1])),
                madd(p31, k(ODD[2][2], ODD[2][3])),
            );
            let o3 = add32(
                madd(p75, k(ODD[3][0], ODD[3][1])),
                madd(p31, k(ODD[3][2], ODD[3][3])),
            );
            [
                srai32::<SHIFT>(add32(tmp10, o3)),
                srai32::<SHIFT>(add32(tmp11, o2)),
                srai32::<SHIFT>(add32(tmp12, o1)),
                srai32::<SHIFT>(add32(tmp13, o0)),
                srai32::<SHIFT>(sub32(tmp13, o0)),
                srai32::<SHIFT>(sub32(tmp12, o1)),
                srai32::<SHIFT>(sub32(tmp11, o2)),
                srai32::<SHIFT>(sub32(tmp10, o3)),
            ]
        }

        /// One 1-D pass across eight vectors of 16-bit lanes, results saturated to `i16`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn pass<const SHIFT: i32>(r: [V; 8], round: V) -> [V; 8] {
            let lo = half::<SHIFT>(
                unpacklo16(r[0], r[4]),
                unpacklo16(r[2], r[6]),
                unpacklo16(r[7], r[5]),
                unpacklo16(r[3], r[1]),
                round,
            );
            let hi = half::<SHIFT>(
                unpackhi16(r[0], r[4]),
                unpackhi16(r[2], r[6]),
                unpackhi16(r[7], r[5]),
                unpackhi16(r[3], r[1]),
                round,
            );
            [
                packs32(lo[0], hi[0]),
                packs32(lo[1], hi[1]),
                packs32(lo[2], hi[2]),
                packs32(lo[3], hi[3]),
                packs32(lo[4], hi[4]),
                packs32(lo[5], hi[5]),
                packs32(lo[6], hi[6]),
                packs32(lo[7], hi[7]),
            ]
        }

        /// The whole IDCT of dequantised rows; returns output rows (2j, 2j+1) as the two
        /// 8-byte halves of vector j (per 128-bit lane).
        #[inline]
        #[target_feature(enable = $feat)]
        fn idct_rows(rows: [V; 8]) -> [V; 4] {
            // Column pass: workspace = DESCALE(x, CONST_BITS - PASS1_BITS), saturated.
            let ws = pass::<11>(rows, splat32(1 << 10));
            let ws = transpose8x16!(ws);
            // Row pass: DESCALE(x, CONST_BITS + PASS1_BITS + 3) + CENTERJSAMPLE; column x of
            // the output in vector x, 16-bit lanes indexed by output row.
            let x = pass::<18>(ws, splat32((1 << 17) + (128 << 18)));
            let a = packus16(x[0], x[1]);
            let b = packus16(x[2], x[3]);
            let c = packus16(x[4], x[5]);
            let d = packus16(x[6], x[7]);
            // 8×8 byte transpose: pairs (x0,x1) per row, then quads, then rows.
            let a = unpacklo8(a, unpackhi64(a, a));
            let b = unpacklo8(b, unpackhi64(b, b));
            let c = unpacklo8(c, unpackhi64(c, c));
            let d = unpacklo8(d, unpackhi64(d, d));
            let (e0, e1) = (unpacklo16(a, b), unpackhi16(a, b));
            let (f0, f1) = (unpacklo16(c, d), unpackhi16(c, d));
            [
                unpacklo32(e0, f0),
                unpackhi32(e0, f0),
                unpacklo32(e1, f1),
                unpackhi32(e1, f1),
            ]
        }

        /// The value of every sample of a block whose AC coefficients are all zero: what the
        /// general path computes in that case.
        fn dc_only_value(dc: i16, q: u16) -> u8 {
            let z = (i32::from(dc) * i32::from(q)).clamp(-32768, 32767);
            let w = (z * 4).clamp(-32768, 32767);
            (((w + 16) >> 5) + 128).clamp(0, 255) as u8
        }
    };
}

/// SSE2: one block per iteration.
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2 {
    use super::super::simd::sse2::*;
    use super::super::{Block, arr, arr_mut};
    use safe_unaligned_simd::x86_64 as mem;

    idct_simd!("sse2");

    #[target_feature(enable = "sse2")]
    pub(crate) fn idct_islow(blocks: &[Block], quant: &[u16; 64], out: &mut [u8], stride: usize) {
        let mut q = [zero(); 8];
        let mut qhigh = [zero(); 8];
        for r in 0..8 {
            q[r] = mem::_mm_loadu_si128(arr::<u16, 8>(quant, 8 * r));
            qhigh[r] = srai16::<15>(q[r]);
        }
        let dc_mask = _mm_insert_epi16::<0>(_mm_set1_epi16(-1), 0);
        for (i, block) in blocks.iter().enumerate() {
            let mut raw = [zero(); 8];
            for (r, v) in raw.iter_mut().enumerate() {
                *v = mem::_mm_loadu_si128(arr::<i16, 8>(block, 8 * r));
            }
            let ac = or(
                or(or(and(raw[0], dc_mask), raw[1]), or(raw[2], raw[3])),
                or(or(raw[4], raw[5]), or(raw[6], raw[7])),
            );
            let col = 8 * i;
            if all_zero(ac) {
                let v = dc_only_value(block[0], quant[0]);
                for r in 0..8 {
                    out[r * stride + col..r * stride + col + 8].fill(v);
                }
                continue;
            }
            let res = idct_rows(dequant_rows(&raw, &q, &qhigh));
            for (j, v) in res.into_iter().enumerate() {
                mem::_mm_storeu_si64(arr_mut::<u8, 8>(out, 2 * j * stride + col), v);
                let v1 = unpackhi64(v, v);
                mem::_mm_storeu_si64(arr_mut::<u8, 8>(out, (2 * j + 1) * stride + col), v1);
            }
        }
    }
}

/// AVX2: two blocks per iteration, block `2i` in the low 128-bit lane and `2i+1` in the high.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::simd::avx2::*;
    use super::super::{Block, arr, arr_mut};
    use safe_unaligned_simd::x86_64 as mem;

    idct_simd!("avx2");

    #[target_feature(enable = "avx2")]
    pub(crate) fn idct_islow(blocks: &[Block], quant: &[u16; 64], out: &mut [u8], stride: usize) {
        let mut q = [zero(); 8];
        let mut qhigh = [zero(); 8];
        for r in 0..8 {
            let row = arr::<u16, 8>(quant, 8 * r);
            q[r] = mem::_mm256_loadu2_m128i(row, row);
            qhigh[r] = srai16::<15>(q[r]);
        }
        let dc_mask = _mm256_set_epi64x(-1, -1 << 16, -1, -1 << 16);
        let mut pairs = blocks.chunks_exact(2);
        let mut col = 0;
        for pair in &mut pairs {
            pair_at(
                &pair[0], &pair[1], &q, &qhigh, dc_mask, quant, out, col, stride,
            );
            col += 16;
        }
        if let [last] = pairs.remainder() {
            // Odd count: pair the last block with an empty one in a scratch buffer.
            let mut tmp = [0u8; 8 * 16];
            pair_at(last, &[0; 64], &q, &qhigh, dc_mask, quant, &mut tmp, 0, 16);
            for r in 0..8 {
                out[r * stride + col..r * stride + col + 8]
                    .copy_from_slice(&tmp[16 * r..16 * r + 8]);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pair_at(
        a: &Block,
        b: &Block,
        q: &[V; 8],
        qhigh: &[V; 8],
        dc_mask: V,
        quant: &[u16; 64],
        out: &mut [u8],
        col: usize,
        stride: usize,
    ) {
        let mut raw = [zero(); 8];
        for (r, v) in raw.iter_mut().enumerate() {
            *v = mem::_mm256_loadu2_m128i(arr::<i16, 8>(b, 8 * r), arr::<i16, 8>(a, 8 * r));
        }
        let ac = or(
            or(or(and(raw[0], dc_mask), raw[1]), or(raw[2], raw[3])),
            or(or(raw[4], raw[5]), or(raw[6], raw[7])),
        );
        if all_zero(ac) {
            let (va, vb) = (dc_only_value(a[0], quant[0]), dc_only_value(b[0], quant[0]));
            for r in 0..8 {
                let row = &mut out[r * stride + col..r * stride + col + 16];
                row[..8].fill(va);
                row[8..].fill(vb);
            }
            return;
        }
        let res = idct_rows(dequant_rows(&raw, q, qhigh));
        for (j, v) in res.into_iter().enumerate() {
            // [a row 2j, a row 2j+1 | b row 2j, b row 2j+1] -> [a 2j, b 2j | a 2j+1, b 2j+1]
            let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(v);
            let r0 = 2 * j * stride + col;
            mem::_mm_storeu_si128(arr_mut::<u8, 16>(out, r0), _mm256_castsi256_si128(v));
            let r1 = r0 + stride;
            mem::_mm_storeu_si128(arr_mut::<u8, 16>(out, r1), _mm256_extracti128_si256::<1>(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fix::*;

    /// The folded odd-part coefficients reproduce the C's odd part, and the largest sum of
    /// coefficient magnitudes keeps every pre-shift sum of 16-bit inputs inside `i32`.
    #[test]
    fn folded_coefficients_and_i32_bound() {
        let c_odd = |t: [i64; 4]| {
            let (t0, t1, t2, t3) = (t[0], t[1], t[2], t[3]);
            let z5 = (t0 + t1 + t2 + t3) * i64::from(F1_175);
            let z1 = (t0 + t3) * -i64::from(F0_899);
            let z2 = (t1 + t2) * -i64::from(F2_562);
            let z3 = (t0 + t2) * -i64::from(F1_961) + z5;
            let z4 = (t1 + t3) * -i64::from(F0_390) + z5;
            [
                t0 * i64::from(F0_298) + z1 + z3,
                t1 * i64::from(F2_053) + z2 + z4,
                t2 * i64::from(F3_072) + z2 + z3,
                t3 * i64::from(F1_501) + z1 + z4,
            ]
        };
        for i in 0..4 {
            let mut unit = [0i64; 4];
            unit[i] = 1;
            let got = c_odd(unit);
            for j in 0..4 {
                assert_eq!(got[j], i64::from(ODD[j][i]));
            }
        }
        let even = i64::from(2 * (1 << 13) + (F0_541 + F0_765) + F0_541);
        let odd = ODD
            .iter()
            .map(|r| r.iter().map(|&k| i64::from(k).abs()).sum::<i64>())
            .max()
            .unwrap();
        let worst = (even + odd) * 32768 + (1 << 17) + (128 << 18);
        assert!(worst < i64::from(i32::MAX), "{worst}");
    }
}
