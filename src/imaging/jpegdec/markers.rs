//! Marker segments between scans, read byte for byte as `read_markers` in `jdmarker.c`
//! does (ITU T.81 B.2): SOF, SOS, DHT, DQT, DRI, APP0 (JFIF), APP14 (Adobe); other
//! APPn, COM, DAC and DNL are skipped.

use super::huffman::HuffSpec;
use super::input::Input;
use super::types::{DecodeError, Limits, invalid};

/// A component as declared in the frame header.
#[derive(Clone, Copy, Debug)]
pub(super) struct FrameComp {
    /// Component identifier.
    pub id: u8,
    /// Horizontal sampling factor.
    pub h: u8,
    /// Vertical sampling factor.
    pub v: u8,
    /// Quantisation table slot.
    pub tq: u8,
    /// DC table slot of the latest scan that named the component.
    pub dc: u8,
    /// AC table slot of the latest scan that named the component.
    pub ac: u8,
}

/// What `read_markers` stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reached {
    /// A start-of-scan header was read.
    Sos,
    /// End of image.
    Eoi,
}

/// Everything the markers define: frame, tables, current scan header, JFIF/Adobe facts.
pub(super) struct Headers<'a> {
    /// The byte source.
    pub input: Input<'a>,
    /// Marker already read but not yet processed (0 if none).
    pub unread_marker: u8,
    /// A frame header was read.
    pub saw_sof: bool,
    /// SOF2 or SOF10.
    pub progressive: bool,
    /// SOF9 or SOF10.
    pub arith: bool,
    /// Sample precision.
    pub precision: u8,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Frame components.
    pub comps: Vec<FrameComp>,
    /// Quantisation tables (natural order).
    pub quant: [Option<[u16; 64]>; 4],
    /// DC Huffman tables.
    pub dc: [Option<HuffSpec>; 4],
    /// AC Huffman tables.
    pub ac: [Option<HuffSpec>; 4],
    /// MCUs per restart interval.
    pub restart_interval: u32,
    /// A JFIF APP0 marker was seen.
    pub jfif: bool,
    /// An Adobe APP14 marker was seen.
    pub adobe: bool,
    /// The Adobe colour transform code.
    pub adobe_transform: u8,
    /// Frame indexes of the current scan's components.
    pub scan: Vec<usize>,
    /// Spectral selection start.
    pub ss: u8,
    /// Spectral selection end.
    pub se: u8,
    /// Successive approximation high bit.
    pub ah: u8,
    /// Successive approximation low bit.
    pub al: u8,
    /// Scans read so far.
    pub scans: u32,
    /// First warning raised while reading markers.
    pub warning: Option<String>,
}

/// Zigzag index to natural index.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

fn bad_length<T>() -> Result<T, DecodeError> {
    invalid("bogus marker length")
}

