//! Colour conversion of one row: libjpeg's `rgb_ycc_convert` (jccolor.c / jccolext.c, 16-bit
//! fixed point with its tables' exact rounding) and `ycc_rgb_convert` (jdcolor.c / jdcolext.c
//! tables, clamped to 0..=255 by `range_limit`), the latter also standing for the merged
//! upsampler of jdmerge.c / jdmrgext.c (same tables) when chroma is replicated.
//!
//! The SIMD versions compute the same integer expressions: `madd` sums with 16-bit parts of
//! the constants, and for R and B the `mulhi` form `x + ((mulhi(2x, c) + 1) >> 1)` that
//! equals `(FIX(k)·x + ONE_HALF) >> 16` exactly (floor((floor(a)+1)/2) = floor((a+1)/2)).
//! All levels equal the C on every input.

use super::{Level, dispatch};

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);
const CBCR_OFFSET: i32 = 128 << SCALEBITS;

/// `FIX(x)` of jccolor.c / jdcolor.c: `(JLONG)(x * 65536 + 0.5)`.
const fn fix(x: f64) -> i32 {
    (x * 65536.0 + 0.5) as i32
}

const Y_R: i32 = fix(0.29900);
const Y_G: i32 = fix(0.58700);
const Y_B: i32 = fix(0.11400);
const CB_R: i32 = fix(0.16874);
const CB_G: i32 = fix(0.33126);
const CB_B: i32 = fix(0.50000);
const CR_G: i32 = fix(0.41869);
const CR_B: i32 = fix(0.08131);
const R_CR: i32 = fix(1.40200);
const B_CB: i32 = fix(1.77200);
const G_CR: i32 = fix(0.71414);
const G_CB: i32 = fix(0.34414);

/// RGB → YCbCr of one row: libjpeg's `rgb_ycc_convert` (jccolor.c, 16-bit fixed point, its
/// exact tables and rounding). Converts `y.len()` pixels from `rgb` (3 bytes each, R first).
/// Equal to libjpeg's C for every input.
///
/// Panics if `rgb` holds fewer than `3·y.len()` bytes or `cb`/`cr` fewer than `y.len()`.
pub fn rgb_to_ycbcr(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    rgb_to_ycbcr_at(Level::get(), rgb, y, cb, cr);
}

/// [`rgb_to_ycbcr`] at a given level (capped at what the CPU supports).
pub fn rgb_to_ycbcr_at(level: Level, rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    let n = y.len();
    assert!(rgb.len() >= 3 * n, "rgb row shorter than 3 * y.len()");
    assert!(
        cb.len() >= n && cr.len() >= n,
        "cb/cr rows shorter than y.len()"
    );
    dispatch::rgb_to_ycbcr(level, &rgb[..3 * n], y, &mut cb[..n], &mut cr[..n]);
}

/// YCbCr → RGB of one row: libjpeg's `ycc_rgb_convert` (jdcolor.c tables, clamped to 0..=255),
/// with chroma sample `x / chroma_step` for pixel x (step 1: 4:4:4; step 2: chroma replicated,
/// which is exactly what libjpeg's merged upsampler jdmerge.c gives with fancy upsampling off).
/// Converts `y.len()` pixels into `rgb` (3 bytes each). Equal to libjpeg's C for every input.
///
/// Panics if `chroma_step` is 0, `cb`/`cr` hold fewer than `y.len().div_ceil(chroma_step)`
/// samples or `rgb` fewer than `3·y.len()` bytes. Steps other than 1 and 2 run scalar code.
pub fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], chroma_step: usize, rgb: &mut [u8]) {
    ycbcr_to_rgb_at(Level::get(), y, cb, cr, chroma_step, rgb);
}

/// [`ycbcr_to_rgb`] at a given level (capped at what the CPU supports).
pub fn ycbcr_to_rgb_at(
    level: Level,
    y: &[u8],
    cb: &[u8],
    cr: &[u8],
    chroma_step: usize,
    rgb: &mut [u8],
) {
    assert!(chroma_step >= 1, "chroma_step must be at least 1");
    let n = y.len();
    let nc = n.div_ceil(chroma_step);
    assert!(cb.len() >= nc && cr.len() >= nc, "cb/cr rows too short");
    assert!(rgb.len() >= 3 * n, "rgb row shorter than 3 * y.len()");
    dispatch::ycbcr_to_rgb(
        level,
        y,
        &cb[..nc],
        &cr[..nc],
        chroma_step,
        &mut rgb[..3 * n],
    );
}

