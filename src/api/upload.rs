//! `POST /upload`: parse and check the whole CSV first, then store the request, its
//! rows, its images and one job per image in a single transaction.

use std::sync::Arc;

use poem_openapi::{
    ApiResponse, Multipart, Object, OpenApi,
    payload::Json,
    types::{Example, multipart::Upload},
};
use uuid::Uuid;

use super::{ApiError, ApiTags, AppState, ProblemResponse};
use crate::{
    csv::{self, CsvLimits},
    domain::{RequestId, RequestStatus},
    imaging::{MaxBytes, Quality},
    jobs::{self, ImageJob, JobKey},
    store::{BIG_REQUEST_IMAGES, BlobKey, Db, NewImage, NewProduct, NewRequest},
};

/// The upload form.
#[derive(Debug, Multipart)]
pub struct UploadForm {
    /// The CSV: columns `Serial Number`, `Product Name`, `Input Image Urls` (found by
    /// name, any order, other columns passed through).
    file: Upload,
    /// Where to POST the completion event; the server's `WEBHOOK_URL` when absent.
    webhook_url: Option<String>,
    /// Output quality: `1`–`100`, `relative:N%` for N % of each input's own
    /// estimated quality, or `auto` / `auto:N` for the lowest quality (30–95) whose
    /// output reaches SSIMULACRA2 score N (70 for `auto`). The server default
    /// (`JPEG_QUALITY`, 50) when absent.
    quality: Option<String>,
    /// `false` to fetch every image in full and reuse nothing; by default (`REUSE`, on)
    /// an image whose URL an earlier request fetched with the same settings is fetched
    /// conditionally and, when unchanged, its earlier output is copied.
    reuse: Option<bool>,
    /// Most bytes per output: `150000`, `150KB` or `2MB` (KB = 1000 bytes), 2000 to
    /// 1000000000. The highest quality that fits is used (it wins over an `auto`
    /// target), the image downscaled when even quality 30 does not fit. The
    /// server's `MAX_OUTPUT_BYTES` when absent, no cap when that is unset.
    max_bytes: Option<String>,
    /// `true` to check the CSV and count its images without storing anything.
    dry_run: Option<bool>,
}

/// An accepted (or dry-run) upload.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct UploadAccepted {
    /// The new request's id (absent for a dry run).
    request_id: Option<Uuid>,
    /// Its status: `Pending` when accepted.
    status: Option<RequestStatus>,
    /// Absolute URL to poll.
    status_url: Option<String>,
    /// Product rows in the CSV.
    products: u64,
    /// Image URLs in the CSV.
    images: u64,
}

impl Example for UploadAccepted {
    fn example() -> Self {
        Self {
            request_id: Some(Uuid::nil()),
            status: Some(RequestStatus::Pending),
            status_url: Some(
                "http://127.0.0.1:8080/status/00000000-0000-0000-0000-000000000000".into(),
            ),
            products: 2,
            images: 3,
        }
    }
}

/// Answers of `POST /upload`.
#[derive(Debug, ApiResponse)]
pub enum UploadResponse {
    /// Accepted: the work is queued.
    #[oai(status = 202)]
    Accepted(Json<UploadAccepted>),
    /// Dry run: the CSV is valid; nothing was stored.
    #[oai(status = 200)]
    Checked(Json<UploadAccepted>),
}

