//! The blob store: uploaded CSVs, output images and output CSVs, as files under one
//! directory (`file://`) or objects in an S3 bucket (`s3://`). Keys are checked against
//! a strict grammar, so no key can name anything outside the store whatever a client
//! puts in a `/files/...` URL.

mod local;
mod location;
mod s3;

use std::fmt;

use bytes::Bytes;
use futures::{TryStreamExt, stream::BoxStream};

pub use location::{S3Config, S3Credentials, StorageConfig, parse_endpoint};

use crate::domain::RequestId;

/// Marks a blob being written (`<key>.partial-<random>`); never part of a key.
const PARTIAL: &str = ".partial-";

/// A validated storage key: `/`-separated segments of `[A-Za-z0-9._-]`, none empty,
/// none starting with a dot (so no `..`, no hidden files), at most 4 segments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey(String);

impl BlobKey {
    /// Parses a key from untrusted input (a URL path, already percent-decoded).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 256 {
            return Err("key length out of range".into());
        }
        if s.contains(PARTIAL) {
            return Err("names of unfinished writes are not keys".into());
        }
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() > 4 {
            return Err("too many segments".into());
        }
        for seg in segments {
            if seg.is_empty() || seg.starts_with('.') {
                return Err(format!("bad segment {seg:?}"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(format!("bad character in {seg:?}"));
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// Where an image's output lives: deterministic, so a retried job overwrites.
    pub fn image(request: RequestId, row: u32, position: u32) -> Self {
        Self(format!("{request}/{row}-{position}.jpg"))
    }

    /// The uploaded CSV, kept as received.
    pub fn input_csv(request: RequestId) -> Self {
        Self(format!("{request}/input.csv"))
    }

    /// The output CSV; its URL is stable once handed out.
    pub fn output_csv(request: RequestId) -> Self {
        Self(format!("{request}/output.csv"))
    }

    /// The key as stored in the database and used in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The media type implied by the key's extension.
    pub fn content_type(&self) -> &'static str {
        if self.0.ends_with(".jpg") {
            "image/jpeg"
        } else if self.0.ends_with(".csv") {
            "text/csv; charset=utf-8"
        } else {
            "application/octet-stream"
        }
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob opened for reading.
pub struct StoredBlob {
    /// Its length in bytes.
    pub len: u64,
    /// A quoted entity tag that changes whenever the blob is rewritten.
    pub etag: String,
    /// The bytes, as they arrive from the disk or the bucket.
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl fmt::Debug for StoredBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredBlob")
            .field("len", &self.len)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

impl StoredBlob {
    /// Collects the whole body.
    pub async fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        self.body
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
    }
}

/// Where blobs are kept: a local directory or an S3 bucket.
#[derive(Clone, Debug)]
pub struct BlobStore(Backend);

#[derive(Clone, Debug)]
enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl BlobStore {
    /// The store `config` names, without touching the disk or the network.
    pub fn new(config: &StorageConfig) -> std::io::Result<Self> {
        Ok(Self(match config {
            StorageConfig::Local(dir) => Backend::Local(local::LocalStore::at(dir)),
            StorageConfig::S3(s3) => Backend::S3(
                s3::S3Store::new(s3)
                    .map_err(|e| std::io::Error::other(format!("S3 client: {e}")))?,
            ),
        }))
    }

    /// As [`Self::new`], creating a local store's directory if missing.
    pub async fn open(config: &StorageConfig) -> std::io::Result<Self> {
        let store = Self::new(config)?;
        if let Backend::Local(local) = &store.0 {
            local.create_root().await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("blob store {}: {e}", local.root().display()),
                )
            })?;
        }
        Ok(store)
    }

    /// Writes `bytes` under `key` atomically: readers see the old blob or the new one,
    /// never half of one, and writing the same key twice (a redelivered job) leaves one
    /// blob. Locally the bytes go to `<key>.partial-<random>`, flushed, then renamed
    /// over the final name (two writers of one key at once each rename a whole file of
    /// their own; a crash mid-write can leave a partial file, which
    /// [`Self::remove_partials`] clears). On S3 one PUT is atomic by itself.
    pub async fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
        match &self.0 {
            Backend::Local(s) => s.put(key, bytes).await,
            Backend::S3(s) => s.put(key, bytes).await,
        }
    }

    /// Removes partial files left under a request's directory by writes that never
    /// finished (a crash between write and rename). Called once the request's work is
    /// done, when no live writer can still be using them; a straggler whose file is
    /// removed fails its rename and its job finds the image already finished. Nothing
    /// to do on S3, where an interrupted PUT leaves no object.
    pub async fn remove_partials(&self, request: RequestId) -> std::io::Result<usize> {
        match &self.0 {
            Backend::Local(s) => s.remove_partials_in(&request.to_string()).await,
            Backend::S3(_) => Ok(0),
        }
    }

    /// Opens a blob for streaming; `Ok(None)` when there is none under that key.
    pub async fn get(&self, key: &BlobKey) -> std::io::Result<Option<StoredBlob>> {
        match &self.0 {
            Backend::Local(s) => s.get(key).await,
            Backend::S3(s) => s.get(key).await,
        }
    }

    /// Reads a whole blob into memory; `Ok(None)` when absent.
    pub async fn read(&self, key: &BlobKey) -> std::io::Result<Option<Vec<u8>>> {
        match &self.0 {
            Backend::Local(s) => s.read(key).await,
            Backend::S3(s) => s.read(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "a/../../b",
            "a//b",
            "/abs",
            ".hidden",
            "a/.b",
            "a\\b",
            "a/b%2e",
            "a/b/c/d/e",
            "r/0-0.jpg.partial-00ff",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a.jpg", "0193-abc/0-1.jpg", "x/output.csv"] {
            assert!(BlobKey::parse(good).is_ok(), "{good:?} refused");
        }
    }
}
