//! Hostile images through the service: a CPU bomb and damaged data fail at once,
//! permanently, with their cause; the server stays healthy and stores nothing bad.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::{self, ImageServer, TestServer, files_under};

/// An imaging fixture.
fn fixture(name: &str) -> Vec<u8> {
    helpers::fixture("imaging", name)
}

#[path = "../support/scans.rs"]
mod scans;
use scans::repeat_last_scan;

#[tokio::test]
async fn cpu_bomb_and_corrupt_data_fail_at_once_and_the_server_stays_healthy() {
    let images = ImageServer::start().await;
    // progressive_420.jpg has libjpeg's 10 scans: 3010 with the copies.
    images.put(
        "bomb.jpg",
        repeat_last_scan(&fixture("progressive_420.jpg"), 3000),
    );
    // Cut two thirds in with an EOI glued on: libjpeg would make up the rest.
    let photo_bytes = fixture("photo_q85.jpg");
    let mut damaged = photo_bytes[..photo_bytes.len() * 2 / 3].to_vec();
    damaged.extend_from_slice(&[0xFF, 0xD9]);
    images.put("damaged.jpg", damaged);
    let app = TestServer::start(&[]).await;

    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,BOMB,{}\n2,DAMAGED,{}\n3,GOOD,{}\n",
        images.url("/blob/bomb.jpg"),
        images.url("/blob/damaged.jpg"),
        images.url("/img/a/small_picos.jpg"),
    );
    let started = Instant::now();
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors", "{status}");
    assert_eq!(status["progress"]["failed"], 2, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let imgs = app.images(&id).await;
    let by_product = |name: &str| {
        imgs.iter()
            .find(|i| i["product_name"] == name)
            .unwrap_or_else(|| panic!("{name} in {imgs:?}"))
            .clone()
    };
    let bomb = by_product("BOMB");
    assert_eq!(bomb["state"], "failed", "{bomb}");
    assert_eq!(bomb["attempts"], 1, "permanent, no retry: {bomb}");
    assert_eq!(bomb["error"], "too many scans (3010 > 100)", "{bomb}");
    assert_eq!(bomb["error_code"], "too_many_scans", "{bomb}");
    assert!(bomb["output_url"].is_null(), "{bomb}");
    let damaged = by_product("DAMAGED");
    assert_eq!(damaged["state"], "failed", "{damaged}");
    assert_eq!(damaged["attempts"], 1, "{damaged}");
    let error = damaged["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("corrupt image data: Corrupt JPEG data"),
        "{damaged}"
    );
    assert_eq!(damaged["error_code"], "undecodable", "{damaged}");
    let good = by_product("GOOD");
    assert_eq!(good["state"], "succeeded", "{good}");
    assert_eq!(
        (
            images.hits("/blob/bomb.jpg"),
            images.hits("/blob/damaged.jpg")
        ),
        (1, 1)
    );

    // Still healthy, and what it stored decodes without a warning.
    let (code, _) = app.get_json("/healthz").await;
    assert_eq!(code, 200);
    let stored: Vec<_> = files_under(&app.uploads())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    for path in stored {
        let bytes = std::fs::read(&path).expect("stored output");
        pixbatch::imaging::verify_jpeg(&bytes).expect("stored output decodes cleanly");
    }
}

#[test]
fn convert_fails_the_bomb_with_its_cause_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bomb = dir.path().join("bomb.jpg");
    std::fs::write(
        &bomb,
        repeat_last_scan(&fixture("progressive_420.jpg"), 3000),
    )
    .unwrap();
    let good = dir.path().join("good.jpg");
    std::fs::write(&good, fixture("photo_q85.jpg")).unwrap();
    let out_dir = dir.path().join("out");
    let run = |files: &[&Path]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
            .arg("convert")
            .arg("--out")
            .arg(&out_dir)
            .args(files)
            .env_clear()
            .output()
            .expect("convert ran")
    };
    let started = Instant::now();
    let out = run(&[&bomb]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("bomb.jpg\terror\ttoo many scans (3010 > 100)"),
        "{stdout}\n{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        files_under(&out_dir).is_empty(),
        "no output for a failed file"
    );

    // Past a higher limit, libjpeg stops at the first repeated refinement scan (its
    // progression is inconsistent: a warning, so damaged data); other files go on.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
        .args(["convert", "--max-scans", "100000", "--out"])
        .arg(&out_dir)
        .arg(&bomb)
        .arg(&good)
        .env_clear()
        .output()
        .expect("convert ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "bomb.jpg\terror\tcorrupt image data: \
             Inconsistent progression sequence for component 0 coefficient 1"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("good.jpg\tok"), "{stdout}");
    let written: Vec<_> = files_under(&out_dir);
    assert_eq!(written, [out_dir.join("good.jpg")], "only the good file");
}
