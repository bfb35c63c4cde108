//! The crate's only `unsafe` code: a small safe wrapper around libjpeg (mozjpeg's
//! libjpeg-turbo, via `mozjpeg-sys`), one file per section:
//!
//! - [`guard`]: the objects, owned by guards whose `Drop` runs `jpeg_destroy_*`; the
//!   error, warning and progress callbacks; the [`Budget`] they enforce;
//! - [`coefficients`]: [`read_coefficients`] reads a JPEG's DCT coefficients (libjpeg's
//!   entropy decoding) and lends them to safe code as planes of blocks;
//! - [`pixels`]: [`decode`] a JPEG to 8-bit pixels (for what the Rust kernels do not
//!   take: RGB JPEGs, other samplings, scaled decodes), [`verify`] that a JPEG decodes
//!   without a warning, and libjpeg's encoder as the tests' reference;
//! - [`clock`]: the thread CPU clock the budget is measured on;
//! - [`simd`]: whether libjpeg was built with its SIMD kernels.
//!
//! **Errors.** libjpeg's fatal errors, its warnings about damaged data and the
//! progress monitor's limits all unwind out of the C frames (see [`guard`]); every
//! function here catches that unwind and returns a [`LibjpegError`], so an error
//! anywhere frees everything. A panic in our own code is passed on as it is.
//!
//! **Discipline.** Buffers libjpeg writes into are initialised before a Rust
//! reference to them exists; the row counts and widths handed to every raw-data
//! and scanline call are our own, asserted against the geometry we computed, not
//! taken from libjpeg's internals.

// libjpeg errors unwind through C frames (the only alternative is its `exit()`).
// With `panic = "abort"` the first corrupt image would take the process down.
#[cfg(panic = "abort")]
compile_error!(
    "pixbatch needs panic = \"unwind\": libjpeg's errors unwind through its C frames (src/imaging/libjpeg)"
);

mod clock;
mod coefficients;
mod guard;
mod pixels;
mod simd;

pub use clock::thread_cpu_time;
#[cfg(test)]
pub(crate) use coefficients::write_coefficients;
pub(crate) use coefficients::{
    Block, Frame, FrameColor, HuffTable, HuffTables, OutputTables, Plane, read_coefficients,
};
pub(crate) use guard::{Budget, LibjpegError};
pub(crate) use pixels::{
    DecodeSettings, DecodedPixels, Depth, PixelLayout, Region, decode, decode_region, verify,
};
#[cfg(test)]
pub(crate) use pixels::{Script, encode, encode_gray_progressive};
pub(crate) use simd::libjpeg_has_simd;
