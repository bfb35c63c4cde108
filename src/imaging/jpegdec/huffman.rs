//! Huffman tables: the DHT contents, their validation and the decoding tables derived
//! from them (`jpeg_make_d_derived_tbl` in `jdhuff.c`; ITU T.81 C.2, F.2.2.3, Figures F.15/F.16),
//! plus wide lookup tables that resolve a short code together with the bits that follow it.

use super::types::{DecodeError, invalid};

/// Width in bits of the lookup tables used by the scan decoders.
pub(super) const LUT_BITS: u32 = 11;

/// A Huffman table as defined by a DHT segment (`JHUFF_TBL`).
#[derive(Clone, Debug)]
pub(super) struct HuffSpec {
    /// `bits[l]`: number of codes of length `l` (index 0 unused).
    pub bits: [u8; 17],
    /// Symbols in code order; unused entries are zero.
    pub vals: [u8; 256],
}

impl HuffSpec {
    /// Builds a table from code-length counts and symbols (`add_huff_table` in `jstdhuff.c`).
    pub fn from_parts(bits: &[u8; 17], vals: &[u8]) -> Self {
        let mut v = [0u8; 256];
        v[..vals.len()].copy_from_slice(vals);
        HuffSpec {
            bits: *bits,
            vals: v,
        }
    }
}

/// Decoding tables for one Huffman table (`d_derived_tbl`).
#[derive(Clone, Debug)]
pub(super) struct Derived {
    /// Largest code of each length, -1 if none; `maxcode[17]` is a sentinel.
    pub maxcode: [i32; 18],
    /// Symbol index offset for each code length.
    pub valoffset: [i32; 18],
    /// Symbols in code order.
    pub vals: [u8; 256],
    /// libjpeg's 8-bit lookahead: `(length << 8) | symbol`, length 9 if the code is longer.
    pub look8: [u16; 256],
    /// `(code length, symbol)` for each `LUT_BITS`-bit prefix; length 0 if the code is longer.
    pub short: Vec<(u8, u8)>,
}

