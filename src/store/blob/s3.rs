//! The S3 client, through `object_store`: one PUT per blob, which S3 makes visible
//! whole or not at all, so there is no temporary name. The output CSV goes up as a
//! multipart upload, equally invisible until complete and aborted on every failure;
//! only a process killed mid-upload leaves its parts, for the bucket's
//! `AbortIncompleteMultipartUpload` rule to remove (README, "Storage").

use std::time::Duration;

use object_store::{
    RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
};

use super::S3Config;

/// Builds the client; nothing is sent until the first call. A failed request is
/// retried a few times within 30 s here; past that the caller's own retry (the image
/// job's backoff) takes over, so a long outage holds no worker slot.
pub(super) fn client(config: &S3Config) -> Result<AmazonS3, object_store::Error> {
    crate::tls::use_ring();
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
    builder.build()
}
