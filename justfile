# Everyday recipes. `cargo install just` to get `just`; the README's two commands
# (`cargo run --release`, `cargo test`) never need it.

# Serve API + workers on SQLite and ./uploads (http://127.0.0.1:8080, Swagger UI at /docs).
serve:
    cargo run --release

# Every test (black-box ones start the real binary), four at a time as CI runs them:
# they mostly wait on the server they started.
test:
    RUST_TEST_THREADS=${RUST_TEST_THREADS:-4} cargo test

# Every test, the S3 one included (moto's S3 server from PyPI, in target/moto-venv).
test-s3:
    PIXBATCH_TEST_MOTO_SERVER=$(bash tests/s3/moto-venv.sh) cargo test

# Format check and clippy with warnings denied, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Fuzz the image transform in a release build for SECONDS (default 600), any number of
# cases; PIXBATCH_FUZZ_SEED picks another seed. Failing inputs land in
# tests/fixtures/imaging/fuzz/ (commit them: every test run replays them).
fuzz SECONDS="600":
    PIXBATCH_FUZZ_SECS={{SECONDS}} PIXBATCH_FUZZ_CASES=18446744073709551615 cargo test --release --test fuzz -- --nocapture fuzz_transform

# Regenerate the committed OpenAPI document (written whole or not at all: a failed
# build leaves the committed one) and the Postman collection made from it (needs
# Node.js and npm).
openapi:
    cargo run --quiet -- openapi > openapi/openapi.json.new
    mv openapi/openapi.json.new openapi/openapi.json
    bash tests/contract/postman.sh

# Contract tests: a client generated from openapi/openapi.json does a round trip, and
# schemathesis finds no 5xx and no response off the schema (needs python3 and PyPI).
contract:
    cargo build
    bash tests/contract/run.sh

# Everything CI runs, as CI runs it (CI=true: a PostgreSQL, S3 or browser test that
# cannot run fails instead of skipping).
ci:
    CI=true bash .ci/run

# Benchmarks (README, "End-to-end benchmark"); `just bench --quick` for a smoke run.
# Every benchmark builds as a machine with only the Rust toolchain and a C compiler
# would: benches/no-nasm hides a real nasm from mozjpeg-sys, in target/plain-libjpeg.
bench *ARGS: (bench-e2e ARGS)

# The release binary on SQLite, then as api + 1 and api + 2 workers on PostgreSQL
# (BENCH_POSTGRES_URL, default 127.0.0.1:5432/test; skipped when none answers), a local
# image server, the upload sizes and the sequential Python reference (a throwaway venv
# with requests + Pillow from PyPI); prints a Markdown table and PASS/MISS per target,
# never failing on a MISS. Installs python3-venv with apt when run as root and it is
# missing.
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
    export PATH="$PWD/benches/no-nasm:$PATH" CARGO_TARGET_DIR="$PWD/target/plain-libjpeg"
    cargo build --release
    cargo bench --bench e2e -- {{ARGS}}

# Imaging codec (issue 4): Pillow vs the general path vs the default (fast) path on the
# corpus photos, one thread, quality 50, then the other input classes (a throwaway venv
# with Pillow + numpy from PyPI).
bench-imaging:
    bash benches/imaging/run.sh

# Adaptive quality (issue 18): fixed q50 against `auto:T`, `auto:80` and a 150 KB cap on
# the corpus photos, one thread, each output scored by an SSIMULACRA2 the product does
# not use (rust-av's crate, built from benches/imaging/judge; Pillow decodes, in a
# throwaway venv); prints tables and PASS/MISS per target.
bench-quality:
    bash benches/imaging/quality.sh
