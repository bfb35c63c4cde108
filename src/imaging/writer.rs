//! Writing a baseline JPEG: the markers and the Huffman-coded scan of a YCbCr 4:2:0
//! image from its quantised coefficients.
//!
//! Byte for byte what libjpeg's `jpeg_write_coefficients` writes with the same
//! quantisation and Huffman tables (a test checks): SOI, a JFIF APP0, one DQT per
//! table, SOF0, one DHT per table, SOS, one interleaved scan, EOI. It is done here
//! rather than in libjpeg because libjpeg's Huffman encoder is plain C unless it was
//! built with nasm, and was the slowest step of a transcode without it; with the
//! file written here, libjpeg only ever decodes.
//!
//! The scan is coded as libjpeg-turbo's `encode_one_block` codes it: each symbol's
//! code and its value bits go into a 64-bit buffer in one step, and the buffer is
//! flushed eight bytes at a time, byte by byte (with 0xFF stuffing) only when one
//! of the eight is 0xFF.

use super::libjpeg::{Block, HuffTable, HuffTables, OutputTables, Plane};
use super::quality::ZIGZAG;
use super::{coefficients, huffman, kernels};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// A symbol of the scan has no code in its table: the tables were not made from
    /// these coefficients (or a value is outside baseline's ±1023).
    #[error("the Huffman tables have no code for symbol {symbol:#04x}")]
    NoCode {
        /// The symbol (run << 4 | size for AC, the size for DC).
        symbol: u8,
    },
    /// No Huffman code of at most 16 bits fits the statistics (libjpeg would fail too).
    #[error("no Huffman tables fit the image")]
    NoTables,
    /// The image is larger than a JPEG can say.
    #[error("{width}x{height} is over JPEG's limit of 65535 pixels per side")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Writes `planes` (Y, Cb, Cr at 4:2:0: Y `⌈w/8⌉ × ⌈h/8⌉` blocks, chroma one block
/// per 16×16 pixels) as a baseline JPEG of `width × height` pixels with the
/// natural-order quantisation tables `quant` (`[luma, chroma]`, 1..=255) the
/// coefficients were quantised with and `huffman`, which must have a code for every
/// symbol the scan uses. `prepare(component, mcu_row, block)` runs on every block of
/// an MCU row just before the row is coded, while it is in cache (the fast path
/// requantises there); [`no_prepare`] when the blocks are final. Inlined, so that
/// under [`kernels::vectorized`] the coder is compiled for the CPU's best extension.
#[inline(always)]
pub(crate) fn write_420(
    width: u32,
    height: u32,
    planes: &mut [Plane<'_>; 3],
    quant: &OutputTables,
    huffman: &HuffTables,
    prepare: impl FnMut(usize, usize, &mut Block),
) -> Result<Vec<u8>, WriteError> {
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(WriteError::TooLarge { width, height });
    };
    let coders = [
        Coder::new(&huffman.dc[0], &huffman.ac[0]),
        Coder::new(&huffman.dc[1], &huffman.ac[1]),
    ];
    // A q50 photo takes about 0.15 bytes per pixel.
    let mut out = Vec::with_capacity(1024 + (usize::from(w) * usize::from(h)) / 5);
    headers(&mut out, w, h, quant, huffman);
    let mut bits = BitWriter::new(out);
    scan(&mut bits, planes, &coders, prepare)?;
    let mut out = bits.finish();
    out.extend_from_slice(&[0xFF, 0xD9]);
    Ok(out)
}

