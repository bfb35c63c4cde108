//! A small JPEG marker walker: reads the frame header, the quantisation tables
//! and the Adobe colour transform without decoding any entropy-coded data.

/// One component of the frame header (SOF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Component {
    /// Component identifier (1 = Y in JFIF).
    pub id: u8,
    /// Horizontal sampling factor.
    pub h: u8,
    /// Vertical sampling factor.
    pub v: u8,
    /// Quantisation table used by this component (0..=3).
    pub tq: u8,
}

/// What the headers before the first scan say.
#[derive(Clone, Debug, Default)]
pub(crate) struct JpegHeader {
    /// Frame width (from SOF).
    pub width: u16,
    /// Frame height (0 means "defined later by DNL", which we do not support).
    pub height: u16,
    /// The SOF marker (0xC0 baseline, 0xC2 progressive, ...).
    pub sof: u8,
    /// Components in SOF order; only the first `component_count` are meaningful.
    pub components: [Component; 4],
    /// Number of components in the frame (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK).
    pub component_count: u8,
    /// Quantisation tables by id, in zigzag order as stored.
    pub qtables: [Option<QTable>; 4],
    /// The `transform` byte of an Adobe APP14 segment, when present.
    pub adobe_transform: Option<u8>,
    /// APPn markers seen (bit n set for APPn), e.g. to check that output has no EXIF/ICC.
    pub app_markers: u16,
    /// Offset just after the first SOS marker (start of the first scan), when present.
    pub scan_start: Option<usize>,
    /// Byte range of the TIFF data of the first `Exif` APP1 segment: the one browsers
    /// and Pillow read the orientation from (zune-jpeg keeps the last).
    pub exif: Option<std::ops::Range<usize>>,
    /// ICC profile chunks (APP2 `ICC_PROFILE`): sequence number, chunk count, data range.
    pub icc_chunks: Vec<(u8, u8, std::ops::Range<usize>)>,
}

/// A quantisation table as stored in DQT (zigzag order).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QTable {
    /// The 64 values in zigzag order.
    pub values: [u16; 64],
    /// `true` for 16-bit precision tables (Pq = 1).
    pub sixteen_bit: bool,
}

impl JpegHeader {
    /// Whether the frame is arithmetic-coded (SOF9–11, SOF13–15).
    pub(crate) fn is_arithmetic(&self) -> bool {
        matches!(self.sof, 0xC9..=0xCB | 0xCD..=0xCF)
    }

    /// The table that quantises the first (luma, for YCbCr) component.
    pub(crate) fn luma_table(&self) -> Option<&QTable> {
        let id = if self.component_count > 0 {
            self.components[0].tq
        } else {
            0
        };
        self.qtables
            .get(usize::from(id))
            .and_then(Option::as_ref)
            .or(self.qtables[0].as_ref())
    }
}

/// Reads the headers up to the first SOS (or the end of the data).
///
/// Fails when the data does not start with SOI, when a segment runs past the
/// end before the frame header was seen, or when there is no frame header.
pub(crate) fn parse(bytes: &[u8]) -> Result<JpegHeader, &'static str> {
    if bytes.len() < 3 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err("not a JPEG (no SOI marker)");
    }
    let mut header = JpegHeader::default();
    let mut seen_sof = false;
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1; // tolerate garbage between segments, as libjpeg does
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            break;
        };
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue, // standalone markers
            0xD9 => break,                  // EOI
            0xDA => {
                header.scan_start = Some(pos); // SOS: no more headers
                break;
            }
            _ => {}
        }
        let Some(len) = read_u16(bytes, pos) else {
            break;
        };
        let len = usize::from(len);
        if len < 2 {
            return Err("invalid segment length");
        }
        let Some(segment) = bytes.get(pos + 2..pos + len) else {
            break; // truncated segment
        };
        let data_start = pos + 2;
        pos += len;
        match marker {
            0xDB => parse_dqt(segment, &mut header)?,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) && !seen_sof => {
                parse_sof(segment, &mut header)?;
                header.sof = marker;
                seen_sof = true;
            }
            0xE0..=0xEF => {
                header.app_markers |= 1 << (marker - 0xE0);
                if marker == 0xEE && segment.len() >= 12 && segment.starts_with(b"Adobe") {
                    header.adobe_transform = Some(segment[11]);
                }
                if marker == 0xE1
                    && header.exif.is_none()
                    && segment.len() > 6
                    && segment.starts_with(b"Exif\0\0")
                {
                    header.exif = Some(data_start + 6..data_start + segment.len());
                }
                if marker == 0xE2 && segment.len() > 14 && segment.starts_with(b"ICC_PROFILE\0") {
                    let range = data_start + 14..data_start + segment.len();
                    header.icc_chunks.push((segment[12], segment[13], range));
                }
            }
            _ => {}
        }
    }
    if !seen_sof {
        return Err("no frame header (SOF) before the image data or end of file");
    }
    Ok(header)
}

