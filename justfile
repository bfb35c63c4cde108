# Everyday recipes. `cargo install just` to get `just`; the README's two commands
# (`cargo run --release`, `cargo test`) never need it.

# Serve API + workers on SQLite and ./uploads (http://127.0.0.1:8080, Swagger UI at /docs).
serve:
    cargo run --release

# Every test (black-box ones start the real binary).
test:
    cargo test

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

# Codec speed: `pixbatch convert` on the corpus photos (../shared/corpus), one thread;
# the summary line gives MP/s per core and the bytes ratio.
bench:
    cargo build --release
    if [ -d ../shared/corpus ]; then ./target/release/pixbatch convert --threads 1 --out target/bench-out $(ls ../shared/corpus/*.jpg | grep -v '/var_') | tail -n 1; else echo "skipped: ../shared/corpus is absent"; fi

# Throughput: the same batch on serve/SQLite, api + 1 worker and api + 2 workers on
# PostgreSQL (needs a server, PG=postgres://… ; default 127.0.0.1:5432/test).
bench-scaleout:
    cargo build --release
    bash benches/scaleout.sh

# Everything CI runs.
ci:
    bash .ci/run
