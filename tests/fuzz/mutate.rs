//! Mutations: generic ones on bytes, and structure-aware ones that know JPEG
//! segments and scans, EXIF and ICC segments, and PNG chunks (with valid CRCs, so a
//! decoder gets past the checksum to the field that was changed).

use rand::{Rng, RngCore};

/// Values that tend to sit on a boundary of some check.
const INTERESTING: [u32; 12] = [0, 1, 2, 7, 8, 15, 16, 127, 128, 255, 256, 65535];

fn interesting(rng: &mut impl RngCore) -> u32 {
    if rng.random_bool(0.7) {
        INTERESTING[rng.random_range(0..INTERESTING.len())]
    } else {
        rng.random()
    }
}

/// Applies one to three mutations to `input`; returns their names (for the report).
pub fn mutate(input: &[u8], rng: &mut impl RngCore) -> (Vec<u8>, Vec<&'static str>) {
    let mut bytes = input.to_vec();
    let mut names = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let name = if rng.random_bool(0.6) {
            if bytes.starts_with(&[0xFF, 0xD8]) {
                jpeg(&mut bytes, rng)
            } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
                png(&mut bytes, rng)
            } else {
                generic(&mut bytes, rng)
            }
        } else {
            generic(&mut bytes, rng)
        };
        names.push(name);
    }
    (bytes, names)
}

fn pos(rng: &mut impl RngCore, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        rng.random_range(0..len)
    }
}

/// Mutations that know nothing of the format.
fn generic(bytes: &mut Vec<u8>, rng: &mut impl RngCore) -> &'static str {
    let len = bytes.len();
    match rng.random_range(0..7) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = pos(rng, len);
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            "bit flips"
        }
        1 => {
            let start = pos(rng, len);
            let end = (start + rng.random_range(1..=64)).min(len);
            let value: u8 = if rng.random_bool(0.5) {
                0xFF
            } else {
                rng.random()
            };
            let random = rng.random_bool(0.5);
            for b in &mut bytes[start..end] {
                *b = if random { rng.random() } else { value };
            }
            "byte run"
        }
        2 => {
            bytes.truncate(pos(rng, len));
            if rng.random_bool(0.5) && bytes.starts_with(&[0xFF, 0xD8]) {
                bytes.extend_from_slice(&[0xFF, 0xD9]); // only libjpeg can tell
            }
            "truncation"
        }
        3 => {
            let start = pos(rng, len);
            let end = (start + rng.random_range(1..=4096)).min(len);
            let copy = bytes[start..end].to_vec();
            let at = pos(rng, bytes.len());
            bytes.splice(
                at..at,
                copy.iter()
                    .copied()
                    .cycle()
                    .take(copy.len() * rng.random_range(1..=4)),
            );
            "duplicated range"
        }
        4 => {
            let start = pos(rng, len);
            let end = (start + rng.random_range(1..=256)).min(len);
            bytes.drain(start..end);
            "deleted range"
        }
        5 => {
            let i = pos(rng, len.min(64));
            if let Some(b) = bytes.get_mut(i) {
                *b = interesting(rng) as u8;
            }
            "header byte"
        }
        _ => {
            let i = pos(rng, len.saturating_sub(1));
            let v = (interesting(rng) as u16).to_be_bytes();
            if i + 2 <= len {
                bytes[i..i + 2].copy_from_slice(&v);
            }
            "16-bit field"
        }
    }
}

/// One JPEG segment: marker, offset of the marker's `FF`, total length with the
/// marker (for SOS: its header only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub(crate) marker: u8,
    pub(crate) at: usize,
    pub(crate) len: usize,
}

/// The segments up to EOI; for each SOS also its entropy-coded data as a pseudo
/// segment (marker 0) up to the next marker.
pub(crate) fn segments(bytes: &[u8]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut pos = 2;
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xFF {
            break;
        }
        let marker = bytes[pos + 1];
        if marker == 0xD9 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]])) + 2;
        out.push(Segment {
            marker,
            at: pos,
            len,
        });
        pos += len.max(4);
        if pos > bytes.len() {
            break; // a length past the end
        }
        if marker == 0xDA {
            let start = pos;
            while pos + 1 < bytes.len()
                && (bytes[pos] != 0xFF || matches!(bytes[pos + 1], 0x00 | 0xD0..=0xD7))
            {
                pos += 1;
            }
            out.push(Segment {
                marker: 0,
                at: start,
                len: pos - start,
            });
        }
    }
    out
}

/// A random segment with `marker` (any when `None`).
fn pick(segs: &[Segment], marker: Option<u8>, rng: &mut impl RngCore) -> Option<Segment> {
    let matching: Vec<_> = segs
        .iter()
        .filter(|s| s.marker != 0 && marker.is_none_or(|m| s.marker == m))
        .collect();
    (!matching.is_empty()).then(|| *matching[pos(rng, matching.len())])
}

