//! Format identification and header-only reads (dimensions, frame counts).
//!
//! These parsers look at a few bytes of each header so that limits can be
//! enforced before any decoder allocates; they never panic on short input.

use std::io::Cursor;

use image::{ImageDecoder, codecs::bmp::BmpDecoder};

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
/// [`Limits::max_pixels`](super::Limits) can be checked first: our own JPEG marker
/// walk, `imagesize` for PNG, GIF, WebP and TIFF, and `image`'s BMP decoder (which
/// reads the header and palette only until asked for pixels). A missing or truncated
/// header, or a zero dimension, is an [`ImagingError::Decode`].
pub fn dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), ImagingError> {
    let sized = |kind: imagesize::ImageType| {
        if imagesize::image_type(bytes).ok() != Some(kind) {
            return Err(format!("not a {format:?} header"));
        }
        let size = imagesize::blob_size(bytes).map_err(|e| format!("unreadable header: {e}"))?;
        match (u32::try_from(size.width), u32::try_from(size.height)) {
            (Ok(w), Ok(h)) => Ok((w, h)),
            _ => Err(format!(
                "header says the image is {}x{}",
                size.width, size.height
            )),
        }
    };
    let dims = match format {
        Format::Jpeg => jpeg::parse(bytes)
            .map(|h| (u32::from(h.width), u32::from(h.height)))
            .map_err(str::to_owned),
        Format::Png => sized(imagesize::ImageType::Png),
        Format::Gif => sized(imagesize::ImageType::Gif),
        Format::Webp => sized(imagesize::ImageType::Webp).and_then(|canvas| {
            webp_frames_within(bytes, canvas)?;
            Ok(canvas)
        }),
        Format::Tiff => sized(imagesize::ImageType::Tiff),
        Format::Bmp => BmpDecoder::new(Cursor::new(bytes))
            .map(|d| d.dimensions())
            .map_err(|e| format!("unreadable header: {e}")),
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

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes_at(b, at).map(u32::from_le_bytes)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes_at(b, at).map(u32::from_be_bytes)
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
    riff_chunks(b, 12)
}

/// RIFF chunks from `pos` on: (fourcc, payload).
fn riff_chunks(b: &[u8], mut pos: usize) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let kind = b.get(pos..pos.checked_add(4)?)?;
        let len = le_u32(b, pos.checked_add(4)?)? as usize;
        let start = pos.checked_add(8)?;
        let data = b.get(start..start.saturating_add(len).min(b.len()))?;
        pos = start.saturating_add(len).saturating_add(len & 1);
        Some((kind, data))
    })
}

/// Checks the size every VP8/VP8L bitstream of a WebP declares (at the top level and in
/// each animation frame) against the canvas the pixel limit was checked on. The
/// decoders allocate and decode a frame at its own size and compare it with the
/// canvas only afterwards: a 1×1 canvas around a 16383×16383 frame would cost 268
/// million pixels of work that no limit saw.
fn webp_frames_within(b: &[u8], (width, height): (u32, u32)) -> Result<(), String> {
    let mut sizes = Vec::new();
    for (kind, data) in webp_chunks(b) {
        if kind == b"ANMF" {
            // 16 bytes of frame header (offsets, size, duration, flags), then chunks.
            sizes.extend(riff_chunks(data, 16).filter_map(|(k, d)| webp_bitstream_size(k, d)));
        } else {
            sizes.extend(webp_bitstream_size(kind, data));
        }
    }
    match sizes.into_iter().find(|&(w, h)| w > width || h > height) {
        Some((w, h)) => Err(format!(
            "a frame of {w}x{h} is larger than the {width}x{height} canvas"
        )),
        None => Ok(()),
    }
}

