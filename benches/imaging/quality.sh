#!/usr/bin/env bash
# Adaptive quality benchmark (issue 18): `pixbatch convert --threads 1` on the corpus'
# photographic JPEGs with fixed quality 50, `auto:T` (T = the median SSIMULACRA2 of
# q50), the smallest fixed quality that gets every photo to T − 1, `auto:80` and
# `--max-bytes 150000`. Every output is scored by an SSIMULACRA2 implementation the
# product does not use (PyPI `ssimulacra2`); prints Markdown tables and PASS/MISS.
#
# Usage: benches/imaging/quality.sh   (or `just bench-quality`)
# Env: BENCH_CORPUS (default ../shared/corpus from the repo root), BENCH_PYTHON (a
# python3 that already has the packages of quality-requirements.txt), PIXBATCH_BIN
# (skips the build), BENCH_JOBS (parallel scorings, default 1). Scoring in numpy takes
# a few seconds per photo: a whole run is 15–30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benches/imaging

corpus=${BENCH_CORPUS:-../shared/corpus}
if [ ! -d "$corpus" ]; then
    echo "quality bench: no corpus at $corpus (set BENCH_CORPUS); nothing to measure."
    exit 0
fi
photos=()
for f in "$corpus"/*.jpg; do
    case "$(basename "$f")" in var_*) ;; *) [ -e "$f" ] && photos+=("$f") ;; esac
done
if [ ${#photos[@]} -eq 0 ]; then
    echo "quality bench: no photographic JPEGs in $corpus; nothing to measure."
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${PIXBATCH_BIN:-}" ]; then
    cargo build --release --quiet
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    PIXBATCH_BIN=$target_dir/release/pixbatch
fi

if [ -n "${BENCH_PYTHON:-}" ]; then
    python=$BENCH_PYTHON
else
    echo "quality bench: installing ssimulacra2, Pillow, numpy and scipy into a throwaway venv..."
    if ! python3 -m venv "$work/venv" > /dev/null 2>&1; then
        echo "quality bench: python3 with venv is needed for the independent scorer" \
            "(apt-get install python3-venv, or set BENCH_PYTHON); nothing measured."
        exit 0
    fi
    "$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/quality-requirements.txt"
    python=$work/venv/bin/python
fi

echo "quality bench: ${#photos[@]} photos, one thread; machine: $(nproc) cores, $(uname -m), $(date +%F)"
echo "codec: $("$PIXBATCH_BIN" --version)"
"$python" "$here/quality.py" "$PIXBATCH_BIN" "$work/out" "${photos[@]}"