/// True when an EOI marker follows the first scan, i.e. the file was not cut short.
///
/// Needed because zune-jpeg (rightly, for display) decodes truncated data and
/// fills the rest with gray; a stored output must not be silently half gray.
/// `FF D9` cannot occur inside entropy-coded data (an `FF` there is followed
/// by `00` or a restart marker), so any occurrence after SOS is the real EOI;
/// trailing junk after it is tolerated. Searched from the end, where it usually is.
pub(crate) fn has_eoi_after_scan(bytes: &[u8], header: &JpegHeader) -> bool {
    header
        .scan_start
        .and_then(|start| bytes.get(start..))
        .is_some_and(|scan| scan.windows(2).rev().any(|w| w == [0xFF, 0xD9]))
}

/// Counts the scans (SOS markers) from the first one to the end of the data: the
/// entropy-coded bytes are skipped (an `FF` there is followed by `00`, a restart
/// marker or fill), every other segment by its length. A damaged length ends the
/// count early; libjpeg's progress monitor holds the same limit while it decodes.
pub(crate) fn count_scans(bytes: &[u8], header: &JpegHeader) -> u32 {
    let Some(mut pos) = header.scan_start else {
        return 0;
    };
    let mut scans = 1u32;
    // `pos` is at the SOS segment's length: skip the segment, then the data.
    let mut has_length = true;
    loop {
        if has_length {
            let Some(len) = read_u16(bytes, pos) else {
                return scans;
            };
            pos += usize::from(len.max(2));
        }
        // Entropy-coded data (or stray bytes) up to the next marker.
        let marker = loop {
            let rest = bytes.get(pos..).unwrap_or_default();
            let Some(offset) = rest.iter().position(|&b| b == 0xFF) else {
                return scans;
            };
            pos += offset + 1;
            match bytes.get(pos) {
                None => return scans,
                Some(0x00 | 0xD0..=0xD7 | 0xFF) => {}
                Some(&marker) => break marker,
            }
        };
        pos += 1;
        has_length = marker != 0x01;
        match marker {
            0xD9 => return scans,
            0xDA => scans = scans.saturating_add(1),
            _ => {}
        }
    }
}

/// The EXIF orientation of a parsed JPEG, from its first `Exif` segment as a viewer
/// reads it (every route of a JPEG asks here); "no transforms" when absent or
/// unreadable.
pub(crate) fn orientation(bytes: &[u8], header: &JpegHeader) -> image::metadata::Orientation {
    header
        .exif
        .clone()
        .and_then(|range| bytes.get(range))
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms)
}

/// The embedded ICC profile, chunks joined in sequence order; `None` when absent or
/// inconsistent (wrong counts, duplicate or zero sequence numbers), as zune-jpeg does.
pub(crate) fn icc_profile(bytes: &[u8], header: &JpegHeader) -> Option<Vec<u8>> {
    let chunks = &header.icc_chunks;
    let count = chunks.len();
    if count == 0 || count >= 255 {
        return None;
    }
    let mut by_seq: Vec<Option<&std::ops::Range<usize>>> = vec![None; count + 1];
    for (seq, total, range) in chunks {
        let seq = usize::from(*seq);
        if usize::from(*total) != count || seq == 0 || seq > count || by_seq[seq].is_some() {
            return None;
        }
        by_seq[seq] = Some(range);
    }
    let mut profile = Vec::new();
    for range in by_seq.into_iter().flatten() {
        profile.extend_from_slice(bytes.get(range.clone())?);
    }
    Some(profile)
}

