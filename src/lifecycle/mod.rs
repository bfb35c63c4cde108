//! A request's lifecycle: every use case that changes what a request is, end to end,
//! in one place. Each one opens its transaction, makes its guarded writes through
//! [`store`](crate::store), pushes the jobs that follow (keys from [`JobKey`], the
//! only place they are formatted) and commits; nothing else does.
//!
//! | use case | entry | called by |
//! |---|---|---|
//! | accept an upload | [`Lifecycle::accept`] | `POST /upload` |
//! | retry failed images | [`Lifecycle::retry_failed`] | `POST /requests/{id}/retry` |
//! | cancel | [`Lifecycle::cancel`] | `POST /requests/{id}/cancel` |
//! | redeliver the event | [`Lifecycle::redeliver`] | `POST /requests/{id}/webhooks/redeliver` |
//! | an image's try failed, retry later | [`Lifecycle::retry_image_later`] | image job |
//! | record an image outcome (the fan-in) | [`Outcomes::record`] | image job |
//! | complete a run | [`Lifecycle::run_to_complete`], [`Lifecycle::finish_run`] | completion job |
//! | record a delivery try | [`Lifecycle::record_delivery`] | delivery job |
//!
//! HTTP handlers parse, call one of these and map the result; job handlers decode
//! their payload, do the slow part (download, transform, write the CSV, POST the
//! webhook) and call one of these with what happened.

mod actions;
mod completion;
mod delivery;
mod images;
mod keys;
mod outcomes;
mod steps;
mod upload;

pub use actions::{Cancelled, Retried};
pub use completion::RunToComplete;
pub use delivery::DeliveryTry;
pub use keys::JobKey;
pub use outcomes::{MAX_BATCH, Outcomes, Recorded};
pub use steps::{CompleteJob, DeliverJob, INFRA_ATTEMPTS, ImageJob, Job, push_many};
pub use upload::{Accepted, CheckedUpload};

use crate::{
    config::Settings,
    domain::{EventId, RequestId, RequestStatus},
    store::{BlobKey, BlobStore, Db, StoreError},
};

/// The use cases, over the database and the blob store.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    db: Db,
    blobs: BlobStore,
    links: Links,
}

/// What the lifecycle writes into outputs and events that is not in the database.
#[derive(Debug, Clone)]
pub struct Links {
    /// The API's public address; stored files are served under `{base}/files/`.
    pub public_base_url: String,
    /// Where completion events go when a request names no webhook (`WEBHOOK_URL`).
    pub default_webhook: Option<String>,
}

impl Links {
    /// As configured.
    pub fn of(settings: &Settings) -> Self {
        Self {
            public_base_url: settings.public_base_url.clone(),
            default_webhook: settings.webhook.default_url.clone(),
        }
    }

    /// The absolute URL under which a blob is served.
    pub fn file_url(&self, key: &str) -> String {
        format!("{}/files/{key}", self.public_base_url)
    }

    /// The output CSV's URL, the same for every run (SPEC §4: its URL is stable):
    /// `/files/{id}/output.csv` serves the latest finished run's CSV, whichever key
    /// that run wrote it under ([`BlobKey::output_csv`]).
    pub fn output_csv_url(&self, request: RequestId) -> String {
        self.file_url(BlobKey::output_csv(request, 1).as_str())
    }
}

impl Lifecycle {
    /// The use cases over `db` and `blobs`.
    pub fn new(db: Db, blobs: BlobStore, links: Links) -> Self {
        Self { db, blobs, links }
    }

    /// Where outputs are served and events go.
    pub fn links(&self) -> &Links {
        &self.links
    }
}

/// Why a use case did not happen. Everything but [`LifecycleError::Store`] is the
/// caller's to fix (or to stop asking); the API maps each to its status in one place.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No such request.
    #[error("no request \"{0}\"")]
    NotFound(RequestId),
    /// Retry asked of a request that is not finished with failed images. A cancelled
    /// request is not retried, failed images or not: the cancel was the user's last word
    /// on it, and a retry would start work they stopped.
    #[error(
        "request {id} is {status} with {failed} failed image(s); only a request that finished CompletedWithErrors or Failed can be retried (a cancelled request stays cancelled)"
    )]
    NothingToRetry {
        /// The request.
        id: RequestId,
        /// Its status.
        status: RequestStatus,
        /// Its failed images.
        failed: i64,
    },
    /// Cancel asked of a request that has finished.
    #[error("request {id} has already finished ({status})")]
    AlreadyFinished {
        /// The request.
        id: RequestId,
        /// Its final status.
        status: RequestStatus,
    },
    /// Cancel asked of a request whose every image has finished: its completion is
    /// queued, and nothing is left to stop.
    #[error(
        "request {0} has finished its images and is writing its output CSV; nothing is left to cancel"
    )]
    Completing(RequestId),
    /// Redelivery asked of a final request whose run's event is not written yet (a
    /// cancel is final at once; the event follows with the output CSV).
    #[error(
        "request {id} is {status}; its event is written with the output CSV, moments from now: try again shortly"
    )]
    EventComing {
        /// The request.
        id: RequestId,
        /// Its status.
        status: RequestStatus,
    },
    /// Redelivery asked of a request without an event.
    #[error("request {id} has no webhook event (it is {status}, or has no webhook URL)")]
    NoEvent {
        /// The request.
        id: RequestId,
        /// Its status.
        status: RequestStatus,
    },
    /// Redelivery asked of a request whose run is not finished (a retried run).
    #[error(
        "request {id} is {status}; its event is sent when the run finishes, and can be delivered again after that"
    )]
    NotFinished {
        /// The request.
        id: RequestId,
        /// Its status.
        status: RequestStatus,
    },
    /// Redelivery asked while a try is already scheduled.
    #[error("event {0} already has a try scheduled")]
    DeliveryScheduled(EventId),
    /// The database or the blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