/// Sets byte `offset` of segment `seg`'s body (after the length) when it exists.
fn set_body_byte(bytes: &mut [u8], seg: Segment, offset: usize, value: u8) {
    let i = seg.at + 4 + offset;
    if offset + 4 < seg.len && i < bytes.len() {
        bytes[i] = value;
    }
}

fn body_offset(seg: Segment, rng: &mut impl RngCore) -> usize {
    pos(rng, seg.len.saturating_sub(4).max(1))
}

/// Structure-aware JPEG mutations.
fn jpeg(bytes: &mut Vec<u8>, rng: &mut impl RngCore) -> &'static str {
    let segs = segments(bytes);
    let sof = segs
        .iter()
        .copied()
        .find(|s| matches!(s.marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF));
    match rng.random_range(0..9) {
        0 => {
            let Some(seg) = pick(&segs, None, rng) else {
                return generic(bytes, rng);
            };
            let value = match rng.random_range(0..4) {
                0 => interesting(rng) as u16,
                1 => (seg.len - 2).saturating_add(1) as u16,
                2 => (seg.len - 2).saturating_sub(1) as u16,
                _ => rng.random(),
            };
            bytes[seg.at + 2..seg.at + 4].copy_from_slice(&value.to_be_bytes());
            "marker length"
        }
        1 => {
            let Some(seg) = pick(&segs, Some(0xDB), rng) else {
                return generic(bytes, rng);
            };
            let offset = if rng.random_bool(0.3) {
                0
            } else {
                body_offset(seg, rng)
            };
            set_body_byte(bytes, seg, offset, interesting(rng) as u8);
            "DQT field"
        }
        2 => {
            let Some(seg) = pick(&segs, Some(0xC4), rng) else {
                return generic(bytes, rng);
            };
            // Class/id, a code count (bits 1..16), or a symbol.
            let offset = match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(1..=16),
                _ => body_offset(seg, rng),
            };
            set_body_byte(bytes, seg, offset, interesting(rng) as u8);
            "DHT field"
        }
        3 => {
            let Some(seg) = sof else {
                return generic(bytes, rng);
            };
            // Precision, height, width, component count, then per component
            // id, sampling factors, table.
            let offset = rng.random_range(0..seg.len.saturating_sub(4).max(1));
            let value = match offset {
                0 => [8u8, 12, 16, 0, 255][rng.random_range(0..5)],
                1..=4 => interesting(rng) as u8,
                5 => rng.random_range(0..6),
                o if (o - 6) % 3 == 1 => rng.random_range(0..5) << 4 | rng.random_range(0..5),
                o if (o - 6) % 3 == 2 => rng.random_range(0..5),
                _ => rng.random(),
            };
            set_body_byte(bytes, seg, offset, value);
            "SOF field"
        }
        4 => {
            let Some(seg) = pick(&segs, Some(0xDA), rng) else {
                return generic(bytes, rng);
            };
            // Ns, then (selector, tables) pairs, then Ss, Se, Ah/Al.
            let body = seg.len.saturating_sub(4);
            let offset = match rng.random_range(0..3) {
                0 => 0,
                1 => body.saturating_sub(rng.random_range(1..=3)),
                _ => body_offset(seg, rng),
            };
            let value = if offset + 1 == body {
                rng.random_range(0..16) << 4 | rng.random_range(0..16)
            } else {
                interesting(rng) as u8
            };
            set_body_byte(bytes, seg, offset, value);
            "SOS field"
        }
        5 => scan_script(bytes, &segs, rng),
        6 => exif(bytes, &segs, rng),
        7 => icc(bytes, &segs, rng),
        _ => {
            // A restart interval, or a stray marker in the data.
            let at = segs.iter().find(|s| s.marker == 0).map_or(2, |s| s.at);
            let insert: Vec<u8> = if rng.random_bool(0.5) {
                let interval = (interesting(rng) as u16).to_be_bytes();
                vec![0xFF, 0xDD, 0, 4, interval[0], interval[1]]
            } else {
                vec![0xFF, rng.random_range(0xC0..=0xFE)]
            };
            let at = if rng.random_bool(0.5) {
                at.min(bytes.len())
            } else {
                pos(rng, bytes.len())
            };
            bytes.splice(at..at, insert);
            "restart/stray marker"
        }
    }
}

/// Scans as units: repeated (a few times, or thousands), dropped, or reordered.
fn scan_script(bytes: &mut Vec<u8>, segs: &[Segment], rng: &mut impl RngCore) -> &'static str {
    // (start, end) of each scan: its SOS header and the data after it.
    let scans: Vec<(usize, usize)> = segs
        .windows(2)
        .filter(|w| w[0].marker == 0xDA && w[1].marker == 0)
        .map(|w| (w[0].at, w[1].at + w[1].len))
        .filter(|&(_, end)| end <= bytes.len())
        .collect();
    if scans.is_empty() {
        return generic(bytes, rng);
    }
    let (start, end) = scans[pos(rng, scans.len())];
    let scan = bytes[start..end].to_vec();
    match rng.random_range(0..4) {
        0 | 1 => {
            let copies = if rng.random_bool(0.1) {
                rng.random_range(100..=3000)
            } else {
                rng.random_range(1..=8)
            };
            let body: Vec<u8> = scan
                .iter()
                .copied()
                .cycle()
                .take(scan.len() * copies)
                .collect();
            bytes.splice(end..end, body);
            "repeated scan"
        }
        2 => {
            bytes.drain(start..end);
            "dropped scan"
        }
        _ => {
            let (s2, e2) = scans[pos(rng, scans.len())];
            if s2 >= end {
                let other = bytes[s2..e2].to_vec();
                bytes.splice(s2..e2, scan);
                bytes.splice(start..end, other);
            }
            "swapped scans"
        }
    }
}

