//! Client-side commands of the binary.

pub mod convert;