/// The size a `VP8 ` (lossy) or `VP8L` (lossless) bitstream declares, when its header
/// is there to read.
fn webp_bitstream_size(kind: &[u8], data: &[u8]) -> Option<(u32, u32)> {
    match kind {
        b"VP8 " => {
            // A 3-byte frame tag, the start code, then 14-bit width and height.
            if data.get(3..6)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = u16::from_le_bytes(bytes_at(data, 6)?) & 0x3fff;
            let h = u16::from_le_bytes(bytes_at(data, 8)?) & 0x3fff;
            Some((w.into(), h.into()))
        }
        b"VP8L" => {
            // The signature, then width-1 and height-1 in 14 bits each.
            if *data.first()? != 0x2f {
                return None;
            }
            let bits = u32::from_le_bytes(bytes_at(data, 1)?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        _ => None,
    }
}

fn webp_frames(b: &[u8]) -> u32 {
    let frames = webp_chunks(b).filter(|(kind, _)| *kind == b"ANMF").count();
    u32::try_from(frames).unwrap_or(u32::MAX)
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

        // A 1×1 VP8X canvas around a lossy frame declaring 16383×16383, plain and
        // as an animation frame: refused on the frame's size, before any decoder
        // allocates for it.
        let chunk = |kind: &[u8], body: &[u8]| {
            let mut c = kind.to_vec();
            c.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
            c.extend_from_slice(body);
            if body.len() % 2 == 1 {
                c.push(0);
            }
            c
        };
        let vp8x = chunk(b"VP8X", &[0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let big = chunk(
            b"VP8 ",
            &[0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f],
        );
        let riff = |chunks: &[&[u8]]| {
            let mut b = b"RIFF\0\0\0\0WEBP".to_vec();
            for c in chunks {
                b.extend_from_slice(c);
            }
            b
        };
        let mut anmf = vec![0u8; 16];
        anmf.extend_from_slice(&big);
        for file in [riff(&[&vp8x, &big]), riff(&[&vp8x, &chunk(b"ANMF", &anmf)])] {
            let err = dimensions(&file, Format::Webp).unwrap_err().to_string();
            assert!(
                err.contains("a frame of 16383x16383 is larger than the 1x1 canvas"),
                "{err}"
            );
        }
        // A frame the canvas' size passes.
        let fits = chunk(
            b"VP8 ",
            &[0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x01, 0x00, 0x01, 0x00],
        );
        assert_eq!(
            dimensions(&riff(&[&vp8x, &fits]), Format::Webp).ok(),
            Some((1, 1))
        );

        // A top-down BMP (negative height) and an OS/2 one (16-bit sizes).
        let mut bmp = bmp_header(40, 54);
        bmp.extend_from_slice(&7i32.to_le_bytes());
        bmp.extend_from_slice(&(-9i32).to_le_bytes());
        bmp.extend_from_slice(&[1, 0, 24, 0]); // planes, bits per pixel
        bmp.extend_from_slice(&[0; 24]); // no compression, sizes and palette from defaults
        assert_eq!(dimensions(&bmp, Format::Bmp).ok(), Some((7, 9)));
        assert!(dimensions(&bmp[..30], Format::Bmp).is_err());
        let mut os2 = bmp_header(12, 26);
        os2.extend_from_slice(&[5, 0, 3, 0, 1, 0, 24, 0]);
        assert_eq!(dimensions(&os2, Format::Bmp).ok(), Some((5, 3)));

        // Big-endian TIFF, IFD at 8 with ImageWidth (SHORT) and ImageLength (LONG).
        let mut tiff = b"MM\0*\0\0\0\x08\0\x02".to_vec();
        tiff.extend_from_slice(&[1, 0, 0, 3, 0, 0, 0, 1, 0x01, 0x2C, 0, 0]);
        tiff.extend_from_slice(&[1, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0x01, 0x90]);
        assert_eq!(dimensions(&tiff, Format::Tiff).ok(), Some((300, 400)));
        assert!(dimensions(&tiff[..14], Format::Tiff).is_err());
        assert!(dimensions(b"II*\0\xff\xff\xff\xff", Format::Tiff).is_err());
    }

    /// A BMP file header and the DIB header's size field.
    fn bmp_header(dib: u32, pixels_at: u32) -> Vec<u8> {
        let mut b = b"BM".to_vec();
        b.extend_from_slice(&(pixels_at + 64).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&pixels_at.to_le_bytes());
        b.extend_from_slice(&dib.to_le_bytes());
        b
    }

    /// Random bytes, bare and behind each format's magic: never a panic, and every
    /// answer is one the caller can use (a non-zero size or a decode error of the
    /// format asked for; at least one frame).
    #[test]
    fn garbage_never_panics() {
        let formats = [
            (Format::Jpeg, &b"\xFF\xD8\xFF"[..]),
            (Format::Png, b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"),
            (Format::Gif, b"GIF89a"),
            (Format::Webp, b"RIFF\0\0\0\0WEBPVP8"),
            (Format::Bmp, b"BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0\0"),
            (Format::Tiff, b"II*\0\x08\0\0\0"),
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut sized = 0;
        for len in 0..300 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 32) as u8
                })
                .collect();
            for (format, magic) in formats {
                for bytes in [noise.clone(), [magic, &noise].concat()] {
                    match dimensions(&bytes, format) {
                        Ok((w, h)) => {
                            assert!(w > 0 && h > 0, "{format:?} {w}x{h}");
                            sized += 1;
                        }
                        Err(ImagingError::Decode { format: f, .. }) => assert_eq!(f, format),
                        Err(other) => panic!("{format:?}: {other:?}"),
                    }
                    assert!(frame_count(&bytes, format) >= 1);
                }
            }
        }
        // Behind a magic, some noise does read as a size: the parsers got past it.
        assert!(sized > 0);
    }

    /// Every prefix of a real file of each format gives its true size or an error,
    /// never a wrong size.
    #[test]
    fn truncated_files_give_the_true_size_or_an_error() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imaging");
        for (name, format) in [
            ("photo_q85.jpg", Format::Jpeg),
            ("alpha.png", Format::Png),
            ("anim3.gif", Format::Gif),
            ("photo.webp", Format::Webp),
            ("small.bmp", Format::Bmp),
            ("small.tiff", Format::Tiff),
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let full = dimensions(&bytes, format).unwrap();
            for len in 0..bytes.len().min(4096) {
                if let Ok(dims) = dimensions(&bytes[..len], format) {
                    assert_eq!(dims, full, "{name} cut at {len}");
                }
            }
        }
    }
}
