//! Entropy-coded segment bit reader with libjpeg's exact buffering (`jpeg_fill_bit_buffer`,
//! `jpeg_huff_decode` and the `HUFF_DECODE`/`CHECK_BIT_BUFFER` macros of `jdhuff.[ch]`;
//! ITU T.81 F.2.2.5 and F.1.2.3 for byte stuffing).
//!
//! Progressive scans and scans with restart intervals refill at the same points and by
//! the same amounts as libjpeg's slow path (whenever fewer bits are left than the next
//! step needs, up to 57–64 bits), so the input position at the end of a scan, and with
//! it libjpeg's count of skipped bytes, comes out the same. Sequential scans without
//! restart intervals refill earlier (below 16 bits) and settle the end position by a
//! replay where it matters (`emulate.rs`). Whole 8-byte groups without 0xFF are loaded
//! at once.

use super::huffman::{Derived, LUT_BITS};
use super::input::Input;

/// libjpeg's `MIN_GET_BITS` for a 64-bit buffer.
const MIN_GET_BITS: u32 = 57;

/// Bit reader over one scan's entropy-coded data.
///
/// Scan decoders work on a local copy, and the out-of-line paths take and return the
/// reader by value, so that the bit buffer can stay in registers in the hot loops.
#[derive(Clone, Copy)]
pub(super) struct BitReader<'a> {
    /// The byte source; `input.pos` is the next byte to load.
    pub input: Input<'a>,
    /// Unconsumed bits, left-aligned; below the valid ones, either zeros or the leading
    /// bits of the next byte to load.
    acc: u64,
    /// Number of valid bits in `acc`.
    bits: u32,
    /// Marker that ended the data (libjpeg's `unread_marker`), 0 if none seen yet.
    pub marker: u8,
    /// libjpeg's `insufficient_data`: zeros were supplied in place of missing data.
    pub insufficient: bool,
    /// The first warning raised (premature end of segment, bad Huffman code).
    pub warning: Option<&'static str>,
    /// Bad Huffman codes raise a warning (false where libjpeg's fast path would not).
    pub warn_bad_code: bool,
    /// A bad Huffman code was met while `warn_bad_code` was false.
    pub bad_code_seen: bool,
}

/// libjpeg's `JWRN_HIT_MARKER`: a marker (or the end of the data) where the scan still
/// had data to give.
pub const HIT_MARKER: &str = "Corrupt JPEG data: premature end of data segment";

/// libjpeg's `JWRN_HUFF_BAD_CODE`.
pub const BAD_CODE: &str = "Corrupt JPEG data: bad Huffman code";

/// True if any byte of `w` is 0xFF.
#[inline(always)]
fn has_ff(w: u64) -> bool {
    let x = !w;
    (x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080) != 0
}

impl<'a> BitReader<'a> {
    /// Starts a scan (or restart interval) at `input.pos` with an empty buffer.
    pub fn new(input: Input<'a>, marker: u8) -> Self {
        BitReader {
            input,
            acc: 0,
            bits: 0,
            marker,
            insufficient: false,
            warning: None,
            warn_bad_code: true,
            bad_code_seen: false,
        }
    }

    /// Number of unconsumed bits in the buffer.
    #[inline(always)]
    pub fn bits_left(&self) -> u32 {
        self.bits
    }

    /// Empties the buffer (at a restart marker).
    pub fn clear(&mut self) {
        self.acc = 0;
        self.bits = 0;
    }

    /// Loads whole bytes until at least 57 bits are buffered or a marker is met.
    /// (Below the `bits` valid bits `acc` may hold the leading bits of the next byte.)
    #[inline(always)]
    pub fn fill(&mut self) {
        if self.marker != 0 || self.bits >= MIN_GET_BITS {
            return;
        }
        let pos = self.input.pos;
        if let Some(chunk) = self.input.data.get(pos..pos + 8) {
            let w = u64::from_be_bytes(chunk.try_into().unwrap());
            if !has_ff(w) {
                // As many whole bytes as fit (57..=64 bits, as libjpeg loads); the top
                // bits of the next byte come along below them, and are OR-ed in again,
                // unchanged, when it is loaded.
                let room = (64 - self.bits) & !7;
                self.acc |= w >> self.bits;
                self.input.pos = pos + (room >> 3) as usize;
                self.bits += room;
                return;
            }
        }
        *self = self.fill_bytewise();
    }

    #[inline(never)]
    fn fill_bytewise(mut self) -> Self {
        while self.bits < MIN_GET_BITS {
            let mut c = self.input.byte();
            if c == 0xFF {
                let mut c2 = self.input.byte();
                while c2 == 0xFF {
                    c2 = self.input.byte();
                }
                if c2 != 0 {
                    self.marker = c2;
                    return self;
                }
                c = 0xFF;
            }
            self.acc |= (c as u64) << (56 - self.bits);
            self.bits += 8;
        }
        self
    }

