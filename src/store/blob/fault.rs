//! Why a blob write or read failed, in words an operator acts on: a full disk, a
//! read-only mount, a failing S3 endpoint. The kind drives the metrics label and the
//! image job's retry message (`storage: no space left on device`).

use std::{error::Error as _, fmt, io};

/// What went wrong with the store, coarsely: the label of the storage-errors metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The filesystem (or a quota) is full.
    NoSpace,
    /// The filesystem is mounted read-only.
    ReadOnly,
    /// A file-size limit (`RLIMIT_FSIZE`, the filesystem's own) was hit.
    TooLarge,
    /// The process may not write there.
    Permission,
    /// An S3 request failed (an error status, a refused connection, a timeout).
    Remote,
    /// Any other I/O error.
    Io,
}

impl FaultKind {
    /// `storage: <the kind in words>`: what the images API, `/readyz` and a 503 show
    /// (all can be public), where the log has the whole error. An S3 error's text
    /// names the endpoint, bucket and key, a local one may name the store's path.
    pub fn public(self) -> String {
        let reason = match self {
            Self::NoSpace => "no space left on device",
            Self::ReadOnly => "read-only file system",
            Self::TooLarge => "file too large",
            Self::Permission => "permission denied",
            Self::Remote => "the S3 endpoint failed",
            Self::Io => "I/O error",
        };
        format!("storage: {reason}")
    }

    /// Whether any output would be refused the same way, whatever its key: a full disk
    /// (one with a few blocks left takes a probe's tiny write but no output) or a
    /// read-only mount. Not a file-size limit, a permission (of one folder, maybe),
    /// an S3 error (of one key, maybe) or an unclassified I/O error: those may be the
    /// one file's, and a store that refuses every write fails the probe as well.
    pub fn is_store_wide(self) -> bool {
        match self {
            Self::NoSpace | Self::ReadOnly => true,
            Self::TooLarge | Self::Permission | Self::Remote | Self::Io => false,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSpace => "no_space",
            Self::ReadOnly => "read_only",
            Self::TooLarge => "too_large",
            Self::Permission => "permission",
            Self::Remote => "remote",
            Self::Io => "io",
        }
    }
}

/// A failed blob operation. Displayed as `storage: <reason>`, which is what the images
/// API shows for an image whose output could not be stored.
#[derive(Debug)]
pub struct BlobError {
    kind: FaultKind,
    reason: String,
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.reason)
    }
}

impl std::error::Error for BlobError {}

impl BlobError {
    /// What went wrong, for metrics and for choosing an HTTP status.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// Its kind in words fit for anyone who can reach the API ([`FaultKind::public`]).
    pub fn public(&self) -> String {
        self.kind.public()
    }

    /// An error of our own making (a short write, a bad probe).
    pub(super) fn io(reason: impl Into<String>) -> Self {
        Self {
            kind: FaultKind::Io,
            reason: reason.into(),
        }
    }

    /// Classifies an `object_store` error: on S3 a remote failure (whatever the
    /// transport said), locally the I/O error inside it.
    pub(super) fn from_store(e: &object_store::Error, remote: bool) -> Self {
        if remote {
            return Self {
                kind: FaultKind::Remote,
                reason: format!("S3: {}", one_line(&e.to_string())),
            };
        }
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return Self::from(io);
            }
            source = s.source();
        }
        Self::io(one_line(&e.to_string()))
    }
}

impl From<&io::Error> for BlobError {
    fn from(e: &io::Error) -> Self {
        let (kind, reason) = match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                (FaultKind::NoSpace, "no space left on device".to_owned())
            }
            io::ErrorKind::ReadOnlyFilesystem => {
                (FaultKind::ReadOnly, "read-only file system".to_owned())
            }
            io::ErrorKind::FileTooLarge => (FaultKind::TooLarge, "file too large".to_owned()),
            io::ErrorKind::PermissionDenied => {
                (FaultKind::Permission, "permission denied".to_owned())
            }
            _ => (FaultKind::Io, e.to_string()),
        };
        Self { kind, reason }
    }
}

impl From<io::Error> for BlobError {
    fn from(e: io::Error) -> Self {
        Self::from(&e)
    }
}

/// Error texts from HTTP clients can span lines; logs and the images API want one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_named_for_the_operator() {
        for (os, kind, text) in [
            (28, FaultKind::NoSpace, "storage: no space left on device"),
            (122, FaultKind::NoSpace, "storage: no space left on device"),
            (30, FaultKind::ReadOnly, "storage: read-only file system"),
            (27, FaultKind::TooLarge, "storage: file too large"),
            (13, FaultKind::Permission, "storage: permission denied"),
        ] {
            let e = BlobError::from(io::Error::from_raw_os_error(os));
            assert_eq!(
                (e.kind(), e.to_string().as_str()),
                (kind, text),
                "errno {os}"
            );
        }
        let e = BlobError::from(io::Error::other("disk on fire"));
        assert_eq!(e.kind(), FaultKind::Io);
        assert_eq!(e.to_string(), "storage: disk on fire");
        assert_eq!(e.public(), "storage: I/O error");
    }

    #[test]
    fn the_io_error_inside_a_store_error_is_found() {
        let inner = io::Error::from_raw_os_error(28);
        let e = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(inner),
        };
        let b = BlobError::from_store(&e, false);
        assert_eq!(b.kind(), FaultKind::NoSpace);
        let remote = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code:\n503 Service Unavailable".into(),
        };
        let b = BlobError::from_store(&remote, true);
        assert_eq!(b.kind(), FaultKind::Remote);
        assert!(!b.to_string().contains('\n'), "{b}");
        assert!(b.to_string().starts_with("storage: S3: "), "{b}");
        assert_eq!(b.public(), "storage: the S3 endpoint failed");
    }
}
