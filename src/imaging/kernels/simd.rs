//! A small vocabulary of x86 vector operations with the same names for SSE2 (`__m128i`) and
//! AVX2 (`__m256i`), so that each kernel's arithmetic is written once (as a macro body) and
//! instantiated for both widths. On AVX2 every operation works within each 128-bit lane, so a
//! 256-bit vector is two independent copies of the SSE2 computation.
//!
//! Nothing here reproduces a libjpeg function by itself; these are building blocks.

/// SSE2 versions of the vocabulary (`V = __m128i`).
pub(crate) mod sse2 {
    #[allow(unused_imports)]
    pub(crate) use core::arch::x86_64::*;

    /// The vector type of this instruction set.
    pub(crate) type V = __m128i;

    macro_rules! binops {
        ($($name:ident => $intr:ident),* $(,)?) => {$(
            #[inline]
            #[target_feature(enable = "sse2")]
            pub(crate) fn $name(a: V, b: V) -> V {
                $intr(a, b)
            }
        )*};
    }
    binops! {
        madd => _mm_madd_epi16, mullo16 => _mm_mullo_epi16, mulhi_u16 => _mm_mulhi_epu16, mulhi16 => _mm_mulhi_epi16,
        add16 => _mm_add_epi16, sub16 => _mm_sub_epi16, add32 => _mm_add_epi32, sub32 => _mm_sub_epi32,
        packs32 => _mm_packs_epi32, packus16 => _mm_packus_epi16,
        unpacklo8 => _mm_unpacklo_epi8, unpackhi8 => _mm_unpackhi_epi8,
        unpacklo16 => _mm_unpacklo_epi16, unpackhi16 => _mm_unpackhi_epi16,
        unpacklo32 => _mm_unpacklo_epi32, unpackhi32 => _mm_unpackhi_epi32,
        unpacklo64 => _mm_unpacklo_epi64, unpackhi64 => _mm_unpackhi_epi64,
        and => _mm_and_si128, or => _mm_or_si128, xor => _mm_xor_si128,
    }

    /// Arithmetic right shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn srai16<const N: i32>(a: V) -> V {
        _mm_srai_epi16::<N>(a)
    }
    /// Logical right shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn srli16<const N: i32>(a: V) -> V {
        _mm_srli_epi16::<N>(a)
    }
    /// Left shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn slli16<const N: i32>(a: V) -> V {
        _mm_slli_epi16::<N>(a)
    }
    /// Arithmetic right shift of 32-bit lanes.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn srai32<const N: i32>(a: V) -> V {
        _mm_srai_epi32::<N>(a)
    }
    /// Every 16-bit lane set to `a`.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn splat16(a: i16) -> V {
        _mm_set1_epi16(a)
    }
    /// Every 32-bit lane set to `a`.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn splat32(a: i32) -> V {
        _mm_set1_epi32(a)
    }
    /// Every 32-bit lane holds the 16-bit pair (`lo`, `hi`): the multiplier of a `madd` whose
    /// other operand interleaves two vectors with `unpacklo16`/`unpackhi16`.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn pair16(lo: i16, hi: i16) -> V {
        _mm_set1_epi32((i32::from(hi) << 16) | i32::from(lo as u16))
    }
    /// All lanes zero.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn zero() -> V {
        _mm_setzero_si128()
    }
    /// |a| of 16-bit lanes (−32768 stays −32768, i.e. 32768 unsigned).
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn abs16(a: V) -> V {
        let sign = _mm_srai_epi16::<15>(a);
        _mm_sub_epi16(_mm_xor_si128(a, sign), sign)
    }
    /// `a` negated in the lanes where `s` is negative (`a` ≥ 0 or zero where `s` is zero).
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn copysign16(a: V, s: V) -> V {
        let sign = _mm_srai_epi16::<15>(s);
        _mm_sub_epi16(_mm_xor_si128(a, sign), sign)
    }
    /// Whether every bit of `a` is zero.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(crate) fn all_zero(a: V) -> bool {
        _mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) == 0xFFFF
    }
}

/// AVX2 versions of the vocabulary (`V = __m256i`), lane-wise like the SSE2 ones.
pub(crate) mod avx2 {
    #[allow(unused_imports)]
    pub(crate) use core::arch::x86_64::*;

    /// The vector type of this instruction set.
    pub(crate) type V = __m256i;

