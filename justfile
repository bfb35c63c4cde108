# Everyday recipes. `cargo install just` to get `just`; the README's two commands
# (`cargo run --release`, `cargo test`) never need it.

# Serve API + workers on SQLite and ./uploads (http://127.0.0.1:8080, Swagger UI at /docs).
serve:
    cargo run --release

# Every test (black-box ones start the real binary).
test:
    cargo test

# Every test, the S3 one included (moto's S3 server from PyPI, in target/moto-venv).
test-s3:
    PIXBATCH_TEST_MOTO_SERVER=$(bash tests/s3/moto-venv.sh) cargo test

# Format check and clippy with warnings denied, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Regenerate the committed OpenAPI document and the Postman collection made from it.
openapi:
    cargo run --quiet -- openapi > openapi/openapi.json
    bash tests/contract/postman.sh

# Contract tests: a client generated from openapi/openapi.json does a round trip, and
# schemathesis finds no 5xx and no response off the schema (needs python3 and PyPI).
contract:
    cargo build
    bash tests/contract/run.sh

# Throughput: the same batch on serve/SQLite, api + 1 worker and api + 2 workers on
# PostgreSQL (needs a server, PG=postgres://… ; default 127.0.0.1:5432/test).
bench-scaleout:
    cargo build --release
    bash benches/scaleout.sh

# Everything CI runs.
ci:
    bash .ci/run

# Benchmarks (README, "End-to-end benchmark"): end to end on SQLite with the Python
# reference, then the PostgreSQL scale-out run; `just bench --quick` for a smoke run.
bench *ARGS: (bench-e2e ARGS) bench-scaleout

# The release binary on SQLite, a local image server, the upload sizes and the
# sequential Python reference (a throwaway venv with requests + Pillow from PyPI);
# prints a Markdown table and PASS/MISS per target, never failing on a MISS.
# End to end: images/s, MP/s, latency, RSS, CPU at 0 and 100 ms; uploads; the reference.
bench-e2e *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
        else
            echo "python3 with venv not found: the Python reference will be skipped" >&2
        fi
    fi
    cargo build --release
    cargo bench --bench e2e -- {{ARGS}}

# Imaging codec (issue 4): Pillow vs the general path vs the default (fast) path on the
# corpus photos, one thread, quality 50 (a throwaway venv with Pillow + numpy from PyPI).
bench-imaging:
    bash benches/imaging/run.sh
