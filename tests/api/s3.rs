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

use crate::helpers::{ImageServer, TestServer, csv_rows};

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
    async fn start(bin: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("{MOTO_ENV}={bin}: cannot start: {e}"));
        let mut moto = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http.get(&moto.endpoint).send().await.is_ok() {
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

#[tokio::test]
async fn s3_storage_end_to_end() {
    let Some(bin) = std::env::var(MOTO_ENV).ok().filter(|s| !s.is_empty()) else {
        eprintln!("skipped: {MOTO_ENV} not set");
        return;
    };
    let moto = Moto::start(&bin).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let made = http
        .put(format!("{}/{BUCKET}", moto.endpoint))
        .send()
        .await
        .expect("create bucket");
    assert!(made.status().is_success(), "create bucket: {made:?}");

    let images = ImageServer::start().await;
    let storage_url = format!("s3://{BUCKET}/{PREFIX}");
    let app = TestServer::start(&[
        ("STORAGE_URL", storage_url.as_str()),
        ("S3_ENDPOINT", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ])
    .await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n\
         1,SKU1,{},{}\n\
         2,SKU2,{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_aitzgorri.jpg"),
        images.url("/img/c/small_lamp_portrait.jpg"),
    );
    let (code, body) = app.upload(csv.as_bytes(), &[]).await;
    assert_eq!(code, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_owned();
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
    let bucket = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
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
