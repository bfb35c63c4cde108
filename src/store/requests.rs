//! SQL for requests, products and images, including the fan-in: the guarded update
//! that moves an image out of `pending` once, and the counter whose last decrement
//! tells the caller to enqueue the completion.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, sqlite::SqliteRow};

use super::{BlobKey, Db, StoreError, Tx};
use crate::domain::{ImageId, ImageState, RequestId, RequestStatus};

/// SQLite allows 32766 bound parameters per statement; stay well below.
const INSERT_CHUNK: usize = 2000;

/// A request about to be stored.
#[derive(Debug)]
pub struct NewRequest {
    /// Its id.
    pub id: RequestId,
    /// Quality choice as given (`50`, `relative:50%`).
    pub quality: String,
    /// Where to send the completion event, if anywhere.
    pub webhook_url: Option<String>,
    /// The input columns in order.
    pub header: Vec<String>,
    /// Index of the URL column in `header`.
    pub urls_column: usize,
    /// Blob key of the stored upload.
    pub input_key: String,
}

/// One row about to be stored.
#[derive(Debug)]
pub struct NewProduct<'a> {
    /// 0-based data row.
    pub row: u32,
    /// Physical line in the upload.
    pub line: u64,
    /// Serial number cell.
    pub serial: &'a str,
    /// Product name cell.
    pub product_name: &'a str,
    /// Every cell in header order.
    pub cells: &'a [String],
}

/// One image about to be stored.
#[derive(Debug)]
pub struct NewImage<'a> {
    /// 0-based data row.
    pub row: u32,
    /// 0-based position in the row's URLs.
    pub position: u32,
    /// The URL to fetch.
    pub url: &'a str,
}

/// A stored request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Its id.
    pub id: RequestId,
    /// Current status.
    pub status: RequestStatus,
    /// Quality choice as given.
    pub quality: String,
    /// Webhook target, if any.
    pub webhook_url: Option<String>,
    /// Input columns in order.
    pub header: Vec<String>,
    /// Index of the URL column.
    pub urls_column: usize,
    /// Output CSV key once final.
    pub output_key: Option<String>,
    /// Images in the request.
    pub total: i64,
    /// Images stored.
    pub succeeded: i64,
    /// Images failed.
    pub failed: i64,
    /// Images still pending in this run.
    pub remaining: i64,
    /// Run number (bumped by retry).
    pub run: i64,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first image started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored image with its product, for the images API.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Its id.
    pub id: ImageId,
    /// 0-based data row.
    pub row: u32,
    /// 0-based position in the row.
    pub position: u32,
    /// Serial of its product.
    pub serial: String,
    /// Name of its product.
    pub product_name: String,
    /// The URL fetched.
    pub input_url: String,
    /// Where it is.
    pub state: ImageState,
    /// Tries so far.
    pub attempts: i64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// Output blob key once stored.
    pub output_key: Option<String>,
    /// Bytes downloaded.
    pub input_bytes: Option<i64>,
    /// Bytes stored.
    pub output_bytes: Option<i64>,
    /// Output width.
    pub width: Option<i64>,
    /// Output height.
    pub height: Option<i64>,
    /// What the transform did (JSON).
    pub report: Option<serde_json::Value>,
}

/// What an image job needs to know before it works.
#[derive(Debug, Clone)]
pub struct ImageWork {
    /// The URL.
    pub input_url: String,
    /// Where the image is.
    pub state: ImageState,
    /// Tries so far.
    pub attempts: i64,
    /// The request's status.
    pub request_status: RequestStatus,
    /// The request's quality choice.
    pub quality: String,
    /// The request's run.
    pub run: i64,
}

/// How an image ended.
#[derive(Debug, Clone)]
pub enum ImageOutcomeUpdate {
    /// Stored, each image under its own deterministic key.
    Succeeded {
        /// Bytes downloaded.
        input_bytes: i64,
        /// Bytes stored.
        output_bytes: i64,
        /// Output width.
        width: i64,
        /// Output height.
        height: i64,
        /// What the transform did.
        report: serde_json::Value,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: String,
    },
}

/// Result of moving an image to a terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanIn {
    /// The image had already left `pending` (a redelivered job): nothing changed.
    AlreadyFinished,
    /// Recorded; other images are still pending.
    Recorded,
    /// Recorded, and it was the last one of this run: enqueue the completion.
    LastOfRun {
        /// The run that just finished.
        run: i64,
    },
}