/// The scalar twins, as in jccolext.c / jdcolext.c (tables replaced by the products they hold).
pub(crate) mod scalar {
    use super::*;

    pub(crate) fn rgb_to_ycbcr(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
        for (i, px) in rgb.chunks_exact(3).enumerate().take(y.len()) {
            let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            // rgb_ycc_tab sums: the B=>Y entry carries ONE_HALF, B=>Cb and R=>Cr carry
            // CBCR_OFFSET + ONE_HALF - 1.
            y[i] = ((Y_R * r + Y_G * g + Y_B * b + ONE_HALF) >> SCALEBITS) as u8;
            cb[i] =
                ((-CB_R * r - CB_G * g + CB_B * b + CBCR_OFFSET + ONE_HALF - 1) >> SCALEBITS) as u8;
            cr[i] =
                ((CB_B * r - CR_G * g - CR_B * b + CBCR_OFFSET + ONE_HALF - 1) >> SCALEBITS) as u8;
        }
    }

    /// The per-chroma-sample terms of `build_ycc_rgb_table`: (Cr_r_tab[cr],
    /// (Cb_g_tab[cb] + Cr_g_tab[cr]) >> SCALEBITS, Cb_b_tab[cb]).
    pub(crate) fn chroma_terms(cb: u8, cr: u8) -> (i32, i32, i32) {
        let (xb, xr) = (i32::from(cb) - 128, i32::from(cr) - 128);
        let red = (R_CR * xr + ONE_HALF) >> SCALEBITS;
        let blue = (B_CB * xb + ONE_HALF) >> SCALEBITS;
        let green = ((-G_CB * xb + ONE_HALF) + (-G_CR * xr)) >> SCALEBITS;
        (red, green, blue)
    }

    pub(crate) fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], chroma_step: usize, rgb: &mut [u8]) {
        let limit = |v: i32| v.clamp(0, 255) as u8;
        for (x, (&yv, px)) in y.iter().zip(rgb.chunks_exact_mut(3)).enumerate() {
            let c = x / chroma_step;
            let (red, green, blue) = chroma_terms(cb[c], cr[c]);
            let yv = i32::from(yv);
            px[0] = limit(yv + red);
            px[1] = limit(yv + green);
            px[2] = limit(yv + blue);
        }
    }
}

/// The arithmetic shared by SSE2 and AVX2 (see the module notes).
#[cfg(target_arch = "x86_64")]
macro_rules! color_simd {
    ($feat:literal) => {
        use super::super::color::*;

        #[inline]
        #[target_feature(enable = $feat)]
        fn k(lo: i32, hi: i32) -> V {
            pair16(lo as i16, hi as i16)
        }

        /// Y, Cb, Cr (32-bit lanes) from pairs (r, g) and (b, g) of 16-bit lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        fn ycc(rg: V, bg: V) -> [V; 3] {
            // Y_G and CB_B = 32768 do not fit in i16: Y_G is split over the two pairs, and
            // 32768·x is computed as −(−32768·x).
            let half_g = Y_G / 2;
            let y = add32(madd(rg, k(Y_R, half_g)), madd(bg, k(Y_B, Y_G - half_g)));
            let y = srai32::<16>(add32(y, splat32(ONE_HALF)));
            let off = splat32(CBCR_OFFSET + ONE_HALF - 1);
            let cb = sub32(madd(rg, k(-CB_R, -CB_G)), madd(bg, k(-CB_B, 0)));
            let cb = srai32::<16>(add32(cb, off));
            let cr = sub32(madd(bg, k(-CR_B, -CR_G)), madd(rg, k(-CB_B, 0)));
            let cr = srai32::<16>(add32(cr, off));
            [y, cb, cr]
        }

        /// Red, green and blue chroma terms (16-bit lanes) of zero-extended Cb/Cr samples.
        #[inline]
        #[target_feature(enable = $feat)]
        fn chroma(cb: V, cr: V) -> [V; 3] {
            let center = splat16(128);
            let one = splat16(1);
            let (xb, xr) = (sub16(cb, center), sub16(cr, center));
            // R_CR = 65536 + 26345, B_CB = 2·65536 − 14942.
            let red = mulhi16(add16(xr, xr), splat16((R_CR - 65536) as i16));
            let red = add16(xr, srai16::<1>(add16(red, one)));
            let blue = mulhi16(add16(xb, xb), splat16((B_CB - 131072) as i16));
            let blue = add16(add16(xb, xb), srai16::<1>(add16(blue, one)));
            // −G_CR = −65536 + (65536 − G_CR).
            let kg = k(-G_CB, 65536 - G_CR);
            let half = splat32(ONE_HALF);
            let lo = srai32::<16>(add32(madd(unpacklo16(xb, xr), kg), half));
            let hi = srai32::<16>(add32(madd(unpackhi16(xb, xr), kg), half));
            let green = sub16(packs32(lo, hi), xr);
            [red, green, blue]
        }

        /// R, G, B bytes of pixels whose luma (zero-extended, two vectors) and chroma terms
        /// are given.
        #[inline]
        #[target_feature(enable = $feat)]
        fn rgb_bytes(ylo: V, yhi: V, tlo: &[V; 3], thi: &[V; 3]) -> [V; 3] {
            [
                packus16(add16(ylo, tlo[0]), add16(yhi, thi[0])),
                packus16(add16(ylo, tlo[1]), add16(yhi, thi[1])),
                packus16(add16(ylo, tlo[2]), add16(yhi, thi[2])),
            ]
        }
    };
}