/// [`write_420`] with Huffman tables made for `planes` from a sample of their MCU
/// rows ([`huffman::SAMPLE`]), for blocks that are final.
pub(crate) fn write_420_optimized(
    width: u32,
    height: u32,
    planes: &mut [Plane<'_>; 3],
    quant: &OutputTables,
) -> Result<Vec<u8>, WriteError> {
    kernels::vectorized(|| {
        let huffman =
            huffman::tables_420(planes, huffman::SAMPLE, |_, _| {}).ok_or(WriteError::NoTables)?;
        write_420(width, height, planes, quant, &huffman, no_prepare)
    })
}

/// For [`write_420`]: the blocks are written as they are.
pub(crate) fn no_prepare(_: usize, _: usize, _: &mut Block) {}

/// The blocks of a YCbCr 4:2:0 image of a given size, owned and zeroed: what
/// [`write_420`] writes when the coefficients are made here rather than read in place.
pub(crate) struct Planes420 {
    /// Each plane's blocks, then (past `columns × rows`) storage kept for a bigger image.
    blocks: [Vec<Block>; 3],
    /// Blocks per row and rows of each plane: whole MCUs.
    sizes: [(usize, usize); 3],
    /// Blocks holding image data, per plane: (columns, rows).
    used: [(usize, usize); 3],
}

impl Planes420 {
    /// Zeroed planes for `width × height` pixels: Y in whole 2×2 groups of blocks,
    /// chroma one block per 16×16 pixels.
    pub(crate) fn new(width: u32, height: u32) -> Self {
        Self::with_luma(width, height, true)
    }

    /// Zeroed chroma planes for `width × height` pixels and an empty luma plane, for
    /// luma that stays where it is.
    pub(crate) fn chroma(width: u32, height: u32) -> Self {
        Self::with_luma(width, height, false)
    }

    fn with_luma(width: u32, height: u32, luma: bool) -> Self {
        let mcu_cols = width.div_ceil(16) as usize;
        let mcu_rows = height.div_ceil(16) as usize;
        let y_used = if luma {
            (width.div_ceil(8) as usize, height.div_ceil(8) as usize)
        } else {
            (0, 0)
        };
        let y_size = if luma {
            (2 * mcu_cols, 2 * mcu_rows)
        } else {
            (0, 0)
        };
        let sizes = [y_size, (mcu_cols, mcu_rows), (mcu_cols, mcu_rows)];
        Planes420 {
            blocks: sizes.map(|(cols, rows)| coefficients::zeroed_blocks(cols * rows)),
            sizes,
            used: [y_used, (mcu_cols, mcu_rows), (mcu_cols, mcu_rows)],
        }
    }

    /// The three planes, row by row, to fill and to write.
    pub(crate) fn planes(&mut self) -> [Plane<'_>; 3] {
        let [y, cb, cr] = &mut self.blocks;
        let mut views = [y, cb, cr].into_iter().zip(self.sizes).zip(self.used).map(
            |((blocks, (cols, rows)), (width, height))| Plane {
                rows: blocks[..cols * rows]
                    .chunks_exact_mut(cols.max(1))
                    .collect(),
                width,
                height,
                quant: [0; 64],
            },
        );
        let mut next = || views.next().expect("three planes");
        [next(), next(), next()]
    }
}

impl Drop for Planes420 {
    /// The storage goes back to the thread's pool for the next image.
    fn drop(&mut self) {
        for blocks in &mut self.blocks {
            coefficients::recycle_blocks(std::mem::take(blocks));
        }
    }
}

/// SOI, JFIF APP0 (version 1.01, no density), DQT ×2, SOF0, DHT ×4, SOS, as libjpeg
/// writes them with `JCP_FASTEST` (one table per segment).
fn headers(out: &mut Vec<u8>, width: u16, height: u16, quant: &OutputTables, huff: &HuffTables) {
    out.extend_from_slice(&[0xFF, 0xD8]);
    out.extend_from_slice(&[
        0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    for (id, table) in (0u8..).zip(quant) {
        out.extend_from_slice(&[0xFF, 0xDB, 0, 67, id]);
        // Baseline tables are 8-bit; the requantisers keep them in 1..=255.
        out.extend(ZIGZAG.iter().map(|&n| table[n].clamp(1, 255) as u8));
    }
    let [w1, w0] = width.to_be_bytes();
    let [h1, h0] = height.to_be_bytes();
    out.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8, h1, h0, w1, w0, 3]);
    out.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    for (index, table) in [
        (0x00, &huff.dc[0]),
        (0x10, &huff.ac[0]),
        (0x01, &huff.dc[1]),
        (0x11, &huff.ac[1]),
    ] {
        let count: usize = table.bits[1..].iter().map(|&b| usize::from(b)).sum();
        let len = u16::try_from(2 + 1 + 16 + count).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0xFF, 0xC4]);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(index);
        out.extend_from_slice(&table.bits[1..]);
        out.extend_from_slice(&table.huffval[..count.min(256)]);
    }
    out.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
}

