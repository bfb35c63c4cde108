//! Every SIMD level against the scalar twin, bit for bit, on random and extreme inputs.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;

/// Seeded test data: the tests' one generator (`rand_xoshiro`), behind the three
/// draws these tests make.
struct Rng(Xoshiro256PlusPlus);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(Xoshiro256PlusPlus::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.0.fill_bytes(&mut out);
        out
    }
}

fn simd_levels() -> Vec<Level> {
    let levels: Vec<Level> = Level::available()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
        .collect();
    eprintln!("levels compared with scalar: {levels:?}");
    levels
}

/// A random coefficient block of one of several kinds.
fn random_block(rng: &mut Rng) -> Block {
    let mut b = [0i16; 64];
    match rng.below(6) {
        0 => {}                        // all zero
        1 => b[0] = rng.next() as i16, // DC only, any value
        2 => {
            // Typical: a few small coefficients.
            for _ in 0..rng.below(12) {
                b[rng.below(64) as usize] = (rng.below(201) as i16) - 100;
            }
        }
        3 => {
            // Extremes.
            for v in b.iter_mut() {
                *v = match rng.below(4) {
                    0 => 32767,
                    1 => -32768,
                    2 => -32767,
                    _ => 0,
                };
            }
        }
        4 => {
            for v in b.iter_mut() {
                *v = rng.next() as i16;
            }
        }
        _ => {
            for v in b.iter_mut() {
                *v = (rng.below(2049) as i16) - 1024;
            }
        }
    }
    b
}

fn random_quant(rng: &mut Rng, max: u64) -> [u16; 64] {
    let mut q = [0u16; 64];
    let kind = rng.below(3);
    for v in q.iter_mut() {
        *v = match kind {
            0 => 1 + rng.below(max) as u16,
            1 => 1 + rng.below(16) as u16,
            _ => max as u16,
        };
    }
    q
}

#[test]
fn idct_levels_match_scalar() {
    let levels = simd_levels();
    let mut rng = Rng::seeded(0x1234_5678_9ABC_DEF1);
    for round in 0..20000 {
        let n = (round % 11) as usize;
        let blocks: Vec<Block> = (0..n).map(|_| random_block(&mut rng)).collect();
        let quant = random_quant(&mut rng, if round % 2 == 0 { 255 } else { 65535 });
        let stride = 8 * n + rng.below(14) as usize;
        let len = if n == 0 { 0 } else { 7 * stride + 8 * n };
        let fill = rng.next() as u8;
        let mut want = vec![fill; len];
        idct_islow_at(Level::Scalar, &blocks, &quant, &mut want, stride);
        for &level in &levels {
            let mut got = vec![fill; len];
            idct_islow_at(level, &blocks, &quant, &mut got, stride);
            assert_eq!(
                got, want,
                "level {level:?}, round {round}, blocks {blocks:?}, quant {quant:?}"
            );
        }
    }
}

#[test]
fn fdct_levels_match_scalar() {
    let levels = simd_levels();
    let mut rng = Rng::seeded(0x0DDB_1A5E_5BAD_5EED);
    for round in 0..20000 {
        let n = (round % 11) as usize;
        let stride = 8 * n + rng.below(14) as usize;
        let len = if n == 0 { 0 } else { 7 * stride + 8 * n };
        let samples: Vec<u8> = match round % 5 {
            0 => vec![0; len],
            1 => vec![255; len],
            2 => (0..len)
                .map(|i| {
                    if (i + i / stride).is_multiple_of(2) {
                        0
                    } else {
                        255
                    }
                })
                .collect(),
            3 => (0..len)
                .map(|_| if rng.below(2) == 0 { 0 } else { 255 })
                .collect(),
            _ => rng.bytes(len),
        };
        let quant = random_quant(&mut rng, 255);
        let table = QuantTable::new(&quant);
        let mut want = vec![[7i16; 64]; n];
        fdct_quantize_at(Level::Scalar, &samples, stride, &table, &mut want);
        for &level in &levels {
            let mut got = vec![[7i16; 64]; n];
            fdct_quantize_at(level, &samples, stride, &table, &mut got);
            assert_eq!(got, want, "level {level:?}, round {round}");
        }
    }
}

