//! Sequential (baseline and extended) Huffman scans: `decode_mcu` of `jdhuff.c`,
//! ITU T.81 F.2.2.1 (DC difference) and F.2.2.2 (AC run/size coding). Short codes,
//! with their run, size and value, resolve in one table lookup; coefficients go straight
//! into the destination block.

use super::bits::BitReader;
use super::emulate::replay_sequential;
use super::huffman::{
    Derived, LUT_BITS, LutKind, SEQ_ZERO_SIZE, entry_len, entry_sym, entry_total, entry_value,
    extend, seq_advance, seq_len, seq_size, seq_value,
};
use super::scan::{Layout, NATURAL, Restarts, ScanComp, check_progress};
use super::types::{Block, Component, DecodeError, Progress};

/// Tables for one block of the MCU.
struct BlockTables<'t> {
    dc: &'t Derived,
    ac: &'t Derived,
    dc_lut: &'t [u32; 1 << LUT_BITS],
    ac_lut: &'t [u32; 1 << LUT_BITS],
}

/// Decodes a symbol and the value bits after it: (symbol, value).
#[inline(always)]
fn symbol_value<const EXACT: bool, const DC: bool>(
    r: &mut BitReader,
    lut: &[u32; 1 << LUT_BITS],
    t: &Derived,
) -> (u32, i32) {
    if EXACT {
        r.prepare_symbol();
    } else {
        r.prepare_symbol_wide();
    }
    let e = lut[r.peek_lut()];
    let total = entry_total(e);
    if total.wrapping_sub(1) < r.bits_left() {
        r.consume_entry(e);
        return (entry_sym(e), entry_value(e));
    }
    let l = entry_len(e);
    let sym = if l != 0 && l <= r.bits_left() {
        r.consume(l);
        entry_sym(e)
    } else {
        r.decode_slow(t)
    };
    let s = if DC { sym } else { sym & 15 };
    (sym, if s != 0 { extend(r.get_bits(s), s) } else { 0 })
}

/// Decodes one block: DC difference into `last_dc`, then the AC coefficients.
/// `EXACT` keeps libjpeg's refill points (needed with restart intervals, where no replay
/// settles the input position).
#[inline(always)]
fn decode_block<const EXACT: bool>(
    r: &mut BitReader,
    blk: &mut Block,
    t: &BlockTables,
    last_dc: &mut i32,
) {
    let (_, diff) = symbol_value::<EXACT, true>(r, t.dc_lut, t.dc);
    *last_dc = last_dc.wrapping_add(diff);
    blk[0] = *last_dc as i16;

    let mut k = 1usize;
    while k < 64 {
        if EXACT {
            r.prepare_symbol();
        } else {
            r.prepare_symbol_wide();
        }
        let e = t.ac_lut[r.peek_lut()];
        let total = entry_total(e);
        if total.wrapping_sub(1) < r.bits_left() {
            // Code and value bits both in the table. Branch-free: EOB and ZRL store
            // into a spare slot, and EOB moves the index past the end.
            r.consume_entry(e);
            let at = k + seq_advance(e) as usize - 1;
            let mut spare = 0i16;
            let slot = if e & SEQ_ZERO_SIZE == 0 {
                &mut blk[NATURAL[at & 127] as usize & 63]
            } else {
                &mut spare
            };
            *slot = seq_value(e) as i16;
            k = at + 1;
        } else {
            let l = seq_len(e);
            let (run, size) = if l != 0 && l <= r.bits_left() {
                r.consume(l);
                (seq_advance(e) - 1, seq_size(e))
            } else {
                let rs = r.decode_slow(t.ac);
                (rs >> 4, rs & 15)
            };
            k += run as usize;
            if size != 0 {
                let v = extend(r.get_bits(size), size);
                blk[NATURAL[k & 127] as usize & 63] = v as i16;
            } else if run != 15 {
                break;
            }
            k += 1;
        }
    }
}