/// SSE2: 16 pixels per iteration; RGB is (de)interleaved with 64-bit shifts and masks.
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2 {
    use super::super::simd::sse2::*;
    use super::super::{arr, arr_mut};
    use safe_unaligned_simd::x86_64 as mem;

    color_simd!("sse2");

    /// Four pixels (12 bytes at `at`) as 32-bit lanes R | G << 8 | B << 16.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn load4(rgb: &[u8], at: usize) -> V {
        let v = unpacklo64(
            mem::_mm_loadu_si64(arr::<u8, 8>(rgb, at)),
            mem::_mm_loadu_si32(arr::<u8, 4>(rgb, at + 8)),
        );
        // 64-bit lane 0: bytes 0..8 (pixels 0, 1); lane 1: bytes 6..14 (pixels 2, 3).
        let w = unpacklo64(v, _mm_srli_si128::<6>(v));
        let m0 = _mm_set1_epi64x(0xFF_FFFF);
        let m1 = _mm_set1_epi64x(0xFF_FFFF << 32);
        or(and(w, m0), and(_mm_slli_epi64::<8>(w), m1))
    }

    /// 32-bit lanes R | G << 8 | B << 16 of four pixels to 12 bytes at `at`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn store4(rgb: &mut [u8], at: usize, x: V) {
        let m0 = _mm_set1_epi64x(0xFF_FFFF);
        let m1 = _mm_set1_epi64x(0xFF_FFFF << 24);
        // Each 64-bit lane: pixel a in bytes 0..3, pixel b in bytes 3..6.
        let w = or(and(x, m0), and(_mm_srli_epi64::<8>(x), m1));
        let lo6 = _mm_set_epi64x(0, 0xFFFF_FFFF_FFFF);
        let v = or(and(w, lo6), _mm_slli_si128::<6>(_mm_srli_si128::<8>(w)));
        mem::_mm_storeu_si64(arr_mut::<u8, 8>(rgb, at), v);
        mem::_mm_storeu_si32(arr_mut::<u8, 4>(rgb, at + 8), _mm_srli_si128::<8>(v));
    }

    #[target_feature(enable = "sse2")]
    pub(crate) fn rgb_to_ycbcr(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
        let n = y.len() / 16 * 16;
        let gmask = splat32(0xFF_0000);
        let low = splat32(0xFF);
        for p in (0..n).step_by(16) {
            let mut quarters = [[zero(); 3]; 4];
            for (j, q) in quarters.iter_mut().enumerate() {
                let x = load4(rgb, 3 * (p + 4 * j));
                let g = and(_mm_slli_epi32::<8>(x), gmask);
                let rg = or(and(x, low), g);
                let bg = or(_mm_srli_epi32::<16>(x), g);
                *q = ycc(rg, bg);
            }
            for (c, dst) in [&mut *y, &mut *cb, &mut *cr].into_iter().enumerate() {
                let q = &quarters;
                let v = packus16(packs32(q[0][c], q[1][c]), packs32(q[2][c], q[3][c]));
                mem::_mm_storeu_si128(arr_mut::<u8, 16>(dst, p), v);
            }
        }
        super::scalar::rgb_to_ycbcr(&rgb[3 * n..], &mut y[n..], &mut cb[n..], &mut cr[n..]);
    }

    #[target_feature(enable = "sse2")]
    pub(crate) fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], step: usize, rgb: &mut [u8]) {
        let n = if step <= 2 { y.len() / 16 * 16 } else { 0 };
        for p in (0..n).step_by(16) {
            let yv = mem::_mm_loadu_si128(arr::<u8, 16>(y, p));
            let (tlo, thi) = if step == 1 {
                let b = mem::_mm_loadu_si128(arr::<u8, 16>(cb, p));
                let r = mem::_mm_loadu_si128(arr::<u8, 16>(cr, p));
                (
                    chroma(unpacklo8(b, zero()), unpacklo8(r, zero())),
                    chroma(unpackhi8(b, zero()), unpackhi8(r, zero())),
                )
            } else {
                let b = mem::_mm_loadu_si64(arr::<u8, 8>(cb, p / 2));
                let r = mem::_mm_loadu_si64(arr::<u8, 8>(cr, p / 2));
                let t = chroma(unpacklo8(b, zero()), unpacklo8(r, zero()));
                (
                    [
                        unpacklo16(t[0], t[0]),
                        unpacklo16(t[1], t[1]),
                        unpacklo16(t[2], t[2]),
                    ],
                    [
                        unpackhi16(t[0], t[0]),
                        unpackhi16(t[1], t[1]),
                        unpackhi16(t[2], t[2]),
                    ],
                )
            };
            let [r, g, b] = rgb_bytes(unpacklo8(yv, zero()), unpackhi8(yv, zero()), &tlo, &thi);
            // R | G << 8 | B << 16 per pixel, four pixels per vector.
            let rg_lo = unpacklo8(r, g);
            let rg_hi = unpackhi8(r, g);
            let b_lo = unpacklo8(b, zero());
            let b_hi = unpackhi8(b, zero());
            store4(rgb, 3 * p, unpacklo16(rg_lo, b_lo));
            store4(rgb, 3 * p + 12, unpackhi16(rg_lo, b_lo));
            store4(rgb, 3 * p + 24, unpacklo16(rg_hi, b_hi));
            store4(rgb, 3 * p + 36, unpackhi16(rg_hi, b_hi));
        }
        let c = n / step.min(2);
        super::scalar::ycbcr_to_rgb(&y[n..], &cb[c..], &cr[c..], step, &mut rgb[3 * n..]);
    }
}

