//! Embedded ICC profile → sRGB, with qcms (pure Rust, Firefox's colour management).
//!
//! JPEG output carries no profile, so viewers assume sRGB: pixels in another
//! space (AdobeRGB, Display P3, a gray gamma) must be converted or they look
//! washed out or too saturated.

use std::sync::OnceLock;

use image::{GrayImage, RgbImage};
use qcms::{DataType, Intent, Profile, Transform};

use super::decode::Pixels;

/// The sRGB output profile with its output tables precomputed once per process.
fn srgb() -> &'static Profile {
    static SRGB: OnceLock<Box<Profile>> = OnceLock::new();
    SRGB.get_or_init(|| {
        let mut profile = Profile::new_sRGB();
        profile.precache_output_transform();
        profile
    })
}

/// Largest profile looked at, qcms' own limit (it refuses larger ones): a profile's
/// size is the input's to choose (a PNG's `iCCP` inflates up to the decoder's
/// allocation limit), and a larger one is ignored, as an unreadable one is.
const MAX_ICC_BYTES: usize = 4 << 20;

/// Bytes of the description searched for "sRGB": descriptions are a few dozen.
const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Converts `pixels` from the space described by `icc` to sRGB.
///
/// Returns the pixels and whether a conversion happened. Skipped (pixels
/// returned untouched) when the profile is sRGB already, is unreadable, or
/// does not describe the pixels (e.g. the CMYK profile of a CMYK JPEG, whose
/// pixels the decoder has already turned into RGB).
pub(crate) fn to_srgb(pixels: Pixels, icc: &[u8]) -> (Pixels, bool) {
    if icc.len() >= MAX_ICC_BYTES {
        return (pixels, false);
    }
    let space = icc.get(16..20);
    let rgb_profile = space == Some(b"RGB ");
    let gray_profile = space == Some(b"GRAY");
    let applicable = match &pixels {
        Pixels::Rgb(_) => rgb_profile,
        Pixels::Gray(_) => rgb_profile || gray_profile,
    };
    // Whatever its name says, the profile's transform decides (below): one named
    // "Linear sRGB" is not sRGB, and an sRGB profile under another name is.
    if !applicable {
        return (pixels, false);
    }
    let Some(input) = Profile::new_from_slice(icc, false) else {
        return (pixels, false);
    };
    match pixels {
        Pixels::Rgb(mut img) => {
            let Some(t) = Transform::new(&input, srgb(), DataType::RGB8, Intent::Perceptual) else {
                return (Pixels::Rgb(img), false);
            };
            if is_identity(&t, DataType::RGB8) {
                return (Pixels::Rgb(img), false);
            }
            t.apply(&mut img);
            (Pixels::Rgb(img), true)
        }
        Pixels::Gray(img) if gray_profile => {
            let Some(t) = Transform::new_to(
                &input,
                srgb(),
                DataType::Gray8,
                DataType::RGB8,
                Intent::Perceptual,
            ) else {
                return (Pixels::Gray(img), false);
            };
            if is_identity(&t, DataType::Gray8) {
                return (Pixels::Gray(img), false);
            }
            let mut out = vec![0u8; img.as_raw().len() * 3];
            t.convert(img.as_raw(), &mut out);
            match RgbImage::from_raw(img.width(), img.height(), out) {
                Some(rgb) => (Pixels::Rgb(rgb), true),
                None => (Pixels::Gray(img), false),
            }
        }
        // Gray pixels with an RGB profile: R = G = B in that space.
        Pixels::Gray(img) => {
            let (rgb, converted) = to_srgb(Pixels::Rgb(gray_to_rgb(&img)), icc);
            if converted {
                (rgb, true)
            } else {
                (Pixels::Gray(img), false)
            }
        }
    }
}

/// Whether the pixels a profile describes are sRGB already, so that a JPEG carrying it
/// may be transcoded without converting them (the coefficient path): its name says
/// sRGB (a cheap first look, since most profiles are named otherwise) and its transform
/// to sRGB changes nothing. The name alone is not enough: "Linear sRGB" or a
/// gamma-1.0 "sRGB-elle-V4-g10" would have its midtones shown far too dark.
pub(crate) fn is_srgb(icc: &[u8]) -> bool {
    if !says_srgb(icc) {
        return false;
    }
    let Some(profile) = Profile::new_from_slice(icc, false) else {
        return false;
    };
    let (input, output) = match icc.get(16..20) {
        Some(b"RGB ") => (DataType::RGB8, DataType::RGB8),
        Some(b"GRAY") => (DataType::Gray8, DataType::RGB8),
        _ => return false,
    };
    Transform::new_to(&profile, srgb(), input, output, Intent::Perceptual)
        .is_some_and(|t| is_identity(&t, input))
}