/// A JPEG segment of `marker` with `body`.
fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
    let len = (body.len() + 2).min(0xFFFF) as u16;
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len) - 2]);
    out
}

/// A made-up EXIF block (orientation anything, offsets sometimes wrong), or a byte
/// of an existing one changed.
fn exif(bytes: &mut Vec<u8>, segs: &[Segment], rng: &mut impl RngCore) -> &'static str {
    if let Some(seg) = pick(segs, Some(0xE1), rng).filter(|_| rng.random_bool(0.5)) {
        let offset = body_offset(seg, rng);
        set_body_byte(bytes, seg, offset, interesting(rng) as u8);
        return "EXIF byte";
    }
    let orientation = if rng.random_bool(0.7) {
        rng.random_range(0..=9u16)
    } else {
        rng.random()
    };
    let ifd_offset: u32 = if rng.random_bool(0.8) {
        8
    } else {
        rng.random()
    };
    let count: u16 = if rng.random_bool(0.8) {
        1
    } else {
        rng.random()
    };
    let mut body = b"Exif\0\0MM\0\x2a".to_vec();
    body.extend_from_slice(&ifd_offset.to_be_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    body.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    body.extend_from_slice(&orientation.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    bytes.splice(2..2, segment(0xE1, &body));
    "EXIF segment"
}

/// ICC_PROFILE chunks with sequence numbers right or wrong and a profile that is
/// garbage, cut short, or an existing chunk's byte changed.
fn icc(bytes: &mut Vec<u8>, segs: &[Segment], rng: &mut impl RngCore) -> &'static str {
    if let Some(seg) = pick(segs, Some(0xE2), rng).filter(|_| rng.random_bool(0.5)) {
        let offset = body_offset(seg, rng);
        set_body_byte(bytes, seg, offset, interesting(rng) as u8);
        return "ICC byte";
    }
    let total = rng.random_range(1..=3u8);
    let mut insert = Vec::new();
    for seq in 1..=total {
        let seq = if rng.random_bool(0.8) {
            seq
        } else {
            rng.random()
        };
        let mut body = b"ICC_PROFILE\0".to_vec();
        body.extend_from_slice(&[seq, total]);
        let size: u32 = if rng.random_bool(0.5) {
            128 + 12
        } else {
            rng.random()
        };
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(b"lcmsmntrRGB XYZ ");
        let n = rng.random_range(0..400);
        body.extend((0..n).map(|_| rng.random::<u8>()));
        insert.extend(segment(0xE2, &body));
    }
    bytes.splice(2..2, insert);
    "ICC segment"
}

/// CRC-32 (PNG's, ISO-HDLC).
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0xEDB8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
    }
    !crc
}

/// PNG chunk-aware mutations: a field of a chunk with its CRC fixed, a chunk
/// repeated or dropped, a chunk length wrong.
fn png(bytes: &mut Vec<u8>, rng: &mut impl RngCore) -> &'static str {
    // (offset of the length field, data length) of every whole chunk.
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if at + 12 + len > bytes.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    if chunks.is_empty() {
        return generic(bytes, rng);
    }
    let (at, len) = chunks[pos(rng, chunks.len())];
    match rng.random_range(0..4) {
        0 | 1 => {
            // IHDR (width, height, depth, colour type, interlace) or any data byte.
            let offset = if len > 0 {
                pos(rng, len.min(13))
            } else {
                return generic(bytes, rng);
            };
            let value = match offset {
                8 => [1u8, 2, 4, 8, 16, 0, 3][rng.random_range(0..7)],
                9 => [0u8, 2, 3, 4, 6, 1, 7][rng.random_range(0..7)],
                _ => interesting(rng) as u8,
            };
            let offset = if rng.random_bool(0.3) {
                pos(rng, len)
            } else {
                offset
            };
            bytes[at + 8 + offset] = value;
            let crc = crc32(&[&bytes[at + 4..at + 8 + len]]);
            bytes[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
            "PNG chunk field"
        }
        2 => {
            let chunk = bytes[at..at + 12 + len].to_vec();
            if rng.random_bool(0.5) {
                bytes.splice(at..at, chunk);
                "PNG chunk repeated"
            } else {
                bytes.drain(at..at + 12 + len);
                "PNG chunk dropped"
            }
        }
        _ => {
            let value = interesting(rng).to_be_bytes();
            bytes[at..at + 4].copy_from_slice(&value);
            "PNG chunk length"
        }
    }
}
