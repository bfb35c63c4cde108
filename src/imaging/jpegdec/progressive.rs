//! Progressive Huffman scans (`jdphuff.c`; ITU T.81 G.1.2): DC first and refinement
//! scans (G.1.2.1), AC spectral-selection first scans with EOB runs (G.1.2.2) and AC
//! successive-approximation refinement scans (G.1.2.3).

use super::bits::{BAD_CODE, BitReader};
use super::huffman::{
    Derived, LUT_BITS, LutKind, entry_len, entry_sym, entry_total, entry_value, extend,
};
use super::scan::{Layout, NATURAL, Restarts, ScanComp, check_progress};
use super::types::{Block, Component, DecodeError, Progress};
use crate::imaging::kernels::prefetch_block;

/// Scan parameters of a progressive scan.
#[derive(Clone, Copy, Debug)]
pub(super) struct Band {
    /// First coefficient (zigzag index).
    pub ss: usize,
    /// Last coefficient (zigzag index).
    pub se: usize,
    /// Bit position of the previous scan (0 for a first scan).
    pub ah: u32,
    /// Bit position of this scan.
    pub al: u32,
}

/// How far ahead a single-component scan asks for blocks to be brought into cache:
/// a scan that takes few bits per block is bound by memory, not by decoding.
const AHEAD_BLOCKS: usize = 6;

/// The same for interleaved scans (DC), in MCUs.
const AHEAD_MCUS: usize = 4;

/// Asks for the blocks of MCU (`mx`, `my`) to be brought into cache, where it exists.
#[inline(always)]
fn prefetch_mcu(layout: &Layout, comps: &[Component], mx: usize, my: usize) {
    if mx < layout.mcus_per_row {
        for b in &layout.blocks {
            if let Some(block) = comps[b.comp]
                .blocks
                .get(layout.block_index(b, comps, mx, my))
            {
                prefetch_block(block);
            }
        }
    }
}

/// Decodes a symbol with a combined table: returns (symbol, value) where the value is
/// the table's precomputed one, or `None` if the caller must read the extra bits itself.
#[inline(always)]
fn symbol(r: &mut BitReader, lut: &[u32; 1 << LUT_BITS], t: &Derived) -> (u32, Option<i32>) {
    r.prepare_symbol();
    let e = lut[r.peek_lut()];
    let total = entry_total(e);
    if total.wrapping_sub(1) < r.bits_left() {
        r.consume_entry(e);
        return (entry_sym(e), Some(entry_value(e)));
    }
    let l = entry_len(e);
    if l != 0 && l <= r.bits_left() {
        r.consume(l);
        (entry_sym(e), None)
    } else {
        (r.decode_slow(t), None)
    }
}

