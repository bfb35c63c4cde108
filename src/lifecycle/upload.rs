//! Accepting an upload: the input CSV, the request, its rows, its images and one job
//! per distinct URL, stored so that either all of it exists or none of it does.

use std::time::Duration;

use super::{Lifecycle, LifecycleError, steps};
use crate::{
    csv::{ImageUrl, ParsedCsv},
    domain::RequestId,
    imaging::{MaxBytes, Quality},
    store::{
        BIG_REQUEST_IMAGES, BlobKey, CommitOutcome, Db, NewImage, NewProduct, NewRequest, TxId,
    },
};

/// A checked upload, with every choice already resolved against the server's defaults.
#[derive(Debug)]
pub struct CheckedUpload {
    /// The CSV as uploaded, kept as the request's input.
    pub csv: Vec<u8>,
    /// What it says.
    pub parsed: ParsedCsv,
    /// Output quality.
    pub quality: Quality,
    /// Byte cap of each output.
    pub max_bytes: Option<MaxBytes>,
    /// Where the completion event goes (else the server's `WEBHOOK_URL`).
    pub webhook_url: Option<ImageUrl>,
    /// Whether unchanged images of earlier requests may be reused.
    pub reuse: bool,
}

/// An accepted upload.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The new request.
    pub id: RequestId,
    /// Its product rows.
    pub products: u64,
    /// Its images.
    pub images: u64,
}

/// Where an upload's transaction failed.
#[derive(Debug, Clone, Copy)]
enum Failed {
    /// Before its commit: nothing of it was stored.
    BeforeCommit,
    /// At its commit: the database may have committed it before the answer was lost,
    /// or may yet (PostgreSQL: the transaction's id, to ask).
    AtCommit(Option<TxId>),
}

/// How long an upload whose commit's answer was lost waits for PostgreSQL to settle
/// the transaction (its `COMMIT` may still be on its way) before the upload is refused
/// with its CSV kept.
const SETTLE: Duration = Duration::from_secs(5);

/// What a failed upload transaction comes to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The commit's answer was lost, not the commit: the request runs, so it is
    /// accepted, lest the client send it again and have every image done twice.
    Accepted,
    /// The upload failed; its CSV goes only if its request is known to be absent (a
    /// CSV kept for nothing costs its bytes, a removed one a running request's input).
    Refused {
        /// Whether the CSV blob is removed.
        remove_csv: bool,
    },
}

/// The verdict on a failed upload, given whether its request `exists` afterwards
/// (`None`: that could not be learnt).
fn verdict(exists: Option<bool>) -> Verdict {
    match exists {
        Some(true) => Verdict::Accepted,
        Some(false) => Verdict::Refused { remove_csv: true },
        None => Verdict::Refused { remove_csv: false },
    }
}

