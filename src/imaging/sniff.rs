//! Format identification and header-only reads (dimensions, frame counts).
//!
//! These parsers look at a few bytes of each header so that limits can be
//! enforced before any decoder allocates; they never panic on short input.

use super::{Format, ImagingError, jpeg};

/// Identifies the format from magic bytes; `None` for anything unsupported.
///
/// Content, not file names or Content-Type, decides: servers often lie.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if is_bmp(bytes) {
        Some(Format::Bmp)
    } else if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
        .iter()
        .any(|magic| bytes.starts_with(*magic))
    {
        Some(Format::Tiff)
    } else {
        None
    }
}

/// "BM" alone is too weak (plain text can start with it): also require a known DIB header size.
fn is_bmp(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BM")
        && le_u32(bytes, 14)
            .is_some_and(|dib| matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124))
}

/// Header-only dimensions (before orientation).
///
/// Reads the frame header of the format without decoding pixel data, so that
/// [`Limits::max_pixels`](super::Limits) can be checked first. A missing or
/// truncated header, or a zero dimension, is an [`ImagingError::Decode`].
pub fn dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), ImagingError> {
    let dims = match format {
        Format::Jpeg => jpeg::parse(bytes)
            .map(|h| (u32::from(h.width), u32::from(h.height)))
            .map_err(str::to_owned),
        Format::Png => png_dimensions(bytes),
        Format::Gif => match (le_u16(bytes, 6), le_u16(bytes, 8)) {
            (Some(w), Some(h)) if bytes.starts_with(b"GIF") => Ok((u32::from(w), u32::from(h))),
            _ => Err("truncated GIF header".to_owned()),
        },
        Format::Webp => webp_dimensions(bytes),
        Format::Bmp => bmp_dimensions(bytes),
        Format::Tiff => tiff_dimensions(bytes),
    };
    match dims {
        Ok((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        Ok((w, h)) => Err(ImagingError::Decode {
            format,
            reason: format!("header says the image is {w}x{h}"),
        }),
        Err(reason) => Err(ImagingError::Decode { format, reason }),
    }
}

/// Number of frames of an animation (1 for still images and multi-page TIFF, which keeps page 1).
pub(crate) fn frame_count(bytes: &[u8], format: Format) -> u32 {
    match format {
        Format::Gif => gif_frames(bytes),
        Format::Png => apng_frames(bytes),
        Format::Webp => webp_frames(bytes),
        Format::Jpeg | Format::Bmp | Format::Tiff => 1,
    }
    .max(1)
}

/// `N` bytes at `at`, or `None` when out of range (never overflows).
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    bytes_at(b, at).map(u16::from_le_bytes)
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes_at(b, at).map(u32::from_le_bytes)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes_at(b, at).map(u32::from_be_bytes)
}

fn png_dimensions(b: &[u8]) -> Result<(u32, u32), String> {
    if b.get(12..16) != Some(b"IHDR") {
        return Err("missing or truncated IHDR chunk".to_owned());
    }
    match (be_u32(b, 16), be_u32(b, 20)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err("truncated IHDR chunk".to_owned()),
    }
}

/// Walks PNG chunks up to the first IDAT looking for APNG's `acTL`.
fn apng_frames(b: &[u8]) -> u32 {
    let mut pos = 8;
    while let (Some(len), Some(kind)) = (be_u32(b, pos), bytes_at::<4>(b, pos + 4)) {
        match &kind {
            b"acTL" => return be_u32(b, pos + 8).unwrap_or(1),
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        pos = match pos.checked_add(12 + len as usize) {
            Some(next) => next,
            None => break,
        };
    }
    1
}

/// Counts image descriptors, skipping extension and image data sub-blocks.
fn gif_frames(b: &[u8]) -> u32 {
    let Some(&packed) = b.get(10) else { return 1 };
    let mut pos = 13;
    if packed & 0x80 != 0 {
        pos += 3 << ((packed & 0x07) + 1);
    }
    let mut frames = 0;
    while let Some(&block) = b.get(pos) {
        match block {
            0x21 => pos = skip_sub_blocks(b, pos + 2),
            0x2C => {
                frames += 1;
                let Some(&local) = b.get(pos + 9) else { break };
                pos += 10;
                if local & 0x80 != 0 {
                    pos += 3 << ((local & 0x07) + 1);
                }
                pos = skip_sub_blocks(b, pos + 1); // +1: LZW minimum code size
            }
            _ => break, // trailer (0x3B) or garbage
        }
    }
    frames
}

/// Position after a chain of GIF data sub-blocks (ends with a zero-length block).
fn skip_sub_blocks(b: &[u8], mut pos: usize) -> usize {
    while let Some(&len) = b.get(pos) {
        pos += 1 + usize::from(len);
        if len == 0 {
            return pos;
        }
    }
    b.len()
}

/// RIFF chunks after the 12-byte WebP header: (fourcc, payload).
fn webp_chunks(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos: usize = 12;
    std::iter::from_fn(move || {
        let kind = b.get(pos..pos.checked_add(4)?)?;
        let len = le_u32(b, pos.checked_add(4)?)? as usize;
        let start = pos.checked_add(8)?;
        let data = b.get(start..start.saturating_add(len).min(b.len()))?;
        pos = start.saturating_add(len).saturating_add(len & 1);
        Some((kind, data))
    })
}

fn webp_dimensions(b: &[u8]) -> Result<(u32, u32), String> {
    let truncated = || "truncated WebP header".to_owned();
    let (kind, d) = webp_chunks(b).next().ok_or_else(truncated)?;
    let u24 = |at: usize| -> Option<u32> {
        let s = d.get(at..at + 3)?;
        Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
    };
    match kind {
        b"VP8X" => match (u24(4), u24(7)) {
            (Some(w), Some(h)) => Ok((w + 1, h + 1)),
            _ => Err(truncated()),
        },
        b"VP8 " => {
            if d.get(3..6) != Some(&[0x9D, 0x01, 0x2A]) {
                return Err("invalid VP8 frame header".to_owned());
            }
            match (le_u16(d, 6), le_u16(d, 8)) {
                (Some(w), Some(h)) => Ok((u32::from(w & 0x3FFF), u32::from(h & 0x3FFF))),
                _ => Err(truncated()),
            }
        }
        b"VP8L" => match (d.first(), le_u32(d, 1)) {
            (Some(0x2F), Some(bits)) => Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)),
            _ => Err("invalid VP8L header".to_owned()),
        },
        _ => Err("unknown first WebP chunk".to_owned()),
    }
}