/// Decodes one sequential scan into `comps`. Blocks of scan components flagged in
/// `lazy_zero` hold stale data and are cleared just before they are written.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_scan(
    reader: &mut BitReader,
    comps: &mut [Component],
    scomps: &[ScanComp],
    layout: &Layout,
    dc: &[Option<Derived>; 4],
    ac: &[Option<Derived>; 4],
    restart_interval: u32,
    lazy_zero: [bool; 4],
    progress: &mut dyn Progress,
) -> Result<(), DecodeError> {
    let mut r = *reader;
    type Lut = Option<Box<[u32; 1 << LUT_BITS]>>;
    let mut dc_luts: [Lut; 4] = Default::default();
    let mut ac_luts: [Lut; 4] = Default::default();
    for s in scomps {
        if dc_luts[s.dc].is_none() {
            dc_luts[s.dc] = Some(dc[s.dc].as_ref().unwrap().lut(LutKind::Dc));
        }
        if ac_luts[s.ac].is_none() {
            ac_luts[s.ac] = Some(ac[s.ac].as_ref().unwrap().lut(LutKind::AcSequential));
        }
    }
    let tables: Vec<BlockTables> = layout
        .blocks
        .iter()
        .map(|b| {
            let s = &scomps[b.sc];
            BlockTables {
                dc: dc[s.dc].as_ref().unwrap(),
                ac: ac[s.ac].as_ref().unwrap(),
                dc_lut: dc_luts[s.dc].as_ref().unwrap(),
                ac_lut: ac_luts[s.ac].as_ref().unwrap(),
            }
        })
        .collect();

    // Without restart intervals libjpeg mostly takes its fast path, which does not warn
    // about bad codes and buffers differently; that is settled by a replay at the end.
    let replay_start = r.input.pos;
    let fast_path_possible = restart_interval == 0;
    r.warn_bad_code = !fast_path_possible;

    let mut restarts = Restarts::new(restart_interval);
    let mut last_dc = [0i32; 4];
    // Block arrays of the scan's components, and where each MCU block sits in them.
    let strides: Vec<usize> = comps.iter().map(|c| c.blocks_per_row).collect();
    let mut planes: Vec<&mut [Block]> = comps.iter_mut().map(|c| c.stored_mut()).collect();
    'rows: for my in 0..layout.mcu_rows {
        if my % layout.rows_per_imcu == 0 {
            check_progress(progress)?;
        }
        let bases: Vec<usize> = layout
            .blocks
            .iter()
            .map(|b| (my * b.h + b.dy) * strides[b.comp] + b.dx)
            .collect();
        for mx in 0..layout.mcus_per_row {
            if restarts.before_mcu(&mut r) {
                last_dc = [0; 4];
            }
            if r.insufficient {
                if lazy_zero.iter().any(|&z| z) {
                    for (b, base) in layout.blocks.iter().zip(&bases) {
                        if lazy_zero[b.sc] {
                            planes[b.comp][base + mx * b.w] = [0; 64];
                        }
                    }
                } else if restarts.stuck(&r) {
                    break 'rows;
                }
                continue;
            }
            for ((b, t), base) in layout.blocks.iter().zip(&tables).zip(&bases) {
                let blk = &mut planes[b.comp][base + mx * b.w];
                if lazy_zero[b.sc] {
                    *blk = [0; 64];
                }
                if fast_path_possible {
                    decode_block::<false>(&mut r, blk, t, &mut last_dc[b.sc]);
                } else {
                    decode_block::<true>(&mut r, blk, t, &mut last_dc[b.sc]);
                }
            }
        }
    }
    r.warning = r.warning.or(restarts.warning);

    if fast_path_possible && (r.bad_code_seen || (1..=8).contains(&r.trailing_units(9))) {
        let blocks: Vec<(&Derived, &Derived)> = tables.iter().map(|t| (t.dc, t.ac)).collect();
        let mcus = (layout.mcus_per_row * layout.mcu_rows) as u64;
        let replay = replay_sequential(r.input.data, replay_start, &blocks, mcus);
        r.warning = r.warning.or(replay.warning);
        r.input.eof |= replay.eof;
        r.input.pos = replay.pos;
        r.marker = replay.marker;
        r.clear();
    }
    *reader = r;
    Ok(())
}
