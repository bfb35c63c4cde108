//! Client-side commands of the binary.

mod client;
pub mod convert;
mod follow;
pub mod submit;