fn webp_frames(b: &[u8]) -> u32 {
    let frames = webp_chunks(b).filter(|(kind, _)| *kind == b"ANMF").count();
    u32::try_from(frames).unwrap_or(u32::MAX)
}

fn bmp_dimensions(b: &[u8]) -> Result<(u32, u32), String> {
    let truncated = || "truncated BMP header".to_owned();
    let dib = le_u32(b, 14).ok_or_else(truncated)?;
    if dib == 12 {
        return match (le_u16(b, 18), le_u16(b, 20)) {
            (Some(w), Some(h)) => Ok((u32::from(w), u32::from(h))),
            _ => Err(truncated()),
        };
    }
    let (w, h) = match (le_u32(b, 18), le_u32(b, 22)) {
        (Some(w), Some(h)) => (w as i32, h as i32), // stored as signed 32-bit
        _ => return Err(truncated()),
    };
    if w < 0 {
        return Err("negative BMP width".to_owned());
    }
    // A negative height means top-down rows.
    Ok((w.unsigned_abs(), h.unsigned_abs()))
}

/// Width and height tags (256, 257) of the first IFD of a TIFF or BigTIFF.
fn tiff_dimensions(b: &[u8]) -> Result<(u32, u32), String> {
    let truncated = || "truncated TIFF header".to_owned();
    let big_endian = b.starts_with(b"MM");
    let u16_at = |at: usize| -> Option<u16> {
        let s = bytes_at(b, at)?;
        Some(if big_endian {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let s = bytes_at(b, at)?;
        Some(if big_endian {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    };
    let u64_at = |at: usize| -> Option<u64> {
        let s = bytes_at(b, at)?;
        Some(if big_endian {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    };
    let bigtiff = u16_at(2) == Some(43);
    let (count, entry_size, first_entry) = if bigtiff {
        let ifd = usize::try_from(u64_at(8).ok_or_else(truncated)?).map_err(|_| truncated())?;
        let count = u64_at(ifd).ok_or_else(truncated)?;
        (count, 20, ifd.checked_add(8).ok_or_else(truncated)?)
    } else {
        let ifd = u32_at(4).ok_or_else(truncated)? as usize;
        let count = u64::from(u16_at(ifd).ok_or_else(truncated)?);
        (count, 12, ifd.checked_add(2).ok_or_else(truncated)?)
    };
    let (mut width, mut height) = (None, None);
    // An IFD has at most 65535 entries in classic TIFF; cap BigTIFF's u64 count alike.
    for i in 0..count.min(65535) as usize {
        let Some(at) = first_entry.checked_add(i * entry_size) else {
            break;
        };
        let (Some(tag), Some(kind)) = (u16_at(at), at.checked_add(2).and_then(u16_at)) else {
            break;
        };
        let Some(value_at) = at.checked_add(if bigtiff { 12 } else { 8 }) else {
            break;
        };
        let value = match kind {
            3 => u16_at(value_at).map(u64::from),
            4 => u32_at(value_at).map(u64::from),
            16 if bigtiff => u64_at(value_at),
            _ => None,
        };
        let value = value.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        match tag {
            256 => width = value,
            257 => height = value,
            _ => {}
        }
        if width.is_some() && height.is_some() {
            break;
        }
    }
    match (width, height) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err("no width/height in the first TIFF directory".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(b"GIF87a"), Some(Format::Gif));
        assert_eq!(sniff(b"GIF89a"), Some(Format::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(Format::Tiff));
        assert_eq!(sniff(b"MM\0*\0\0\0\x08"), Some(Format::Tiff));
        assert_eq!(sniff(b"II+\0"), Some(Format::Tiff));
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        assert_eq!(sniff(&bmp), Some(Format::Bmp));
        for other in [
            &b""[..],
            b"BMW is a car, not a bitmap",
            b"RIFF\0\0\0\0WAVEfmt ",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"%PDF-1.7",
            b"\0\0\0\x1cftypavif",
            &[0xFF, 0xD8],
        ] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }

    #[test]
    fn header_dimensions_of_synthetic_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&30000u32.to_be_bytes());
        png.extend_from_slice(&20000u32.to_be_bytes());
        assert_eq!(dimensions(&png, Format::Png).ok(), Some((30000, 20000)));
        assert!(dimensions(&png[..20], Format::Png).is_err());

        let gif = b"GIF89a\x40\x01\xf0\x00\0\0\0";
        assert_eq!(dimensions(gif, Format::Gif).ok(), Some((320, 240)));
        assert!(dimensions(&gif[..8], Format::Gif).is_err());
        let zero = b"GIF89a\0\0\x10\0\0\0\0";
        assert!(matches!(
            dimensions(zero, Format::Gif),
            Err(ImagingError::Decode { .. })
        ));

        // VP8L: 14-bit width-1 and height-1 packed little-endian after 0x2F.
        let bits: u32 = 99 | (49 << 14);
        let mut webp = b"RIFF\0\0\0\0WEBPVP8L\x05\0\0\0\x2f".to_vec();
        webp.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(dimensions(&webp, Format::Webp).ok(), Some((100, 50)));

        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        bmp.extend_from_slice(&7i32.to_le_bytes());
        bmp.extend_from_slice(&(-9i32).to_le_bytes());
        assert_eq!(dimensions(&bmp, Format::Bmp).ok(), Some((7, 9)));

        // Big-endian TIFF, IFD at 8 with ImageWidth (SHORT) and ImageLength (LONG).
        let mut tiff = b"MM\0*\0\0\0\x08\0\x02".to_vec();
        tiff.extend_from_slice(&[1, 0, 0, 3, 0, 0, 0, 1, 0x01, 0x2C, 0, 0]);
        tiff.extend_from_slice(&[1, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0x01, 0x90]);
        assert_eq!(dimensions(&tiff, Format::Tiff).ok(), Some((300, 400)));
        assert!(dimensions(&tiff[..14], Format::Tiff).is_err());
        assert!(dimensions(b"II*\0\xff\xff\xff\xff", Format::Tiff).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 32) as u8
                })
                .collect();
            for format in [
                Format::Jpeg,
                Format::Png,
                Format::Gif,
                Format::Webp,
                Format::Bmp,
                Format::Tiff,
            ] {
                let _ = dimensions(&bytes, format);
                let _ = frame_count(&bytes, format);
            }
        }
    }
}
