//! The local backend: files under one directory, written atomically (temporary name,
//! flush, rename), so readers never see half a blob.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{BlobKey, PARTIAL, StoredBlob};

/// Files under one root directory.
#[derive(Clone, Debug)]
pub(super) struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, without touching the disk.
    pub(super) fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the root directory if missing.
    pub(super) async fn create_root(&self) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.root).await
    }

    /// The root directory.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(Path::new(key.as_str()))
    }

    /// Writes `bytes` under `key` atomically: to `<key>.partial-<random>`, flushed, then
    /// renamed over the final name. Readers see the old blob or the new one, never half
    /// of one; writing the same key twice (a redelivered job) leaves one file; two
    /// writers of one key at once each rename a whole file of their own. A crash
    /// mid-write can leave a partial file: [`Self::remove_partials_in`] clears them.
    pub(super) async fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
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

    /// Removes the partial files directly under `dir` (relative to the root).
    pub(super) async fn remove_partials_in(&self, dir: &str) -> std::io::Result<usize> {
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

    /// Opens a blob for streaming; `Ok(None)` when there is none under that key.
    pub(super) async fn get(&self, key: &BlobKey) -> std::io::Result<Option<StoredBlob>> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(file) => {
                let meta = file.metadata().await?;
                if !meta.is_file() {
                    return Ok(None);
                }
                let mtime = meta
                    .modified()
                    .unwrap_or(SystemTime::UNIX_EPOCH)
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                Ok(Some(StoredBlob {
                    len: meta.len(),
                    // Length and modification time: a rename of a new file changes it.
                    etag: format!("\"{:x}-{:x}\"", meta.len(), mtime),
                    body: tokio_util::io::ReaderStream::new(file).boxed(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a whole blob into memory; `Ok(None)` when absent.
    pub(super) async fn read(&self, key: &BlobKey) -> std::io::Result<Option<Vec<u8>>> {
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

    #[tokio::test]
    async fn put_is_atomic_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::at(dir.path());
        store.create_root().await.unwrap();
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

    #[tokio::test]
    async fn get_streams_the_bytes_with_length_and_etag() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::at(dir.path());
        let key = BlobKey::parse("r/output.csv").unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        store.put(&key, b"a,b\n").await.unwrap();
        let blob = store.get(&key).await.unwrap().unwrap();
        assert_eq!(blob.len, 4);
        assert!(blob.etag.starts_with("\"4-"), "{}", blob.etag);
        assert_eq!(blob.into_bytes().await.unwrap(), b"a,b\n");
        // A directory is not a blob.
        assert!(
            store
                .get(&BlobKey::parse("r").unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }
}
