//! pixbatch: a CSV of product image URLs in; re-encoded JPEGs, the same CSV with an
//! `Output Image Urls` column, and a signed webhook out.
//!
//! Layout, from the edge inwards:
//! - [`config`]: every option as a flag and an env var, validated once; secrets are
//!   redacted in `Debug`.
//! - [`api`]: the HTTP surface (poem-openapi); `api::error` maps every error to problem+json.
//! - [`board`]: the worker monitoring dashboard (apalis-board) over the three job
//!   queues, on its own listener.
//! - [`cli`]: the client-side commands (`submit`, `convert`).
//! - [`csv`]: parses uploads into typed rows (every problem listed) and writes the output CSV.
//! - [`lifecycle`]: every change of a request's state (accept, retry, cancel,
//!   redeliver, an image's outcome, completing a run, a delivery try), each owning its
//!   transaction and the jobs it pushes; `api` and `jobs` call it and nothing else does.
//! - [`jobs`]: the apalis workers: per-image, completion and webhook-delivery
//!   handlers, adapters that do the slow part and hand the result to `lifecycle`.
//! - [`fetch`]: the one outbound HTTP client, with the address guard inside it.
//! - [`imaging`]: the pure, synchronous image transform.
//! - [`webhook`]: Standard Webhooks payload and signatures.
//! - [`store`]: all SQL and the blob store.
//! - [`domain`]: typed identifiers, states and a request's image counts (`Progress`),
//!   shared by the modules above.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`tls`]: the crypto provider every HTTP client's TLS uses.
//! - [`app`]: wires everything together and runs it.
//!
//! `unsafe` code is denied everywhere but in `imaging::libjpeg`, the safe wrapper
//! around libjpeg's C API, and `imaging::kernels::dispatch`, which calls a SIMD
//! kernel only on a CPU that was found to have its instructions.

#![deny(unsafe_code)]

pub mod api;
pub mod app;
pub mod board;
pub mod cli;
pub mod config;
pub mod csv;
pub mod domain;
pub mod fetch;
pub mod imaging;
pub mod jobs;
pub mod lifecycle;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhook;
