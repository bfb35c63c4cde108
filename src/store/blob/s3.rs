//! The S3 client, through `object_store`: one PUT per blob, which S3 makes visible
//! whole or not at all, so there is no temporary name. The output CSV goes up as a
//! multipart upload, equally invisible until complete and aborted on every failure;
//! only a process killed mid-upload leaves its parts, for the bucket's
//! `AbortIncompleteMultipartUpload` rule to remove (README, "Storage").

use std::time::Duration;

use object_store::{
    RetryConfig,
    aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey},
};

use super::S3Config;

/// Builds the client; nothing is sent until the first call. A failed request is
/// retried a few times within 30 s here; past that the caller's own retry (the image
/// job's backoff) takes over, so a long outage holds no worker slot.
pub(super) fn client(config: &S3Config) -> Result<AmazonS3, object_store::Error> {
    crate::tls::use_ring();
    // The standard AWS variables first (session token, web identity, container
    // credentials...), then our settings over them.
    let mut builder = aws_environment()
        .with_bucket_name(&config.bucket)
        .with_retry(RetryConfig {
            backoff: Default::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        });
    if let Some(endpoint) = &config.endpoint {
        // S3-compatible servers (MinIO, moto, Ceph...) answer path-style requests
        // (`{endpoint}/{bucket}/{key}`), often on plain HTTP inside a private network.
        // Set as the S3 endpoint too: `AWS_ENDPOINT_URL_S3` from the environment would
        // otherwise win over it.
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
    } else if let Some((_, variable)) = [
        (AmazonS3ConfigKey::Endpoint, "AWS_ENDPOINT_URL"),
        (AmazonS3ConfigKey::S3Endpoint, "AWS_ENDPOINT_URL_S3"),
    ]
    .iter()
    .find(|(key, _)| builder.get_config_value(key).is_some())
    {
        // `S3_ENDPOINT` is the one endpoint setting (checked, and HTTP allowed for
        // it): an AWS CLI variable would send the blobs elsewhere unchecked, or fail
        // every write on `http://`.
        return Err(object_store::Error::Generic {
            store: "S3",
            source: format!(
                "{variable} is set but S3_ENDPOINT is not: set S3_ENDPOINT to the endpoint (or unset the AWS variable)"
            )
            .into(),
        });
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

/// `AmazonS3Builder::from_env` without the variables set to nothing, and the others
/// trimmed: an empty variable means unset, as for pixbatch's own settings (a Compose
/// file's `AWS_ACCESS_KEY_ID: ${AWS_ACCESS_KEY_ID}` passes an empty one when the host
/// has none). Taken as set, an empty key id stopped the start and an empty region made
/// the endpoint `s3..amazonaws.com`; a session token read from a file with its last
/// newline made every call panic on its header.
fn aws_environment() -> AmazonS3Builder {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .map(|(key, value)| (key, value.trim().to_owned()))
        .filter(|(key, value)| key.starts_with("AWS_") && !value.is_empty())
        .filter_map(|(key, value)| Some((key.to_ascii_lowercase().parse().ok()?, value)))
        .fold(AmazonS3Builder::new(), |builder, (key, value)| {
            builder.with_config(key, value)
        })
}
