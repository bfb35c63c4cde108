//! The blob store: uploaded CSVs, output images and output CSVs, as files under one
//! directory. Keys are checked against a strict grammar, so no key can name a path
//! outside the store whatever a client puts in a `/files/...` URL.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use tokio::io::AsyncWriteExt;

use crate::domain::RequestId;

/// Suffix of a blob being written; never a key itself.
const PARTIAL: &str = ".partial";

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
        if s.ends_with(PARTIAL) {
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
#[derive(Debug)]
pub struct StoredBlob {
    /// The open file.
    pub file: tokio::fs::File,
    /// Its length in bytes.
    pub len: u64,
    /// When it was last written (for the ETag).
    pub modified: SystemTime,
}

/// Files under one root directory.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store rooted at `root`, created if missing.
    pub async fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self { root })
    }

    /// A store rooted at `root`, without touching the disk.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(Path::new(key.as_str()))
    }

    /// Writes `bytes` under `key` atomically: to `<key>.partial`, flushed, then renamed
    /// over the final name. Readers see the old blob or the new one, never half of one,
    /// and writing the same key twice leaves one file. (Two concurrent writers of one
    /// key write the same bytes: outputs are a deterministic function of the input.)
    pub async fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // A fixed temporary name per key: a write interrupted by a crash leaves at most
        // one stray file, which the retried job's write reuses and renames away.
        let mut tmp = path.clone().into_os_string();
        tmp.push(PARTIAL);
        let tmp = PathBuf::from(tmp);
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(bytes).await?;
            f.sync_data().await?;
            drop(f);
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Opens a blob; `Ok(None)` when there is none under that key.
    pub async fn get(&self, key: &BlobKey) -> std::io::Result<Option<StoredBlob>> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(file) => {
                let meta = file.metadata().await?;
                if !meta.is_file() {
                    return Ok(None);
                }
                Ok(Some(StoredBlob {
                    len: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    file,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a whole blob into memory; `Ok(None)` when absent.
    pub async fn read(&self, key: &BlobKey) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(key)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
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
            "r/0-0.jpg.partial",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a.jpg", "0193-abc/0-1.jpg", "x/output.csv"] {
            assert!(BlobKey::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[tokio::test]
    async fn put_is_atomic_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let key = BlobKey::parse("r/0-0.jpg").unwrap();
        store.put(&key, b"one").await.unwrap();
        store.put(&key, b"two!").await.unwrap();
        assert_eq!(store.read(&key).await.unwrap().unwrap(), b"two!");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("r"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
        assert!(
            store
                .read(&BlobKey::parse("r/none.jpg").unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }
}
