//! Client-side commands of the binary.

use std::path::Path;

/// `eprintln!` that shrugs at a closed stderr (`… 2>&1 | head`): `eprintln!` panics
/// there, and in `convert`'s worker threads the panic ended the run with 101, the rest
/// of the files unconverted.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use tell;

mod client;
pub mod convert;
mod follow;
pub mod submit;

/// Writes `bytes` to `target` through a temporary file beside it: a failed write leaves
/// no partial output, and an output of an earlier run is replaced only by a whole one.
pub(crate) fn write_whole(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let staged = staged_path(target);
    let written = create_new(&staged)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&staged, target));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// Where [`write_whole`] stages `target`: beside it, under a short name of the process
/// id and a hash of the target's name. Made from the target's name itself, it was 16
/// bytes longer, and a name near the filesystem's 255 bytes could not be written.
fn staged_path(target: &Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let name = target.file_name().unwrap_or_default();
    let hash = Sha256::digest(name.as_encoded_bytes());
    let short: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    target.with_file_name(format!(".pixbatch-{}-{short}.partial", std::process::id()))
}

/// A file's device and inode, when it exists: the same for every name it has (another
/// case of it on a case-insensitive disk, a link).
pub(crate) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Creates `path` as a new file, never through what is there: the staged names are
/// guessable (a process id), and in a folder others may write to, a symlink planted
/// under one would have the write truncate the file it points to. What is there (a
/// run's leftover, such a link) is removed, not followed, and the creation tried once
/// more.
pub(crate) fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        opened => opened,
    }
}

#[cfg(test)]
mod tests {
    use super::{staged_path, write_whole};

    /// A symlink planted under the staged name is replaced, not written through: the
    /// file it points to is left as it was.
    #[cfg(unix)]
    #[test]
    fn a_staged_name_taken_by_a_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = dir.path().join("out.csv");
        let staged = staged_path(&target);
        std::os::unix::fs::symlink(&victim, &staged).unwrap();
        write_whole(&target, b"a,b\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&target).unwrap(), b"a,b\n");
        assert!(!staged.exists() && std::fs::symlink_metadata(&staged).is_err());
    }
}
