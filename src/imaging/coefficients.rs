//! A JPEG's quantised DCT coefficients, lent to the fast path and the kernels as
//! planes of blocks: decoded by our entropy decoder ([`super::jpegdec`], which gives
//! exactly libjpeg's coefficients and its verdict on damaged data, 1.6–1.8× faster on
//! progressive files), or by libjpeg for what ours does not take (arithmetic coding,
//! 12-bit samples, more than four components).
//!
//! Each transform thread keeps the coefficient storage of its last image for the
//! next one (up to [`KEEP_BLOCKS`]), the decoder's and the output's
//! ([`zeroed_blocks`], [`recycle_blocks`]): fresh pages cost a page fault each, which
//! was a quarter of a transcode's time (`perf stat -e page-faults`: 55,000 faults and
//! 0.24 s of system time in 1.05 s for the 21 corpus photos, one thread).

use std::cell::RefCell;

use super::jpegdec::{self, ColorSpace, DecodeError, Reuse};
use super::libjpeg::{self, Block, Budget, Frame, FrameColor, LibjpegError, Plane};

/// Most blocks of storage a thread keeps between images: 96 MiB, a 16-megapixel 4:2:2
/// photo's coefficients and its output chroma (what an image that size needs anyway
/// while it is transformed; a bigger image's storage is freed when it is done).
const KEEP_BLOCKS: usize = 96 << 20 >> 7;

thread_local! {
    static REUSE: RefCell<Reuse> = RefCell::new(Reuse::new());
}

/// Reads the headers of `input` and, when `accept` takes its [`Frame`], its
/// coefficients; `use_planes` gets one [`Plane`] per component, in frame order, to
/// read or rewrite in place, and its result is returned. `Ok(None)` when `accept`
/// declines (before any entropy-coded data is read). Damaged data
/// ([`LibjpegError::Corrupt`]), more scans than `budget` allows and spent time end it.
pub(crate) fn read<R>(
    input: &[u8],
    budget: &Budget,
    accept: impl FnOnce(&Frame) -> bool,
    use_planes: impl FnOnce(&Frame, Vec<Plane<'_>>) -> R,
) -> Result<Option<R>, LibjpegError> {
    let limits = jpegdec::Limits {
        max_pixels: budget.max_pixels,
        max_scans: budget.max_scans,
    };
    let mut progress = Progress {
        budget,
        stopped: None,
    };
    let mut accept = Some(accept);
    let mut frame = None;
    let decoded = REUSE.with_borrow_mut(|reuse| {
        jpegdec::read_accepted(input, &limits, &mut progress, reuse, |f| {
            let f = frame_of(f);
            let taken = accept.take().is_some_and(|accept| accept(&f));
            frame = Some(f);
            taken
        })
    });
    let mut coefficients = match decoded {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(DecodeError::Unsupported(_)) => {
            // libjpeg decides again from the start, with the same `accept` (unless it
            // was already asked, in which case the answer was yes).
            let accept = |f: &Frame| accept.take().is_none_or(|accept| accept(f));
            return libjpeg::read_coefficients(input, budget, accept, use_planes);
        }
        Err(e) => return Err(progress.stopped.unwrap_or_else(|| error(e))),
    };
    let frame = frame.unwrap_or_else(|| frame_of_coefficients(&coefficients));
    let planes = coefficients
        .components
        .iter_mut()
        .map(|c| {
            let (width, height, quant) = (c.width_in_blocks, c.height_in_blocks, c.quant);
            let per_row = c.blocks_per_row.max(1);
            Plane {
                rows: c.stored_mut().chunks_exact_mut(per_row).collect(),
                width,
                height,
                quant,
            }
        })
        .collect();
    let result = use_planes(&frame, planes);
    REUSE.with_borrow_mut(|reuse| {
        reuse.recycle(coefficients);
        reuse.trim(KEEP_BLOCKS);
    });
    Ok(Some(result))
}

/// `n` zeroed blocks, from this thread's storage where it has room.
pub(crate) fn zeroed_blocks(n: usize) -> Vec<Block> {
    REUSE.with_borrow_mut(|reuse| reuse.take_zeroed(n))
}

/// Keeps `blocks`' storage for this thread's next image (within [`KEEP_BLOCKS`]).
pub(crate) fn recycle_blocks(blocks: Vec<Block>) {
    REUSE.with_borrow_mut(|reuse| {
        reuse.give(blocks);
        reuse.trim(KEEP_BLOCKS);
    });
}

/// The decoder's progress hook: the budget's CPU time, once per MCU row.
struct Progress<'a> {
    budget: &'a Budget,
    /// The error that stopped the decode, as the budget said it.
    stopped: Option<LibjpegError>,
}

