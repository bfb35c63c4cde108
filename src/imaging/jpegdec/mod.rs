//! JPEG entropy decoder: JPEG bytes in, quantised DCT coefficients out, as libjpeg's
//! `jpeg_read_coefficients` gives them, for baseline/extended sequential and progressive
//! Huffman-coded images (ITU T.81 Annexes B, F and G).
//!
//! Results match libjpeg(-turbo) exactly: the same coefficients for every block of every
//! component's padded array, the same quantisation tables, sampling and colour space; on
//! damaged data, [`DecodeError::Corrupt`] exactly where libjpeg would warn and
//! [`DecodeError::Invalid`] (or [`DecodeError::Unsupported`]) where it would fail.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod baseline;
mod bits;
mod decoder;
mod emulate;
mod huffman;
mod input;
mod markers;
mod progressive;
mod scan;
mod types;

pub use decoder::{Reuse, read_accepted};
pub use types::{Coefficients, ColorSpace, DecodeError, Frame, Limits, Progress};
