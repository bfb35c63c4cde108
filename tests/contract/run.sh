#!/usr/bin/env bash
# Contract tests against the real binary (`just contract`, and CI after `cargo test`):
#  0. openapi-spec-validator finds openapi/openapi.json valid OpenAPI 3.0;
#  a. a Python client generated from the committed openapi/openapi.json (by
#     openapi-python-client, failing on any warning) uploads a CSV, polls it to
#     Completed, lists its images and downloads the output CSV;
#  b. schemathesis fuzzes every operation of the served /openapi.json and fails on
#     any 5xx or any response that breaks the document's schema.
# Needs python3 (venv + pip, PyPI reachable) and target/debug/pixbatch (built here if
# missing). Everything else lives in a temp dir removed on exit.
# Knobs: CONTRACT_MAX_EXAMPLES (schemathesis cases per operation, default 100),
# CONTRACT_ST_TIMEOUT (seconds, default 300), CONTRACT_SEED (schemathesis seed).
set -euo pipefail
cd "$(dirname "$0")/../.."

# Pinned, verified together on Python 3.11.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-100}
ST_TIMEOUT=${CONTRACT_ST_TIMEOUT:-300}

started=$SECONDS
BIN=${PIXBATCH_BIN:-${CARGO_TARGET_DIR:-target}/debug/pixbatch}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pixbatch-contract.XXXXXX")
PIDS=()
results=()

cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf 'contract: %s\n' "$*"; }
die() {
    say "FAIL: $*" >&2
    if [[ -f $TMP/server.log ]]; then
        say "last server log lines:" >&2
        tail -n 20 "$TMP/server.log" >&2 || true
    fi
    exit 1
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits until URL answers 200 (up to $2 seconds).
wait_ok() {
    python3 - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
EOF
}

# --- the binary ------------------------------------------------------------------
if [[ ! -x $BIN ]]; then
    say "building $BIN"
    cargo build --locked --quiet
fi
[[ -x $BIN ]] || die "no binary at $BIN"
BIN=$(realpath "$BIN")

# --- tools (throwaway venv) -------------------------------------------------------
t=$SECONDS
python3 -m venv "$TMP/venv"
VENV=$TMP/venv/bin
"$VENV/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" \
    "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" \
    "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" ||
    die "pip install failed"
say "venv with schemathesis $SCHEMATHESIS_VERSION, openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION ($((SECONDS - t))s)"

# The committed document is valid OpenAPI of the version it declares (strict tools,
# openapi-generator or Redocly, refuse one that is not, whole).
"$VENV/openapi-spec-validator" openapi/openapi.json >"$TMP/validate.log" 2>&1 ||
    { cat "$TMP/validate.log" >&2; die "openapi/openapi.json is not valid OpenAPI"; }
say "openapi/openapi.json is valid OpenAPI $(python3 -c 'import json; print(json.load(open("openapi/openapi.json"))["openapi"])')"

# --- servers ----------------------------------------------------------------------
IMG_PORT=$(free_port)
python3 -m http.server "$IMG_PORT" --bind 127.0.0.1 --directory tests/fixtures/photos \
    >"$TMP/images.log" 2>&1 &
PIDS+=($!)
IMAGES=http://127.0.0.1:$IMG_PORT
# A port nothing listens on: downloads from it are refused and retried.
DEAD_URL=http://127.0.0.1:$(free_port)/never.jpg

PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
mkdir -p "$TMP/server"
(
    cd "$TMP/server"
    export DATABASE_URL="sqlite://$TMP/server/pixbatch.db"
    export STORAGE_URL="file://$TMP/server/uploads"
    export BIND="127.0.0.1:$PORT"
    export BOARD_BIND=off # the dashboard's fixed default port could be taken
    export ALLOW_PRIVATE_NETWORKS=127.0.0.0/8
    export JOB_POLL_INTERVAL=50ms
    # The refused download keeps retrying for minutes, so one request stays
    # unfinished while schemathesis runs; webhooks give up after two quick retries.
    export FETCH_ATTEMPTS=30 FETCH_BACKOFF_BASE=1s FETCH_BACKOFF_CAP=5s
    export WEBHOOK_RETRY_SCHEDULE=1s,1s
    # Every finished request gets an event (the image server answers POST with 501).
    export WEBHOOK_URL="$IMAGES/hook"
    export WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    export LOG_FORMAT=json RUST_LOG=info
    # Open event streams hold up a graceful stop until this runs out.
    export SHUTDOWN_TIMEOUT=2s
    exec "$BIN" serve
) >"$TMP/server.log" 2>&1 &
PIDS+=($!)
wait_ok "$IMAGES/small_picos.jpg" 20 || die "image server did not start"
wait_ok "$BASE/healthz" 60 || die "pixbatch did not answer /healthz on $BASE"
say "pixbatch on $BASE, images on $IMAGES"

# The served document must be the committed one (but for the server URL), or the
# client below is generated from something else than what schemathesis tests.
python3 - "$BASE/openapi.json" openapi/openapi.json <<'EOF' || die "served /openapi.json differs from openapi/openapi.json (stale binary? run cargo build; or just openapi)"
import json, sys, urllib.request
served = json.load(urllib.request.urlopen(sys.argv[1]))
committed = json.load(open(sys.argv[2]))
for d in (served, committed):
    d.pop("servers", None)
sys.exit(served != committed)
EOF

# --- a. generated client round trip ------------------------------------------------
t=$SECONDS
"$VENV/openapi-python-client" generate --path openapi/openapi.json \
    --output-path "$TMP/client" --config tests/contract/openapi-python-client.yaml \
    --meta setup --fail-on-warning >"$TMP/generate.log" 2>&1 ||
    { cat "$TMP/generate.log" >&2; die "openapi-python-client could not express openapi/openapi.json"; }
"$VENV/pip" install --quiet --disable-pip-version-check "$TMP/client" ||
    die "installing the generated client failed"
if "$VENV/python" tests/contract/client_roundtrip.py --base-url "$BASE" --images "$IMAGES" \
    --dead-url "$DEAD_URL" --ids-out "$TMP/request_ids.dict"; then
    results+=("generated client round trip: ok ($((SECONDS - t))s)")
else
    results+=("generated client round trip: FAILED")
fi

# --- b. schemathesis ---------------------------------------------------------------
# Path ids come from the requests made above most of the time (a finished one, one
# with a failed image and webhook, one still running), random strings otherwise.
[[ -s $TMP/request_ids.dict ]] || printf '"%s"\n' 00000000-0000-0000-0000-000000000000 >"$TMP/request_ids.dict"
cat >"$TMP/schemathesis.toml" <<'EOF'
# No state kept between runs (it would go to .schemathesis/ in the repo).
cache.enabled = false

# The checks: no 5xx, every status is one the document gives its operation, and every
# response matches the document's schema. (Set here rather than with --checks, which
# would override the per-operation setting below.)
[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
response_schema_conformance.enabled = true

[dictionaries.request_ids]
from-file = "request_ids.dict"

[dictionaries.file_names]
values = ["output.csv", "input.csv", "0-0.jpg", "1-1.jpg"]

[parameters]
"path.request_id" = { dictionary = "request_ids", probability = 0.8 }
"path.name" = { dictionary = "file_names", probability = 0.7 }

# The progress stream IS tested (schemathesis reads event streams; still no 5xx), but
# not against the response schema: OpenAPI 3.0 has no standard for Server-Sent
# Events, and the two conventions differ. poem-openapi documents the stream as
# `{type: array, format: event-stream, items: ProgressEvent}` (the `data` of each
# event), while schemathesis reads a 3.0 `text/event-stream` schema as the schema of
# one whole event (`{event, data, id, retry}`), so every valid event would "fail".
[[operations]]
include-path = "/requests/{request_id}/events"
checks.response_schema_conformance.enabled = false
EOF
st_args=(
    --max-examples "$MAX_EXAMPLES"
    --request-timeout 10
    --workers 2
)
[[ -n ${CONTRACT_SEED:-} ]] && st_args+=(--seed "$CONTRACT_SEED")
t=$SECONDS
st_rc=0
# --kill-after: a hung run is killed, not waited for.
timeout --kill-after=15 "$ST_TIMEOUT" "$VENV/st" --config-file "$TMP/schemathesis.toml" \
    run "$BASE/openapi.json" "${st_args[@]}" || st_rc=$?
case $st_rc in
0) results+=("schemathesis (no 5xx, documented statuses, responses match the schema): ok ($((SECONDS - t))s)") ;;
124 | 137) results+=("schemathesis: TIMED OUT after ${ST_TIMEOUT}s") ;;
*) results+=("schemathesis: FAILED (exit $st_rc)") ;;
esac

# --- summary -----------------------------------------------------------------------
if grep -q '"level":"ERROR"' "$TMP/server.log"; then
    say "server logged errors (reported, not failed on):"
    grep '"level":"ERROR"' "$TMP/server.log" | tail -n 20
fi
echo
say "summary ($((SECONDS - started))s)"
failed=0
for r in "${results[@]}"; do
    say "  $r"
    [[ $r == *": ok"* ]] || failed=$((failed + 1))
done
say "$((${#results[@]} - failed)) passed, $failed failed"
if ((failed)); then
    say "last server log lines:"
    tail -n 20 "$TMP/server.log"
    exit 1
fi