/// Cheap check on the profile description (v2 `desc` ASCII or v4 `mluc` UTF-16):
/// whether it is named sRGB (IEC61966-2.1, "sRGB built-in", ...).
/// Only the first `desc` tag, and its first [`MAX_DESCRIPTION_BYTES`], are read: a
/// hostile profile may list 256 of them, each spanning the whole profile. A profile
/// over [`MAX_ICC_BYTES`] is never sRGB (it is ignored).
pub(crate) fn says_srgb(icc: &[u8]) -> bool {
    if icc.len() >= MAX_ICC_BYTES {
        return false;
    }
    let count = icc
        .get(128..132)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let description = (0..count.min(256) as usize)
        .filter_map(|i| icc.get(132 + 12 * i..144 + 12 * i))
        .find(|entry| &entry[..4] == b"desc")
        .and_then(|entry| {
            let offset = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as usize;
            let size = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]) as usize;
            icc.get(offset..offset.checked_add(size.min(MAX_DESCRIPTION_BYTES))?)
        });
    description.is_some_and(|desc| {
        desc.windows(4).any(|w| w == b"sRGB") || desc.windows(8).any(|w| w == b"\0s\0R\0G\0B")
    })
}

/// True when the transform changes no sample value by more than 1 (an sRGB
/// profile under another name): applying it would only cost time.
fn is_identity(t: &Transform, input: DataType) -> bool {
    const STEPS: [u8; 6] = [0, 51, 102, 153, 204, 255];
    match input {
        DataType::RGB8 => {
            let mut samples: Vec<u8> = Vec::with_capacity(3 * 216);
            for r in STEPS {
                for g in STEPS {
                    for b in STEPS {
                        samples.extend_from_slice(&[r, g, b]);
                    }
                }
            }
            let mut out = samples.clone();
            t.apply(&mut out);
            samples.iter().zip(&out).all(|(a, b)| a.abs_diff(*b) <= 1)
        }
        _ => {
            let samples: Vec<u8> = (0..=255).step_by(5).collect();
            let mut out = vec![0u8; samples.len() * 3];
            t.convert(&samples, &mut out);
            samples
                .iter()
                .zip(out.chunks_exact(3))
                .all(|(&v, rgb)| rgb.iter().all(|&c| c.abs_diff(v) <= 1))
        }
    }
}

