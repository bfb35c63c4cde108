//! Following a request: status, per-image detail, the output CSV, the webhook log.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Body;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::{Attachment, Json},
};
use uuid::Uuid;

use super::{ApiError, ApiTags, AppState, ProblemResponse, report::ImageReport};
use crate::{
    domain::{FailureCode, ImageState, Progress, RequestStatus},
    store::{BlobKey, RequestRecord},
};

/// Where a request is.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StatusBody {
    /// The request.
    request_id: Uuid,
    /// `Pending`, `Processing`, `Completed`, `CompletedWithErrors`, `Failed` or `Cancelled`.
    status: RequestStatus,
    /// Absolute URL of the output CSV, once finished. The same for every run: after a
    /// retry it serves the latest finished run's CSV.
    output_csv: Option<String>,
    /// Image counts.
    progress: Progress,
    /// When the upload was accepted.
    created_at: DateTime<Utc>,
    /// When its first image started.
    started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    finished_at: Option<DateTime<Utc>>,
}

/// One image of a request.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ImageBody {
    /// Serial of its product.
    serial: String,
    /// Name of its product.
    product_name: String,
    /// 0-based data row.
    row: u32,
    /// 1-based position in the row's URL list.
    position: u32,
    /// The URL fetched.
    input_url: String,
    /// Absolute URL of the stored JPEG, once succeeded.
    output_url: Option<String>,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    state: ImageState,
    /// Tries so far.
    attempts: i64,
    /// Last error. Image errors are permanent (one try) and name their cause, e.g.
    /// `too many scans (3006 > 100)` (`MAX_IMAGE_SCANS`), `transform over its time
    /// budget (4.56 s of CPU time)` (`IMAGE_TIME_BUDGET`, `IMAGE_TIME_PER_MEGAPIXEL`),
    /// `corrupt image data: <libjpeg's warning>`, `image is WxH (…), over the limit of
    /// N pixels`, `unsupported format`, `cannot decode …`.
    error: Option<String>,
    /// The kind of `error`, stable across releases where the wording is not: branch
    /// on this, show `error`.
    error_code: Option<FailureCode>,
    /// Bytes downloaded.
    input_bytes: Option<i64>,
    /// Bytes stored.
    output_bytes: Option<i64>,
    /// Output width.
    width: Option<i64>,
    /// Output height.
    height: Option<i64>,
    /// What the transform did: input format, quality chosen and why (`binding`), the
    /// SSIMULACRA2 score and tries of `quality=auto:N`, the byte cap, fixes applied,
    /// whether the original was kept because re-encoding would not have made it smaller.
    report: Option<ImageReport>,
    /// Whether the output is a copy of an earlier request's output for the same URL
    /// and settings (the origin answered 304, or sent the same bytes): no decode, no
    /// encode. Sizes, dimensions and report are those of that output.
    reused: bool,
    /// The request whose output was copied, when `reused`.
    reused_from: Option<Uuid>,
}

/// A page of images.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ImagePage {
    /// The images, in output order (row, then position).
    items: Vec<ImageBody>,
    /// Images in the request.
    total: i64,
    /// Offset of the first item.
    offset: u32,
    /// Page size asked for.
    limit: u32,
    /// Offset of the next page, when there is one.
    next_offset: Option<u32>,
}

/// Answers of the status endpoint.
#[derive(Debug, ApiResponse)]
pub enum StatusResponse {
    /// The request's status.
    #[oai(status = 200)]
    Ok(Json<StatusBody>),
}

/// Answers of the images endpoint.
#[derive(Debug, ApiResponse)]
pub enum ImagesResponse {
    /// A page of images.
    #[oai(status = 200)]
    Ok(Json<ImagePage>),
}

