//! The S3 backend, through `object_store`: one PUT per blob, which S3 makes visible
//! whole or not at all, so there is no temporary name and nothing partial to clean up.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStoreExt, PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

use super::{BlobKey, S3Config, StoredBlob};

/// A bucket and a key prefix.
#[derive(Clone, Debug)]
pub(super) struct S3Store {
    client: Arc<AmazonS3>,
    prefix: String,
}

fn io_error(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl S3Store {
    /// Builds the client; nothing is sent until the first call.
    pub(super) fn new(config: &S3Config) -> Result<Self, object_store::Error> {
        // The standard AWS variables first (session token, web identity, container
        // credentials...), then our settings over them.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_retry(RetryConfig {
                backoff: Default::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &config.endpoint {
            // S3-compatible servers (MinIO, moto, Ceph...) answer path-style requests
            // (`{endpoint}/{bucket}/{key}`), often on plain HTTP inside a private network.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
        }
        Ok(Self {
            client: Arc::new(builder.build()?),
            prefix: config.prefix.clone(),
        })
    }

    fn path(&self, key: &BlobKey) -> Path {
        if self.prefix.is_empty() {
            Path::from(key.as_str())
        } else {
            Path::from(format!("{}/{}", self.prefix, key.as_str()))
        }
    }

    /// One PUT: readers see the old object or the new one, never part of one.
    pub(super) async fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
        self.client
            .put(
                &self.path(key),
                PutPayload::from(Bytes::copy_from_slice(bytes)),
            )
            .await
            .map(|_| ())
            .map_err(io_error)
    }

    /// Starts a GET and streams its body; `Ok(None)` when there is no such object.
    pub(super) async fn get(&self, key: &BlobKey) -> std::io::Result<Option<StoredBlob>> {
        let result = match self.client.get(&self.path(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let meta = &result.meta;
        let etag = match &meta.e_tag {
            Some(t) if t.starts_with('"') || t.starts_with("W/\"") => t.clone(),
            Some(t) => format!("\"{t}\""),
            None => format!(
                "\"{:x}-{:x}\"",
                meta.size,
                meta.last_modified.timestamp_nanos_opt().unwrap_or_default()
            ),
        };
        Ok(Some(StoredBlob {
            len: meta.size,
            etag,
            body: result.into_stream().map_err(io_error).boxed(),
        }))
    }

    /// Reads a whole object into memory; `Ok(None)` when absent.
    pub(super) async fn read(&self, key: &BlobKey) -> std::io::Result<Option<Vec<u8>>> {
        match self.client.get(&self.path(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(io_error)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_under_the_prefix() {
        let mut cfg = S3Config {
            bucket: "bucket".into(),
            prefix: "a/b".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("eu-west-1".into()),
            credentials: None,
        };
        let key = BlobKey::parse("r/0-1.jpg").unwrap();
        let store = S3Store::new(&cfg).unwrap();
        assert_eq!(store.path(&key).as_ref(), "a/b/r/0-1.jpg");
        cfg.prefix.clear();
        let store = S3Store::new(&cfg).unwrap();
        assert_eq!(store.path(&key).as_ref(), "r/0-1.jpg");
    }
}