/// AVX2: 32 pixels per iteration; RGB is (de)interleaved with in-lane byte shuffles.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::simd::avx2::*;
    use super::super::{arr, arr_mut};
    use safe_unaligned_simd::x86_64 as mem;

    color_simd!("avx2");

    /// `DEINTERLEAVE[c][k][j]`: where in the k-th 16 bytes of 16 RGB pixels channel c of
    /// pixel j lies (−128: not in that chunk).
    static DEINTERLEAVE: [[[i8; 16]; 3]; 3] = {
        let mut m = [[[-128i8; 16]; 3]; 3];
        let mut c = 0;
        while c < 3 {
            let mut j = 0;
            while j < 16 {
                let pos = 3 * j + c;
                m[c][pos / 16][j] = (pos % 16) as i8;
                j += 1;
            }
            c += 1;
        }
        m
    };

    /// `INTERLEAVE[c][k][j]`: which pixel's channel c goes to byte j of the k-th 16 output
    /// bytes (−128: another channel).
    static INTERLEAVE: [[[i8; 16]; 3]; 3] = {
        let mut m = [[[-128i8; 16]; 3]; 3];
        let mut pos = 0;
        while pos < 48 {
            m[pos % 3][pos / 16][pos % 16] = (pos / 3) as i8;
            pos += 1;
        }
        m
    };

    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask(m: &[i8; 16]) -> V {
        mem::_mm256_loadu2_m128i(m, m)
    }

    #[target_feature(enable = "avx2")]
    pub(crate) fn rgb_to_ycbcr(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
        let n = y.len() / 32 * 32;
        let mut masks = [[zero(); 3]; 3];
        for c in 0..3 {
            for k in 0..3 {
                masks[c][k] = mask(&DEINTERLEAVE[c][k]);
            }
        }
        for p in (0..n).step_by(32) {
            let at = 3 * p;
            let mut chunk = [zero(); 3];
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = mem::_mm256_loadu2_m128i(
                    arr::<u8, 16>(rgb, at + 48 + 16 * k),
                    arr::<u8, 16>(rgb, at + 16 * k),
                );
            }
            let mut ch = [zero(); 3];
            for (c, v) in ch.iter_mut().enumerate() {
                let m = &masks[c];
                *v = or(
                    or(
                        _mm256_shuffle_epi8(chunk[0], m[0]),
                        _mm256_shuffle_epi8(chunk[1], m[1]),
                    ),
                    _mm256_shuffle_epi8(chunk[2], m[2]),
                );
            }
            // Quarters of pixels [0-3|16-19], [4-7|20-23], [8-11|24-27], [12-15|28-31].
            let mut quarters = [[zero(); 3]; 4];
            for half in 0..2 {
                let (r, g, b) = if half == 0 {
                    (
                        unpacklo8(ch[0], zero()),
                        unpacklo8(ch[1], zero()),
                        unpacklo8(ch[2], zero()),
                    )
                } else {
                    (
                        unpackhi8(ch[0], zero()),
                        unpackhi8(ch[1], zero()),
                        unpackhi8(ch[2], zero()),
                    )
                };
                quarters[2 * half] = ycc(unpacklo16(r, g), unpacklo16(b, g));
                quarters[2 * half + 1] = ycc(unpackhi16(r, g), unpackhi16(b, g));
            }
            for (c, dst) in [&mut *y, &mut *cb, &mut *cr].into_iter().enumerate() {
                let q = &quarters;
                let v = packus16(packs32(q[0][c], q[1][c]), packs32(q[2][c], q[3][c]));
                mem::_mm256_storeu_si256(arr_mut::<u8, 32>(dst, p), v);
            }
        }
        super::scalar::rgb_to_ycbcr(&rgb[3 * n..], &mut y[n..], &mut cb[n..], &mut cr[n..]);
    }

    #[target_feature(enable = "avx2")]
    pub(crate) fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], step: usize, rgb: &mut [u8]) {
        let n = if step <= 2 { y.len() / 32 * 32 } else { 0 };
        let mut masks = [[zero(); 3]; 3];
        for c in 0..3 {
            for k in 0..3 {
                masks[c][k] = mask(&INTERLEAVE[c][k]);
            }
        }
        for p in (0..n).step_by(32) {
            let yv = mem::_mm256_loadu_si256(arr::<u8, 32>(y, p));
            let (tlo, thi) = if step == 1 {
                let b = mem::_mm256_loadu_si256(arr::<u8, 32>(cb, p));
                let r = mem::_mm256_loadu_si256(arr::<u8, 32>(cr, p));
                (
                    chroma(unpacklo8(b, zero()), unpacklo8(r, zero())),
                    chroma(unpackhi8(b, zero()), unpackhi8(r, zero())),
                )
            } else {
                let b = _mm256_cvtepu8_epi16(mem::_mm_loadu_si128(arr::<u8, 16>(cb, p / 2)));
                let r = _mm256_cvtepu8_epi16(mem::_mm_loadu_si128(arr::<u8, 16>(cr, p / 2)));
                let t = chroma(b, r);
                (
                    [
                        unpacklo16(t[0], t[0]),
                        unpacklo16(t[1], t[1]),
                        unpacklo16(t[2], t[2]),
                    ],
                    [
                        unpackhi16(t[0], t[0]),
                        unpackhi16(t[1], t[1]),
                        unpackhi16(t[2], t[2]),
                    ],
                )
            };
            let ch = rgb_bytes(unpacklo8(yv, zero()), unpackhi8(yv, zero()), &tlo, &thi);
            let mut o = [zero(); 3];
            for (k, v) in o.iter_mut().enumerate() {
                *v = or(
                    or(
                        _mm256_shuffle_epi8(ch[0], masks[0][k]),
                        _mm256_shuffle_epi8(ch[1], masks[1][k]),
                    ),
                    _mm256_shuffle_epi8(ch[2], masks[2][k]),
                );
            }
            // Low lanes hold pixels 0..16 (48 bytes), high lanes pixels 16..32.
            let at = 3 * p;
            let s0 = _mm256_permute2x128_si256::<0x20>(o[0], o[1]);
            let s1 = _mm256_permute2x128_si256::<0x30>(o[2], o[0]);
            let s2 = _mm256_permute2x128_si256::<0x31>(o[1], o[2]);
            mem::_mm256_storeu_si256(arr_mut::<u8, 32>(rgb, at), s0);
            mem::_mm256_storeu_si256(arr_mut::<u8, 32>(rgb, at + 32), s1);
            mem::_mm256_storeu_si256(arr_mut::<u8, 32>(rgb, at + 64), s2);
        }
        let c = n / step.min(2);
        super::scalar::ycbcr_to_rgb(&y[n..], &cb[c..], &cr[c..], step, &mut rgb[3 * n..]);
    }
}
