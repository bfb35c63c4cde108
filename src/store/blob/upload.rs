//! A multipart upload that reports why it failed.
//!
//! `WriteMultipart::finish` aborts an upload whose completion failed and, when that
//! abort fails too, returns the abort's error instead of the completion's. A local
//! upload's completion has already given up its staged file when its rename fails, so
//! its abort always fails, and every failed local completion read "Upload aborted".
//! Wrapped, the abort that follows a failed completion is still made (on S3 it frees
//! the parts) but its failure is only logged: the caller sees what went wrong.

use async_trait::async_trait;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// See the module documentation.
#[derive(Debug)]
pub(super) struct KeepCompletionError {
    inner: Box<dyn MultipartUpload>,
    completion_failed: bool,
}

impl KeepCompletionError {
    pub(super) fn wrap(inner: Box<dyn MultipartUpload>) -> Box<dyn MultipartUpload> {
        Box::new(Self {
            inner,
            completion_failed: false,
        })
    }
}

#[async_trait]
impl MultipartUpload for KeepCompletionError {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await;
        self.completion_failed = result.is_err();
        result
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let result = self.inner.abort().await;
        match result {
            Err(e) if self.completion_failed => {
                tracing::debug!(error = %e, "abort after a failed completion");
                Ok(())
            }
            other => other,
        }
    }
}
