//! The decode driver: header phase, per-scan setup and the scan loop of
//! `jpeg_read_coefficients` (`jdtrans.c`, `jdinput.c`: `initial_setup`, `per_scan_setup`,
//! `latch_quant_tables`; `jdapimin.c`: `default_decompress_parms`; scan validation of
//! `start_pass_huff_decoder` / `start_pass_phuff_decoder`).

use super::baseline;
use super::bits::BitReader;
use super::huffman::{Derived, standard_tables};
use super::markers::{Headers, Reached};
use super::progressive::{self, Band};
use super::scan::{Layout, ScanComp, check_progress};
use super::types::{
    Block, Coefficients, ColorSpace, Component, DecodeError, Frame, Limits, Progress,
};

/// Coefficient storage handed back for reuse, so that decoding image after image does
/// not take fresh memory pages each time.
#[derive(Debug, Default)]
pub struct Reuse {
    pool: Vec<Vec<Block>>,
    masks: Vec<Vec<u64>>,
}

impl Reuse {
    /// An empty pool.
    pub fn new() -> Self {
        Reuse::default()
    }

    /// Returns a finished result's block storage to the pool.
    pub fn recycle(&mut self, c: Coefficients) {
        for comp in c.components {
            self.give(comp.blocks);
        }
    }

    /// Gives block storage back to the pool.
    pub fn give(&mut self, blocks: Vec<Block>) {
        if blocks.capacity() > 0 {
            self.pool.push(blocks);
        }
    }

    /// Drops the smallest pooled vectors until the pool holds at most `max_blocks`
    /// blocks of storage.
    pub fn trim(&mut self, max_blocks: usize) {
        let mut held: usize = self.pool.iter().map(Vec::capacity).sum();
        while held > max_blocks {
            let Some(smallest) = (0..self.pool.len()).min_by_key(|&i| self.pool[i].capacity())
            else {
                break;
            };
            held -= self.pool.swap_remove(smallest).capacity();
        }
    }

    /// A vector whose first `n` blocks are zero, from the pool where it has room
    /// (zeroing reused storage costs far less than the page faults of fresh storage);
    /// as with [`Reuse::take`], blocks past `n` are kept storage.
    pub fn take_zeroed(&mut self, n: usize) -> Vec<Block> {
        let (mut v, stale) = self.take(n);
        if stale {
            v[..n].fill([0; 64]);
        }
        v
    }

    /// A vector of at least `n` blocks (a pooled one keeps its length: blocks past
    /// `n` stay written for a bigger image later); true if its contents may be stale
    /// (they are cleared later, when the blocks are first written).
    fn take(&mut self, n: usize) -> (Vec<Block>, bool) {
        if n == 0 {
            return (Vec::new(), false);
        }
        match self.pick(n) {
            Some(mut v) => {
                let stale = !v.is_empty();
                if v.len() < n {
                    v.resize(n, [0; 64]);
                }
                (v, stale)
            }
            None => (vec![[0; 64]; n], false),
        }
    }

    /// The pooled vector with the fewest blocks of at least `n`, else the longest, to
    /// grow: lengths, not capacities, because blocks past a vector's length have to be
    /// written before use (and large storage grows by remapping its pages, not by
    /// copying them).
    fn pick(&mut self, n: usize) -> Option<Vec<Block>> {
        let len = |i: &usize| self.pool[*i].len();
        let fits = (0..self.pool.len()).filter(|i| len(i) >= n).min_by_key(len);
        let best = fits.or_else(|| (0..self.pool.len()).max_by_key(len))?;
        Some(self.pool.swap_remove(best))
    }
}