    macro_rules! binops {
        ($($name:ident => $intr:ident),* $(,)?) => {$(
            #[inline]
            #[target_feature(enable = "avx2")]
            pub(crate) fn $name(a: V, b: V) -> V {
                $intr(a, b)
            }
        )*};
    }
    binops! {
        madd => _mm256_madd_epi16, mullo16 => _mm256_mullo_epi16, mulhi_u16 => _mm256_mulhi_epu16, mulhi16 => _mm256_mulhi_epi16,
        add16 => _mm256_add_epi16, sub16 => _mm256_sub_epi16, add32 => _mm256_add_epi32, sub32 => _mm256_sub_epi32,
        packs32 => _mm256_packs_epi32, packus16 => _mm256_packus_epi16,
        unpacklo8 => _mm256_unpacklo_epi8, unpackhi8 => _mm256_unpackhi_epi8,
        unpacklo16 => _mm256_unpacklo_epi16, unpackhi16 => _mm256_unpackhi_epi16,
        unpacklo32 => _mm256_unpacklo_epi32, unpackhi32 => _mm256_unpackhi_epi32,
        unpacklo64 => _mm256_unpacklo_epi64, unpackhi64 => _mm256_unpackhi_epi64,
        and => _mm256_and_si256, or => _mm256_or_si256, xor => _mm256_xor_si256,
    }

    /// Arithmetic right shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn srai16<const N: i32>(a: V) -> V {
        _mm256_srai_epi16::<N>(a)
    }
    /// Logical right shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn srli16<const N: i32>(a: V) -> V {
        _mm256_srli_epi16::<N>(a)
    }
    /// Left shift of 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn slli16<const N: i32>(a: V) -> V {
        _mm256_slli_epi16::<N>(a)
    }
    /// Arithmetic right shift of 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn srai32<const N: i32>(a: V) -> V {
        _mm256_srai_epi32::<N>(a)
    }
    /// Every 16-bit lane set to `a`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn splat16(a: i16) -> V {
        _mm256_set1_epi16(a)
    }
    /// Every 32-bit lane set to `a`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn splat32(a: i32) -> V {
        _mm256_set1_epi32(a)
    }
    /// Every 32-bit lane holds the 16-bit pair (`lo`, `hi`), see the SSE2 twin.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn pair16(lo: i16, hi: i16) -> V {
        _mm256_set1_epi32((i32::from(hi) << 16) | i32::from(lo as u16))
    }
    /// All lanes zero.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn zero() -> V {
        _mm256_setzero_si256()
    }
    /// |a| of 16-bit lanes (−32768 stays −32768, i.e. 32768 unsigned).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn abs16(a: V) -> V {
        _mm256_abs_epi16(a)
    }
    /// `a` negated in the lanes where `s` is negative (`a` ≥ 0 or zero where `s` is zero).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn copysign16(a: V, s: V) -> V {
        _mm256_sign_epi16(a, s)
    }
    /// Whether every bit of `a` is zero.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn all_zero(a: V) -> bool {
        _mm256_testz_si256(a, a) == 1
    }
}

/// Transposes an 8×8 matrix of 16-bit values held one row per vector (per 128-bit lane).
/// Expands to a call-site expression so it uses whichever vocabulary is imported there.
macro_rules! transpose8x16 {
    ($r:expr) => {{
        let r = $r;
        let a0 = unpacklo16(r[0], r[1]);
        let a1 = unpackhi16(r[0], r[1]);
        let a2 = unpacklo16(r[2], r[3]);
        let a3 = unpackhi16(r[2], r[3]);
        let a4 = unpacklo16(r[4], r[5]);
        let a5 = unpackhi16(r[4], r[5]);
        let a6 = unpacklo16(r[6], r[7]);
        let a7 = unpackhi16(r[6], r[7]);
        let b0 = unpacklo32(a0, a2);
        let b1 = unpackhi32(a0, a2);
        let b2 = unpacklo32(a1, a3);
        let b3 = unpackhi32(a1, a3);
        let b4 = unpacklo32(a4, a6);
        let b5 = unpackhi32(a4, a6);
        let b6 = unpacklo32(a5, a7);
        let b7 = unpackhi32(a5, a7);
        [
            unpacklo64(b0, b4),
            unpackhi64(b0, b4),
            unpacklo64(b1, b5),
            unpackhi64(b1, b5),
            unpacklo64(b2, b6),
            unpackhi64(b2, b6),
            unpacklo64(b3, b7),
            unpackhi64(b3, b7),
        ]
    }};
}
pub(crate) use transpose8x16;