/// Upload endpoints.
pub struct UploadApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Upload")]
impl UploadApi {
    /// Upload a CSV
    ///
    /// Checks the whole CSV and answers 422 listing every problem (line and column),
    /// or stores the request and queues one job per image and answers 202 at once.
    /// The upload is capped at `MAX_CSV_BYTES` while it streams (413).
    #[oai(path = "/upload", method = "post")]
    async fn upload(&self, form: UploadForm) -> Result<UploadResponse, ProblemResponse> {
        let s = &self.0.settings;
        let max = s.limits.max_csv_bytes;
        if form.file.size() as u64 > max {
            return Err(ApiError::TooLarge { limit: max }.into());
        }
        let quality = match form.quality.as_deref().map(str::trim) {
            None | Some("") => s.default_quality,
            Some(q) => {
                Quality::parse(q).map_err(|e| ApiError::InvalidField(format!("quality: {e}")))?
            }
        };
        let max_bytes = match form.max_bytes.as_deref().map(str::trim) {
            None | Some("") => s.defaults.max_output_bytes,
            Some(m) => Some(
                MaxBytes::parse(m)
                    .map_err(|e| ApiError::InvalidField(format!("max_bytes: {e}")))?,
            ),
        };
        let webhook_url = match form.webhook_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => Some(
                csv::ImageUrl::parse(u)
                    .map_err(|e| ApiError::InvalidField(format!("webhook_url: {e}")))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let bytes = form
            .file
            .into_vec()
            .await
            .map_err(|e| ApiError::BadRequest(format!("could not read the file: {e}")))?;
        let limits = CsvLimits {
            max_rows: s.limits.max_rows,
            max_urls_per_row: s.limits.max_urls_per_row,
        };
        // Parsing 100k rows is CPU work: keep it off the async threads.
        let (bytes, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = csv::parse(&bytes, &limits);
            (bytes, parsed)
        })
        .await
        .map_err(|e| ApiError::BadRequest(format!("could not parse the CSV: {e}")))?;
        let parsed = parsed.map_err(ApiError::InvalidCsv)?;
        let products = parsed.rows.len() as u64;
        let images = parsed.image_count() as u64;

        if form.dry_run.unwrap_or(false) {
            return Ok(UploadResponse::Checked(Json(UploadAccepted {
                request_id: None,
                status: None,
                status_url: None,
                products,
                images,
            })));
        }

        let id = RequestId::new();
        let input_key = BlobKey::input_csv(id);
        // The CSV is stored before the rows that point at it; if the transaction then
        // fails, the blob is removed again, so a failed upload leaves nothing behind.
        self.0
            .blobs
            .put(&input_key, bytes::Bytes::from(bytes))
            .await
            .map_err(|e| ApiError::Store(e.into()))?;

        let new = NewRequest {
            id,
            quality: quality.to_string(),
            // At most 1 GB: the cast cannot truncate.
            max_bytes: max_bytes.map(|m| m.get() as i64),
            webhook_url,
            header: parsed.header.clone(),
            urls_column: parsed.urls_column,
            input_key: input_key.as_str().to_owned(),
            reuse: form.reuse.unwrap_or(s.defaults.reuse),
        };
        let product_rows: Vec<NewProduct<'_>> = parsed
            .rows
            .iter()
            .map(|r| NewProduct {
                row: r.row,
                line: r.line,
                serial: &r.serial,
                product_name: &r.product_name,
                cells: &r.cells,
            })
            .collect();
        let image_rows: Vec<NewImage<'_>> = parsed
            .rows
            .iter()
            .flat_map(|r| {
                r.urls.iter().enumerate().map(|(p, u)| NewImage {
                    row: r.row,
                    position: p as u32,
                    url: u.as_str(),
                })
            })
            .collect();
        // One job per distinct URL: later images with the same URL share its outcome.
        let mut seen = std::collections::HashSet::new();
        let jobs = image_rows.iter().filter(|i| seen.insert(i.url)).map(|i| {
            (
                ImageJob {
                    request_id: id,
                    row: i.row,
                    position: i.position,
                },
                JobKey::image(id, i.row, i.position, 1, 0),
            )
        });

        let stored = async {
            let mut tx = self.0.db.begin_write().await?;
            Db::insert_request(&mut tx, &new, &product_rows, &image_rows).await?;
            jobs::push_many(&mut tx, jobs).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = stored {
            if let Err(cleanup) = self.0.blobs.delete(&input_key).await {
                tracing::warn!(request_id = %id, error = %cleanup, "could not remove the CSV of a failed upload");
            }
            return Err(e.into());
        }
        tracing::info!(request_id = %id, products, images, "request accepted");
        if image_rows.len() >= BIG_REQUEST_IMAGES {
            // In the background: the answer does not wait for it, and the first jobs
            // run with plans made for the values they are given.
            let db = self.0.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.refresh_planner_stats().await {
                    tracing::warn!(request_id = %id, error = %e, "could not refresh the planner's statistics");
                }
            });
        }

        Ok(UploadResponse::Accepted(Json(UploadAccepted {
            request_id: Some(id.as_uuid()),
            status: Some(RequestStatus::Pending),
            status_url: Some(format!("{}/status/{id}", s.public_base_url)),
            products,
            images,
        })))
    }
}
