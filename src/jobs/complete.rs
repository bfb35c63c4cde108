//! The completion job: writes the output CSV, sets the final status and writes the
//! webhook event into the outbox, the last two in one transaction. Idempotent: a
//! redelivered completion rewrites the same CSV bytes and then finds the run final.

use std::sync::Arc;

use apalis::prelude::{Attempt, Data};
use tracing::Instrument;

use super::{HandlerResult, JobContext, TryError, infra_error};
use crate::{
    csv::{CsvError, ImageOutcome, OutputRow, OutputWriter},
    domain::ImageState,
    lifecycle::{CompleteJob, RunToComplete},
    store::{BlobError, BlobKey, BlobUpload, ImageSlot, StoreError},
    telemetry::metrics::{self, JobKind, JobTimer},
};

/// apalis entry point.
pub(super) async fn handle(
    job: CompleteJob,
    ctx: Data<Arc<JobContext>>,
    attempt: Attempt,
) -> HandlerResult {
    let span = tracing::info_span!("complete", request_id = %job.request_id, run = job.run);
    let timer = JobTimer::start(JobKind::Complete);
    match run(&job, &ctx).instrument(span.clone()).await {
        Ok(outcome) => {
            timer.finish(outcome);
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            // In the job's span: the one error line of a failing job names it.
            Err(infra_error(e, &attempt).instrument(span).await)
        }
    }
}

/// Runs the completion; the outcome the metrics count: `completed`, `retry` (the
/// output CSV could not be stored; the completion runs again later) or `skipped`
/// (nothing to do: stale or repeated).
async fn run(job: &CompleteJob, ctx: &JobContext) -> Result<&'static str, StoreError> {
    let Some(due) = ctx.lifecycle.run_to_complete(job).await? else {
        tracing::debug!("run already completed, superseded or unfinished");
        return Ok("skipped");
    };
    let key = BlobKey::output_csv(job.request_id, job.run);
    let csv_len = match write_csv(ctx, job, &due, &key).await {
        Ok(len) => len,
        Err(CsvFailure::Store(e)) => return Err(e),
        Err(CsvFailure::Superseded) => {
            tracing::debug!("run completed or superseded while its CSV was written");
            return Ok("skipped");
        }
        Err(CsvFailure::Try(e)) => {
            // Not final until the CSV is stored: every storage failure is transient.
            let failure = e.failure();
            let delay = ctx.backoff().next_delay(job.retry + 1, None);
            tracing::warn!(code = %failure.code, error = %failure, retry = job.retry + 1, ?delay, "could not store the output CSV; the request stays unfinished and the completion runs again");
            ctx.lifecycle.retry_completion_later(job, delay).await?;
            return Ok("retry");
        }
    };
    // Every image of the run is final: any partial file left is from a crashed write.
    match ctx.blobs.remove_partials(job.request_id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed partial files of interrupted writes"),
        Err(e) => tracing::warn!(error = %e, "could not remove partial files"),
    }
    metrics::bytes_written("csv", csv_len);
    let Some(finished) = ctx.lifecycle.finish_run(&due, &key).await? else {
        return Ok("skipped");
    };
    tracing::info!(status = %finished.status, succeeded = finished.succeeded, failed = finished.failed, "request finished");
    Ok("completed")
}

/// Rows read per page while writing the output CSV: a page's rows and the CSV
/// bytes not yet sent are all the completion holds, whatever the request's size.
const CSV_PAGE_ROWS: u32 = 1000;

/// Why the output CSV was not stored.
enum CsvFailure {
    /// Reading the rows failed (or they are corrupt): the job runs again.
    Store(StoreError),
    /// The blob store refused the CSV ([`TryError::storage`]): a later completion
    /// tries again.
    Try(TryError),
    /// While the rows were read, another delivery of this completion finished the
    /// run, or a retry started the next one: the file is not put in place.
    Superseded,
}

/// Writes the output CSV under `key` a page of rows at a time (see
/// [`CSV_PAGE_ROWS`]); returns its size once it is stored. The bytes are those of
/// [`crate::csv::write_output`] over all rows, so a redelivered completion rewrites
/// the same file. The run is checked again just before the file replaces the stored
/// one: a duplicate of the completion that read its pages slowly, across a retry and
/// the next run's completion, would otherwise put a mix of both runs in place. A
/// duplicate that stalls between that check and its upload's end still lands, but
/// on its own run's key ([`BlobKey::output_csv`]), with its own run's rows.
async fn write_csv(
    ctx: &JobContext,
    job: &CompleteJob,
    due: &RunToComplete,
    key: &BlobKey,
) -> Result<u64, CsvFailure> {
    let request = &due.request;
    let csv =
        OutputWriter::new(&request.header, due.with_errors(), request.bom).map_err(corrupt_csv)?;
    let mut upload = ctx.blobs.put_parts(key).await.map_err(blob_failure)?;
    let still_due = match write_rows(ctx, job, csv, &mut upload).await {
        Ok(()) => ctx
            .lifecycle
            .run_to_complete(job)
            .await
            .map_err(CsvFailure::Store)
            .and_then(|due| due.map(|_| ()).ok_or(CsvFailure::Superseded)),
        Err(e) => Err(e),
    };
    match still_due {
        Ok(()) => upload.finish().await.map_err(blob_failure),
        Err(e) => {
            // Nothing half-written stays behind (on S3: no open multipart upload).
            upload.abort().await;
            Err(e)
        }
    }
}

/// Every row of the request into `csv`, a page at a time, each page's bytes sent on
/// to `upload` before the next page is read.
async fn write_rows(
    ctx: &JobContext,
    job: &CompleteJob,
    mut csv: OutputWriter,
    upload: &mut BlobUpload,
) -> Result<(), CsvFailure> {
    let mut after = None;
    loop {
        let page = ctx
            .db
            .output_page(job.request_id, after, CSV_PAGE_ROWS)
            .await
            .map_err(CsvFailure::Store)?;
        let Some(last) = page.last() else { break };
        after = Some(last.row);
        for row in &page {
            let outputs: Vec<ImageOutcome> = row
                .images
                .iter()
                .map(|slot| image_outcome(ctx, slot))
                .collect();
            csv.write_row(&OutputRow {
                cells: &row.cells,
                outputs: &outputs,
            })
            .map_err(corrupt_csv)?;
        }
        let bytes = csv.take().map_err(corrupt_csv)?;
        upload.write(&bytes).await.map_err(blob_failure)?;
    }
    let rest = csv.finish().map_err(corrupt_csv)?;
    upload.write(&rest).await.map_err(blob_failure)
}

fn blob_failure(e: BlobError) -> CsvFailure {
    CsvFailure::Try(TryError::storage(e))
}

fn corrupt_csv(e: CsvError) -> CsvFailure {
    CsvFailure::Store(StoreError::Corrupt(format!("output CSV: {e}")))
}

/// What the output CSV says of one image.
fn image_outcome(ctx: &JobContext, (state, key, error): &ImageSlot) -> ImageOutcome {
    match (state, key) {
        (ImageState::Succeeded, Some(key)) => {
            ImageOutcome::Stored(ctx.lifecycle.links().file_url(key))
        }
        (ImageState::Failed, _) => {
            ImageOutcome::Failed(error.clone().unwrap_or_else(|| "failed".into()))
        }
        (ImageState::Cancelled, _) => ImageOutcome::Failed("cancelled".into()),
        _ => ImageOutcome::Pending,
    }
}