/// The MCUs in libjpeg's order: 2×2 Y blocks, then Cb, then Cr; Y blocks past the
/// image's blocks are libjpeg's dummies (the previous block's DC, no AC), which
/// code as a zero DC difference and an end of block.
#[inline(always)]
fn scan(
    bits: &mut BitWriter,
    planes: &mut [Plane<'_>; 3],
    coders: &[Coder; 2],
    mut prepare: impl FnMut(usize, usize, &mut Block),
) -> Result<(), WriteError> {
    let [y, cb, cr] = planes;
    let (mcu_cols, mcu_rows) = (cb.width, cb.height);
    let mut last_dc = [0i16; 3];
    for my in 0..mcu_rows {
        for by in [2 * my, 2 * my + 1].into_iter().filter(|&by| by < y.height) {
            y.rows[by][..y.width]
                .iter_mut()
                .for_each(|b| prepare(0, my, b));
        }
        for (ci, plane) in [(1, &mut *cb), (2, &mut *cr)] {
            plane.rows[my][..mcu_cols]
                .iter_mut()
                .for_each(|b| prepare(ci, my, b));
        }
        for mx in 0..mcu_cols {
            for by in [2 * my, 2 * my + 1] {
                for bx in [2 * mx, 2 * mx + 1] {
                    if bx < y.width && by < y.height {
                        let block = &y.rows[by][bx];
                        coders[0].block(bits, block, last_dc[0])?;
                        last_dc[0] = block[0];
                    } else {
                        coders[0].dummy(bits)?;
                    }
                }
            }
            for (ci, plane) in [(1, &*cb), (2, &*cr)] {
                let block = &plane.rows[my][mx];
                coders[1].block(bits, block, last_dc[ci])?;
                last_dc[ci] = block[0];
            }
        }
    }
    Ok(())
}

/// One table class's codes by symbol (libjpeg's `jpeg_make_c_derived_tbl`): code and
/// length, length 0 for a symbol the table does not have.
struct Coder {
    dc: [(u32, u8); 17],
    ac: [(u32, u8); 256],
}

impl Coder {
    fn new(dc: &HuffTable, ac: &HuffTable) -> Coder {
        let mut coder = Coder {
            dc: [(0, 0); 17],
            ac: [(0, 0); 256],
        };
        for (symbol, code) in codes(dc) {
            if let Some(slot) = coder.dc.get_mut(usize::from(symbol)) {
                *slot = code;
            }
        }
        for (symbol, code) in codes(ac) {
            coder.ac[usize::from(symbol)] = code;
        }
        coder
    }

    /// Codes one block: the DC difference from `last_dc`, then the AC run lengths
    /// in zigzag order with ZRL for runs over 15 and an EOB unless coefficient 63
    /// is nonzero.
    #[inline(always)]
    fn block(&self, bits: &mut BitWriter, block: &Block, last_dc: i16) -> Result<(), WriteError> {
        let diff = i32::from(block[0]) - i32::from(last_dc);
        let size = magnitude_bits(diff);
        let (code, len) = self.dc[size as usize];
        if len == 0 {
            return Err(WriteError::NoCode { symbol: size as u8 });
        }
        bits.put(code << size | value_bits(diff, size), u32::from(len) + size);

        let mut mask = zigzag_mask(block) & !1;
        let mut previous = 0u32;
        while mask != 0 {
            let k = mask.trailing_zeros();
            let mut run = k - previous - 1;
            while run > 15 {
                self.put_ac(bits, 0xF0, 0, 0)?;
                run -= 16;
            }
            let value = i32::from(block[ZIGZAG[k as usize]]);
            let size = magnitude_bits(value);
            // Sizes over 10 would collide with other symbols: the caller clamps.
            let symbol = (run << 4 | size) as u8;
            self.put_ac(bits, symbol, value_bits(value, size), size)?;
            previous = k;
            mask &= mask - 1;
        }
        if previous < 63 {
            self.put_ac(bits, 0x00, 0, 0)?;
        }
        Ok(())
    }

    /// A dummy block: DC difference 0, then EOB.
    #[inline]
    fn dummy(&self, bits: &mut BitWriter) -> Result<(), WriteError> {
        let (code, len) = self.dc[0];
        if len == 0 {
            return Err(WriteError::NoCode { symbol: 0 });
        }
        bits.put(code, u32::from(len));
        self.put_ac(bits, 0x00, 0, 0)
    }

    #[inline(always)]
    fn put_ac(
        &self,
        bits: &mut BitWriter,
        symbol: u8,
        value: u32,
        size: u32,
    ) -> Result<(), WriteError> {
        let (code, len) = self.ac[usize::from(symbol)];
        if len == 0 {
            return Err(WriteError::NoCode { symbol });
        }
        bits.put(code << size | value, u32::from(len) + size);
        Ok(())
    }
}

/// Every symbol of `table` with its code and length (T.81 Annex C).
fn codes(table: &HuffTable) -> impl Iterator<Item = (u8, (u32, u8))> + '_ {
    let mut code = 0u32;
    let mut p = 0usize;
    let mut all = Vec::with_capacity(256);
    for len in 1..=16u8 {
        for _ in 0..table.bits[usize::from(len)] {
            if let Some(&symbol) = table.huffval.get(p) {
                all.push((symbol, (code, len)));
            }
            code += 1;
            p += 1;
        }
        code <<= 1;
    }
    all.into_iter()
}