impl Lifecycle {
    /// Whether the upload `id`, whose commit was answered with an error, committed:
    /// on PostgreSQL the transaction's own status, waited for while it is still open
    /// (the request's row is not visible until the commit lands, so looking for it
    /// alone would take a commit on its way for none, refuse the upload and remove the
    /// CSV of a request about to run); on SQLite, whose commit is settled when it
    /// returns, the row. `None` when it cannot be told (the database does not answer,
    /// or the transaction is still open after [`SETTLE`]).
    async fn committed(&self, id: RequestId, tx_id: Option<TxId>) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut pause = Duration::from_millis(20);
        let outcome = loop {
            let outcome = match tx_id {
                Some(tx_id) => self.db.commit_outcome(tx_id).await,
                None => Ok(CommitOutcome::Unknown),
            };
            match outcome {
                Ok(CommitOutcome::InProgress) if tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                outcome => break outcome,
            }
        };
        let known = match outcome {
            Ok(CommitOutcome::Committed) => Ok(true),
            Ok(CommitOutcome::Aborted) => Ok(false),
            Ok(CommitOutcome::Unknown) => self.db.request(id).await.map(|r| r.is_some()),
            Ok(CommitOutcome::InProgress) => {
                tracing::warn!(request_id = %id, "the upload's transaction is still open");
                return None;
            }
            Err(e) => Err(e),
        };
        known
            .inspect_err(|e| tracing::warn!(request_id = %id, error = %e, "could not learn whether the upload's commit happened"))
            .ok()
    }

    /// Stores the upload and queues its first run. The CSV blob is written before the
    /// transaction that points at it and removed again when that transaction fails,
    /// so a failed upload leaves no rows without their CSV, and no CSV without rows
    /// unless the commit's outcome could not be learnt. A commit answered with an
    /// error is looked up: if it happened after all, the upload is accepted.
    pub async fn accept(&self, upload: CheckedUpload) -> Result<Accepted, LifecycleError> {
        let CheckedUpload {
            csv,
            parsed,
            quality,
            max_bytes,
            webhook_url,
            reuse,
        } = upload;
        let id = RequestId::new();
        let input_key = BlobKey::input_csv(id);
        self.blobs
            .put(&input_key, bytes::Bytes::from(csv))
            .await
            .map_err(crate::store::StoreError::from)?;

        let new = NewRequest {
            id,
            quality,
            max_bytes,
            // The server's default is stored with the request: in split roles the
            // `api` process that took the upload may be the only one configured with
            // it, and the worker that completes the request reads only the request.
            webhook_url: webhook_url
                .map(|u| u.as_str().to_owned())
                .or_else(|| self.links.default_webhook.clone()),
            header: parsed.header.clone(),
            urls_column: parsed.urls_column,
            input_key: input_key.as_str().to_owned(),
            reuse,
            bom: parsed.bom,
        };
        let products: Vec<NewProduct<'_>> = parsed
            .rows
            .iter()
            .map(|r| NewProduct {
                row: r.row,
                line: r.line,
                serial: &r.serial,
                product_name: &r.product_name,
                cells_json: r.cells.as_json(),
            })
            .collect();
        let images: Vec<NewImage<'_>> = parsed
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

        let written = async {
            let mut tx = self.db.begin_write().await?;
            let tx_id = tx.id().await?;
            Db::insert_request(&mut tx, &new, &products, &images).await?;
            let first_run: Vec<(u32, u32, &str)> =
                images.iter().map(|i| (i.row, i.position, i.url)).collect();
            steps::push_images(&mut tx, id, 1, &first_run).await?;
            Ok::<_, crate::store::StoreError>((tx, tx_id))
        }
        .await;
        let stored = match written {
            Ok((tx, tx_id)) => tx.commit().await.map_err(|e| (e, Failed::AtCommit(tx_id))),
            Err(e) => Err((e, Failed::BeforeCommit)),
        };
        if let Err((e, failed)) = stored {
            let exists = match failed {
                Failed::BeforeCommit => Some(false),
                Failed::AtCommit(tx_id) => self.committed(id, tx_id).await,
            };
            match verdict(exists) {
                Verdict::Accepted => {
                    tracing::warn!(request_id = %id, error = %e, "the upload's commit was answered with an error but happened");
                }
                Verdict::Refused { remove_csv: true } => {
                    if let Err(cleanup) = self.blobs.delete(&input_key).await {
                        tracing::warn!(request_id = %id, error = %cleanup, "could not remove the CSV of a failed upload");
                    }
                    return Err(e.into());
                }
                Verdict::Refused { remove_csv: false } => {
                    tracing::warn!(request_id = %id, error = %e, "the upload's commit failed and may have happened; its CSV is kept");
                    return Err(e.into());
                }
            }
        }
        let accepted = Accepted {
            id,
            products: products.len() as u64,
            images: images.len() as u64,
        };
        tracing::info!(request_id = %id, products = accepted.products, images = accepted.images, "request accepted");
        if images.len() >= BIG_REQUEST_IMAGES {
            // In the background: the answer does not wait for it, and the first jobs
            // run with plans made for the values they are given.
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.refresh_planner_stats().await {
                    tracing::warn!(request_id = %id, error = %e, "could not refresh the planner's statistics");
                }
            });
        }
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::{Verdict, verdict};

    #[test]
    fn a_failed_upload_is_judged_by_whether_its_request_exists() {
        assert_eq!(verdict(Some(true)), Verdict::Accepted);
        assert_eq!(verdict(Some(false)), Verdict::Refused { remove_csv: true });
        assert_eq!(verdict(None), Verdict::Refused { remove_csv: false });
    }
}