/// Answers of the output CSV endpoint.
#[derive(ApiResponse)]
pub enum CsvResponse {
    /// The output CSV, streamed from the store (it can be far larger than the upload:
    /// every image adds its output URL).
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Ok(
        Attachment<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// `If-None-Match` named the current CSV's ETag.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// The output CSV changes with a retry, and may sit behind `API_TOKEN`: revalidated
/// every time, kept by the client only.
const OUTPUT_CSV_CACHE: &str = "private, max-age=0, must-revalidate";

/// Request endpoints.
pub struct RequestsApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Requests")]
impl RequestsApi {
    /// Status of a request
    ///
    /// Progress counts at any time; `output_csv` once the request reached a final status.
    #[oai(path = "/status/:request_id", method = "get")]
    async fn status(&self, request_id: Path<String>) -> Result<StatusResponse, ProblemResponse> {
        let r = self.0.request(&request_id).await?;
        Ok(StatusResponse::Ok(Json(StatusBody {
            request_id: r.id.as_uuid(),
            status: r.status,
            output_csv: r
                .output_key
                .as_ref()
                .filter(|_| r.status.is_final())
                .map(|_| self.0.lifecycle.links().output_csv_url(r.id)),
            progress: r.progress(),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })))
    }

    /// Images of a request
    ///
    /// Per image: where it came from, where it went, its state, tries and last error,
    /// sizes and dimensions, and the transform report. Paginated by `offset`/`limit`.
    #[oai(path = "/requests/:request_id/images", method = "get")]
    async fn images(
        &self,
        request_id: Path<String>,
        /// First image to return (0-based).
        #[oai(default)]
        offset: Query<u32>,
        /// Page size, 1–1000.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
    ) -> Result<ImagesResponse, ProblemResponse> {
        let r = self.0.request(&request_id).await?;
        let records = self.0.db.images(r.id, offset.0, limit.0).await?;
        let count = records.len() as u32;
        let items = records
            .into_iter()
            .map(|i| ImageBody {
                serial: i.serial,
                product_name: i.product_name,
                row: i.row,
                position: i.position + 1,
                input_url: i.input_url,
                output_url: i.output_key.as_deref().map(|k| self.0.file_url(k)),
                state: i.state,
                attempts: i.attempts,
                error: i.last_error.filter(|_| i.state != ImageState::Succeeded),
                error_code: i.error_code.filter(|_| i.state != ImageState::Succeeded),
                input_bytes: i.input_bytes,
                output_bytes: i.output_bytes,
                width: i.width,
                height: i.height,
                report: i.report.and_then(ImageReport::from_stored),
                reused: i.reused_from.is_some(),
                reused_from: i.reused_from.map(|r| r.as_uuid()),
            })
            .collect();
        let next = offset.0 + count;
        Ok(ImagesResponse::Ok(Json(ImagePage {
            items,
            total: r.total,
            offset: offset.0,
            limit: limit.0,
            next_offset: (i64::from(next) < r.total && count > 0).then_some(next),
        })))
    }

    /// Output CSV of a request
    ///
    /// The input rows and columns in their order plus `Output Image Urls` (and `Errors`
    /// when any image failed), of the latest finished run: while a retry runs, the run
    /// before's, as `/files/{id}/output.csv` serves it. 409 until the request has
    /// finished once. 304 when `If-None-Match` names the current ETag.
    #[oai(path = "/requests/:request_id/output.csv", method = "get")]
    async fn output_csv(
        &self,
        request_id: Path<String>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> Result<CsvResponse, ProblemResponse> {
        let r = self.0.request(&request_id).await?;
        let key = latest_output_csv(&r)?;
        let blob = self
            .0
            .blobs
            .get(&key)
            .await
            .map_err(|e| ApiError::Store(e.into()))?
            .ok_or_else(|| ApiError::NotFound("output CSV missing from the store".into()))?;
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|h| super::files::none_match(h, &blob.etag))
        {
            return Ok(CsvResponse::NotModified(blob.etag, OUTPUT_CSV_CACHE.into()));
        }
        Ok(CsvResponse::Ok(
            Attachment::new(Body::from_bytes_stream(blob.body))
                .filename(format!("{}-output.csv", r.id)),
            blob.len,
            blob.etag,
            OUTPUT_CSV_CACHE.into(),
        ))
    }

    /// Retry the failed images
    ///
    /// Re-runs only the images that failed; the request goes back to `Processing`, and
    /// a new completion (output CSV, status, webhook event with a new `webhook-id`)
    /// follows. Images that succeeded are not fetched again. 409 unless the request is
    /// `CompletedWithErrors` or `Failed` (a cancelled request stays cancelled).
    #[oai(path = "/requests/:request_id/retry", method = "post")]
    async fn retry(&self, request_id: Path<String>) -> Result<ActionResponse, ProblemResponse> {
        let id = AppState::request_id(&request_id)?;
        let retried = self.0.lifecycle.retry_failed(id).await?;
        Ok(ActionResponse::Accepted(
            Json(ActionBody {
                request_id: id.as_uuid(),
                status: RequestStatus::Processing,
                images: retried.images as i64,
            }),
            self.0.status_url(id),
        ))
    }

    /// Cancel a request
    ///
    /// Pending images never start; images already running finish but are not counted.
    /// The request becomes `Cancelled`, its output CSV lists what was done, and a
    /// webhook event reports it. 409 when it has already finished, or when every image
    /// has finished and its output is being written (nothing is left to stop).
    #[oai(path = "/requests/:request_id/cancel", method = "post")]
    async fn cancel(&self, request_id: Path<String>) -> Result<ActionResponse, ProblemResponse> {
        let id = AppState::request_id(&request_id)?;
        let cancelled = self.0.lifecycle.cancel(id).await?;
        Ok(ActionResponse::Accepted(
            Json(ActionBody {
                request_id: id.as_uuid(),
                status: RequestStatus::Cancelled,
                images: cancelled.images,
            }),
            self.0.status_url(id),
        ))
    }
}

/// The result of retry or cancel.
#[derive(Debug, Object)]
pub struct ActionBody {
    /// The request.
    request_id: Uuid,
    /// Its status now.
    status: RequestStatus,
    /// Images affected: re-queued by retry, stopped by cancel.
    images: i64,
}

/// Answers of retry and cancel.
#[derive(Debug, ApiResponse)]
pub enum ActionResponse {
    /// Done; follow the status (`Location`) for the outcome.
    #[oai(status = 202)]
    Accepted(Json<ActionBody>, #[oai(header = "Location")] String),
}

fn default_limit() -> u32 {
    100
}

/// The stored CSV that `output.csv` names now (`GET /requests/{id}/output.csv` and
/// `/files/{id}/output.csv` alike): the latest finished run's. While a retried run goes
/// on, the run before's (a run is retried only once finished, its CSV written). A
/// Conflict before the first run finishes, and after a cancel until the cancel's own
/// CSV is recorded: the earlier run's CSV no longer says what the request came to.
pub(super) fn latest_output_csv(r: &RequestRecord) -> Result<BlobKey, ApiError> {
    match (&r.output_key, r.status.is_final()) {
        (Some(key), true) => {
            BlobKey::parse(key).map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e)))
        }
        (_, false) if r.run > 1 => Ok(BlobKey::output_csv(r.id, r.run - 1)),
        // A cancel is final at once; its output CSV follows (moments later, or once
        // storage takes writes again).
        (None, true) => Err(ApiError::Conflict(format!(
            "request {} is {}; its output CSV is still being written, try again shortly",
            r.id, r.status
        ))),
        _ => Err(ApiError::Conflict(format!(
            "request {} is {}; the output CSV exists once it has finished",
            r.id, r.status
        ))),
    }
}