/// Bits of `v`'s magnitude (0 for 0): the size category of T.81 F.1.2.
#[inline]
fn magnitude_bits(v: i32) -> u32 {
    32 - v.unsigned_abs().leading_zeros()
}

/// The `size` bits that follow a size category: `v` itself, or `v − 1` for a
/// negative `v` (its one's complement), masked to `size` bits.
#[inline]
fn value_bits(v: i32, size: u32) -> u32 {
    let adjusted = v.wrapping_add(v >> 31) as u32;
    adjusted & ((1u32 << size) - 1)
}

/// Zigzag bit mask of the nonzero coefficients of `block`.
#[inline(always)]
pub(crate) fn zigzag_mask(block: &Block) -> u64 {
    let mut mask = 0u64;
    for (row, coefs) in block.chunks_exact(8).enumerate() {
        let mut byte = 0usize;
        for (j, &c) in coefs.iter().enumerate() {
            byte |= usize::from(c != 0) << j;
        }
        mask |= ZIGZAG_BITS[row][byte];
    }
    mask
}

/// `ZIGZAG_BITS[row][byte]`: the zigzag-position bits of the natural positions
/// `row·8 + j` for the set bits `j` of `byte`.
static ZIGZAG_BITS: [[u64; 256]; 8] = {
    let mut position = [0u32; 64]; // natural index → zigzag index
    let mut k = 0;
    while k < 64 {
        position[ZIGZAG[k]] = k as u32;
        k += 1;
    }
    let mut table = [[0u64; 256]; 8];
    let mut row = 0;
    while row < 8 {
        let mut byte = 0;
        while byte < 256 {
            let mut bits = 0u64;
            let mut j = 0;
            while j < 8 {
                if byte & (1 << j) != 0 {
                    bits |= 1 << position[row * 8 + j];
                }
                j += 1;
            }
            table[row][byte] = bits;
            byte += 1;
        }
        row += 1;
    }
    table
};