    /// Makes at least `n` bits available (`CHECK_BIT_BUFFER`); past a marker, supplies
    /// zeros and raises the premature-end warning once per segment.
    #[inline(always)]
    pub fn ensure(&mut self, n: u32) {
        if self.bits < n {
            *self = self.ensure_slow(n);
        }
    }

    #[inline(never)]
    fn ensure_slow(mut self, n: u32) -> Self {
        self.fill();
        if self.bits < n {
            if !self.insufficient {
                self.warning.get_or_insert(HIT_MARKER);
                self.insufficient = true;
            }
            self.bits = MIN_GET_BITS;
        }
        self
    }

    /// The next `LUT_BITS` bits, zero-padded.
    #[inline(always)]
    pub fn peek_lut(&self) -> usize {
        (self.acc >> (64 - LUT_BITS)) as usize
    }

    /// Drops `n` bits (the caller has checked they are buffered).
    #[inline(always)]
    pub fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.bits -= n;
    }

    /// Drops the bits a table entry resolves (its low 6 bits); shifting by the whole
    /// entry lets the shift instruction do the masking, one step less on the critical path.
    #[inline(always)]
    pub fn consume_entry(&mut self, e: u32) {
        self.acc = self.acc.wrapping_shl(e);
        self.bits -= e & 63;
    }

    /// Reads `n` (1..=16) bits (`CHECK_BIT_BUFFER` + `GET_BITS`).
    #[inline(always)]
    pub fn get_bits(&mut self, n: u32) -> u32 {
        self.ensure(n);
        let v = (self.acc >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// Reads one bit.
    #[inline(always)]
    pub fn get_bit(&mut self) -> bool {
        self.ensure(1);
        let v = (self.acc >> 63) != 0;
        self.consume(1);
        v
    }

    /// The start of `HUFF_DECODE`: refill if fewer than 8 bits are buffered.
    #[inline(always)]
    pub fn prepare_symbol(&mut self) {
        if self.bits < 8 {
            self.fill();
        }
    }

    /// Refills if fewer than 32 bits are buffered, so that a table entry (code and value)
    /// and most long codes resolve without a further refill. Only for scans whose end
    /// position is settled by a replay (see `emulate.rs`).
    #[inline(always)]
    pub fn prepare_symbol_wide(&mut self) {
        if self.bits < 16 {
            self.fill();
        }
    }

    /// Decodes one symbol the way `HUFF_DECODE` does after its refill check:
    /// 8-bit lookahead, then `jpeg_huff_decode` one bit at a time.
    #[inline(always)]
    pub fn decode_slow(&mut self, t: &Derived) -> u32 {
        let (r, sym) = self.decode_slow_by_value(t);
        *self = r;
        sym
    }

    #[inline(never)]
    fn decode_slow_by_value(mut self, t: &Derived) -> (Self, u32) {
        let sym = self.decode_bitwise(t);
        (self, sym)
    }

    fn decode_bitwise(&mut self, t: &Derived) -> u32 {
        let mut l;
        if self.bits < 8 {
            l = 1;
        } else {
            let e = t.look8[(self.acc >> 56) as usize];
            let n = (e >> 8) as u32;
            if n <= 8 {
                self.consume(n);
                return (e & 0xFF) as u32;
            }
            l = 9;
        }
        let mut code = self.get_bits(l) as i32;
        while code > t.maxcode[l as usize] {
            code = (code << 1) | self.get_bit() as i32;
            l += 1;
        }
        if l > 16 {
            if self.warn_bad_code {
                self.warning.get_or_insert(BAD_CODE);
            } else {
                self.bad_code_seen = true;
            }
            return 0;
        }
        t.vals[((code + t.valoffset[l as usize]) & 0xFF) as usize] as u32
    }

    /// Whole unconsumed bytes between the read position and the marker ending the
    /// segment, counting at most `limit` (bytes in the buffer, then bytes after it).
    pub fn trailing_units(self, limit: u32) -> u32 {
        let mut n = self.bits / 8;
        if self.marker != 0 {
            return n;
        }
        let mut p = self.input.pos;
        while n < limit {
            let c = self.input.byte_at(p);
            p += 1;
            if c == 0xFF {
                let mut c2 = self.input.byte_at(p);
                p += 1;
                while c2 == 0xFF {
                    c2 = self.input.byte_at(p);
                    p += 1;
                }
                if c2 != 0 {
                    return n;
                }
            }
            n += 1;
        }
        n
    }
}
