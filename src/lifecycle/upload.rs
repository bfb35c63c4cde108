//! Accepting an upload: the input CSV, the request, its rows, its images and one job
//! per distinct URL, stored so that either all of it exists or none of it does.

use super::{Lifecycle, LifecycleError, steps};
use crate::{
    csv::{ImageUrl, ParsedCsv},
    domain::RequestId,
    imaging::{MaxBytes, Quality},
    store::{BIG_REQUEST_IMAGES, BlobKey, Db, NewImage, NewProduct, NewRequest},
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

impl Lifecycle {
    /// Stores the upload and queues its first run. The CSV blob is written before the
    /// transaction that points at it and removed again when that transaction fails,
    /// so a failed upload leaves neither rows without their CSV nor a CSV without rows.
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
            webhook_url: webhook_url.map(|u| u.as_str().to_owned()),
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
                cells: &r.cells,
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

        let stored = async {
            let mut tx = self.db.begin_write().await?;
            Db::insert_request(&mut tx, &new, &products, &images).await?;
            let first_run: Vec<(u32, u32, &str)> =
                images.iter().map(|i| (i.row, i.position, i.url)).collect();
            steps::push_images(&mut tx, id, 1, &first_run).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = stored {
            if let Err(cleanup) = self.blobs.delete(&input_key).await {
                tracing::warn!(request_id = %id, error = %cleanup, "could not remove the CSV of a failed upload");
            }
            return Err(e.into());
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