/// Decodes one progressive scan into `comps`.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_scan(
    r: &mut BitReader,
    comps: &mut [Component],
    masks: &mut [Vec<u64>],
    scomps: &[ScanComp],
    layout: &Layout,
    band: Band,
    dc: &[Option<Derived>; 4],
    ac: &[Option<Derived>; 4],
    restart_interval: u32,
    lazy_zero: [bool; 4],
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut restarts = Restarts::new(restart_interval);
    let result = if band.ss == 0 {
        if band.ah == 0 {
            dc_first(
                r,
                comps,
                scomps,
                layout,
                band,
                dc,
                lazy_zero,
                &mut restarts,
                progress,
            )
        } else {
            dc_refine(r, comps, layout, band, &mut restarts, progress)
        }
    } else {
        let t = ac[scomps[0].ac].as_ref().unwrap();
        if band.ah == 0 {
            ac_first(r, comps, masks, layout, band, t, &mut restarts, progress)
        } else {
            ac_refine(r, comps, masks, layout, band, t, &mut restarts, progress)
        }
    };
    r.warning = r.warning.or(restarts.warning);
    result
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn dc_first(
    reader: &mut BitReader,
    comps: &mut [Component],
    scomps: &[ScanComp],
    layout: &Layout,
    band: Band,
    dc: &[Option<Derived>; 4],
    lazy_zero: [bool; 4],
    restarts: &mut Restarts,
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut r = *reader;
    let mut luts: [Option<Box<[u32; 1 << LUT_BITS]>>; 4] = Default::default();
    for s in scomps {
        if luts[s.dc].is_none() {
            luts[s.dc] = Some(dc[s.dc].as_ref().unwrap().lut(LutKind::Dc));
        }
    }
    let mut last_dc = [0i32; 4];
    'rows: for my in 0..layout.mcu_rows {
        if my % layout.rows_per_imcu == 0 {
            check_progress(progress)?;
        }
        for mx in 0..layout.mcus_per_row {
            if restarts.before_mcu(&mut r) {
                last_dc = [0; 4];
            }
            if r.insufficient {
                if lazy_zero.iter().any(|&z| z) {
                    for b in &layout.blocks {
                        if lazy_zero[b.sc] {
                            let idx = layout.block_index(b, comps, mx, my);
                            comps[b.comp].blocks[idx] = [0; 64];
                        }
                    }
                } else if restarts.stuck(&r) {
                    break 'rows;
                }
                continue;
            }
            prefetch_mcu(layout, comps, mx + AHEAD_MCUS, my);
            for b in &layout.blocks {
                let tbl = scomps[b.sc].dc;
                let (s, v) = symbol(
                    &mut r,
                    luts[tbl].as_ref().unwrap(),
                    dc[tbl].as_ref().unwrap(),
                );
                let diff = match v {
                    Some(v) => v,
                    None if s != 0 => extend(r.get_bits(s), s),
                    None => 0,
                };
                let last = &mut last_dc[b.sc];
                *last = last
                    .checked_add(diff)
                    .ok_or_else(|| DecodeError::Invalid("DCT coefficient out of range".into()))?;
                let idx = layout.block_index(b, comps, mx, my);
                if lazy_zero[b.sc] {
                    comps[b.comp].blocks[idx] = [0; 64];
                }
                comps[b.comp].blocks[idx][0] = ((*last as u32) << band.al) as i16;
            }
        }
    }
    *reader = r;
    Ok(())
}

#[inline(never)]
fn dc_refine(
    reader: &mut BitReader,
    comps: &mut [Component],
    layout: &Layout,
    band: Band,
    restarts: &mut Restarts,
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut r = *reader;
    let p1 = 1i16 << band.al;
    'rows: for my in 0..layout.mcu_rows {
        if my % layout.rows_per_imcu == 0 {
            check_progress(progress)?;
        }
        for mx in 0..layout.mcus_per_row {
            restarts.before_mcu(&mut r);
            // libjpeg decodes these MCUs even without data; the bits read are then zero.
            if restarts.stuck(&r) {
                break 'rows;
            }
            prefetch_mcu(layout, comps, mx + AHEAD_MCUS, my);
            for b in &layout.blocks {
                if r.get_bit() {
                    let idx = layout.block_index(b, comps, mx, my);
                    comps[b.comp].blocks[idx][0] |= p1;
                }
            }
        }
    }
    *reader = r;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn ac_first(
    reader: &mut BitReader,
    comps: &mut [Component],
    masks: &mut [Vec<u64>],
    layout: &Layout,
    band: Band,
    t: &Derived,
    restarts: &mut Restarts,
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut r = *reader;
    let lut = &*t.lut(LutKind::AcFirst);
    let comp = layout.blocks[0].comp;
    let bpr = comps[comp].blocks_per_row;
    let blocks = &mut comps[comp].blocks;
    let masks = &mut masks[comp];
    let (ss, se, al) = (band.ss, band.se, band.al);
    let mut eobrun = 0u32;
    'rows: for my in 0..layout.mcu_rows {
        if my % layout.rows_per_imcu == 0 {
            check_progress(progress)?;
        }
        let start = my * bpr;
        let row = &mut blocks[start..start + layout.mcus_per_row];
        let mrow = &mut masks[start..start + layout.mcus_per_row];
        let mut mx = 0;
        while mx < row.len() {
            if restarts.before_mcu(&mut r) {
                eobrun = 0;
            }
            if r.insufficient {
                if restarts.stuck(&r) {
                    break 'rows;
                }
                mx += 1;
                continue;
            }
            if eobrun > 0 {
                // Blocks inside an EOB run take no bits: skip as many as the run and
                // the restart interval allow.
                let mut n = (eobrun as usize).min(row.len() - mx);
                if restarts.interval != 0 {
                    n = n.min(restarts.to_go as usize + 1);
                    restarts.to_go -= n as u32 - 1;
                }
                eobrun -= n as u32;
                mx += n;
                continue;
            }
            prefetch_block(&row[(mx + AHEAD_BLOCKS).min(row.len() - 1)]);
            let blk = &mut row[mx];
            let mut mask = mrow[mx];
            let mut k = ss;
            while k <= se {
                let (rs, v) = symbol(&mut r, lut, t);
                let run = (rs >> 4) as usize;
                let s = rs & 15;
                if s != 0 {
                    k += run;
                    let v = match v {
                        Some(v) => v,
                        None => extend(r.get_bits(s), s),
                    };
                    let val = ((v as u32) << al) as i16;
                    let z = k.min(63);
                    blk[NATURAL[z & 127] as usize & 63] = val;
                    mask = (mask & !(1 << z)) | (((val != 0) as u64) << z);
                } else if run == 15 {
                    k += 15;
                } else {
                    let n = match v {
                        Some(n) => n as u32,
                        None => (1u32 << run) + if run > 0 { r.get_bits(run as u32) } else { 0 },
                    };
                    eobrun = n - 1;
                    break;
                }
                k += 1;
            }
            mrow[mx] = mask;
            mx += 1;
        }
    }
    *reader = r;
    Ok(())
}

