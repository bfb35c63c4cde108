//! Typed identifiers and states shared by the API, the jobs and the store, so that no
//! bare `Uuid`, `i64` or string crosses a module boundary by accident.
//! A request's image counts ([`Progress`]) live here too: the API, the webhook and the
//! client all show them.

mod progress;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use progress::Progress;

/// Identifies one uploaded CSV and all its work. Time-ordered (UUIDv7), so ids sort by
/// creation and index well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Uuid);

impl RequestId {
    /// A fresh id for a new request.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for RequestId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Identifies one image (one URL at one position of one row) of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(pub i64);

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One image of a request: the URL at `position` of data row `row`, as the output CSV
/// and the stored file's key name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The request.
    pub request: RequestId,
    /// 0-based data row.
    pub row: u32,
    /// 0-based position among the row's URLs.
    pub position: u32,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.request, self.row, self.position)
    }
}

/// Identifies one webhook event; sent as the `webhook-id` header on every try.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// The id of the event of `run` of `request` (`msg_…`, as Standard Webhooks
    /// suggests). A run has one event, and the id follows from the run, not from
    /// chance: should the run's completion be written twice (its first commit lost to
    /// a power cut after the delivery went out, or to a failover to a replica that
    /// had not got it), receivers that deduplicate on `webhook-id` see one event.
    pub fn of_run(request: RequestId, run: i64) -> Self {
        Self(format!("msg_{}_{run}", request.as_uuid().simple()))
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id read back from the database.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, poem_openapi::Enum)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] #[oai(rename = $text)] $variant),+ }

        impl $name {
            /// The spelling stored in the database and shown by the API.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {}: {other:?}", stringify!($name))),
                }
            }
        }
    };
}

string_enum! {
    /// Where a request is in its life.
    RequestStatus {
        /// Accepted, no image started yet.
        Pending => "Pending",
        /// At least one image job has started.
        Processing => "Processing",
        /// Every image succeeded.
        Completed => "Completed",
        /// Some images failed, some succeeded.
        CompletedWithErrors => "CompletedWithErrors",
        /// Every image failed.
        Failed => "Failed",
        /// Stopped by the user.
        Cancelled => "Cancelled",
    }
}

impl RequestStatus {
    /// Final statuses: the request does no more work until retried.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithErrors | Self::Failed | Self::Cancelled
        )
    }

    /// The final status for these counts.
    pub fn from_counts(succeeded: i64, failed: i64) -> Self {
        match (succeeded, failed) {
            (_, 0) => Self::Completed,
            (0, _) => Self::Failed,
            _ => Self::CompletedWithErrors,
        }
    }
}

string_enum! {
    /// Where one image is: it leaves `pending` once per run, through a guarded update.
    ImageState {
        /// Waiting for (another) try.
        Pending => "pending",
        /// Stored; `output_key` is set.
        Succeeded => "succeeded",
        /// Failed for good; `last_error` says why.
        Failed => "failed",
        /// The request was cancelled before this image finished.
        Cancelled => "cancelled",
    }
}

string_enum! {
    /// Delivery state of one webhook event.
    EventState {
        /// Not yet delivered; a delivery job is queued.
        Pending => "pending",
        /// A try got a 2xx answer.
        Delivered => "delivered",
        /// Gave up: 410, or the schedule ran out.
        Failed => "failed",
    }
}

string_enum! {
    /// Why a try of an image (or of a webhook delivery) failed, as a stable code:
    /// the images API shows it beside the message, the metrics count by it, and a
    /// client may branch on it (the message's wording may change; the code does not).
    FailureCode {
        /// The URL cannot be fetched as written (or a redirect pointed nowhere usable).
        InvalidUrl => "invalid_url",
        /// The address is one pixbatch never fetches (SPEC §7: private, loopback, …).
        RefusedAddress => "refused_address",
        /// The connection failed or broke off.
        ConnectFailed => "connect_failed",
        /// The server took too long.
        Timeout => "timeout",
        /// The server answered with an error status.
        HttpError => "http_error",
        /// The webhook receiver answered 410: it wants no more events.
        ReceiverGone => "receiver_gone",
        /// Redirects went on too long.
        TooManyRedirects => "too_many_redirects",
        /// The download is over `MAX_IMAGE_BYTES`.
        TooLarge => "too_large",
        /// The body is not an image format pixbatch reads.
        UnsupportedFormat => "unsupported_format",
        /// The image has more pixels than `MAX_IMAGE_PIXELS`.
        TooManyPixels => "too_many_pixels",
        /// A progressive JPEG with more scans than allowed.
        TooManyScans => "too_many_scans",
        /// The image cannot be decoded (corrupt or truncated).
        Undecodable => "undecodable",
        /// Decoding and encoding took more CPU time than an image may.
        OverBudget => "over_budget",
        /// The encoder failed.
        EncodeFailed => "encode_failed",
        /// The transform crashed (a bug, kept to this one image).
        TransformCrashed => "transform_crashed",
        /// The worker was shutting down; the try is made again.
        ShuttingDown => "shutting_down",
        /// The blob store refused the output (full disk, S3 down); retried.
        StorageUnavailable => "storage_unavailable",
        /// Anything else on the way out (the client could not be set up).
        FetchFailed => "fetch_failed",
    }
}

/// A failure as people and programs see it: its stable code and a message worded for
/// the person who wrote the CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub code: FailureCode,
    /// What happened, in words.
    pub message: String,
}

impl Failure {
    /// A failure of kind `code`.
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_classify() {
        for s in [
            RequestStatus::Pending,
            RequestStatus::Processing,
            RequestStatus::Completed,
            RequestStatus::CompletedWithErrors,
            RequestStatus::Failed,
            RequestStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<RequestStatus>().unwrap(), s);
        }
        assert!("completed".parse::<RequestStatus>().is_err());
        assert_eq!(RequestStatus::from_counts(3, 0), RequestStatus::Completed);
        assert_eq!(RequestStatus::from_counts(0, 3), RequestStatus::Failed);
        assert_eq!(
            RequestStatus::from_counts(2, 1),
            RequestStatus::CompletedWithErrors
        );
        assert!(!RequestStatus::Processing.is_final());
    }

    #[test]
    fn ids_are_distinct_and_parse() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<RequestId>().unwrap(), a);
        let event = EventId::of_run(a, 2);
        assert!(event.as_str().starts_with("msg_"), "{event}");
        assert_eq!(event, EventId::of_run(a, 2));
        assert_ne!(event, EventId::of_run(a, 3));
        assert_ne!(event, EventId::of_run(b, 2));
    }
}