const STD_DC_LUMA_BITS: [u8; 17] = [0, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const STD_DC_CHROMA_BITS: [u8; 17] = [0, 0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const STD_DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const STD_AC_LUMA_BITS: [u8; 17] = [0, 0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const STD_AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const STD_AC_CHROMA_BITS: [u8; 17] = [0, 0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const STD_AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// The standard tables of ITU T.81 K.3, which libjpeg installs in slots 0 and 1 of a
/// sequential image when the file leaves them undefined (`std_huff_tables`).
/// Returned as (DC tables, AC tables).
pub(super) fn standard_tables() -> ([HuffSpec; 2], [HuffSpec; 2]) {
    (
        [
            HuffSpec::from_parts(&STD_DC_LUMA_BITS, &STD_DC_VALS),
            HuffSpec::from_parts(&STD_DC_CHROMA_BITS, &STD_DC_VALS),
        ],
        [
            HuffSpec::from_parts(&STD_AC_LUMA_BITS, &STD_AC_LUMA_VALS),
            HuffSpec::from_parts(&STD_AC_CHROMA_BITS, &STD_AC_CHROMA_VALS),
        ],
    )
}

impl Derived {
    /// Validates `spec` and derives its decoding tables, with libjpeg's checks and errors.
    pub fn new(spec: &HuffSpec, is_dc: bool) -> Result<Self, DecodeError> {
        let mut huffsize = [0u8; 257];
        let mut huffcode = [0u32; 257];
        let mut p = 0usize;
        for l in 1..=16u8 {
            let n = spec.bits[l as usize] as usize;
            if p + n > 256 {
                return invalid("bogus Huffman table definition");
            }
            huffsize[p..p + n].fill(l);
            p += n;
        }
        huffsize[p] = 0;
        let numsymbols = p;

        let mut code = 0u32;
        let mut si = huffsize[0] as u32;
        p = 0;
        while huffsize[p] != 0 {
            while huffsize[p] as u32 == si {
                huffcode[p] = code;
                p += 1;
                code += 1;
            }
            if code as u64 >= 1u64 << si {
                return invalid("bogus Huffman table definition");
            }
            code <<= 1;
            si += 1;
        }

        let mut maxcode = [0i32; 18];
        let mut valoffset = [0i32; 18];
        p = 0;
        for l in 1..=16usize {
            let n = spec.bits[l] as usize;
            if n != 0 {
                valoffset[l] = p as i32 - huffcode[p] as i32;
                p += n;
                maxcode[l] = huffcode[p - 1] as i32;
            } else {
                maxcode[l] = -1;
            }
        }
        valoffset[17] = 0;
        maxcode[17] = 0xFFFFF;

        let mut look8 = [9u16 << 8; 256];
        let lut_size = 1usize << LUT_BITS;
        let mut short = vec![(0u8, 0u8); lut_size];
        p = 0;
        for l in 1..=16u32 {
            for _ in 0..spec.bits[l as usize] {
                let sym = spec.vals[p];
                if l <= 8 {
                    let first = (huffcode[p] << (8 - l)) as usize;
                    for e in &mut look8[first..first + (1 << (8 - l))] {
                        *e = ((l as u16) << 8) | sym as u16;
                    }
                }
                if l <= LUT_BITS {
                    let first = (huffcode[p] << (LUT_BITS - l)) as usize;
                    for e in &mut short[first..first + (1 << (LUT_BITS - l))] {
                        *e = (l as u8, sym);
                    }
                }
                p += 1;
            }
        }

        if is_dc && spec.vals[..numsymbols].iter().any(|&s| s > 15) {
            return invalid("bogus Huffman table definition");
        }
        Ok(Derived {
            maxcode,
            valoffset,
            vals: spec.vals,
            look8,
            short,
        })
    }

    /// Builds the combined lookup table for one kind of scan (see [`LutKind`]).
    pub fn lut(&self, kind: LutKind) -> Box<[u32; 1 << LUT_BITS]> {
        let w = LUT_BITS;
        self.short
            .iter()
            .enumerate()
            .map(|(pattern, &(l, sym))| {
                if l == 0 {
                    return 0;
                }
                let l = l as u32;
                let r = (sym >> 4) as u32;
                let s = (sym & 15) as u32;
                // Bits of the pattern that follow the code.
                let rest = |n: u32| ((pattern as u32) >> (w - l - n)) & ((1 << n) - 1);
                let (extra, value): (u32, i32) = match kind {
                    LutKind::Dc => {
                        let s = sym as u32;
                        if s == 0 {
                            (0, 0)
                        } else if l + s <= w {
                            (s, extend(rest(s), s))
                        } else {
                            return pack(0, l, sym, 0);
                        }
                    }
                    LutKind::AcSequential => {
                        // total | advance << 6 | zero-size << 13 | code length << 14
                        // | value << 19 (size << 19 where the value bits do not fit);
                        // advance: run + 1 for a coefficient, 16 for ZRL, 64 for EOB.
                        let advance = if s != 0 {
                            r + 1
                        } else if r == 15 {
                            16
                        } else {
                            64
                        };
                        let head = advance << 6 | ((s == 0) as u32) << 13 | l << 14;
                        if s == 0 {
                            return l | head;
                        } else if l + s <= w {
                            return (l + s) | head | ((extend(rest(s), s) as u32) << 19);
                        } else {
                            return head | s << 19;
                        }
                    }
                    LutKind::AcFirst => {
                        if s != 0 {
                            if l + s <= w {
                                (s, extend(rest(s), s))
                            } else {
                                return pack(0, l, sym, 0);
                            }
                        } else if r == 15 {
                            (0, 0)
                        } else if l + r <= w {
                            (r, ((1u32 << r) + if r > 0 { rest(r) } else { 0 }) as i32)
                        } else {
                            return pack(0, l, sym, 0);
                        }
                    }
                    LutKind::AcRefine => {
                        if s == 1 {
                            if l < w {
                                (1, if rest(1) != 0 { 1 } else { -1 })
                            } else {
                                return pack(0, l, sym, 0);
                            }
                        } else if s != 0 {
                            // Sizes other than 1 draw a warning: leave them to the slow path.
                            return pack(0, l, sym, 0);
                        } else if r == 15 {
                            (0, 0)
                        } else if l + r <= w {
                            (r, ((1u32 << r) + if r > 0 { rest(r) } else { 0 }) as i32)
                        } else {
                            return pack(0, l, sym, 0);
                        }
                    }
                };
                pack(l + extra, l, sym, value)
            })
            .collect::<Vec<u32>>()
            .into_boxed_slice()
            .try_into()
            .unwrap()
    }
}

/// Which meaning the bits after a code have in a lookup table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LutKind {
    /// DC difference: symbol = size, followed by that many value bits.
    Dc,
    /// Sequential AC: run/size, value bits; EOB and ZRL take no extra bits. Packed
    /// differently from the others: see [`seq_run`] and friends.
    AcSequential,
    /// Progressive first AC scan: run/size and value bits, or EOBn with n run-length bits.
    AcFirst,
    /// Progressive AC refinement: run/1 and a sign bit, or EOBn with n run-length bits.
    AcRefine,
}

/// Packs a lookup entry: total bits (0 = not resolved by the table; a 6-bit field, so
/// that a shift by the whole entry shifts by the total), code length,
/// symbol and a signed value (coefficient, sign or EOB run length).
#[inline]
fn pack(total: u32, len: u32, sym: u8, value: i32) -> u32 {
    ((value as u32) << 19) | ((sym as u32) << 11) | (len << 6) | total
}

/// Total bits an entry resolves (0 if the slow path is needed).
#[inline(always)]
pub(super) fn entry_total(e: u32) -> u32 {
    e & 63
}

/// Code length of an entry (0 if the code is longer than the table).
#[inline(always)]
pub(super) fn entry_len(e: u32) -> u32 {
    (e >> 6) & 31
}

/// Symbol of an entry.
#[inline(always)]
pub(super) fn entry_sym(e: u32) -> u32 {
    (e >> 11) & 0xFF
}

/// Signed value of an entry.
#[inline(always)]
pub(super) fn entry_value(e: u32) -> i32 {
    (e as i32) >> 19
}

/// Sequential AC entry: how far the coefficient index moves (run + 1; 16 for ZRL,
/// 64 for EOB).
#[inline(always)]
pub(super) fn seq_advance(e: u32) -> u32 {
    (e >> 6) & 127
}

/// Sequential AC entry: the symbol has size 0 (EOB or ZRL).
pub(super) const SEQ_ZERO_SIZE: u32 = 1 << 13;

/// Sequential AC entry: code length (0 if longer than the table).
#[inline(always)]
pub(super) fn seq_len(e: u32) -> u32 {
    (e >> 14) & 31
}

/// Sequential AC entry: coefficient size, for any entry with a code length.
#[inline(always)]
pub(super) fn seq_size(e: u32) -> u32 {
    if e & 63 != 0 {
        (e & 63) - seq_len(e)
    } else {
        (e >> 19) & 15
    }
}

/// Sequential AC entry: coefficient value (0 for EOB and ZRL).
#[inline(always)]
pub(super) fn seq_value(e: u32) -> i32 {
    (e as i32) >> 19
}

/// Sign extension of an `s`-bit magnitude (ITU T.81 Figure F.12, `HUFF_EXTEND`).
#[inline(always)]
pub(super) fn extend(x: u32, s: u32) -> i32 {
    let x = x as i32;
    if x < (1 << (s - 1)) {
        x + ((-1i32) << s) + 1
    } else {
        x
    }
}
