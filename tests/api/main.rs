//! Black-box tests: the real binary, real HTTP, a real SQLite file or PostgreSQL
//! database, and real photos
//! served from 127.0.0.1. One test binary, so it links once.

mod board;
mod durability;
mod helpers;
mod hostile;
mod observability;
mod pipeline;
mod plans;
mod quality;
mod reuse;
mod s3;
mod scaleout;
mod security;
mod ssrf;
mod storage;
mod store;
mod validation;
mod webhooks;

/// The committed OpenAPI document matches what the code generates (regenerate with
/// `cargo run -- openapi > openapi/openapi.json`, or `just openapi`).
#[tokio::test]
async fn openapi_document_has_not_drifted() {
    let generated = pixbatch::api::openapi_document().expect("generate");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json`"
    );
}