/// One image's outcome as the output CSV needs it: state, output key, last error.
pub type ImageSlot = (ImageState, Option<String>, Option<String>);

/// What the completion needs to write the output CSV.
#[derive(Debug, Clone)]
pub struct OutputSource {
    /// Rows in order: every cell, then one slot per URL position.
    pub rows: Vec<(Vec<String>, Vec<ImageSlot>)>,
}

fn corrupt<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn request_from_row(r: &SqliteRow) -> Result<RequestRecord, StoreError> {
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    let header: String = r.try_get("header")?;
    Ok(RequestRecord {
        id: id.parse().map_err(corrupt)?,
        status: status.parse().map_err(corrupt)?,
        quality: r.try_get("quality")?,
        webhook_url: r.try_get("webhook_url")?,
        header: serde_json::from_str(&header)?,
        urls_column: r.try_get::<i64, _>("urls_column")? as usize,
        output_key: r.try_get("output_key")?,
        total: r.try_get("total")?,
        succeeded: r.try_get("succeeded")?,
        failed: r.try_get("failed")?,
        remaining: r.try_get("remaining")?,
        run: r.try_get("run")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Db {
    /// Stores a request with all its rows and images, inside the caller's transaction
    /// (which also pushes the jobs, so rows and jobs commit together).
    pub async fn insert_request(
        tx: &mut Tx,
        req: &NewRequest,
        products: &[NewProduct<'_>],
        images: &[NewImage<'_>],
    ) -> Result<(), StoreError> {
        let total = images.len() as i64;
        sqlx::query(
            "insert into requests (id, status, quality, webhook_url, header, urls_column,
                                   input_key, total, remaining, created_at)
             values (?, 'Pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(req.id.to_string())
        .bind(&req.quality)
        .bind(&req.webhook_url)
        .bind(serde_json::to_string(&req.header)?)
        .bind(req.urls_column as i64)
        .bind(&req.input_key)
        .bind(total)
        .bind(total)
        .bind(Utc::now())
        .execute(&mut **tx)
        .await?;

        let id = req.id.to_string();
        for chunk in products.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "insert into products (request_id, row, line, serial, product_name, cells) ",
            );
            q.push_values(chunk, |mut b, p| {
                b.push_bind(id.clone())
                    .push_bind(p.row as i64)
                    .push_bind(p.line as i64)
                    .push_bind(p.serial.to_owned())
                    .push_bind(p.product_name.to_owned())
                    .push_bind(serde_json::to_string(p.cells).unwrap_or_default());
            });
            q.build().execute(&mut **tx).await?;
        }
        for chunk in images.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "insert into images (request_id, row, position, input_url) ",
            );
            q.push_values(chunk, |mut b, i| {
                b.push_bind(id.clone())
                    .push_bind(i.row as i64)
                    .push_bind(i.position as i64)
                    .push_bind(i.url.to_owned());
            });
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// One request, or `None`.
    pub async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query("select * from requests where id = ?")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// A page of a request's images in output order, with their products.
    pub async fn images(
        &self,
        id: RequestId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let rows = sqlx::query(
            "select i.*, p.serial, p.product_name
               from images i join products p on p.request_id = i.request_id and p.row = i.row
              where i.request_id = ?
              order by i.row, i.position
              limit ? offset ?",
        )
        .bind(id.to_string())
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                let report: Option<String> = r.try_get("report")?;
                Ok(ImageRecord {
                    id: ImageId(r.try_get("id")?),
                    row: r.try_get::<i64, _>("row")? as u32,
                    position: r.try_get::<i64, _>("position")? as u32,
                    serial: r.try_get("serial")?,
                    product_name: r.try_get("product_name")?,
                    input_url: r.try_get("input_url")?,
                    state: state.parse().map_err(corrupt)?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    output_key: r.try_get("output_key")?,
                    input_bytes: r.try_get("input_bytes")?,
                    output_bytes: r.try_get("output_bytes")?,
                    width: r.try_get("width")?,
                    height: r.try_get("height")?,
                    report: report.map(|s| serde_json::from_str(&s)).transpose()?,
                })
            })
            .collect()
    }

    /// What an image job needs, or `None` when the image does not exist.
    pub async fn image_work(
        &self,
        id: RequestId,
        row: u32,
        position: u32,
    ) -> Result<Option<ImageWork>, StoreError> {
        let row = sqlx::query(
            "select i.input_url, i.state, i.attempts, r.status, r.quality, r.run
               from images i join requests r on r.id = i.request_id
              where i.request_id = ? and i.row = ? and i.position = ?",
        )
        .bind(id.to_string())
        .bind(row as i64)
        .bind(position as i64)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let state: String = r.try_get("state")?;
        let status: String = r.try_get("status")?;
        Ok(Some(ImageWork {
            input_url: r.try_get("input_url")?,
            state: state.parse().map_err(corrupt)?,
            attempts: r.try_get("attempts")?,
            request_status: status.parse().map_err(corrupt)?,
            quality: r.try_get("quality")?,
            run: r.try_get("run")?,
        }))
    }

    /// Pending → Processing, when the first image of a request starts.
    pub async fn mark_started(&self, id: RequestId) -> Result<(), StoreError> {
        if sqlx::query("select 1 from requests where id = ? and status = 'Pending'")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .is_none()
        {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "update requests set status = 'Processing', started_at = coalesce(started_at, ?)
              where id = ? and status = 'Pending'",
        )
        .bind(Utc::now())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a failed try that will be retried; `false` when the image already left
    /// `pending` (a redelivered job), in which case nothing is to be scheduled.
    pub async fn record_retry(
        tx: &mut Tx,
        id: RequestId,
        row: u32,
        position: u32,
        error: &str,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "update images set attempts = attempts + 1, last_error = ?,
                               started_at = coalesce(started_at, ?)
              where request_id = ? and row = ? and position = ? and state = 'pending'",
        )
        .bind(error)
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(row as i64)
        .bind(position as i64)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Pending images of a request with the same URL as the given one (not itself):
    /// they wait for its outcome instead of downloading the same bytes again.
    pub async fn duplicates_of(
        &self,
        id: RequestId,
        row: u32,
        position: u32,
        url: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let rows = sqlx::query(
            "select row, position from images
              where request_id = ? and input_url = ? and state = 'pending'
                and not (row = ? and position = ?)
              order by row, position",
        )
        .bind(id.to_string())
        .bind(url)
        .bind(row as i64)
        .bind(position as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("row")? as u32,
                    r.try_get::<i64, _>("position")? as u32,
                ))
            })
            .collect()
    }

    /// Moves images out of `pending` (each once: the update is guarded) and counts them
    /// on their request; the decrement that reaches zero reports [`FanIn::LastOfRun`].
    /// `targets` are the image a job worked on first, then the duplicates that share
    /// its outcome; when the first has already left `pending`, nothing is changed.
    pub async fn finish_images(
        tx: &mut Tx,
        id: RequestId,
        targets: &[(u32, u32)],
        outcome: &ImageOutcomeUpdate,
    ) -> Result<FanIn, StoreError> {
        let now = Utc::now();
        let mut finished = 0i64;
        for (i, &(row, position)) in targets.iter().enumerate() {
            let q = match outcome {
                ImageOutcomeUpdate::Succeeded {
                    input_bytes,
                    output_bytes,
                    width,
                    height,
                    report,
                } => sqlx::query(
                    "update images set state = 'succeeded', attempts = attempts + 1,
                            last_error = null, output_key = ?, input_bytes = ?,
                            output_bytes = ?, width = ?, height = ?, report = ?,
                            started_at = coalesce(started_at, ?), finished_at = ?
                      where request_id = ? and row = ? and position = ? and state = 'pending'",
                )
                .bind(BlobKey::image(id, row, position).as_str().to_owned())
                .bind(input_bytes)
                .bind(output_bytes)
                .bind(width)
                .bind(height)
                .bind(report.to_string()),
                ImageOutcomeUpdate::Failed { error } => sqlx::query(
                    "update images set state = 'failed', attempts = attempts + 1,
                            last_error = ?, started_at = coalesce(started_at, ?), finished_at = ?
                      where request_id = ? and row = ? and position = ? and state = 'pending'",
                )
                .bind(error),
            };
            let changed = q
                .bind(now)
                .bind(now)
                .bind(id.to_string())
                .bind(row as i64)
                .bind(position as i64)
                .execute(&mut **tx)
                .await?
                .rows_affected() as i64;
            if i == 0 && changed == 0 {
                return Ok(FanIn::AlreadyFinished);
            }
            finished += changed;
        }
        let sql = match outcome {
            ImageOutcomeUpdate::Succeeded { .. } => {
                "update requests set succeeded = succeeded + ?, remaining = remaining - ?
                  where id = ? returning remaining, run"
            }
            ImageOutcomeUpdate::Failed { .. } => {
                "update requests set failed = failed + ?, remaining = remaining - ?
                  where id = ? returning remaining, run"
            }
        };
        let r = sqlx::query(sql)
            .bind(finished)
            .bind(finished)
            .bind(id.to_string())
            .fetch_one(&mut **tx)
            .await?;
        let remaining: i64 = r.try_get("remaining")?;
        let run: i64 = r.try_get("run")?;
        Ok(if remaining == 0 {
            FanIn::LastOfRun { run }
        } else {
            FanIn::Recorded
        })
    }

    /// Puts a finished request's failed images back to `pending` for a new run.
    /// Returns the new run and the images to push jobs for, or `None` when the request
    /// is not finished or has no failed image.
    pub async fn retry_failed(
        tx: &mut Tx,
        id: RequestId,
    ) -> Result<Option<(i64, Vec<(u32, u32, String)>)>, StoreError> {
        let row = sqlx::query(
            "update requests
                set run = run + 1, status = 'Processing', remaining = failed, failed = 0,
                    output_key = null, finished_at = null
              where id = ? and status in ('CompletedWithErrors', 'Failed') and failed > 0
             returning run",
        )
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let run: i64 = row.try_get("run")?;
        // Tries are counted per run: a retried image gets FETCH_ATTEMPTS tries again.
        let images = sqlx::query(
            "update images set state = 'pending', attempts = 0, finished_at = null
              where request_id = ? and state = 'failed'
             returning row, position, input_url",
        )
        .bind(id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        let mut out = images
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("row")? as u32,
                    r.try_get::<i64, _>("position")? as u32,
                    r.try_get::<String, _>("input_url")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort();
        Ok(Some((run, out)))
    }

    /// Cancels an unfinished request: its pending images become `cancelled` and the
    /// request `Cancelled`. Returns the run, or `None` when it had already finished.
    pub async fn cancel(tx: &mut Tx, id: RequestId) -> Result<Option<i64>, StoreError> {
        let now = Utc::now();
        let row = sqlx::query(
            "update requests set status = 'Cancelled', remaining = 0, finished_at = ?
              where id = ? and status in ('Pending', 'Processing')
             returning run",
        )
        .bind(now)
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query(
            "update images set state = 'cancelled', finished_at = ?
              where request_id = ? and state = 'pending'",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(Some(row.try_get("run")?))
    }

    /// Records the output CSV of a cancelled run, once.
    pub async fn finalize_cancelled(
        tx: &mut Tx,
        id: RequestId,
        run: i64,
        output_key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "update requests set output_key = ?
              where id = ? and run = ? and status = 'Cancelled' and output_key is null
             returning *",
        )
        .bind(output_key)
        .bind(id.to_string())
        .bind(run)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// Rows and image outcomes of a request, in output order.
    pub async fn output_source(&self, id: RequestId) -> Result<OutputSource, StoreError> {
        let products =
            sqlx::query("select row, cells from products where request_id = ? order by row")
                .bind(id.to_string())
                .fetch_all(self.pool())
                .await?;
        let images = sqlx::query(
            "select row, position, state, output_key, last_error from images
              where request_id = ? order by row, position",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut rows = Vec::with_capacity(products.len());
        let mut index = std::collections::HashMap::with_capacity(products.len());
        for p in &products {
            let row: i64 = p.try_get("row")?;
            let cells: String = p.try_get("cells")?;
            index.insert(row, rows.len());
            rows.push((serde_json::from_str::<Vec<String>>(&cells)?, Vec::new()));
        }
        for i in &images {
            let row: i64 = i.try_get("row")?;
            let state: String = i.try_get("state")?;
            let slot = index
                .get(&row)
                .ok_or_else(|| StoreError::Corrupt(format!("image of missing row {row}")))?;
            rows[*slot].1.push((
                state.parse().map_err(corrupt)?,
                i.try_get("output_key")?,
                i.try_get("last_error")?,
            ));
        }
        Ok(OutputSource { rows })
    }

    /// Sets the final status of a run, once: `false` when the run was already
    /// finalised (a redelivered completion) or superseded by a retry.
    pub async fn finalize_request(
        tx: &mut Tx,
        id: RequestId,
        run: i64,
        output_key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "update requests
                set status = case when failed = 0 then 'Completed'
                                  when succeeded = 0 then 'Failed'
                                  else 'CompletedWithErrors' end,
                    output_key = ?, finished_at = ?
              where id = ? and run = ? and remaining = 0
                and status in ('Pending', 'Processing')
             returning *",
        )
        .bind(output_key)
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(run)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(request_from_row).transpose()
    }
}