impl<'a> Headers<'a> {
    /// Starts at the beginning of `data`; checks for SOI (`first_marker`).
    pub fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        if data.is_empty() {
            return invalid("empty input file");
        }
        let mut input = Input::new(data);
        let c = input.byte();
        let c2 = input.byte();
        if input.eof {
            // libjpeg warns at the end of the data before it finds no SOI.
            return Err(DecodeError::Corrupt("Premature end of JPEG file".into()));
        }
        if c != 0xFF || c2 != 0xD8 {
            return invalid("not a JPEG file: starts with something other than SOI");
        }
        Ok(Headers {
            input,
            unread_marker: 0,
            saw_sof: false,
            progressive: false,
            arith: false,
            precision: 0,
            width: 0,
            height: 0,
            comps: Vec::new(),
            quant: [None; 4],
            dc: Default::default(),
            ac: Default::default(),
            restart_interval: 0,
            jfif: false,
            adobe: false,
            adobe_transform: 0,
            scan: Vec::new(),
            ss: 0,
            se: 0,
            ah: 0,
            al: 0,
            scans: 0,
            warning: None,
        })
    }

    /// Records a warning (the first one is kept as the message).
    pub fn warn(&mut self, msg: &str) {
        if self.warning.is_none() {
            self.warning = Some(msg.to_string());
        }
    }

    /// Ends the decode at the first warning, as [`DecodeError::Corrupt`]: the service
    /// fails an image on any warning, and libjpeg, as the service runs it, stops there.
    pub fn fail_on_warning(&mut self) -> Result<(), DecodeError> {
        match self.warning.take() {
            Some(w) => Err(DecodeError::Corrupt(w)),
            None => Ok(()),
        }
    }

    /// Reads markers up to the next SOS or EOI (`read_markers`).
    pub fn read_markers(&mut self, limits: &Limits) -> Result<Reached, DecodeError> {
        loop {
            if self.unread_marker == 0 {
                self.unread_marker = self.input.next_marker();
            }
            match self.unread_marker {
                0xD8 => return invalid("invalid JPEG file structure: two SOI markers"),
                0xC0 | 0xC1 => self.get_sof(false, false, limits)?,
                0xC2 => self.get_sof(true, false, limits)?,
                0xC9 => self.get_sof(false, true, limits)?,
                0xCA => self.get_sof(true, true, limits)?,
                m @ (0xC3 | 0xC5..=0xC8 | 0xCB | 0xCD..=0xCF) => {
                    return Err(DecodeError::Unsupported(format!(
                        "unsupported JPEG process: SOF type 0x{m:02x}"
                    )));
                }
                0xDA => {
                    self.get_sos(limits)?;
                    self.unread_marker = 0;
                    return Ok(Reached::Sos);
                }
                0xD9 => {
                    self.unread_marker = 0;
                    return Ok(Reached::Eoi);
                }
                0xC4 => self.get_dht()?,
                0xDB => self.get_dqt()?,
                0xDD => self.get_dri()?,
                0xE0 | 0xEE => self.get_interesting_appn(),
                0xE1..=0xEF | 0xFE | 0xCC | 0xDC => self.skip_variable(),
                0xD0..=0xD7 | 0x01 => {}
                m => {
                    return Err(DecodeError::Invalid(format!(
                        "unsupported marker type 0x{m:02x}"
                    )));
                }
            }
            self.unread_marker = 0;
        }
    }

    fn get_sof(&mut self, prog: bool, arith: bool, limits: &Limits) -> Result<(), DecodeError> {
        self.progressive = prog;
        self.arith = arith;
        let length = self.input.u16() as i32;
        self.precision = self.input.byte();
        self.height = self.input.u16() as u32;
        self.width = self.input.u16() as u32;
        let n = self.input.byte() as i32;
        if self.saw_sof {
            return invalid("invalid JPEG file structure: two SOF markers");
        }
        if self.height == 0 || self.width == 0 || n == 0 {
            return invalid("empty JPEG image (DNL not supported)");
        }
        if length - 8 != n * 3 {
            return bad_length();
        }
        self.comps.clear();
        for _ in 0..n {
            let id = self.input.byte();
            let c = self.input.byte();
            let tq = self.input.byte();
            self.comps.push(FrameComp {
                id,
                h: c >> 4,
                v: c & 15,
                tq,
                dc: 0,
                ac: 0,
            });
        }
        self.saw_sof = true;

        // Each of these ends in an error in libjpeg at the first SOS at the latest.
        if arith {
            return Err(DecodeError::Unsupported("arithmetic coding".into()));
        }
        if self.precision != 8 {
            return Err(DecodeError::Unsupported(format!(
                "{}-bit sample precision",
                self.precision
            )));
        }
        if self.width > 65500 || self.height > 65500 {
            return invalid("maximum supported image dimension is 65500 pixels");
        }
        if n > 10 {
            return invalid("too many color components");
        }
        if n > 4 {
            return Err(DecodeError::Unsupported(format!("{n} components")));
        }
        if self
            .comps
            .iter()
            .any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v))
        {
            return invalid("bogus sampling factors");
        }
        let pixels = self.width as u64 * self.height as u64;
        if pixels > limits.max_pixels {
            return Err(DecodeError::TooManyPixels {
                pixels,
                limit: limits.max_pixels,
            });
        }
        Ok(())
    }

    fn get_sos(&mut self, limits: &Limits) -> Result<(), DecodeError> {
        if !self.saw_sof {
            return invalid("invalid JPEG file structure: SOS before SOF");
        }
        let length = self.input.u16() as usize;
        let n = self.input.byte() as usize;
        if length != n * 2 + 6 || !(1..=4).contains(&n) {
            return bad_length();
        }
        self.scan.clear();
        for i in 0..n {
            let cc = self.input.byte();
            let c = self.input.byte();
            // libjpeg only considers frame components whose index is not below the scan
            // slot being filled (it tests the slot array with the component index).
            let found = (i..self.comps.len().min(4)).find(|&ci| self.comps[ci].id == cc);
            let Some(ci) = found else {
                return invalid("invalid component ID in SOS");
            };
            if self.scan.contains(&ci) {
                return invalid("invalid component ID in SOS");
            }
            self.comps[ci].dc = c >> 4;
            self.comps[ci].ac = c & 15;
            self.scan.push(ci);
        }
        self.ss = self.input.byte();
        self.se = self.input.byte();
        let c = self.input.byte();
        self.ah = c >> 4;
        self.al = c & 15;
        self.scans += 1;
        if self.scans > limits.max_scans {
            return Err(DecodeError::TooManyScans {
                scans: self.scans,
                limit: limits.max_scans,
            });
        }
        Ok(())
    }

    fn get_dht(&mut self) -> Result<(), DecodeError> {
        let mut length = self.input.u16() as i32 - 2;
        while length > 16 {
            let index = self.input.byte() as usize;
            let mut bits = [0u8; 17];
            let mut count = 0usize;
            for b in bits.iter_mut().skip(1) {
                *b = self.input.byte();
                count += *b as usize;
            }
            length -= 17;
            if count > 256 || count as i32 > length {
                return invalid("bogus Huffman table definition");
            }
            let mut vals = [0u8; 256];
            for v in vals.iter_mut().take(count) {
                *v = self.input.byte();
            }
            length -= count as i32;
            let spec = HuffSpec { bits, vals };
            if index & 0x10 != 0 {
                let i = index - 0x10;
                if i >= 4 {
                    return invalid("bogus DHT index");
                }
                self.ac[i] = Some(spec);
            } else {
                if index >= 4 {
                    return invalid("bogus DHT index");
                }
                self.dc[index] = Some(spec);
            }
        }
        if length != 0 {
            return bad_length();
        }
        Ok(())
    }

    fn get_dqt(&mut self) -> Result<(), DecodeError> {
        let mut length = self.input.u16() as i32 - 2;
        while length > 0 {
            let n = self.input.byte();
            let prec = n >> 4;
            let n = (n & 15) as usize;
            if n >= 4 {
                return invalid("bogus DQT index");
            }
            let table = self.quant[n].get_or_insert([0; 64]);
            for &z in &ZIGZAG {
                table[z as usize] = if prec != 0 {
                    self.input.u16()
                } else {
                    self.input.byte() as u16
                };
            }
            length -= 65;
            if prec != 0 {
                length -= 64;
            }
        }
        if length != 0 {
            return bad_length();
        }
        Ok(())
    }

    fn get_dri(&mut self) -> Result<(), DecodeError> {
        if self.input.u16() != 4 {
            return bad_length();
        }
        self.restart_interval = self.input.u16() as u32;
        Ok(())
    }

    fn get_interesting_appn(&mut self) {
        let mut length = self.input.u16() as i32 - 2;
        let numtoread = length.clamp(0, 14) as usize;
        let mut b = [0u8; 14];
        for x in b.iter_mut().take(numtoread) {
            *x = self.input.byte();
        }
        length -= numtoread as i32;
        if self.unread_marker == 0xE0 {
            if numtoread >= 14 && b[..5] == *b"JFIF\0" {
                self.jfif = true;
                if b[5] != 1 {
                    self.warn(&format!(
                        "Warning: unknown JFIF revision number {}.{:02}",
                        b[5], b[6]
                    ));
                }
            }
        } else if numtoread >= 12 && b[..5] == *b"Adobe" {
            self.adobe = true;
            self.adobe_transform = b[11];
        }
        if length > 0 {
            self.input.skip(length as usize);
        }
    }

    fn skip_variable(&mut self) {
        let length = self.input.u16() as i32 - 2;
        if length > 0 {
            self.input.skip(length as usize);
        }
    }
}
