//! The byte source as libjpeg's memory source manager presents it (`jdatasrc.c`,
//! `jpeg_mem_src`), and marker scanning (`next_marker` in `jdmarker.c`).
//!
//! Past the end of the data libjpeg warns `JWRN_JPEG_EOF` and then supplies a
//! fake EOI marker (FF D9) every time it is asked for more; the input here is
//! therefore the data followed by FF D9 repeated without end.

/// Read position in the data, with libjpeg's end-of-data and extraneous-byte bookkeeping.
#[derive(Clone, Copy, Debug)]
pub(super) struct Input<'a> {
    /// The whole JPEG file.
    pub data: &'a [u8],
    /// Next byte to read; may run past `data.len()` into the fake EOI markers.
    pub pos: usize,
    /// A byte past the end was read or skipped (`JWRN_JPEG_EOF`).
    pub eof: bool,
    /// libjpeg's `marker->discarded_bytes`: bytes skipped since the last warning about them.
    pub discarded: u64,
    /// `JWRN_EXTRANEOUS_DATA` was emitted.
    pub extraneous: bool,
}

impl<'a> Input<'a> {
    /// Starts reading at the first byte.
    pub fn new(data: &'a [u8]) -> Self {
        Input {
            data,
            pos: 0,
            eof: false,
            discarded: 0,
            extraneous: false,
        }
    }

    /// The byte at `p` of the endless stream (data, then FF D9 FF D9 …).
    #[inline]
    pub fn byte_at(&self, p: usize) -> u8 {
        match self.data.get(p) {
            Some(&b) => b,
            None if (p - self.data.len()).is_multiple_of(2) => 0xFF,
            None => 0xD9,
        }
    }

    /// Reads one byte (`INPUT_BYTE`).
    #[inline]
    pub fn byte(&mut self) -> u8 {
        let p = self.pos;
        self.pos += 1;
        if p >= self.data.len() {
            self.eof = true;
        }
        self.byte_at(p)
    }

    /// Reads a big-endian 16-bit value (`INPUT_2BYTES`).
    pub fn u16(&mut self) -> u16 {
        let hi = self.byte() as u16;
        (hi << 8) | self.byte() as u16
    }

    /// Skips `n` bytes (`skip_input_data` of the memory source).
    pub fn skip(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.pos + n > self.data.len() {
            self.eof = true;
        }
        self.pos += n;
    }

    /// Finds the next marker, skipping and counting anything else (`next_marker`).
    /// Returns the marker code, never 0 or 0xFF.
    pub fn next_marker(&mut self) -> u8 {
        let c = loop {
            let mut c = self.byte();
            while c != 0xFF {
                self.discarded += 1;
                c = self.byte();
            }
            loop {
                c = self.byte();
                if c != 0xFF {
                    break;
                }
            }
            if c != 0 {
                break c;
            }
            self.discarded += 2;
        };
        if self.discarded != 0 {
            self.extraneous = true;
            self.discarded = 0;
        }
        c
    }
}
