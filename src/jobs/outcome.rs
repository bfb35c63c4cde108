//! How a try of any of the three jobs ends when it does not succeed, decided once,
//! close to the cause: worth another try (after a backoff, or no sooner than the other
//! side asked), or not. Either way the failure carries its stable [`FailureCode`].
//!
//! This is a business outcome, recorded in our tables: the handler still returns `Ok`
//! to apalis. Only infrastructure errors (the database) reach apalis as `Err`.

use std::time::Duration;

use crate::{
    domain::{Failure, FailureCode},
    fetch::FetchError,
    imaging::{ImagingError, PoolError},
    store::BlobError,
};

/// Why a try failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryError {
    /// Transient: try again after the backoff, and no sooner than `after` when given.
    Retry {
        /// What failed.
        failure: Failure,
        /// The other side's `Retry-After`.
        after: Option<Duration>,
    },
    /// Permanent: the same try would fail the same way.
    Abort(Failure),
    /// The blob store refused a write as it would refuse any (a full disk, a read-only
    /// mount): not the image's fault, so it waits for the store, its
    /// `FETCH_ATTEMPTS` untouched, as a try that finds the store refusing does.
    StoreRefused(Failure),
}

impl TryError {
    /// A transient failure of kind `code`.
    pub fn retry(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Retry {
            failure: Failure::new(code, message),
            after: None,
        }
    }

    /// A permanent failure of kind `code`.
    pub fn abort(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Abort(Failure::new(code, message))
    }

    /// The blob store refused a write (a full disk, a read-only mount, S3 down): a
    /// transient failure, retried with backoff; nothing is recorded as stored until
    /// every file is durable. Its message (`storage: no space left on device`, the
    /// kind only: an S3 error's text names the bucket) is what the images API shows;
    /// the whole error is in the log.
    ///
    /// A fault of the whole store ([`crate::store::FaultKind::is_store_wide`]) is
    /// [`Self::StoreRefused`]: a disk with a few blocks left takes `/readyz`'s tiny
    /// probe but no output, and counted, such writes would fail every image for good.
    pub fn storage(e: BlobError) -> Self {
        let failure = Failure::new(FailureCode::StorageUnavailable, e.public());
        if e.kind().is_store_wide() {
            Self::StoreRefused(failure)
        } else {
            Self::Retry {
                failure,
                after: None,
            }
        }
    }

    /// What failed.
    pub fn failure(&self) -> &Failure {
        match self {
            Self::Retry { failure, .. } | Self::Abort(failure) | Self::StoreRefused(failure) => {
                failure
            }
        }
    }

    /// Whether another try may succeed.
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::StoreRefused(_))
    }
}

impl From<FetchError> for TryError {
    fn from(e: FetchError) -> Self {
        let failure = Failure::new(e.code(), e.to_string());
        if e.is_transient() {
            Self::Retry {
                failure,
                after: e.retry_after(),
            }
        } else {
            Self::Abort(failure)
        }
    }
}

impl From<ImagingError> for TryError {
    fn from(e: ImagingError) -> Self {
        // No imaging error goes away on retry: the transform is a pure function of
        // the bytes.
        Self::abort(e.code(), e.to_string())
    }
}

impl From<PoolError> for TryError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::ShutDown => Self::retry(FailureCode::ShuttingDown, e.to_string()),
            PoolError::Panicked(_) => Self::abort(FailureCode::TransformCrashed, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_failures_keep_their_split_and_code() {
        let refused: TryError = FetchError::TooManyRedirects.into();
        assert_eq!(
            refused,
            TryError::abort(FailureCode::TooManyRedirects, "too many redirects")
        );
        let busy: TryError = FetchError::Http {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
        }
        .into();
        assert!(busy.is_retry());
        assert_eq!(busy.failure().code, FailureCode::HttpError);
        assert_eq!(busy.failure().message, "HTTP 503");
        assert!(
            matches!(busy, TryError::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        let gone: TryError = FetchError::Http {
            status: 404,
            retry_after: None,
        }
        .into();
        assert!(!gone.is_retry());
    }

    /// A store that would refuse any write makes the image wait; a refusal of the one
    /// file spends its budget. Both say why in the same words.
    #[test]
    fn storage_failures_split_by_whether_any_write_would_fail() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::StorageFull,
            ErrorKind::QuotaExceeded,
            ErrorKind::ReadOnlyFilesystem,
        ] {
            let e = TryError::storage(BlobError::from(&Error::from(kind)));
            assert!(matches!(e, TryError::StoreRefused(_)), "{kind:?}: {e:?}");
            assert!(e.is_retry());
            assert_eq!(e.failure().code, FailureCode::StorageUnavailable);
        }
        let full = TryError::storage(BlobError::from(&Error::from(ErrorKind::StorageFull)));
        assert_eq!(full.failure().message, "storage: no space left on device");
        for kind in [
            ErrorKind::FileTooLarge,
            ErrorKind::PermissionDenied,
            ErrorKind::Other,
        ] {
            let e = TryError::storage(BlobError::from(&Error::from(kind)));
            assert!(
                matches!(e, TryError::Retry { after: None, .. }),
                "{kind:?}: {e:?}"
            );
        }
    }

    #[test]
    fn imaging_failures_are_permanent() {
        let e: TryError = ImagingError::UnsupportedFormat.into();
        assert_eq!(
            e,
            TryError::abort(FailureCode::UnsupportedFormat, "unsupported format")
        );
        let shut: TryError = PoolError::ShutDown.into();
        assert_eq!(shut.failure().code, FailureCode::ShuttingDown);
        assert!(shut.is_retry());
    }
}
