#!/usr/bin/env bash
# End-to-end throughput, images/s, of the same batch on three set-ups, one after the
# other on this machine: `pixbatch serve` on SQLite; `pixbatch api` + 1 `pixbatch
# worker` on PostgreSQL; `api` + 2 workers on PostgreSQL. The images are the fixture
# photos under N distinct URLs, served from 127.0.0.1 by python3's http.server.
#
#   cargo build --release
#   PG=postgres://postgres@127.0.0.1:5432/test N=300 bash benches/scaleout.sh
#
# Time is from the upload's answer to the request's final status (polled every 100 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/pixbatch}
N=${N:-300}
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# N distinct URLs over the three fixture photos.
mkdir -p "$WORK/img"
photos=(tests/fixtures/photos/*.jpg)
echo "Serial Number,Product Name,Input Image Urls" > "$WORK/batch.csv"
IMG_PORT=$(free_port)
for i in $(seq 0 $((N - 1))); do
    cp "${photos[$((i % ${#photos[@]}))]}" "$WORK/img/$i.jpg"
    echo "$i,SKU$i,http://127.0.0.1:$IMG_PORT/$i.jpg" >> "$WORK/batch.csv"
done
python3 -m http.server "$IMG_PORT" --bind 127.0.0.1 --directory "$WORK/img" >/dev/null 2>&1 &
PIDS+=($!)

common=(ALLOW_PRIVATE_NETWORKS=127.0.0.0/8 RUST_LOG=warn JOB_POLL_INTERVAL=50ms)

wait_http() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# run LABEL DATABASE_URL WORKERS(0 = serve)
run() {
    local label=$1 db=$2 workers=$3 dir port base id t0 t1 status
    dir=$(mktemp -d -p "$WORK")
    port=$(free_port)
    base="http://127.0.0.1:$port"
    local env=("${common[@]}" DATABASE_URL="$db" STORAGE_URL="file://$dir/uploads" BIND="127.0.0.1:$port" PUBLIC_BASE_URL="$base")
    if [ "$workers" = 0 ]; then
        env "${env[@]}" "$BIN" serve >"$dir/serve.log" 2>&1 &
        PIDS+=($!)
    else
        env "${env[@]}" "$BIN" api >"$dir/api.log" 2>&1 &
        PIDS+=($!)
        wait_http "$base/readyz"
        for w in $(seq 1 "$workers"); do
            env "${env[@]}" HEALTH_BIND="127.0.0.1:$(free_port)" "$BIN" worker >"$dir/worker-$w.log" 2>&1 &
            PIDS+=($!)
        done
    fi
    wait_http "$base/readyz"
    sleep 1
    id=$(curl -sf -F "file=@$WORK/batch.csv" "$base/upload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')
    t0=$(date +%s.%N)
    while :; do
        status=$(curl -sf "$base/status/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
        case $status in Completed|CompletedWithErrors|Failed|Cancelled) break ;; esac
        sleep 0.1
    done
    t1=$(date +%s.%N)
    python3 -c "import sys; t=$t1-$t0; print(f'{sys.argv[1]:<28} {sys.argv[2]:<20} $N images in {t:6.2f} s = {$N/t:6.1f} images/s')" "$label" "$status"
    for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done
    wait "${PIDS[@]:1}" 2>/dev/null || true
    PIDS=("${PIDS[0]}")
}

pg_db() {
    local name="pixbatch_bench_$1_$$"
    PGOPTIONS=--client-min-messages=warning psql "$PG" -q -c "drop database if exists $name" -c "create database $name" >/dev/null
    python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p._replace(path="/"+sys.argv[2]).geturl())' "$PG" "$name"
}

echo "cores: $(nproc), images: $N (fixture photos), WORKER_CONCURRENCY default (cores x 4)"
run "serve, SQLite" "sqlite://$WORK/bench.db" 0
run "api + 1 worker, PostgreSQL" "$(pg_db one)" 1
run "api + 2 workers, PostgreSQL" "$(pg_db two)" 2
psql "$PG" -q -c "drop database if exists pixbatch_bench_one_$$ with (force)" -c "drop database if exists pixbatch_bench_two_$$ with (force)" >/dev/null
