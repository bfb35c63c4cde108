//! Public data types: coefficient blocks, components, limits, progress hook and errors.
//!
//! The field meanings follow libjpeg's `jpeg_component_info` and the virtual
//! coefficient arrays of `jdcoefct.c` (ITU T.81 A.1.1 for the block geometry).

use std::fmt;

/// 8×8 quantised DCT coefficients in natural (row-major) order.
pub type Block = [i16; 64];

/// Colour space of the coded components, chosen by libjpeg's rules
/// (`default_decompress_parms` in `jdapimin.c`: JFIF/Adobe markers, component ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorSpace {
    /// One component.
    Gray,
    /// Three components, luma/chroma.
    YCbCr,
    /// Three components stored as RGB (Adobe transform 0 or ids 'R','G','B').
    Rgb,
    /// Four components without colour transform.
    Cmyk,
    /// Four components, Adobe transform 2.
    Ycck,
    /// Any other component count.
    Unknown,
}

/// One colour component with its coefficient blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Component identifier from the frame header.
    pub id: u8,
    /// Horizontal sampling factor (1..=4).
    pub h: u8,
    /// Vertical sampling factor (1..=4).
    pub v: u8,
    /// Quantisation table in natural order, as latched when the component's first scan began.
    /// All zero if no scan ever used the component.
    pub quant: [u16; 64],
    /// Blocks per row that carry image data (libjpeg's `width_in_blocks`).
    pub width_in_blocks: usize,
    /// Block rows that carry image data (libjpeg's `height_in_blocks`).
    pub height_in_blocks: usize,
    /// Stored blocks per row: `width_in_blocks` rounded up to a multiple of `h`.
    pub blocks_per_row: usize,
    /// Stored block rows: `height_in_blocks` rounded up to a multiple of `v`.
    pub block_rows: usize,
    /// At least `block_rows × blocks_per_row` blocks, row-major ([`Component::stored`]);
    /// blocks never coded are zero. Any blocks past those are storage kept for the next
    /// image (see [`super::Reuse`]), not part of this one.
    pub blocks: Vec<Block>,
}

impl Component {
    /// The image's blocks: `block_rows × blocks_per_row`, row-major.
    pub fn stored(&self) -> &[Block] {
        &self.blocks[..self.block_rows * self.blocks_per_row]
    }

    /// The image's blocks, to change.
    pub fn stored_mut(&mut self) -> &mut [Block] {
        let n = self.block_rows * self.blocks_per_row;
        &mut self.blocks[..n]
    }
}

/// What the headers before the first scan say, for a caller to decide whether to
/// decode (see [`super::read_accepted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Colour space of the coded data.
    pub color: ColorSpace,
    /// True for a progressive (SOF2) image.
    pub progressive: bool,
    /// Sampling factors (h, v) per component, in frame order.
    pub sampling: Vec<(u8, u8)>,
}

/// Everything `jpeg_read_coefficients` yields for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coefficients {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Colour space of the coded data.
    pub color: ColorSpace,
    /// True for a progressive (SOF2) image.
    pub progressive: bool,
    /// Components in frame-header order.
    pub components: Vec<Component>,
    /// Number of scans (SOS markers) read.
    pub scans: u32,
    /// True where libjpeg would have emitted `JWRN_EXTRANEOUS_DATA`
    /// ("N extraneous bytes before marker"): harmless, but reported.
    pub extraneous_data: bool,
}

/// Resource limits checked while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `width × height`; checked at the frame header, before any allocation.
    pub max_pixels: u64,
    /// Largest accepted number of scans; checked as each SOS marker is read.
    pub max_scans: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 100_000_000,
            max_scans: 1000,
        }
    }
}

/// Called about once per MCU row (and at least once per scan); returning `Err`
/// stops the decode with [`DecodeError::Stopped`].
pub trait Progress {
    /// Decides whether decoding may go on.
    fn check(&mut self) -> Result<(), String>;
}

/// Why a decode did not produce coefficients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Something this decoder does not do (arithmetic coding, 12/16-bit precision, lossless,
    /// hierarchical, more than 4 components, …): the caller falls back to libjpeg.
    Unsupported(String),
    /// Data on which libjpeg would warn (premature end, bad Huffman code, corrupt restart
    /// markers, bogus progression, …), other than extraneous bytes before a marker.
    Corrupt(String),
    /// Data on which libjpeg would stop with an error (no SOI, bad marker lengths,
    /// missing tables, bad SOF/SOS parameters, …).
    Invalid(String),
    /// More scans than [`Limits::max_scans`].
    TooManyScans {
        /// Scans seen when the limit was passed.
        scans: u32,
        /// The limit.
        limit: u32,
    },
    /// More pixels than [`Limits::max_pixels`].
    TooManyPixels {
        /// `width × height` of the frame.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// The [`Progress`] hook asked to stop.
    Stopped(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(m) => write!(f, "unsupported JPEG: {m}"),
            DecodeError::Corrupt(m) => write!(f, "corrupt JPEG data: {m}"),
            DecodeError::Invalid(m) => write!(f, "invalid JPEG: {m}"),
            DecodeError::TooManyScans { scans, limit } => {
                write!(f, "too many scans: {scans} (limit {limit})")
            }
            DecodeError::TooManyPixels { pixels, limit } => {
                write!(f, "too many pixels: {pixels} (limit {limit})")
            }
            DecodeError::Stopped(m) => write!(f, "decode stopped: {m}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Shorthand for an `Invalid` error.
pub(super) fn invalid<T>(msg: &str) -> Result<T, DecodeError> {
    Err(DecodeError::Invalid(msg.to_string()))
}