/// Reads all coefficients of a baseline or progressive Huffman JPEG, taking block
/// storage from `reuse` where it has some. `accept` sees the [`Frame`] first, once
/// the headers up to the first scan are read: `Ok(None)` when it declines, before any
/// storage is taken or any entropy-coded data read.
///
/// libjpeg stops at the first warning where the service uses it (any warning about
/// damaged data fails the image), so an error after a warning is reported as the
/// warning ([`DecodeError::Corrupt`]), as libjpeg would have reported it.
pub fn read_accepted(
    data: &[u8],
    limits: &Limits,
    progress: &mut dyn Progress,
    reuse: &mut Reuse,
    accept: impl FnOnce(&Frame) -> bool,
) -> Result<Option<Coefficients>, DecodeError> {
    let mut h = Headers::new(data)?;
    match read_frame(&mut h, limits, progress, reuse, accept) {
        Err(DecodeError::Invalid(_) | DecodeError::Unsupported(_))
            if h.warning.is_some() || h.input.eof =>
        {
            let warning = h.warning.take();
            Err(DecodeError::Corrupt(
                warning.unwrap_or_else(|| "Premature end of JPEG file".into()),
            ))
        }
        other => other,
    }
}

fn read_frame(
    h: &mut Headers<'_>,
    limits: &Limits,
    progress: &mut dyn Progress,
    reuse: &mut Reuse,
    accept: impl FnOnce(&Frame) -> bool,
) -> Result<Option<Coefficients>, DecodeError> {
    match h.read_markers(limits)? {
        Reached::Sos => {}
        Reached::Eoi if h.saw_sof => {
            return Err(DecodeError::Invalid("SOF marker without SOS".into()));
        }
        Reached::Eoi => {
            return Err(DecodeError::Invalid(
                "JPEG datastream contains no image".into(),
            ));
        }
    }

    // initial_setup (the range checks were made at the SOF marker).
    let maxh = h.comps.iter().map(|c| c.h as usize).max().unwrap_or(1);
    let maxv = h.comps.iter().map(|c| c.v as usize).max().unwrap_or(1);
    let (w, ht) = (h.width as usize, h.height as usize);
    let imcu_cols = w.div_ceil(maxh * 8);
    let imcu_rows = ht.div_ceil(maxv * 8);
    let color = color_space(h);
    let frame = Frame {
        width: h.width,
        height: h.height,
        color,
        progressive: h.progressive,
        sampling: h.comps.iter().map(|c| (c.h, c.v)).collect(),
    };
    if !accept(&frame) {
        return Ok(None);
    }

    let progressive = h.progressive;
    if !progressive {
        let (sdc, sac) = standard_tables();
        for (i, (d, a)) in sdc.into_iter().zip(sac).enumerate() {
            h.dc[i].get_or_insert(d);
            h.ac[i].get_or_insert(a);
        }
    }
    let has_multiple_scans = h.scan.len() < h.comps.len() || progressive;

    let mut comps: Vec<Component> = h
        .comps
        .iter()
        .map(|fc| {
            let width_in_blocks = (w * fc.h as usize).div_ceil(maxh * 8);
            let height_in_blocks = (ht * fc.v as usize).div_ceil(maxv * 8);
            let blocks_per_row = width_in_blocks.next_multiple_of(fc.h as usize);
            let block_rows = height_in_blocks.next_multiple_of(fc.v as usize);
            Component {
                id: fc.id,
                h: fc.h,
                v: fc.v,
                quant: [0; 64],
                width_in_blocks,
                height_in_blocks,
                blocks_per_row,
                block_rows,
                blocks: Vec::new(),
            }
        })
        .collect();
    let mut stale = Vec::with_capacity(comps.len());
    for c in &mut comps {
        let (blocks, s) = reuse.take(c.blocks_per_row * c.block_rows);
        c.blocks = blocks;
        stale.push(s);
    }
    // Per block, which coefficients (zigzag bits) are nonzero: kept by the progressive
    // AC scans so that refinement scans need not search the blocks.
    let mut masks: Vec<Vec<u64>> = Vec::new();
    if progressive {
        for c in &comps {
            let mut m = reuse.masks.pop().unwrap_or_default();
            m.clear();
            m.resize(c.stored().len(), 0);
            masks.push(m);
        }
    }
    let mut latched = vec![false; comps.len()];
    let mut coef_bits = vec![[-1i32; 64]; comps.len()];

    loop {
        // start_input_pass: per_scan_setup, latch_quant_tables, entropy start_pass.
        let scomps: Vec<ScanComp> = h
            .scan
            .iter()
            .map(|&ci| ScanComp {
                comp: ci,
                dc: h.comps[ci].dc as usize,
                ac: h.comps[ci].ac as usize,
            })
            .collect();
        let layout = Layout::new(&scomps, &comps, imcu_cols, imcu_rows)?;
        for &ci in &h.scan {
            if !latched[ci] {
                let tq = h.comps[ci].tq as usize;
                match h.quant.get(tq).copied().flatten() {
                    Some(q) => comps[ci].quant = q,
                    None => {
                        return Err(DecodeError::Invalid(format!(
                            "quantization table 0x{tq:02x} was not defined"
                        )));
                    }
                }
                latched[ci] = true;
            }
        }
        let mut dc: [Option<Derived>; 4] = Default::default();
        let mut ac: [Option<Derived>; 4] = Default::default();
        let (ss, se, ah, al) = (h.ss as usize, h.se as usize, h.ah as u32, h.al as u32);
        if progressive {
            let is_dc = ss == 0;
            let bad = if is_dc {
                se != 0
            } else {
                ss > se || se >= 64 || scomps.len() != 1
            } || (ah != 0 && al != ah.wrapping_sub(1))
                || al > 13;
            if bad {
                return Err(DecodeError::Invalid(format!(
                    "invalid progressive parameters Ss={ss} Se={se} Ah={ah} Al={al}"
                )));
            }
            for s in &scomps {
                let bits = &mut coef_bits[s.comp];
                if !is_dc && bits[0] < 0 {
                    h.warn(&bogus_progression(s.comp, 0));
                }
                for (k, b) in (ss..).zip(&mut bits[ss..=se]) {
                    let expected = (*b).max(0) as u32;
                    if ah != expected {
                        h.warn(&bogus_progression(s.comp, k));
                    }
                    *b = al as i32;
                }
            }
            for s in &scomps {
                if is_dc {
                    if ah == 0 {
                        dc[s.dc] = Some(derive(&h.dc, s.dc, true)?);
                    }
                } else {
                    ac[s.ac] = Some(derive(&h.ac, s.ac, false)?);
                }
            }
        } else {
            if ss != 0 || se != 63 || ah != 0 || al != 0 {
                h.warn("Invalid SOS parameters for sequential JPEG");
            }
            for s in &scomps {
                dc[s.dc] = Some(derive(&h.dc, s.dc, true)?);
                ac[s.ac] = Some(derive(&h.ac, s.ac, false)?);
            }
        }
        // A scan whose parameters do not follow on from the scans before is not
        // decoded, so a file of thousands of repeated scans costs one.
        h.fail_on_warning()?;

        // Stale storage is cleared block by block by scans that write every block before
        // anything else reads it (sequential scans, first DC scans covering the whole
        // padded array); otherwise all at once here.
        let mut lazy_zero = [false; 4];
        let whole = scomps.len() > 1
            || comps[scomps[0].comp].width_in_blocks == comps[scomps[0].comp].blocks_per_row
                && comps[scomps[0].comp].height_in_blocks == comps[scomps[0].comp].block_rows;
        for (sc, s) in scomps.iter().enumerate() {
            if stale[s.comp] {
                if whole && (!progressive || (ss == 0 && ah == 0)) {
                    lazy_zero[sc] = true;
                } else {
                    comps[s.comp].stored_mut().fill([0; 64]);
                }
                stale[s.comp] = false;
            }
        }

        // consume_data for the whole scan.
        check_progress(progress)?;
        let mut r = BitReader::new(h.input, 0);
        let res = if progressive {
            let band = Band { ss, se, ah, al };
            progressive::decode_scan(
                &mut r,
                &mut comps,
                &mut masks,
                &scomps,
                &layout,
                band,
                &dc,
                &ac,
                h.restart_interval,
                lazy_zero,
                progress,
            )
        } else {
            baseline::decode_scan(
                &mut r,
                &mut comps,
                &scomps,
                &layout,
                &dc,
                &ac,
                h.restart_interval,
                lazy_zero,
                progress,
            )
        };
        if let Some(warning) = r.warning {
            h.warn(warning);
        }
        h.unread_marker = r.marker;
        h.input = r.input;
        // Damaged data in this scan ends the decode, whatever the scan's own result.
        h.fail_on_warning()?;
        res?;

        match h.read_markers(limits)? {
            Reached::Sos if !has_multiple_scans => {
                return Err(DecodeError::Invalid(
                    "expected EOI marker, found another scan".into(),
                ));
            }
            Reached::Sos => {}
            Reached::Eoi => break,
        }
    }

    for (c, s) in comps.iter_mut().zip(stale) {
        if s {
            c.stored_mut().fill([0; 64]);
        }
    }
    if h.input.eof {
        h.warn("Premature end of JPEG file");
    }
    reuse.masks.append(&mut masks);
    h.fail_on_warning()?;
    Ok(Some(Coefficients {
        width: h.width,
        height: h.height,
        color,
        progressive,
        components: comps,
        scans: h.scans,
        extraneous_data: h.input.extraneous,
    }))
}