/// Expands gray to RGB (only used when a gray image carries an RGB profile).
pub(crate) fn gray_to_rgb(img: &GrayImage) -> RgbImage {
    let raw: Vec<u8> = img.as_raw().iter().flat_map(|&v| [v, v, v]).collect();
    RgbImage::from_raw(img.width(), img.height(), raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_profiles_are_left_alone() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([10, 200, 30]));
        // Not a profile at all.
        let (out, converted) = to_srgb(Pixels::Rgb(img.clone()), b"garbage");
        assert!(!converted);
        assert!(matches!(out, Pixels::Rgb(ref o) if *o == img));
        // A CMYK profile header does not apply to RGB pixels.
        let mut cmyk = vec![0u8; 132];
        cmyk[16..20].copy_from_slice(b"CMYK");
        assert!(!to_srgb(Pixels::Rgb(img.clone()), &cmyk).1);
    }

    /// A profile of `len` bytes listing 256 `desc` tags, each spanning everything
    /// after the tag table, with `name` written `name_at` bytes into it.
    fn many_descriptions(len: usize, name: &[u8], name_at: usize) -> Vec<u8> {
        let start = 132 + 12 * 256;
        let mut icc = vec![0u8; len];
        icc[16..20].copy_from_slice(b"RGB ");
        icc[128..132].copy_from_slice(&256u32.to_be_bytes());
        for i in 0..256 {
            let entry = &mut icc[132 + 12 * i..144 + 12 * i];
            entry[..4].copy_from_slice(b"desc");
            entry[4..8].copy_from_slice(&(start as u32).to_be_bytes());
            entry[8..].copy_from_slice(&((len - start) as u32).to_be_bytes());
        }
        icc[start + name_at..start + name_at + name.len()].copy_from_slice(name);
        icc
    }

    /// The description is read from the first `desc` tag, its first kilobyte only,
    /// and a profile over qcms' 4 MiB is ignored before anything reads it: a hostile
    /// one of 64 MB with 256 tags spanning it all was 256 × 2 scans of 64 MB.
    #[test]
    fn only_the_start_of_one_description_of_a_bounded_profile_is_read() {
        assert!(says_srgb(&many_descriptions(200_000, b"sRGB", 12)));
        assert!(!says_srgb(&many_descriptions(200_000, b"sRGB", 190_000)));
        let huge = many_descriptions(MAX_ICC_BYTES, b"sRGB", 12);
        assert!(!says_srgb(&huge));
        let img = RgbImage::from_pixel(2, 2, image::Rgb([10, 200, 30]));
        assert!(!to_srgb(Pixels::Rgb(img), &huge).1);
    }

    /// `icc` with "Adobe RGB" in its description spelt "Adobe sRGB" (same length: the
    /// space before it is taken).
    fn name_srgb(icc: &[u8]) -> Vec<u8> {
        let mut named = icc.to_vec();
        let at = named
            .windows(9)
            .position(|w| w == b"Adobe RGB")
            .expect("an Adobe RGB description");
        named[at - 1..at + 9].copy_from_slice(b"Adobe sRGB");
        named
    }

    fn embedded_icc(name: &str) -> Vec<u8> {
        let bytes = super::super::fixtures::fixture(name);
        let mut decoder =
            image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes)).expect("jpeg");
        image::ImageDecoder::icc_profile(&mut decoder)
            .expect("readable")
            .expect("has a profile")
    }

    #[test]
    fn adobergb_changes_colours_and_gray_with_rgb_profile_becomes_rgb() {
        let icc = embedded_icc("adobergb_icc.jpg");
        assert!(!says_srgb(&icc));
        let green = RgbImage::from_pixel(2, 2, image::Rgb([40, 200, 40]));
        let (out, converted) = to_srgb(Pixels::Rgb(green), &icc);
        assert!(converted);
        // AdobeRGB's green is more saturated than sRGB can show: red drops to 0.
        let Pixels::Rgb(out) = out else {
            panic!("expected RGB")
        };
        assert!(
            out.pixels().all(|p| p[0] < 20 && p[1] > 200),
            "{:?}",
            out.get_pixel(0, 0)
        );

        let gray = GrayImage::from_fn(16, 1, |x, _| image::Luma([x as u8 * 16]));
        let (out, converted) = to_srgb(Pixels::Gray(gray), &icc);
        assert!(converted);
        let Pixels::Rgb(out) = out else {
            panic!("expected RGB")
        };
        assert!(
            out.pixels()
                .all(|p| p[0].abs_diff(p[1]) <= 2 && p[1].abs_diff(p[2]) <= 2)
        );
    }

    #[test]
    fn srgb_is_skipped_by_name_or_by_effect() {
        let icc = embedded_icc("srgb_icc.jpg");
        assert!(says_srgb(&icc));
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 77]));
        assert!(!to_srgb(Pixels::Rgb(img.clone()), &icc).1);
        // The same profile under another name: the transform is an identity, so skipped too.
        let mut renamed = icc.clone();
        for i in 0..renamed.len().saturating_sub(8) {
            if &renamed[i..i + 4] == b"sRGB" {
                renamed[i..i + 4].copy_from_slice(b"xxxx");
            }
            if &renamed[i..i + 8] == b"\0s\0R\0G\0B" {
                renamed[i..i + 8].copy_from_slice(b"\0x\0x\0x\0x");
            }
        }
        assert!(!says_srgb(&renamed));
        let (out, converted) = to_srgb(Pixels::Rgb(img.clone()), &renamed);
        assert!(!converted);
        assert!(matches!(out, Pixels::Rgb(ref o) if *o == img));
    }

    /// A profile named sRGB that is not (AdobeRGB's, renamed "Adobe sRGB (1998)"): its
    /// pixels are converted, and it is not taken for sRGB.
    #[test]
    fn a_profile_named_srgb_that_is_not_is_converted() {
        let icc = embedded_icc("adobergb_icc.jpg");
        let named = name_srgb(&icc);
        assert!(says_srgb(&named) && !is_srgb(&named));
        let green = RgbImage::from_pixel(2, 2, image::Rgb([40, 200, 40]));
        assert!(to_srgb(Pixels::Rgb(green), &named).1);
        assert!(is_srgb(&embedded_icc("srgb_icc.jpg")));
    }

    #[test]
    fn says_srgb_reads_the_description() {
        let mut icc = vec![0u8; 200];
        icc[128..132].copy_from_slice(&1u32.to_be_bytes());
        icc[132..136].copy_from_slice(b"desc");
        icc[136..140].copy_from_slice(&150u32.to_be_bytes());
        icc[140..144].copy_from_slice(&30u32.to_be_bytes());
        icc[162..179].copy_from_slice(b"sRGB IEC61966-2.1");
        assert!(says_srgb(&icc));
        icc[162..166].copy_from_slice(b"Adob");
        assert!(!says_srgb(&icc));
        // Offsets past the end are ignored, not a panic.
        icc[136..140].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(!says_srgb(&icc));
    }
}
