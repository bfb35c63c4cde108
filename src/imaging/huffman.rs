//! Optimal Huffman tables for a baseline 4:2:0 scan, computed from the coefficients
//! in one quick pass, for [`super::writer`].
//!
//! The symbol statistics follow libjpeg's `htest_one_block` and the block order of
//! its `jctrans.c` exactly, dummy edge blocks included, and [`optimal_table`] is
//! its `jpeg_gen_optimal_table`: the tables, and so the files, are byte-identical
//! to libjpeg's own `optimize_coding` (a test checks).

use super::libjpeg::{Block, HuffTable, HuffTables, Plane};
use super::quality::ZIGZAG;
use super::writer::zigzag_mask;

/// Symbol statistics from every n-th MCU row (images of 32 MCU rows or more): on
/// the corpus about 6 % faster for 0.2 % more bytes, most of it the DHT segments
/// listing every symbol (which a sample cannot rule out).
pub(crate) const SAMPLE: usize = 4;

/// Symbol counts of one table class (luma or chroma).
#[derive(Clone)]
pub(crate) struct Counts {
    dc: [u32; 17],
    ac: [u32; 256],
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            dc: [0; 17],
            ac: [0; 256],
        }
    }
}

/// Number of bits of `v`'s magnitude (0 for 0).
#[inline]
fn nbits(v: i32) -> usize {
    (32 - v.unsigned_abs().leading_zeros()) as usize
}

impl Counts {
    /// Counts one block's symbols, as libjpeg's `htest_one_block` does.
    #[inline(always)]
    fn block(&mut self, block: &Block, last_dc: i16) {
        self.dc[nbits(i32::from(block[0]) - i32::from(last_dc))] += 1;
        let mut bits = zigzag_mask(block) & !1;
        let mut previous = 0u32;
        while bits != 0 {
            let k = bits.trailing_zeros();
            let mut run = k - previous - 1;
            while run > 15 {
                self.ac[0xF0] += 1;
                run -= 16;
            }
            let size = nbits(i32::from(block[ZIGZAG[k as usize]]));
            // Sizes 11..=16 would land on other symbols (or past the table).
            debug_assert!(size <= 10, "coefficient outside baseline's ±1023");
            self.ac[(run as usize) << 4 | size] += 1;
            previous = k;
            bits &= bits - 1;
        }
        if previous < 63 {
            self.ac[0] += 1; // EOB
        }
    }

    /// Gives every symbol of baseline 8-bit coding (DC sizes 0..=11; AC
    /// end-of-block, run-of-16, and runs 0..=15 with sizes 1..=10) a nonzero count:
    /// the sampled counts are scaled by 16 and one is added, so a symbol never seen
    /// weighs a sixteenth of one seen once.
    fn cover_all_symbols(&mut self) {
        for c in self.dc.iter_mut().chain(self.ac.iter_mut()) {
            *c = c.saturating_mul(16);
        }
        for c in &mut self.dc[..12] {
            *c += 1;
        }
        self.ac[0x00] += 1;
        self.ac[0xF0] += 1;
        for run in 0..16 {
            for size in 1..=10 {
                self.ac[run << 4 | size] += 1;
            }
        }
    }

    /// A block libjpeg invents past the image edge: DC repeated, AC all zero.
    #[inline]
    fn dummy(&mut self) {
        self.dc[0] += 1;
        self.ac[0] += 1;
    }
}