fn read_u16(bytes: &[u8], pos: usize) -> Option<u16> {
    let b = bytes.get(pos..pos + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn parse_sof(segment: &[u8], header: &mut JpegHeader) -> Result<(), &'static str> {
    if segment.len() < 6 {
        return Err("frame header too short");
    }
    header.height = u16::from_be_bytes([segment[1], segment[2]]);
    header.width = u16::from_be_bytes([segment[3], segment[4]]);
    let count = segment[5];
    if count == 0 || count > 4 {
        return Err("unsupported number of components");
    }
    let specs = segment
        .get(6..6 + 3 * usize::from(count))
        .ok_or("frame header too short")?;
    for (slot, spec) in header.components.iter_mut().zip(specs.chunks_exact(3)) {
        *slot = Component {
            id: spec[0],
            h: spec[1] >> 4,
            v: spec[1] & 0x0F,
            tq: spec[2] & 0x03,
        };
    }
    header.component_count = count;
    Ok(())
}

fn parse_dqt(mut segment: &[u8], header: &mut JpegHeader) -> Result<(), &'static str> {
    while let Some((&pq_tq, rest)) = segment.split_first() {
        let sixteen_bit = pq_tq >> 4 == 1;
        let id = usize::from(pq_tq & 0x0F);
        if id > 3 || pq_tq >> 4 > 1 {
            return Err("invalid quantisation table");
        }
        let size = if sixteen_bit { 128 } else { 64 };
        let data = rest.get(..size).ok_or("quantisation table too short")?;
        let mut values = [0u16; 64];
        if sixteen_bit {
            for (v, b) in values.iter_mut().zip(data.chunks_exact(2)) {
                *v = u16::from_be_bytes([b[0], b[1]]);
            }
        } else {
            for (v, &b) in values.iter_mut().zip(data) {
                *v = u16::from(b);
            }
        }
        header.qtables[id] = Some(QTable {
            values,
            sixteen_bit,
        });
        segment = &rest[size..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_jpeg_and_headerless_data() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x89PNG\r\n\x1a\n").is_err());
        assert!(parse(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
        // A segment claiming to run past the end, before any SOF.
        assert!(parse(&[0xFF, 0xD8, 0xFF, 0xE0, 0x40, 0x00, 1, 2]).is_err());
        // Zero-length segment.
        assert!(parse(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00]).is_err());
    }

    #[test]
    fn reads_sof_dqt_and_adobe() {
        let mut j = vec![0xFF, 0xD8];
        j.extend_from_slice(&[0xFF, 0xEE, 0, 14]);
        j.extend_from_slice(b"Adobe\0\x64\0\0\0\0\x02");
        j.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0x01]);
        j.extend((1..=64).map(|v: u8| v));
        j.extend_from_slice(&[0xFF, 0xC2, 0, 20, 8, 0, 10, 0, 20, 4]);
        j.extend_from_slice(&[1, 0x22, 1, 2, 0x11, 0, 3, 0x11, 0, 4, 0x22, 1]);
        j.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        let h = parse(&j).expect("valid header");
        assert_eq!(
            (h.width, h.height, h.sof, h.component_count),
            (20, 10, 0xC2, 4)
        );
        assert_eq!(
            h.components[0],
            Component {
                id: 1,
                h: 2,
                v: 2,
                tq: 1
            }
        );
        assert_eq!(h.adobe_transform, Some(2));
        assert_eq!(h.app_markers, 1 << 14);
        let t = h.luma_table().expect("table 1");
        assert_eq!((t.values[0], t.values[63], t.sixteen_bit), (1, 64, false));
    }

    use super::super::fixtures::fixture;

    fn scans(bytes: &[u8]) -> u32 {
        count_scans(bytes, &parse(bytes).expect("parses"))
    }

    #[test]
    fn counts_scans_and_skips_what_only_looks_like_one() {
        assert_eq!(scans(&fixture("photo_q85.jpg")), 1);
        // libjpeg's progression scripts: 10 scans for colour.
        assert_eq!(scans(&fixture("progressive_420.jpg")), 10);
        // `FF DA` inside a comment between two scans is not a scan; restart
        // markers, stuffed bytes and fill bytes in the data are not either.
        let mut j = fixture("progressive_420.jpg");
        let eoi = j.len() - 2;
        let mut extra = vec![0xFF, 0xFE, 0, 6, 0xFF, 0xDA, 0xFF, 0xDA];
        extra.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 1, 63, 0]);
        extra.extend_from_slice(&[0x12, 0xFF, 0x00, 0xFF, 0xD3, 0xFF, 0xFF, 0x34]);
        j.splice(eoi..eoi, extra);
        assert_eq!(scans(&j), 11);
        // A truncated file counts what it has.
        assert_eq!(scans(&j[..j.len() - 5]), 11);
    }
}
