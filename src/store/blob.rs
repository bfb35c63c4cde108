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

    /// Writes `bytes` under `key` atomically: to `<key>.partial-<random>`, flushed, then
    /// renamed over the final name. Readers see the old blob or the new one, never half
    /// of one; writing the same key twice (a redelivered job) leaves one file; two
    /// writers of one key at once each rename a whole file of their own. A crash
    /// mid-write can leave a partial file: [`Self::remove_partials`] clears them.
    pub async fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!("{PARTIAL}{:016x}", rand::random::<u64>()));
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

    /// Removes partial files left under a request's directory by writes that never
    /// finished (a crash between write and rename). Called once the request's work is
    /// done, when no live writer can still be using them; a straggler whose file is
    /// removed fails its rename and its job finds the image already finished.
    pub async fn remove_partials(&self, request: RequestId) -> std::io::Result<usize> {
        self.remove_partials_in(&request.to_string()).await
    }

    async fn remove_partials_in(&self, dir: &str) -> std::io::Result<usize> {
        let dir = self.root.join(dir);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name().to_string_lossy().contains(PARTIAL) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
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
            "r/0-0.jpg.partial-00ff",
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
        std::fs::write(dir.path().join("r/1-0.jpg.partial-0123"), b"half").unwrap();
        assert_eq!(store.remove_partials_in("r").await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("r")).unwrap().count(), 1);
        assert!(
            store
                .read(&BlobKey::parse("r/none.jpg").unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }
}