/// Symbol counts of the single interleaved scan libjpeg writes for Y, Cb, Cr at
/// 4:2:0: MCUs of 2×2 Y blocks then one Cb and one Cr, left to right, top to
/// bottom; Y blocks past the image's blocks are dummies. Returns `[luma, chroma]`.
///
/// `prepare(component, block)` runs on every real block of a counted MCU row just
/// before it is counted (e.g. to requantise it while it is in cache). Every block
/// counted must hold values within ±1023 (baseline's 8-bit range, so AC sizes ≤ 10
/// and DC differences ≤ 11 bits, the symbols [`Counts::cover_all_symbols`] knows):
/// a source can carry any 16-bit value, so the caller clamps. With
/// `every` > 1 only every `every`-th MCU row is counted (a sample; DC prediction
/// restarts at each sampled row).
#[inline(always)]
pub(crate) fn count_420(
    planes: &mut [Plane<'_>; 3],
    every: usize,
    mut prepare: impl FnMut(usize, &mut Block),
) -> [Counts; 2] {
    let mut counts = [Counts::default(), Counts::default()];
    let [y, cb, cr] = planes;
    let (mcu_cols, mcu_rows) = (cb.width, cb.height);
    let (y_width, y_height) = (y.width, y.height);
    let mut last_dc = [0i16; 3];
    for my in (0..mcu_rows).step_by(every.max(1)) {
        if every > 1 {
            last_dc = [0; 3];
        }
        for mx in 0..mcu_cols {
            for by in [2 * my, 2 * my + 1] {
                for bx in [2 * mx, 2 * mx + 1] {
                    if bx < y_width && by < y_height {
                        let block = &mut y.rows[by][bx];
                        prepare(0, block);
                        counts[0].block(block, last_dc[0]);
                        last_dc[0] = block[0];
                    } else {
                        counts[0].dummy();
                    }
                }
            }
            for (ci, plane) in [(1, &mut *cb), (2, &mut *cr)] {
                let block = &mut plane.rows[my][mx];
                prepare(ci, block);
                counts[1].block(block, last_dc[ci]);
                last_dc[ci] = block[0];
            }
        }
    }
    counts
}

/// libjpeg's `jpeg_gen_optimal_table` (ITU T.81 Annex K.2): code lengths by
/// Huffman's algorithm with a reserved all-ones code, limited to 16 bits.
/// Only symbols with a nonzero count get a code. `None` in the (theoretical) case
/// where libjpeg would fail too: a code longer than 32 bits before the adjustment.
pub(crate) fn optimal_table(counts: &[u32]) -> Option<HuffTable> {
    const MAX_CLEN: usize = 32;
    let mut freq = [0u64; 257];
    for (f, &c) in freq.iter_mut().zip(counts) {
        *f = u64::from(c);
    }
    freq[256] = 1; // the reserved pseudo-symbol
    let mut codesize = [0usize; 257];
    let mut others = [usize::MAX; 257];
    // Symbols still in play, ascending: ties go to the larger symbol, as in libjpeg.
    let mut active: Vec<usize> = (0..=256).filter(|&i| freq[i] > 0).collect();
    loop {
        let (mut c1, mut v1) = (usize::MAX, u64::MAX);
        for &i in &active {
            if freq[i] <= v1 {
                (c1, v1) = (i, freq[i]);
            }
        }
        let (mut c2, mut v2) = (usize::MAX, u64::MAX);
        for &i in &active {
            if i != c1 && freq[i] <= v2 {
                (c2, v2) = (i, freq[i]);
            }
        }
        if c2 == usize::MAX {
            break;
        }
        freq[c1] += freq[c2];
        freq[c2] = 0;
        active.retain(|&i| i != c2);
        let mut c = c1;
        codesize[c] += 1;
        while others[c] != usize::MAX {
            c = others[c];
            codesize[c] += 1;
        }
        others[c] = c2;
        let mut c = c2;
        codesize[c] += 1;
        while others[c] != usize::MAX {
            c = others[c];
            codesize[c] += 1;
        }
    }
    let mut bits = [0u16; MAX_CLEN + 1];
    for &size in &codesize {
        if size > MAX_CLEN {
            return None;
        }
        if size > 0 {
            bits[size] += 1;
        }
    }
    let mut i = MAX_CLEN;
    while i > 16 {
        while bits[i] > 0 {
            let mut j = i - 2;
            while bits[j] == 0 {
                j -= 1;
            }
            bits[i] -= 2;
            bits[i - 1] += 1;
            bits[j + 1] += 2;
            bits[j] -= 1;
        }
        i -= 1;
    }
    while bits[i] == 0 {
        i -= 1;
    }
    bits[i] -= 1; // drop the pseudo-symbol from the longest length
    let mut table = HuffTable {
        bits: [0; 17],
        huffval: [0; 256],
    };
    for (out, &b) in table.bits.iter_mut().zip(&bits) {
        *out = u8::try_from(b).ok()?;
    }
    let mut p = 0;
    for size in 1..=MAX_CLEN {
        for (symbol, &s) in codesize[..256].iter().enumerate() {
            if s == size {
                // symbol < 256.
                table.huffval[p] = symbol as u8;
                p += 1;
            }
        }
    }
    Some(table)
}

/// The MCU rows [`tables_420`] counts for a sample of one row in `every`: all of
/// them in small images (fewer than 32 MCU rows), where counting costs little.
pub(crate) fn sample_every(planes: &[Plane<'_>; 3], every: usize) -> usize {
    if planes[1].height < 32 {
        1
    } else {
        every.max(1)
    }
}

/// Optimal `[luma, chroma]` DC and AC tables for the 4:2:0 `planes`, after
/// `prepare` (see [`count_420`]) has run on every counted block.
///
/// `every` = 1: exact statistics, libjpeg's tables. `every` > 1: statistics of every
/// `every`-th MCU row, plus one occurrence of every symbol baseline coding can
/// produce, so that every symbol has a code whatever the unsampled rows hold.
#[inline(always)]
pub(crate) fn tables_420(
    planes: &mut [Plane<'_>; 3],
    every: usize,
    prepare: impl FnMut(usize, &mut Block),
) -> Option<HuffTables> {
    let every = sample_every(planes, every);
    let [mut luma, mut chroma] = count_420(planes, every, prepare);
    if every > 1 {
        for counts in [&mut luma, &mut chroma] {
            counts.cover_all_symbols();
        }
    }
    Some(HuffTables {
        dc: [optimal_table(&luma.dc)?, optimal_table(&chroma.dc)?],
        ac: [optimal_table(&luma.ac)?, optimal_table(&chroma.ac)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_zrl_and_eob_like_libjpeg() {
        let mut block = [0i16; 64];
        block[0] = 5; // DC diff 5 from 0: 3 bits
        block[ZIGZAG[1]] = -1; // run 0, size 1
        block[ZIGZAG[20]] = 300; // run 18: one ZRL, then run 2, size 9
        let mut counts = Counts::default();
        counts.block(&block, 0);
        assert_eq!(counts.dc[3], 1);
        assert_eq!(counts.ac[0x01], 1);
        assert_eq!(counts.ac[0xF0], 1);
        assert_eq!(counts.ac[0x29], 1);
        assert_eq!(counts.ac[0x00], 1, "EOB");
        block[ZIGZAG[63]] = 2;
        let mut counts = Counts::default();
        counts.block(&block, 5);
        assert_eq!(
            (counts.dc[0], counts.ac[0x00]),
            (1, 0),
            "no EOB after coefficient 63"
        );
    }

    #[test]
    fn optimal_table_is_a_valid_prefix_code_within_16_bits() {
        // Skewed counts force lengths over 16 before the adjustment.
        let counts: Vec<u32> = (0..256)
            .map(|i| if i < 40 { 1 << (i % 25) } else { 0 })
            .collect();
        let table = optimal_table(&counts).expect("a table");
        let total: usize = table.bits.iter().map(|&b| usize::from(b)).sum();
        assert_eq!(total, 40);
        // Kraft: the codes (plus the reserved all-ones one) fit exactly or less.
        let kraft: f64 = (1..=16)
            .map(|l| f64::from(table.bits[l]) / f64::from(1u32 << l))
            .sum();
        assert!(kraft < 1.0, "{kraft}");
    }
}
