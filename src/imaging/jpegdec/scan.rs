//! Scan layout and the MCU walk shared by all scan decoders: MCU geometry
//! (`per_scan_setup` in `jdinput.c`, ITU T.81 A.2), the iMCU-row loop of `consume_data`
//! (`jdcoefct.c`), restart-marker processing (`process_restart` in `jdhuff.c`,
//! `read_restart_marker` and `jpeg_resync_to_restart` in `jdmarker.c`; T.81 F.1.2.3, E.2.4).

use super::bits::BitReader;
use super::types::{Component, DecodeError, Progress};

/// libjpeg's `JWRN_MUST_RESYNC`, without its marker numbers.
pub const MUST_RESYNC: &str =
    "Corrupt JPEG data: found another marker where a restart marker was due";

/// One component of a scan.
#[derive(Clone, Copy, Debug)]
pub(super) struct ScanComp {
    /// Index into the frame's components.
    pub comp: usize,
    /// DC table slot.
    pub dc: usize,
    /// AC table slot.
    pub ac: usize,
}

/// Block layout of a scan's MCUs.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// MCUs per MCU row.
    pub mcus_per_row: usize,
    /// MCU rows in the scan.
    pub mcu_rows: usize,
    /// MCU rows per iMCU row (progress is reported once per iMCU row).
    pub rows_per_imcu: usize,
    /// The blocks of one MCU, in coding order.
    pub blocks: Vec<McuBlock>,
}

/// One block of an MCU.
#[derive(Clone, Copy, Debug)]
pub(super) struct McuBlock {
    /// Position of the component in the scan.
    pub sc: usize,
    /// Frame component index.
    pub comp: usize,
    /// Block column offset within the MCU.
    pub dx: usize,
    /// Block row offset within the MCU.
    pub dy: usize,
    /// Blocks the MCU spans horizontally in this component.
    pub w: usize,
    /// Blocks the MCU spans vertically in this component.
    pub h: usize,
}

impl Layout {
    /// Lays out a scan of `scomps` over `comps`; `imcu_cols`/`imcu_rows` are the
    /// interleaved MCU counts of the frame.
    pub fn new(
        scomps: &[ScanComp],
        comps: &[Component],
        imcu_cols: usize,
        imcu_rows: usize,
    ) -> Result<Layout, DecodeError> {
        if scomps.len() == 1 {
            let c = &comps[scomps[0].comp];
            return Ok(Layout {
                mcus_per_row: c.width_in_blocks,
                mcu_rows: c.height_in_blocks,
                rows_per_imcu: c.v as usize,
                blocks: vec![McuBlock {
                    sc: 0,
                    comp: scomps[0].comp,
                    dx: 0,
                    dy: 0,
                    w: 1,
                    h: 1,
                }],
            });
        }
        let mut blocks = Vec::new();
        for (sc, s) in scomps.iter().enumerate() {
            let c = &comps[s.comp];
            let (h, v) = (c.h as usize, c.v as usize);
            if blocks.len() + h * v > 10 {
                return Err(DecodeError::Invalid(
                    "sampling factors too large for interleaved scan".into(),
                ));
            }
            for dy in 0..v {
                for dx in 0..h {
                    blocks.push(McuBlock {
                        sc,
                        comp: s.comp,
                        dx,
                        dy,
                        w: h,
                        h: v,
                    });
                }
            }
        }
        Ok(Layout {
            mcus_per_row: imcu_cols,
            mcu_rows: imcu_rows,
            rows_per_imcu: 1,
            blocks,
        })
    }

    /// Index of block `b` of MCU (`mx`, `my`) in its component's block array.
    #[inline(always)]
    pub fn block_index(&self, b: &McuBlock, comps: &[Component], mx: usize, my: usize) -> usize {
        let c = &comps[b.comp];
        (my * b.h + b.dy) * c.blocks_per_row + mx * b.w + b.dx
    }
}

/// Restart-interval bookkeeping for one scan.
pub(super) struct Restarts {
    /// MCUs per restart interval (0 = none).
    pub interval: u32,
    /// MCUs left before the next restart marker is due.
    pub to_go: u32,
    /// Number (0..=7) of the next expected RSTn marker.
    pub next_num: u8,
    /// The restart-marker warning (`JWRN_MUST_RESYNC`), once raised.
    pub warning: Option<&'static str>,
}

impl Restarts {
    /// Starts a scan.
    pub fn new(interval: u32) -> Self {
        Restarts {
            interval,
            to_go: interval,
            next_num: 0,
            warning: None,
        }
    }

    /// Before an MCU: returns true if a restart marker was processed (the caller then
    /// resets its DC predictions and EOB run).
    #[inline(always)]
    pub fn before_mcu(&mut self, r: &mut BitReader) -> bool {
        if self.interval == 0 {
            return false;
        }
        let restarted = if self.to_go == 0 {
            *r = self.process(*r);
            true
        } else {
            false
        };
        self.to_go -= 1;
        restarted
    }

    // process_restart + read_restart_marker + jpeg_resync_to_restart
    #[inline(never)]
    fn process<'a>(&mut self, mut r: BitReader<'a>) -> BitReader<'a> {
        r.input.discarded += (r.bits_left() / 8) as u64;
        r.clear();
        if r.marker == 0 {
            r.marker = r.input.next_marker();
        }
        let desired = self.next_num;
        if r.marker == 0xD0 + desired {
            r.marker = 0;
        } else {
            self.warning.get_or_insert(MUST_RESYNC);
            let rst = |n: u8| 0xD0 + (n & 7);
            loop {
                let m = r.marker;
                // 2: scan on to the next marker; 3: leave the marker for later (a
                // non-restart marker, or one of the next two restarts); 1: discard it.
                let action = if m < 0xC0 {
                    2
                } else if !(0xD0..=0xD7).contains(&m)
                    || m == rst(desired + 1)
                    || m == rst(desired + 2)
                {
                    3
                } else if m == rst(desired.wrapping_sub(1)) || m == rst(desired.wrapping_sub(2)) {
                    2
                } else {
                    1
                };
                match action {
                    1 => {
                        r.marker = 0;
                        break;
                    }
                    2 => r.marker = r.input.next_marker(),
                    _ => break,
                }
            }
        }
        self.next_num = (self.next_num + 1) & 7;
        self.to_go = self.interval;
        if r.marker == 0 {
            r.insufficient = false;
        }
        r
    }

    /// True once nothing more in this scan can change coefficients or input position:
    /// out of data with no restart marker able to resume decoding.
    #[inline(always)]
    pub fn stuck(&self, r: &BitReader) -> bool {
        r.insufficient
            && (self.interval == 0 || (r.marker >= 0xC0 && !(0xD0..=0xD7).contains(&r.marker)))
    }
}

/// Reports progress, mapping a refusal to [`DecodeError::Stopped`].
#[inline]
pub(super) fn check_progress(p: &mut dyn Progress) -> Result<(), DecodeError> {
    p.check().map_err(DecodeError::Stopped)
}

/// Zigzag index to natural index, padded with 63s to 128 entries: corrupt run lengths
/// (up to index 78) land on the last coefficient as with libjpeg's `jpeg_natural_order`
/// (`jutils.c`), and `k & 127` indexes it without a bounds check.
pub(super) const NATURAL: [u8; 128] = {
    const ORDER: [u8; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];
    let mut t = [63u8; 128];
    let mut i = 0;
    while i < 64 {
        t[i] = ORDER[i];
        i += 1;
    }
    t
};