/// Validates and derives Huffman table `slot` (`jpeg_make_d_derived_tbl`).
fn derive(
    specs: &[Option<super::huffman::HuffSpec>; 4],
    slot: usize,
    is_dc: bool,
) -> Result<Derived, DecodeError> {
    match specs.get(slot).and_then(|s| s.as_ref()) {
        Some(spec) => Derived::new(spec, is_dc),
        None => Err(DecodeError::Invalid(format!(
            "Huffman table 0x{slot:02x} was not defined"
        ))),
    }
}

/// libjpeg's `JWRN_BOGUS_PROGRESSION` for `component` (frame order) and `coefficient`.
fn bogus_progression(component: usize, coefficient: usize) -> String {
    format!("Inconsistent progression sequence for component {component} coefficient {coefficient}")
}

/// libjpeg's colour-space guess (`default_decompress_parms`), with its warning for
/// unknown Adobe transforms.
fn color_space(h: &mut Headers) -> ColorSpace {
    match h.comps.len() {
        1 => ColorSpace::Gray,
        3 => {
            if h.jfif {
                ColorSpace::YCbCr
            } else if h.adobe {
                match h.adobe_transform {
                    0 => ColorSpace::Rgb,
                    1 => ColorSpace::YCbCr,
                    code => {
                        h.warn(&format!("Unknown Adobe color transform code {code}"));
                        ColorSpace::YCbCr
                    }
                }
            } else {
                let ids = [h.comps[0].id, h.comps[1].id, h.comps[2].id];
                if ids == [1, 2, 3] {
                    ColorSpace::YCbCr
                } else if ids == [82, 71, 66] {
                    ColorSpace::Rgb
                } else {
                    ColorSpace::YCbCr
                }
            }
        }
        4 => {
            if h.adobe {
                match h.adobe_transform {
                    0 => ColorSpace::Cmyk,
                    2 => ColorSpace::Ycck,
                    code => {
                        h.warn(&format!("Unknown Adobe color transform code {code}"));
                        ColorSpace::Ycck
                    }
                }
            } else {
                ColorSpace::Cmyk
            }
        }
        _ => ColorSpace::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_storage_keeps_its_length_and_is_lent_zeroed() {
        let mut reuse = Reuse::new();
        reuse.give(vec![[7; 64]; 100]);
        let lent = reuse.take_zeroed(40);
        assert_eq!(
            lent.len(),
            100,
            "blocks past the 40 stay written, for later"
        );
        assert!(lent[..40].iter().all(|b| *b == [0; 64]));
        assert_eq!(lent[40], [7; 64]);
        reuse.give(lent);

        let (grown, stale) = reuse.take(150);
        assert!(stale);
        assert_eq!(grown.len(), 150);
        assert_eq!(grown[120], [0; 64], "grown storage starts zeroed");
        reuse.give(grown);
        reuse.give(vec![[0; 64]; 10]);
        let (small, _) = reuse.take(5);
        assert_eq!(small.len(), 10, "the shortest that holds 5 is lent");
        reuse.give(small);

        let biggest = reuse.pool.iter().map(Vec::capacity).max().unwrap();
        reuse.trim(biggest);
        let held: Vec<usize> = reuse.pool.iter().map(Vec::len).collect();
        assert_eq!(held, [150], "the smallest go first");
        assert_eq!(reuse.take(0), (Vec::new(), false));
    }
}
