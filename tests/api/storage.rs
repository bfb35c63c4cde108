//! Storage faults through the binary: a full disk, a read-only store, a full database
//! disk. Each runs on a tmpfs of its own, mounted by the test (CI runs as root; without
//! the right to mount, the test says it is skipped, and fails under `CI=true`). Every
//! test ends by checking that every image counted as succeeded has a whole, decodable
//! JPEG under its key and that no staged file was left.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::helpers::{Backend, ImageServer, PHOTOS, TestServer, csv_rows, files_under, skip};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`); `None` (skipped) where mounting is
    /// not allowed.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                filler: dir.path().join("filler"),
                dir,
            }),
            Ok(o) => {
                skip(&format!(
                    "cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                None
            }
            Err(e) => {
                skip(&format!("cannot run mount: {e}"));
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,<opts>`: `ro`, `rw`, `size=…`.
    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opts}");
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Page-sized tail writes may still fit: fill them too.
        let _ = f.write_all(&[0u8; 4096]);
        let probe = self.path().join("probe");
        let full = std::fs::write(&probe, [0u8; 8192]).is_err();
        let _ = std::fs::remove_file(&probe);
        assert!(full, "the tmpfs is not full");
    }

    /// Fills the filesystem, then frees `bytes` of it: a disk with a few blocks left.
    fn leave(&self, bytes: u64) {
        self.fill();
        let filler = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.filler)
            .expect("filler");
        let len = filler.metadata().expect("filler size").len();
        filler.set_len(len - bytes).expect("shrink filler");
    }

    /// Frees the space the filler took.
    fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(self.path())
            .status();
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// `n` products with one image each, distinct URLs over the fixture photos.
fn catalogue(images: &ImageServer, n: usize) -> String {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        let photo = PHOTOS[i % PHOTOS.len()];
        csv.push_str(&format!(
            "{i},SKU{i},{}\n",
            images.url(&format!("/img/{i}/{photo}"))
        ));
    }
    csv
}

/// How many times the image server was asked for `img`'s input (a [`catalogue`] URL).
fn downloads(images: &ImageServer, img: &Value) -> u32 {
    let path = img["input_url"]
        .as_str()
        .unwrap()
        .split_once("/img/")
        .unwrap()
        .1;
    images.hits(&format!("/img/{path}"))
}

/// Polls the images until `pred` holds for them; panics with the logs after `timeout`.
async fn images_until(
    app: &TestServer,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let imgs = app.images(id).await;
        if pred(&imgs) {
            return imgs;
        }
        assert!(
            Instant::now() < deadline,
            "images never matched: {imgs:#?}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every succeeded image has its JPEG under `{store}/{id}/{row}-{position}.jpg`,
/// whole (the size the API reports, ends with EOI) and decodable; no staged file is
/// left; the output CSV lists them. Returns how many succeeded.
pub(crate) fn assert_outputs_valid(store: &Path, id: &str, imgs: &[Value]) -> usize {
    let files = files_under(&store.join(id));
    assert!(
        files.iter().all(|p| !crate::helpers::is_staged(p)),
        "{files:?}"
    );
    let mut ok = 0;
    for img in imgs.iter().filter(|i| i["state"] == "succeeded") {
        let name = format!(
            "{}-{}.jpg",
            img["row"],
            img["position"].as_u64().unwrap() - 1
        );
        let bytes = std::fs::read(store.join(id).join(&name))
            .unwrap_or_else(|e| panic!("{name}, counted as succeeded: {e}"));
        assert_valid_jpeg(&bytes, img);
        ok += 1;
    }
    ok
}

/// A stored output is whole and decodes.
pub(crate) fn assert_valid_jpeg(bytes: &[u8], img: &Value) {
    assert_eq!(
        bytes.len() as u64,
        img["output_bytes"].as_u64().unwrap(),
        "{img}"
    );
    assert!(bytes.starts_with(&[0xff, 0xd8]) && bytes.ends_with(&[0xff, 0xd9]));
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("stored output does not decode: {e}: {img}"));
}

/// A server on `backend` whose blob store is on a tmpfs of its own, with
/// `FETCH_ATTEMPTS=attempts`, and an image server; `None` when skipped.
async fn store_on_tmpfs(
    backend: Backend,
    attempts: &str,
) -> Option<(Tmpfs, ImageServer, PathBuf, TestServer)> {
    let fs = Tmpfs::mount("16m")?;
    let images = ImageServer::start().await;
    let store = fs.path().join("uploads");
    let storage_url = format!("file://{}", store.display());
    let app = TestServer::start_on(
        backend,
        &[
            ("STORAGE_URL", storage_url.as_str()),
            ("FETCH_ATTEMPTS", attempts),
        ],
    )
    .await?;
    Some((fs, images, store, app))
}

/// The full-disk story: an upload whose CSV cannot be stored answers 503 and stores
/// nothing; images whose outputs cannot be stored are retried (no success recorded),
/// `/readyz` says why, the metric counts it, the log says it once; once space is
/// freed the pending retries finish the request with every output whole.
async fn full_disk_store(backend: Backend) {
    let Some((fs, images, store, app)) = store_on_tmpfs(backend, "2").await else {
        return;
    };
    assert_eq!(app.readyz().await.0, 200);

    // 1. Full before the upload: 503, nothing stored.
    fs.fill();
    let csv = catalogue(&images, 4);
    let (code, body) = app.upload(csv.as_bytes(), &[]).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["type"], "urn:pixbatch:problem:storage-unavailable");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{body}"
    );
    let dirs: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(dirs.is_empty(), "a failed upload left {dirs:?}");
    let (code, why) = app.readyz().await;
    assert_eq!(code, 503);
    assert!(why.contains("no space left on device"), "{why}");

    // 2. Space for the CSV, then full again while the images download.
    fs.free();
    images.set_latency(Duration::from_millis(1500));
    let id = app.accepted(csv.as_bytes(), &[]).await;
    fs.fill();
    images.set_latency(Duration::ZERO);
    // Refused past the budget of 2 tries (`FETCH_ATTEMPTS`): still pending.
    let imgs = images_until(&app, &id, Duration::from_secs(60), |imgs| {
        imgs.iter()
            .filter(|i| i["error"] == "storage: no space left on device")
            .count()
            >= 2
            && imgs.iter().any(|i| i["attempts"].as_i64().unwrap() >= 3)
    })
    .await;
    assert!(
        imgs.iter().all(|i| i["state"] == "pending"),
        "nothing may count as stored: {imgs:#?}"
    );
    // A try while the store refuses writes does no work: no download to throw away.
    for img in imgs.iter().filter(|i| i["attempts"].as_i64().unwrap() >= 3) {
        let hits = downloads(&images, img);
        assert!(
            hits <= 2,
            "{hits} downloads in {} tries: {img}",
            img["attempts"]
        );
    }
    let (_, status) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(status["status"], "Processing", "{status}");
    let (code, why) = app.readyz().await;
    assert_eq!(code, 503);
    assert_eq!(
        why,
        "blob store not writable: storage: no space left on device"
    );
    let (_, _, metrics) = app.get_bytes(&format!("{}/metrics", app.base)).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pixbatch_storage_errors_total{")
                && l.contains("kind=\"no_space\"")
                && l.contains("op=\"put\"")),
        "{metrics}"
    );
    // Two bursts so far (before the first upload, and now), each logged once.
    let logs = app.logs();
    assert_eq!(
        logs.matches("blob store writes are failing").count(),
        2,
        "logged once per burst:\n{logs}"
    );
    assert_eq!(
        logs.matches("blob store writable again").count(),
        1,
        "{logs}"
    );

    // 3. Space freed: the pending retries finish the request.
    fs.free();
    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    let imgs = app.images(&id).await;
    assert_eq!(assert_outputs_valid(&store, &id, &imgs), 4);
    assert!(imgs.iter().any(|i| i["attempts"].as_i64().unwrap() > 1));
    let out = std::fs::read(store.join(&id).join("output.csv")).expect("output.csv");
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 5);
    assert!(rows[1..].iter().all(|r| r[3].ends_with(".jpg")), "{rows:?}");
    assert_eq!(app.logs().matches("blob store writable again").count(), 2);
    assert_eq!(app.readyz().await.0, 200);
}

/// A read-only store: image tries fail with `storage: read-only file system` and are
/// retried past `FETCH_ATTEMPTS` (the store is the service's, not the image's fault),
/// staying `pending`; a request whose images all failed for their own reason cannot
/// store its output CSV, so it stays unfinished and its completion is retried. Once
/// writable, both finish on their own: the first `Completed` with every output whole,
/// the second `Failed` with its CSV.
async fn read_only_store(backend: Backend) {
    let Some((fs, images, store, app)) = store_on_tmpfs(backend, "2").await else {
        return;
    };
    images.set_latency(Duration::from_millis(1500));
    let id = app.accepted(catalogue(&images, 3).as_bytes(), &[]).await;
    let broken = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/missing/1.jpg")
    );
    let failing = app.accepted(broken.as_bytes(), &[]).await;
    // Every first try under way (the store took the two CSVs just now) before the
    // remount: each download lands after it. A try that starts once the store is
    // known to refuse writes waits for it without downloading, so the 404 must be
    // under way for its request to finish while the store is read-only.
    let deadline = Instant::now() + Duration::from_secs(30);
    while images.hits("/missing/1.jpg") == 0 || images.total_hits() < 4 {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fs.remount("ro");
    images.set_latency(Duration::ZERO);
    // Past the budget of 2 tries, still pending, still retried.
    let imgs = images_until(&app, &id, Duration::from_secs(60), |imgs| {
        imgs.iter()
            .all(|i| i["attempts"].as_i64().unwrap() >= 3 || i["state"] != "pending")
    })
    .await;
    for img in &imgs {
        assert_eq!(img["state"], "pending", "{img}");
        assert_eq!(img["error"], "storage: read-only file system", "{img}");
        assert_eq!(img["error_code"], "storage_unavailable", "{img}");
    }
    let (_, status) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(status["status"], "Processing", "{status}");
    // The completion of the request that failed cannot store its output CSV: not
    // final, retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.logs().contains("could not store the output CSV") {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, status) = app.get_json(&format!("/status/{failing}")).await;
    assert_eq!(status["status"], "Processing", "{status}");
    assert_eq!(status["progress"]["failed"], 1, "{status}");
    let (code, why) = app.readyz().await;
    assert_eq!(code, 503);
    assert!(why.ends_with("storage: read-only file system"), "{why}");

    fs.remount("rw");
    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    assert_eq!(status["progress"]["succeeded"], 3, "{status}");
    let imgs = app.images(&id).await;
    assert_eq!(assert_outputs_valid(&store, &id, &imgs), 3);
    let status = app.wait_final(&failing, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Failed", "{status}");
    assert!(store.join(&failing).join("output.csv").exists());
    assert_eq!(app.readyz().await.0, 200);
}

crate::on_both_backends!(full_disk_store, read_only_store);

/// A disk with a few blocks left: `/readyz`'s tiny probe fits, no output does. Each
/// output's write is refused as any would be, so the images wait for space past their
/// budget of 2 tries (`FETCH_ATTEMPTS`), downloading again whenever the probe lets a
/// try through, instead of failing for good; once space is freed they finish. Before,
/// each refused write spent a try and the request finished with every image failed.
#[tokio::test]
async fn nearly_full_disk_store() {
    // Two pages: room for the probe and its staged successor, not for any output
    // (each is over 10 KB).
    const LEFT: u64 = 8192;
    let Some((fs, images, store, app)) = store_on_tmpfs(Backend::Sqlite, "2").await else {
        return;
    };
    // The first downloads land after the disk is filled.
    images.set_latency(Duration::from_millis(1500));
    let id = app.accepted(catalogue(&images, 3).as_bytes(), &[]).await;
    fs.leave(LEFT);
    images.set_latency(Duration::ZERO);
    let imgs = images_until(&app, &id, Duration::from_secs(90), |imgs| {
        // A third download of an image means two writes of it were refused: its
        // budget, had they counted.
        imgs.iter().any(|i| i["state"] != "pending")
            || imgs.iter().any(|i| downloads(&images, i) >= 3)
    })
    .await;
    for img in &imgs {
        assert_eq!(img["state"], "pending", "{img}\n{}", app.logs());
        assert_eq!(img["error"], "storage: no space left on device", "{img}");
    }
    let (_, status) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(status["status"], "Processing", "{status}");

    fs.free();
    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    let imgs = app.images(&id).await;
    assert_eq!(assert_outputs_valid(&store, &id, &imgs), 3);
    // The premise: no output would have fit in what was left.
    for img in &imgs {
        assert!(img["output_bytes"].as_u64().unwrap() > LEFT, "{img}");
    }
}

/// The database's disk is full (SQLite on a full tmpfs): an upload answers 503
/// problem+json and leaves nothing behind (no request, no stored CSV); once space is
/// freed, uploads work again and finish.
#[tokio::test]
async fn full_database_disk() {
    let Some(fs) = Tmpfs::mount("32m") else {
        return;
    };
    let images = ImageServer::start().await;
    let database_url = format!("sqlite://{}/pixbatch.db", fs.path().display());
    let app = TestServer::start(&[("DATABASE_URL", database_url.as_str())]).await;
    let store = app.uploads();

    fs.fill();
    // Large enough that its rows cannot fit in what the WAL already holds.
    let big = catalogue(&images, 5000);
    let (code, body) = app.upload(big.as_bytes(), &[]).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["type"], "urn:pixbatch:problem:unavailable", "{body}");
    let left: Vec<_> = files_under(&store)
        .into_iter()
        .filter(|p| !p.ends_with(".pixbatch-probe"))
        .collect();
    assert!(left.is_empty(), "a failed upload left {left:?}");
    let (code, _) = app.get_json("/healthz").await;
    assert_eq!(code, 200);

    fs.free();
    let (code, body) = app.upload(catalogue(&images, 3).as_bytes(), &[]).await;
    assert_eq!(code, 202, "{body}\n{}", app.logs());
    let id = body["request_id"].as_str().unwrap().to_owned();
    let status = app
        .wait_final_through_outages(&id, Duration::from_secs(90))
        .await;
    assert_eq!(status["status"], "Completed", "{status}");
    let imgs = app.images(&id).await;
    assert_eq!(assert_outputs_valid(&store, &id, &imgs), 3);
    let dirs = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(dirs, 1, "only the accepted upload is stored");
}

/// Files the store cannot write (folders in their places: request A's image, then its
/// output CSV, whose completion keeps failing) fail A alone: request B's image is
/// tried at once. A failed write was taken as the whole store refusing for 5 s, so
/// every image try of the process in that time was put off (`storage: I/O error`, a
/// second attempt) and `/readyz` answered 503.
#[tokio::test]
async fn one_unwritable_file_is_not_the_store_refusing() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(1500));
    let app = TestServer::start(&[("FETCH_ATTEMPTS", "1")]).await;
    let csv = |path: &str| {
        format!(
            "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
            images.url(path)
        )
    };
    let first = app
        .accepted(csv("/img/a/small_picos.jpg").as_bytes(), &[])
        .await;
    for name in ["0-0.jpg", "output.csv"] {
        std::fs::create_dir_all(app.uploads().join(&first).join(name).join("in-the-way")).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.logs().contains("could not store the output CSV") {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = &app.images(&first).await[0];
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("storage"),
        "{failed}"
    );

    images.set_latency(Duration::ZERO);
    let (code, ready) = app.readyz().await;
    assert_eq!(code, 200, "{ready}");
    let second = app
        .accepted(csv("/img/b/small_aitzgorri.jpg").as_bytes(), &[])
        .await;
    let status = app.wait_final(&second, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    let image = &app.images(&second).await[0];
    assert_eq!(image["attempts"], 1, "{image}");
}
