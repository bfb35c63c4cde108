//! `STORAGE_URL=s3://…` end to end against moto's S3 server, started here on a free
//! port of 127.0.0.1 from the `moto_server` named by `PIXBATCH_TEST_MOTO_SERVER`
//! (`.ci/run` installs a pinned one into `target/moto-venv`). Without that variable
//! the test says it is skipped and passes.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use object_store::{ObjectStoreExt, aws::AmazonS3Builder, path::Path};

use crate::helpers::{Backend, ImageServer, TestServer, csv_rows, run_to_exit};

const MOTO_ENV: &str = "PIXBATCH_TEST_MOTO_SERVER";
const BUCKET: &str = "pixbatch-test";
const PREFIX: &str = "tenant-a/outputs";

/// A moto S3 server, stopped on drop.
struct Moto {
    endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto on a port of its choosing (`-p 0`) and reads the port from its
    /// "Running on http://…" line.
    async fn start(bin: &str) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("{MOTO_ENV}={bin}: cannot start: {e}"));
        let mut moto = Self {
            endpoint: String::new(),
            child,
            log,
        };
        pixbatch::tls::use_ring();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.endpoint.is_empty()
                && let Some(addr) = moto.logs().lines().find_map(|l| {
                    let rest = l.split_once("Running on http://")?.1;
                    rest.trim().parse::<std::net::SocketAddr>().ok()
                })
            {
                moto.endpoint = format!("http://{addr}");
            }
            if !moto.endpoint.is_empty() && http.get(&moto.endpoint).send().await.is_ok() {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", moto.logs());
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer:\n{}",
                moto.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The server named by `PIXBATCH_TEST_MOTO_SERVER`, started, with the test bucket
    /// made, and a plain client; `None` (skipped) without the variable.
    async fn with_bucket() -> Option<(Self, reqwest::Client)> {
        let Some(bin) = std::env::var(MOTO_ENV).ok().filter(|s| !s.is_empty()) else {
            crate::helpers::skip(&format!("{MOTO_ENV} not set"));
            return None;
        };
        let moto = Self::start(&bin).await;
        pixbatch::tls::use_ring();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        moto.create_bucket(&http).await;
        Some((moto, http))
    }

    /// Creates the test bucket.
    async fn create_bucket(&self, http: &reqwest::Client) {
        let made = http
            .put(format!("{}/{BUCKET}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(made.status().is_success(), "create bucket: {made:?}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys under `prefix/`, listed with a plain unsigned ListObjectsV2 call.
async fn list_keys(http: &reqwest::Client, endpoint: &str, prefix: &str) -> BTreeSet<String> {
    let xml = http
        .get(format!("{endpoint}/{BUCKET}?list-type=2&prefix={prefix}/"))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("list body");
    assert!(!xml.contains("<IsTruncated>true"), "{xml}");
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect()
}

/// A client of the test's own for the bucket.
fn bucket(endpoint: &str) -> object_store::aws::AmazonS3 {
    pixbatch::tls::use_ring();
    AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

/// `pixbatch serve` storing in moto's bucket under [`PREFIX`], with `extra` variables.
async fn serve_on_bucket(moto: &Moto, extra: &[(&str, &str)]) -> TestServer {
    let storage_url = format!("s3://{BUCKET}/{PREFIX}");
    let mut env = vec![
        ("STORAGE_URL", storage_url.as_str()),
        ("S3_ENDPOINT", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    env.extend_from_slice(extra);
    TestServer::start(&env).await
}

#[tokio::test]
async fn s3_storage_end_to_end() {
    let Some((moto, http)) = Moto::with_bucket().await else {
        return;
    };

    let images = ImageServer::start().await;
    let app = serve_on_bucket(&moto, &[]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n\
         1,SKU1,{},{}\n\
         2,SKU2,{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_aitzgorri.jpg"),
        images.url("/img/c/small_lamp_portrait.jpg"),
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());

    // Everything is in the bucket under the prefix, and nothing went to local disk.
    let keys = list_keys(&http, &moto.endpoint, PREFIX).await;
    let expected: BTreeSet<String> = ["input.csv", "output.csv", "0-0.jpg", "0-1.jpg", "1-0.jpg"]
        .iter()
        .map(|name| format!("{PREFIX}/{id}/{name}"))
        .collect();
    assert_eq!(keys, expected);
    assert!(!app.uploads().exists(), "a local store was created");

    // What /files serves is what the bucket holds, read with a client of its own.
    let bucket = bucket(&moto.endpoint);
    let object = |name: &str| {
        let path = Path::from(format!("{PREFIX}/{id}/{name}"));
        let bucket = &bucket;
        async move {
            bucket
                .get(&path)
                .await
                .expect("object")
                .bytes()
                .await
                .unwrap()
                .to_vec()
        }
    };
    assert_eq!(object("input.csv").await, csv.as_bytes());

    let out_url = status["output_csv"].as_str().unwrap().to_owned();
    assert_eq!(out_url, format!("{}/files/{id}/output.csv", app.base));
    let (code, ct, out) = app.get_bytes(&out_url).await;
    assert_eq!(code, 200);
    assert_eq!(ct, "text/csv; charset=utf-8");
    assert_eq!(out, object("output.csv").await);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].last().unwrap(), "Output Image Urls");
    let (code, _, again) = app
        .get_bytes(&format!("{}/requests/{id}/output.csv", app.base))
        .await;
    assert_eq!(code, 200);
    assert_eq!(again, out);

    let mut served = 0;
    for (row, cells) in rows[1..].iter().enumerate() {
        for (pos, url) in cells[3].split(',').enumerate() {
            let name = format!("{row}-{pos}.jpg");
            assert_eq!(url, format!("{}/files/{id}/{name}", app.base));
            let resp = app.http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let headers = resp.headers().clone();
            assert_eq!(headers["content-type"], "image/jpeg");
            assert!(
                headers["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
            let bytes = resp.bytes().await.unwrap().to_vec();
            assert_eq!(
                headers["content-length"].to_str().unwrap(),
                bytes.len().to_string()
            );
            assert_eq!(
                pixbatch::imaging::sniff(&bytes),
                Some(pixbatch::imaging::Format::Jpeg)
            );
            assert_eq!(bytes, object(&name).await, "{name}");
            // Revalidation with the ETag.
            let etag = headers["etag"].to_str().unwrap().to_owned();
            let again = app
                .http
                .get(url)
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304);
            assert_eq!(again.headers()["cache-control"], headers["cache-control"]);
            served += 1;
        }
    }
    assert_eq!(served, 3);

    // Unknown names are 404s, as with the local store.
    for path in [
        format!("/files/{id}/9-9.jpg"),
        "/files/00000000-0000-0000-0000-000000000000/output.csv".to_owned(),
    ] {
        let (code, _, _) = app.get_bytes(&format!("{}{path}", app.base)).await;
        assert_eq!(code, 404, "{path}");
    }
    drop(moto);
}

/// A TCP forwarder in front of moto that can be taken down (every connection refused
/// at once, every open one cut) and brought back: an S3 endpoint that stops answering
/// mid-run and returns.
struct Outage {
    endpoint: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Outage {
    async fn start(target: &str) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { endpoint, up, open }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The S3 endpoint goes away mid-run: PUTs fail and are retried, nothing is recorded
/// as stored, `/readyz` of the process that writes says why; once it is back the
/// request completes and every image counted as succeeded is in the bucket, whole.
/// On PostgreSQL with an `api` and a separate `worker` process.
async fn s3_outage_mid_run(backend: Backend) {
    let Some((moto, http)) = Moto::with_bucket().await else {
        return;
    };
    let outage = Outage::start(&moto.endpoint).await;

    let images = ImageServer::start().await;
    let storage_url = format!("s3://{BUCKET}/{PREFIX}");
    let env = [
        ("STORAGE_URL", storage_url.as_str()),
        ("S3_ENDPOINT", outage.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("FETCH_ATTEMPTS", "50"),
    ];
    let (app, worker) = match backend {
        Backend::Sqlite => (TestServer::start(&env).await, None),
        Backend::Postgres => {
            let Some(api) = TestServer::start_cmd("api", backend, &env).await else {
                return;
            };
            let worker = api.join("worker", &env).await;
            (api, Some(worker))
        }
    };
    let writer = worker.as_ref().unwrap_or(&app);

    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..6 {
        let photo = crate::helpers::PHOTOS[i % 3];
        csv.push_str(&format!(
            "{i},SKU{i},{}\n",
            images.url(&format!("/img/{i}/{photo}"))
        ));
    }
    images.set_latency(Duration::from_millis(1500));
    let id = app.accepted(csv.as_bytes(), &[]).await;
    outage.down();
    images.set_latency(Duration::ZERO);

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let imgs = app.images(&id).await;
        let failing = imgs
            .iter()
            .filter(|i| {
                // The kind only: the S3 error's own text (endpoint, bucket, key) is
                // for the log.
                i["error"] == "storage: the S3 endpoint failed"
            })
            .count();
        if failing >= 2 {
            assert!(
                imgs.iter().all(|i| i["state"] == "pending"),
                "nothing may count as stored while S3 is down: {imgs:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{imgs:#?}\n{}", writer.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, ready) = writer.get_json("/readyz").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(
        ready["status"], "blob store not writable: storage: the S3 endpoint failed",
        "{ready}"
    );

    outage.restore();
    let status = app.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", writer.logs());
    let keys = list_keys(&http, &moto.endpoint, PREFIX).await;
    let imgs = app.images(&id).await;
    assert_eq!(imgs.len(), 6);
    for img in &imgs {
        assert_eq!(img["state"], "succeeded", "{img}");
        let name = format!(
            "{}-{}.jpg",
            img["row"],
            img["position"].as_u64().unwrap() - 1
        );
        let key = format!("{PREFIX}/{id}/{name}");
        assert!(
            keys.contains(&key),
            "{key} counted as stored, not in the bucket: {keys:?}"
        );
        let bytes = bucket(&moto.endpoint)
            .get(&Path::from(key))
            .await
            .expect("object")
            .bytes()
            .await
            .unwrap();
        crate::storage::assert_valid_jpeg(&bytes, img);
    }
    assert!(keys.contains(&format!("{PREFIX}/{id}/output.csv")));
    assert_eq!(writer.get_json("/readyz").await.0, 200);
}

crate::on_both_backends!(s3_outage_mid_run);

/// Reuse on S3: the second upload's images are server-side copies of the first's
/// outputs (conditional GETs, all `304`), under the second request's own keys.
#[tokio::test]
async fn s3_reuse_copies_in_the_bucket() {
    let Some((moto, http)) = Moto::with_bucket().await else {
        return;
    };
    let images = ImageServer::start().await;
    let app = serve_on_bucket(&moto, &[]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{},{}\n2,SKU2,{}\n",
        images.url("/etag/s1/small_picos.jpg"),
        images.url("/etag/s2/small_aitzgorri.jpg"),
        images.url("/etag/s3/small_lamp_portrait.jpg"),
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = app.accepted(csv.as_bytes(), &[]).await;
        let status = app.wait_final(&id, Duration::from_secs(60)).await;
        assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
        ids.push(id);
    }
    let (first, second) = (&ids[0], &ids[1]);
    assert_eq!(images.plain_hits(), 3);
    assert_eq!((images.conditional_hits(), images.not_modified()), (3, 3));
    let bucket = bucket(&moto.endpoint);
    for img in app.images(second).await {
        assert_eq!(img["reused"], true, "{img}");
        assert_eq!(img["reused_from"], first.as_str(), "{img}");
        let url = img["output_url"].as_str().unwrap();
        let name = url.rsplit('/').next().unwrap().to_owned();
        let mut bytes = Vec::new();
        for id in [first, second] {
            let path = Path::from(format!("{PREFIX}/{id}/{name}"));
            let object = bucket.get(&path).await.expect("object in the bucket");
            bytes.push(object.bytes().await.unwrap().to_vec());
        }
        assert_eq!(bytes[0], bytes[1], "{name}: the copy differs");
        let (code, _, served) = app.get_bytes(url).await;
        assert_eq!(code, 200);
        assert!(served == bytes[1], "{url}: not what the bucket holds");
    }
    let keys = list_keys(&http, &moto.endpoint, &format!("{PREFIX}/{second}")).await;
    assert_eq!(keys.len(), 5, "{keys:?}");
}

/// `S3_ENDPOINT` is the one endpoint: an AWS CLI variable beside it (`AWS_ENDPOINT_URL_S3`,
/// which object_store ranks first) does not send the blobs elsewhere, and one without
/// it stops the start with a reason instead of failing every write.
#[tokio::test]
async fn s3_endpoint_is_the_one_endpoint() {
    let Some((moto, _http)) = Moto::with_bucket().await else {
        return;
    };
    let images = ImageServer::start().await;
    let app = serve_on_bucket(&moto, &[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");

    let dir = tempfile::tempdir().unwrap();
    let storage = format!("s3://{BUCKET}/{PREFIX}");
    let out = run_to_exit(
        dir.path(),
        "serve",
        &[
            ("STORAGE_URL", &storage),
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("BIND", "127.0.0.1:0"),
            ("BOARD_BIND", "off"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("AWS_ENDPOINT_URL is set but S3_ENDPOINT is not"),
        "{stderr}"
    );
}

/// An empty AWS variable is unset, as pixbatch's own settings are (a Compose file's
/// `AWS_ACCESS_KEY_ID: ${AWS_ACCESS_KEY_ID}` passes an empty one when the host has
/// none): the start stopped on an empty key id (a secret key missing) and on an empty
/// `AWS_ENDPOINT_URL` (taken as an endpoint set beside no `S3_ENDPOINT`). `migrate`
/// opens the storage as `serve` does, and sends nothing to it.
#[tokio::test]
async fn empty_aws_variables_are_unset() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("s3://{BUCKET}/{PREFIX}");
    for empty in ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_REGION"] {
        let out = run_to_exit(
            dir.path(),
            "migrate",
            &[("STORAGE_URL", &storage), (empty, "")],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{empty}: {stderr}");
    }
}

/// A key id and region read from files keep their last newline (a Kubernetes secret
/// made `--from-file`): trimmed, as the secret key is. Each went into every request's
/// signature header as it was, and every S3 call panicked on it (`/readyz` gave an
/// empty reply, no image was stored).
#[tokio::test]
async fn a_key_id_and_region_with_a_newline_still_sign() {
    let Some((moto, _http)) = Moto::with_bucket().await else {
        return;
    };
    let images = ImageServer::start().await;
    let app = serve_on_bucket(
        &moto,
        &[
            ("AWS_ACCESS_KEY_ID", "testing\n"),
            ("AWS_REGION", "us-east-1\n"),
            ("AWS_SESSION_TOKEN", "session\n"),
        ],
    )
    .await;
    let (code, ready) = app.readyz().await;
    assert_eq!(code, 200, "{ready}\n{}", app.logs());
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
}

/// Settings refused at start say why, and never echo a secret: credentials in
/// `S3_ENDPOINT` (a password alone was let through), an in-memory SQLite database
/// (its two pools were two databases, the readers' without tables).
#[tokio::test]
async fn refused_storage_settings_say_why_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = format!("s3://{BUCKET}/{PREFIX}");
    for (vars, named) in [
        (
            vec![
                ("STORAGE_URL", s3.as_str()),
                ("S3_ENDPOINT", "http://:s3cr3t@127.0.0.1:9"),
            ],
            "S3_ENDPOINT",
        ),
        (
            vec![
                ("STORAGE_URL", s3.as_str()),
                ("S3_ENDPOINT", "http://AKID:s3cr3t@127.0.0.1:9"),
            ],
            "S3_ENDPOINT",
        ),
        (vec![("DATABASE_URL", "sqlite::memory:")], "DATABASE_URL"),
        (
            vec![("DATABASE_URL", "sqlite://p.db?mode=memory")],
            "DATABASE_URL",
        ),
    ] {
        let out = run_to_exit(dir.path(), "migrate", &vars).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{vars:?}: {stderr}");
        assert!(stderr.contains(named), "{vars:?}: {stderr}");
        assert!(!stderr.contains("s3cr3t"), "{vars:?}: {stderr}");
    }
}
