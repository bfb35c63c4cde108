//! Client-side commands of the binary.

use std::path::Path;

mod client;
pub mod convert;
mod follow;
pub mod submit;

/// Writes `bytes` to `target` through a temporary file beside it: a failed write leaves
/// no partial output, and an output of an earlier run is replaced only by a whole one.
pub(crate) fn write_whole(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let staged = target.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let written = std::fs::write(&staged, bytes).and_then(|()| std::fs::rename(&staged, target));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}
