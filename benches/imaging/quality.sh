#!/usr/bin/env bash
# Adaptive quality benchmark (issue 18): `pixbatch convert --threads 1` on the corpus'
# photographic JPEGs with fixed quality 50, `auto:T` (T = the median SSIMULACRA2 of
# q50), the smallest fixed quality that gets every photo to T − 1, `auto:80` and
# `--max-bytes 150000`. Every output is scored by the judge, an SSIMULACRA2
# implementation the product does not use (rust-av's `ssimulacra2` crate, built here
# from benches/imaging/judge), on Pillow's decode; prints Markdown tables and PASS/MISS.
#
# Usage: benches/imaging/quality.sh   (or `just bench-quality`)
# Env: BENCH_CORPUS (default ../shared/corpus from the repo root), BENCH_PYTHON (a
# python3 that already has the packages of quality-requirements.txt), PIXBATCH_BIN
# (skips the product's build), BENCH_JOBS (parallel scorings, default 1). A whole run
# is 10–20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benches/imaging

bench="quality bench"
requirements=$here/quality-requirements.txt
# shellcheck source=benches/imaging/common.sh
source "$here/common.sh"

judge_dir=${CARGO_TARGET_DIR:-target}/quality-judge
cargo build --release --quiet --locked --manifest-path "$here/judge/Cargo.toml" --target-dir "$judge_dir"
judge=$judge_dir/release/pixbatch-quality-judge

echo "quality bench: ${#photos[@]} photos, one thread; machine: $(nproc) cores, $(uname -m), $(date +%F)"
echo "codec: $("$PIXBATCH_BIN" --version)"
"$python" "$here/quality.py" "$PIXBATCH_BIN" "$judge" "$work/out" "${photos[@]}"