/// The entropy-coded segment being written: bits collect in a 64-bit buffer, most
/// significant first, and go out eight bytes at a time.
struct BitWriter {
    out: Vec<u8>,
    buffer: u64,
    /// Bits of `buffer` not yet filled (64 when empty).
    free: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        BitWriter {
            out,
            buffer: 0,
            free: 64,
        }
    }

    /// Appends the low `len` bits of `code` (`len` ≤ 32; no bits set above them).
    #[inline(always)]
    fn put(&mut self, code: u32, len: u32) {
        let code = u64::from(code);
        if len < self.free {
            self.buffer = self.buffer << len | code;
            self.free -= len;
        } else {
            let rest = len - self.free;
            // `free` is at least 1 here, so neither shift reaches 64.
            let full = (self.buffer << (self.free - 1) << 1) | (code >> rest);
            self.flush(full);
            self.buffer = code;
            self.free = 64 - rest;
        }
    }

    /// Writes eight bytes, a zero after every 0xFF.
    #[inline]
    fn flush(&mut self, word: u64) {
        let inverted = !word;
        // A byte of `word` is 0xFF exactly when that byte of `inverted` is zero.
        let has_ff =
            inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
        if has_ff == 0 {
            self.out.extend_from_slice(&word.to_be_bytes());
        } else {
            for byte in word.to_be_bytes() {
                self.out.push(byte);
                if byte == 0xFF {
                    self.out.push(0);
                }
            }
        }
    }

    /// The bytes written, the last partial byte filled with ones (as libjpeg does).
    fn finish(mut self) -> Vec<u8> {
        let mut used = 64 - self.free;
        while used >= 8 {
            used -= 8;
            let byte = (self.buffer >> used) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        if used > 0 {
            let byte = ((self.buffer << (8 - used)) as u8) | (0xFF >> used);
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_bits_are_ones_complement_for_negatives() {
        assert_eq!((magnitude_bits(0), value_bits(0, 0)), (0, 0));
        assert_eq!((magnitude_bits(1), value_bits(1, 1)), (1, 1));
        assert_eq!((magnitude_bits(-1), value_bits(-1, 1)), (1, 0));
        assert_eq!((magnitude_bits(-5), value_bits(-5, 3)), (3, 0b010));
        assert_eq!((magnitude_bits(1023), value_bits(1023, 10)), (10, 1023));
        assert_eq!((magnitude_bits(-1023), value_bits(-1023, 10)), (10, 0));
        assert_eq!(magnitude_bits(-2046), 11);
    }

    #[test]
    fn bits_are_stuffed_and_padded_with_ones() {
        let mut bits = BitWriter::new(Vec::new());
        bits.put(0xFF, 8);
        bits.put(0b101, 3);
        assert_eq!(bits.finish(), [0xFF, 0x00, 0b1011_1111]);
        // Across a flush: 70 bits, some 0xFF bytes inside the first eight.
        let mut bits = BitWriter::new(Vec::new());
        for _ in 0..7 {
            bits.put(0x3FF, 10);
        }
        let out = bits.finish();
        assert_eq!(
            out,
            [
                0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00,
                0xFF, 0x00, 0xFF, 0x00
            ]
        );
        let mut bits = BitWriter::new(Vec::new());
        for i in 0..20u32 {
            bits.put(i & 0x7, 3);
        }
        let expected: Vec<bool> = (0..20u32)
            .flat_map(|i| (0..3).rev().map(move |b| (i & 0x7) >> b & 1 == 1))
            .collect();
        let out = bits.finish();
        let got: Vec<bool> = out
            .iter()
            .flat_map(|&byte| (0..8).rev().map(move |b| byte >> b & 1 == 1))
            .collect();
        assert_eq!(&got[..60], &expected[..]);
        assert!(got[60..].iter().all(|&b| b), "padding is ones");
    }

    #[test]
    fn zigzag_mask_matches_a_plain_scan() {
        let mut block = [0i16; 64];
        for (i, n) in [0usize, 1, 8, 9, 17, 40, 63].into_iter().enumerate() {
            block[n] = i as i16 - 3;
        }
        let plain: u64 = (0..64)
            .filter(|&k| block[ZIGZAG[k]] != 0)
            .fold(0, |m, k| m | 1 << k);
        assert_eq!(zigzag_mask(&block), plain);
    }
}
