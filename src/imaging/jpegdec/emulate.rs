//! Replays a sequential scan without restart intervals exactly as libjpeg's `decode_mcu`
//! does (`jdhuff.c`: `decode_mcu_fast` while at least 512 bytes per block remain in the
//! source buffer, `decode_mcu_slow` otherwise), tracking only the input position.
//!
//! The two paths consume the same bits and produce the same coefficients, but they buffer
//! input differently and the fast one decodes a bad Huffman code as 0 without a warning.
//! The scan decoder calls this replay when either difference could show: after a bad code,
//! or when unread bytes follow the scan's data.

use super::bits::{BAD_CODE, HIT_MARKER};
use super::huffman::Derived;

/// What libjpeg's pass over the scan ended with.
pub(super) struct Replay {
    /// The first warning raised (premature end of segment, or bad code on the slow path).
    pub warning: Option<&'static str>,
    /// Input position after the bytes libjpeg had loaded.
    pub pos: usize,
    /// Marker read by the entropy decoder (0 if none).
    pub marker: u8,
    /// Input past the end of the data was read.
    pub eof: bool,
}

struct State<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    left: i32,
    marker: u8,
    insufficient: bool,
    warning: Option<&'static str>,
    eof: bool,
}

impl State<'_> {
    fn byte(&mut self) -> u32 {
        let p = self.pos;
        self.pos += 1;
        match self.data.get(p) {
            Some(&b) => b as u32,
            None => {
                self.eof = true;
                if (p - self.data.len()).is_multiple_of(2) {
                    0xFF
                } else {
                    0xD9
                }
            }
        }
    }

    // jpeg_fill_bit_buffer
    fn fill(&mut self, nbits: i32) {
        if self.marker == 0 {
            while self.left < 57 {
                let mut c = self.byte();
                if c == 0xFF {
                    loop {
                        c = self.byte();
                        if c != 0xFF {
                            break;
                        }
                    }
                    if c == 0 {
                        c = 0xFF;
                    } else {
                        self.marker = c as u8;
                        break;
                    }
                }
                self.buf = (self.buf << 8) | c as u64;
                self.left += 8;
            }
            if self.marker == 0 {
                return;
            }
        }
        if nbits > self.left {
            if !self.insufficient {
                self.warning.get_or_insert(HIT_MARKER);
                self.insufficient = true;
            }
            self.buf <<= (57 - self.left) as u32;
            self.left = 57;
        }
    }

    fn check(&mut self, n: i32) {
        if self.left < n {
            self.fill(n);
        }
    }

    fn get(&mut self, n: i32) -> i32 {
        self.left -= n;
        ((self.buf >> self.left as u32) & ((1u64 << n) - 1)) as i32
    }

    // HUFF_DECODE + jpeg_huff_decode
    fn decode(&mut self, t: &Derived) -> i32 {
        let mut l = 1;
        let mut slow = false;
        if self.left < 8 {
            self.fill(0);
            if self.left < 8 {
                slow = true;
            }
        }
        if !slow {
            let e = t.look8[((self.buf >> (self.left - 8) as u32) & 0xFF) as usize];
            let nb = (e >> 8) as i32;
            if nb <= 8 {
                self.left -= nb;
                return (e & 0xFF) as i32;
            }
            l = nb;
        }
        self.check(l);
        let mut code = self.get(l);
        while code > t.maxcode[l as usize] {
            self.check(1);
            code = (code << 1) | self.get(1);
            l += 1;
        }
        if l > 16 {
            self.warning.get_or_insert(BAD_CODE);
            return 0;
        }
        t.vals[(code + t.valoffset[l as usize]) as usize & 0xFF] as i32
    }

    // GET_BYTE
    fn get_byte(&mut self) {
        let c0 = self.data.get(self.pos).copied().unwrap_or(0) as u64;
        let c1 = self.data.get(self.pos + 1).copied().unwrap_or(0);
        self.pos += 1;
        self.buf = (self.buf << 8) | c0;
        self.left += 8;
        if c0 == 0xFF {
            self.pos += 1;
            if c1 != 0 {
                self.marker = c1;
                self.pos -= 2;
                self.buf &= !0xFF;
            }
        }
    }

    // FILL_BIT_BUFFER_FAST
    fn fill_fast(&mut self) {
        if self.left <= 16 {
            for _ in 0..6 {
                self.get_byte();
            }
        }
    }

    // HUFF_DECODE_FAST
    fn decode_fast(&mut self, t: &Derived) -> i32 {
        self.fill_fast();
        let e = t.look8[((self.buf >> (self.left - 8) as u32) & 0xFF) as usize];
        let mut nb = (e >> 8) as i32;
        self.left -= nb;
        let mut s = (e & 0xFF) as i32;
        if nb > 8 {
            s = ((self.buf >> self.left as u32) & ((1u64 << nb) - 1)) as i32;
            while s > t.maxcode[nb as usize] {
                s = (s << 1) | self.get(1);
                nb += 1;
            }
            s = if nb > 16 {
                0
            } else {
                t.vals[((s + t.valoffset[nb as usize]) & 0xFF) as usize] as i32
            };
        }
        s
    }

    fn mcu_slow(&mut self, blocks: &[(&Derived, &Derived)]) {
        for &(dc, ac) in blocks {
            let s = self.decode(dc);
            if s != 0 {
                self.check(s);
                self.left -= s;
            }
            let mut k = 1;
            while k < 64 {
                let rs = self.decode(ac);
                let (r, s) = (rs >> 4, rs & 15);
                if s != 0 {
                    k += r;
                    self.check(s);
                    self.left -= s;
                } else {
                    if r != 15 {
                        break;
                    }
                    k += 15;
                }
                k += 1;
            }
        }
    }

    fn mcu_fast(&mut self, blocks: &[(&Derived, &Derived)]) -> bool {
        for &(dc, ac) in blocks {
            let s = self.decode_fast(dc);
            if s != 0 {
                self.fill_fast();
                self.left -= s;
            }
            let mut k = 1;
            while k < 64 {
                let rs = self.decode_fast(ac);
                let (r, s) = (rs >> 4, rs & 15);
                if s != 0 {
                    k += r;
                    self.fill_fast();
                    self.left -= s;
                } else {
                    if r != 15 {
                        break;
                    }
                    k += 15;
                }
                k += 1;
            }
        }
        self.marker == 0
    }
}

/// Replays `mcus` MCUs made of `blocks` (DC and AC table per block) from `start`.
pub(super) fn replay_sequential(
    data: &[u8],
    start: usize,
    blocks: &[(&Derived, &Derived)],
    mcus: u64,
) -> Replay {
    let mut st = State {
        data,
        pos: start,
        buf: 0,
        left: 0,
        marker: 0,
        insufficient: false,
        warning: None,
        eof: false,
    };
    let need = 512 * blocks.len();
    for _ in 0..mcus {
        if st.insufficient {
            break;
        }
        let avail = data.len().saturating_sub(st.pos);
        if avail >= need && st.marker == 0 {
            let saved = (st.pos, st.buf, st.left);
            if !st.mcu_fast(blocks) {
                st.marker = 0;
                (st.pos, st.buf, st.left) = saved;
                st.mcu_slow(blocks);
            }
        } else {
            st.mcu_slow(blocks);
        }
    }
    Replay {
        warning: st.warning,
        pos: st.pos,
        marker: st.marker,
        eof: st.eof,
    }
}