/// `SELECT_IN_BYTE[n * 256 + b]`: position of the `n`-th (from 0) set bit of byte `b`.
const SELECT_IN_BYTE: [u8; 2048] = {
    let mut t = [8u8; 2048];
    let mut b = 0;
    while b < 256 {
        let mut n = 0;
        let mut i = 0;
        while i < 8 {
            if b & (1 << i) != 0 {
                t[n * 256 + b] = i as u8;
                n += 1;
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// Position of the `r`-th (from 0) set bit of `x`, if it has that many.
///
/// The result decides how many correction bits the scan reads next, so its latency is
/// on the decoder's critical path. Runs below 4 are 93 % of a refinement scan's
/// symbols on the corpus (half are 0): for them, clear the lowest bits and pick one of
/// the four results without a data-dependent branch (a few cycles); longer runs take
/// the broadword selection ([`select_bit_broadword`]).
#[inline(always)]
fn select_bit(x: u64, r: u32) -> Option<usize> {
    if r < 4 {
        let x1 = x & x.wrapping_sub(1);
        let x2 = x1 & x1.wrapping_sub(1);
        let x3 = x2 & x2.wrapping_sub(1);
        let low = if r & 1 == 0 { x } else { x1 };
        let high = if r & 1 == 0 { x2 } else { x3 };
        let y = if r & 2 == 0 { low } else { high };
        return (y != 0).then(|| y.trailing_zeros() as usize);
    }
    select_bit_broadword(x, r)
}

/// [`select_bit`] by broadword selection (byte-wise population counts and prefix
/// sums), free of data-dependent branches whatever `r`.
#[inline(always)]
fn select_bit_broadword(x: u64, r: u32) -> Option<usize> {
    const L8: u64 = 0x0101_0101_0101_0101;
    const H8: u64 = 0x8080_8080_8080_8080;
    let mut c = x - ((x >> 1) & 0x5555_5555_5555_5555);
    c = (c & 0x3333_3333_3333_3333) + ((c >> 2) & 0x3333_3333_3333_3333);
    c = (c + (c >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    let sums = c.wrapping_mul(L8);
    if (sums >> 56) as u32 <= r {
        return None;
    }
    let rr = r as u64 * L8;
    // 8 × number of bytes whose running count is at most r: the byte holding the bit.
    let place = (((((rr | H8) - sums) & H8) >> 7).wrapping_mul(L8) >> 53) & !7;
    let before = ((sums << 8) >> place) & 0xFF;
    let byte = (x >> place) & 0xFF;
    let n = r as u64 - before;
    Some(place as usize + SELECT_IN_BYTE[(n as usize & 7) * 256 + byte as usize] as usize)
}

/// Reads one correction bit for each nonzero coefficient in `nz` (zigzag positions),
/// in order, and applies them.
#[inline(always)]
fn refine_nonzero(r: &mut BitReader, blk: &mut Block, mut nz: u64, p1: i16) {
    while nz != 0 {
        let z = nz.trailing_zeros() as usize;
        nz &= nz - 1;
        // Branch-free: the correction bits are close to random.
        let bit = r.get_bit() as i16;
        let c = &mut blk[NATURAL[z & 127] as usize & 63];
        let apply = bit & ((*c & p1) == 0) as i16;
        let delta = ((*c >> 15) | 1) * p1;
        *c = c.wrapping_add(delta * apply);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn ac_refine(
    reader: &mut BitReader,
    comps: &mut [Component],
    masks: &mut [Vec<u64>],
    layout: &Layout,
    band: Band,
    t: &Derived,
    restarts: &mut Restarts,
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut r = *reader;
    let lut = &*t.lut(LutKind::AcRefine);
    let comp = layout.blocks[0].comp;
    let bpr = comps[comp].blocks_per_row;
    let blocks = &mut comps[comp].blocks;
    let masks = &mut masks[comp];
    let (ss, se) = (band.ss, band.se);
    let p1 = 1i16 << band.al;
    let m1 = (-1i16) << band.al;
    // Zigzag positions ss..=se.
    let band_bits = (u64::MAX >> (63 - se)) & (u64::MAX << ss);
    let mut eobrun = 0u32;
    'rows: for my in 0..layout.mcu_rows {
        if my % layout.rows_per_imcu == 0 {
            check_progress(progress)?;
        }
        let start = my * bpr;
        let row = &mut blocks[start..start + layout.mcus_per_row];
        let mrow = &mut masks[start..start + layout.mcus_per_row];
        let n = row.len();
        for i in 0..n {
            // A block a few ahead is put on its way into cache.
            prefetch_block(&row[(i + AHEAD_BLOCKS).min(n - 1)]);
            let blk = &mut row[i];
            let mask = &mut mrow[i];
            if restarts.before_mcu(&mut r) {
                eobrun = 0;
            }
            if r.insufficient {
                if restarts.stuck(&r) {
                    break 'rows;
                }
                continue;
            }
            let mut k = ss;
            if eobrun == 0 {
                while k <= se {
                    let (rs, v) = symbol(&mut r, lut, t);
                    let run = rs >> 4;
                    let s = rs & 15;
                    let mut newval = 0i16;
                    if s != 0 {
                        let positive = match v {
                            Some(v) => v > 0,
                            None => {
                                if s != 1 {
                                    r.warning.get_or_insert(BAD_CODE);
                                }
                                r.get_bit()
                            }
                        };
                        newval = if positive { p1 } else { m1 };
                    } else if run != 15 {
                        eobrun = match v {
                            Some(n) => n as u32,
                            None => (1u32 << run) + if run > 0 { r.get_bits(run) } else { 0 },
                        };
                        break;
                    }
                    // Skip `run` zero coefficients of the band from k: the target is the
                    // next zero after them (or one past the band end).
                    let from_k = band_bits & (u64::MAX << k);
                    let target = select_bit(!*mask & from_k, run).unwrap_or(se + 1);
                    let below = if target >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << target) - 1
                    };
                    let passed = *mask & from_k & below;
                    refine_nonzero(&mut r, blk, passed, p1);
                    k = target;
                    if newval != 0 {
                        let z = k.min(63);
                        blk[NATURAL[z & 127] as usize & 63] = newval;
                        *mask |= 1 << z;
                    }
                    k += 1;
                }
            }
            if eobrun > 0 {
                if k <= se {
                    let rest = *mask & band_bits & (u64::MAX << k);
                    refine_nonzero(&mut r, blk, rest, p1);
                }
                eobrun -= 1;
            }
        }
    }
    *reader = r;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand_xoshiro::{
        Xoshiro256PlusPlus,
        rand_core::{RngCore, SeedableRng},
    };

    use super::*;

    /// The `r`-th set bit, by looking at each bit in turn.
    fn naive_select(x: u64, r: u32) -> Option<usize> {
        (0..64).filter(|&i| x >> i & 1 == 1).nth(r as usize)
    }

    #[test]
    fn select_bit_finds_the_rth_set_bit_or_none() {
        // Edge words, then words of every density from a fixed-seed generator.
        let mut words = vec![
            0,
            1,
            u64::MAX,
            1 << 63,
            0x8000_0000_0000_0001,
            0xAAAA_AAAA_AAAA_AAAA,
        ];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let (a, b, c) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
            let sparse = a & b & c;
            words.extend([a, sparse, !sparse]);
        }
        for x in words {
            for r in 0..66 {
                assert_eq!(select_bit(x, r), naive_select(x, r), "x={x:#x} r={r}");
                assert_eq!(
                    select_bit_broadword(x, r.min(63)),
                    naive_select(x, r.min(63)),
                    "x={x:#x} r={r}"
                );
            }
        }
    }
}