impl jpegdec::Progress for Progress<'_> {
    fn check(&mut self) -> Result<(), String> {
        self.budget.check_time().map_err(|e| {
            let text = e.to_string();
            self.stopped = Some(e);
            text
        })
    }
}

fn frame_of(f: &jpegdec::Frame) -> Frame {
    Frame {
        width: f.width,
        height: f.height,
        color: color_of(f.color),
        sampling: f.sampling.clone(),
    }
}

fn frame_of_coefficients(c: &jpegdec::Coefficients) -> Frame {
    Frame {
        width: c.width,
        height: c.height,
        color: color_of(c.color),
        sampling: c.components.iter().map(|c| (c.h, c.v)).collect(),
    }
}

fn color_of(color: ColorSpace) -> FrameColor {
    match color {
        ColorSpace::Gray => FrameColor::Gray,
        ColorSpace::YCbCr => FrameColor::YCbCr,
        ColorSpace::Cmyk => FrameColor::Cmyk,
        ColorSpace::Ycck => FrameColor::Ycck,
        ColorSpace::Rgb | ColorSpace::Unknown => FrameColor::Other,
    }
}

/// The decoder's verdicts in libjpeg's terms: where it would warn, where it would
/// fail, and the limits.
fn error(e: DecodeError) -> LibjpegError {
    match e {
        DecodeError::Corrupt(text) => LibjpegError::Corrupt(text),
        DecodeError::TooManyScans { scans, limit } => LibjpegError::TooManyScans { scans, limit },
        DecodeError::Unsupported(text)
        | DecodeError::Invalid(text)
        | DecodeError::Stopped(text) => LibjpegError::Fatal(text),
        DecodeError::TooManyPixels { pixels, limit } => LibjpegError::Fatal(format!(
            "image has {pixels} pixels, over the limit of {limit}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    /// What a read gives: the frame and each plane's table, size and every block of
    /// its padded array.
    type View = (Frame, Vec<([u16; 64], usize, usize, Vec<libjpeg::Block>)>);

    fn view(frame: &Frame, planes: Vec<Plane<'_>>) -> View {
        let planes = planes
            .into_iter()
            .map(|p| {
                let blocks = p.rows.iter().flat_map(|r| r.iter().copied()).collect();
                (p.quant, p.width, p.height, blocks)
            })
            .collect();
        (frame.clone(), planes)
    }

    fn ours(input: &[u8]) -> Result<Option<View>, LibjpegError> {
        read(input, &Budget::UNLIMITED, |_| true, view)
    }

    fn libjpegs(input: &[u8]) -> Result<Option<View>, LibjpegError> {
        libjpeg::read_coefficients(input, &Budget::UNLIMITED, |_| true, view)
    }

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let root = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let mut all = Vec::new();
        for dir in ["imaging", "photos"] {
            let entries = std::fs::read_dir(format!("{root}/{dir}")).expect("fixtures");
            for entry in entries {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "jpg") {
                    let bytes = std::fs::read(&path).expect("reads");
                    all.push((path.display().to_string(), bytes));
                }
            }
        }
        all.sort();
        all
    }

    #[test]
    fn coefficients_equal_libjpegs() {
        let all = fixtures();
        assert!(all.len() >= 20, "{} fixtures", all.len());
        for (name, input) in all {
            let (ours, theirs) = (ours(&input), libjpegs(&input));
            assert!(
                ours == theirs,
                "{name}: {:?} vs {:?}",
                ours.map(|_| ()),
                theirs.map(|_| ())
            );
        }
    }

    /// The verdict on a damaged file, by kind: read, damaged data, refused, too many
    /// scans. Not the coefficients: where libjpeg's fast Huffman path meets a marker
    /// (`FF FF 00` inside the data, say) it gives the block up to its slow path, which
    /// decodes it again over what the fast path already wrote, and keeps both without
    /// a warning; garbage either way.
    fn verdict(result: Result<Option<View>, LibjpegError>) -> Result<(), &'static str> {
        result.map(|_| ()).map_err(|e| match e {
            LibjpegError::Corrupt(_) => "corrupt",
            LibjpegError::Fatal(_) => "refused",
            LibjpegError::TooManyScans { .. } => "scans",
            LibjpegError::OverBudget(_) => "time",
        })
    }

    /// Truncations, flipped bytes and stray markers in a baseline, a progressive and a
    /// restart-interval-free 4:2:2 file: whole, damaged or refused exactly where libjpeg
    /// says so, with the same coefficients when whole.
    #[test]
    fn damaged_copies_get_libjpegs_verdict() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: usize| rng.random_range(0..n);
        let names = [
            "imaging/photo_q85.jpg",
            "imaging/progressive_420.jpg",
            "imaging/baseline_422.jpg",
        ];
        let mut cases = 0;
        for name in names {
            let input = super::super::fixtures::fixture_file(name);
            let mut damaged: Vec<Vec<u8>> = (1..input.len())
                .step_by(97)
                .map(|n| input[..n].to_vec())
                .collect();
            for _ in 0..300 {
                let mut copy = input.clone();
                match next(3) {
                    0 => {
                        for _ in 0..1 + next(3) {
                            let at = next(copy.len());
                            copy[at] ^= 1 << next(8);
                        }
                    }
                    1 => {
                        let at = next(copy.len());
                        let marker = [0xD0 + next(8) as u8, 0xD9, 0xDA, 0xC4, 0x00, 0xFF][next(6)];
                        copy.splice(at..at, [0xFF, marker]);
                    }
                    _ => {
                        let at = next(copy.len());
                        let len = (1 + next(64)).min(copy.len() - at);
                        copy.drain(at..at + len);
                    }
                }
                damaged.push(copy);
            }
            for copy in damaged {
                cases += 1;
                let (ours, theirs) = (verdict(ours(&copy)), verdict(libjpegs(&copy)));
                assert!(
                    ours == theirs,
                    "{name}, damaged copy of {} bytes: {ours:?} vs libjpeg's {theirs:?}",
                    copy.len(),
                );
            }
        }
        assert!(cases > 900, "{cases} cases");
    }

    #[test]
    fn scan_and_time_limits_hold() {
        let input = super::super::fixtures::fixture("progressive_420.jpg");
        let few = Budget {
            max_scans: 4,
            ..Budget::UNLIMITED
        };
        let read = read(&input, &few, |_| true, |_, _| ());
        assert!(
            matches!(read, Err(LibjpegError::TooManyScans { limit: 4, .. })),
            "{read:?}"
        );
        let spent = Budget::starting_now(u64::MAX, u32::MAX, std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(1));
        // Burn a little CPU so the thread clock moves past the deadline.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let read = super::read(&input, &spent, |_| true, |_, _| ());
        assert!(matches!(read, Err(LibjpegError::OverBudget(_))), "{read:?}");
        let declined = super::read(&input, &Budget::UNLIMITED, |_| false, |_, _| ());
        assert_eq!(declined, Ok(None));
    }
}