#[test]
fn rgb_to_ycbcr_levels_match_scalar() {
    let levels = simd_levels();
    let mut rng = Rng::seeded(42);
    for n in 0..=100usize {
        for _ in 0..20 {
            let extra = rng.below(4) as usize;
            let rgb = rng.bytes(3 * n + extra);
            let mut want = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
            rgb_to_ycbcr_at(Level::Scalar, &rgb, &mut want.0, &mut want.1, &mut want.2);
            for &level in &levels {
                let mut got = (vec![1u8; n], vec![1u8; n], vec![1u8; n]);
                rgb_to_ycbcr_at(level, &rgb, &mut got.0, &mut got.1, &mut got.2);
                assert_eq!(got, want, "level {level:?}, n {n}");
            }
        }
    }
}

#[test]
fn rgb_to_ycbcr_every_colour() {
    let levels = simd_levels();
    let n = 1 << 24;
    let rgb: Vec<u8> = (0..n as u32)
        .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
        .collect();
    let mut want = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    rgb_to_ycbcr_at(Level::Scalar, &rgb, &mut want.0, &mut want.1, &mut want.2);
    for &level in &levels {
        let mut got = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        rgb_to_ycbcr_at(level, &rgb, &mut got.0, &mut got.1, &mut got.2);
        assert!(got == want, "level {level:?}");
    }
}

#[test]
fn ycbcr_to_rgb_levels_match_scalar() {
    let levels = simd_levels();
    let mut rng = Rng::seeded(7);
    for step in 1..=3usize {
        for n in 0..=100usize {
            for _ in 0..20 {
                let nc = n.div_ceil(step);
                let y = rng.bytes(n);
                let extra = rng.below(3) as usize;
                let cb = rng.bytes(nc + extra);
                let cr = rng.bytes(nc + extra);
                let mut want = vec![0u8; 3 * n];
                ycbcr_to_rgb_at(Level::Scalar, &y, &cb, &cr, step, &mut want);
                for &level in &levels {
                    let mut got = vec![1u8; 3 * n];
                    ycbcr_to_rgb_at(level, &y, &cb, &cr, step, &mut got);
                    assert_eq!(got, want, "level {level:?}, step {step}, n {n}");
                }
            }
        }
    }
}

#[test]
fn ycbcr_to_rgb_every_chroma_pair() {
    let levels = simd_levels();
    for yv in [0u8, 1, 64, 127, 128, 200, 254, 255] {
        for step in [1usize, 2] {
            let n = 65536 * step;
            let y = vec![yv; n];
            let cb: Vec<u8> = (0..65536u32).map(|c| (c >> 8) as u8).collect();
            let cr: Vec<u8> = (0..65536u32).map(|c| c as u8).collect();
            let mut want = vec![0u8; 3 * n];
            ycbcr_to_rgb_at(Level::Scalar, &y, &cb, &cr, step, &mut want);
            for &level in &levels {
                let mut got = vec![0u8; 3 * n];
                ycbcr_to_rgb_at(level, &y, &cb, &cr, step, &mut got);
                assert!(got == want, "level {level:?}, y {yv}, step {step}");
            }
        }
    }
}

#[test]
fn downsampling_levels_match_scalar() {
    let levels = simd_levels();
    let mut rng = Rng::seeded(99);
    for n in 0..=100usize {
        for _ in 0..20 {
            let extra = rng.below(3) as usize;
            let (r0, r1) = (rng.bytes(2 * n + extra), rng.bytes(2 * n + extra));
            let mut want = vec![0u8; n];
            downsample_h2v2_at(Level::Scalar, &r0, &r1, &mut want);
            let mut want1 = vec![0u8; n];
            downsample_h2v1_at(Level::Scalar, &r0, &mut want1);
            for &level in &levels {
                let mut got = vec![1u8; n];
                downsample_h2v2_at(level, &r0, &r1, &mut got);
                assert_eq!(got, want, "h2v2 level {level:?}, n {n}");
                let mut got1 = vec![1u8; n];
                downsample_h2v1_at(level, &r0, &mut got1);
                assert_eq!(got1, want1, "h2v1 level {level:?}, n {n}");
            }
        }
    }
    // Saturated inputs: the largest sums.
    let ones = vec![255u8; 200];
    let mut got = vec![0u8; 100];
    for &level in &levels {
        downsample_h2v2_at(level, &ones, &ones, &mut got);
        assert!(got.iter().all(|&v| v == 255));
    }
}

#[test]
fn level_names_round_trip() {
    for l in [Level::Scalar, Level::Sse2, Level::Avx2] {
        assert_eq!(Level::parse(l.as_str()), Some(l));
    }
    assert!(Level::get() <= Level::detected());
    assert_eq!(Level::available()[0], Level::Scalar);
}
