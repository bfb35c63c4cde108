#!/usr/bin/env bash
# Regenerates the Postman collection openapi/pixbatch.postman_collection.json from
# openapi/openapi.json with openapi-to-postmanv2 (installed into a temp dir; needs
# Node.js and npm). `just openapi` runs it after writing the spec.
#
#   bash tests/contract/postman.sh           # rewrite the committed collection
#   bash tests/contract/postman.sh --check   # CI: generate into a temp file only
#
# The output is not deterministic (every item gets a random UUID, and enum values in
# the faked examples are picked at random), so --check cannot diff it against the
# committed file. It checks instead that generation succeeds and that both the new
# and the committed collection hold exactly one request per operation of the spec
# (so a collection left behind after an endpoint was added or removed fails).
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAPI_TO_POSTMAN_VERSION=6.3.3
COLLECTION=openapi/pixbatch.postman_collection.json
SPEC=openapi/openapi.json

check=false
case ${1:-} in
--check) check=true ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pixbatch-postman.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

npm install --prefix "$TMP" --no-audit --no-fund --loglevel=error \
    "openapi-to-postmanv2@$OPENAPI_TO_POSTMAN_VERSION" >"$TMP/npm.log" 2>&1 ||
    { cat "$TMP/npm.log" >&2; echo "postman: npm install failed" >&2; exit 1; }
# The CLI exits 0 even when the conversion fails (it then writes no file): the
# checks below are what tell.
"$TMP/node_modules/.bin/openapi2postmanv2" -s "$SPEC" -o "$TMP/collection.json" -p \
    >"$TMP/convert.log" 2>&1 || true

# Every operation of the spec is a request in the collection, and nothing else.
verify() {
    python3 - "$SPEC" "$1" <<'EOF'
import json, sys
spec_path, coll_path = sys.argv[1], sys.argv[2]
spec = json.load(open(spec_path))
ops = sorted(
    (method.upper(), "/" + "/".join(
        ":" + seg[1:-1] if seg.startswith("{") else seg for seg in path.strip("/").split("/")))
    for path, item in spec["paths"].items()
    for method in item
    if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
)
try:
    coll = json.load(open(coll_path))
except (OSError, ValueError) as e:
    sys.exit(f"{coll_path}: not a collection: {e}")
if "v2.1.0" not in coll.get("info", {}).get("schema", ""):
    sys.exit(f"{coll_path}: not a Postman v2.1 collection")
def requests(items):
    for it in items:
        if "request" in it:
            yield it["request"]
        yield from requests(it.get("item", []))
got = sorted(
    (r["method"], "/" + "/".join(r["url"]["path"])) for r in requests(coll.get("item", []))
)
if got != ops:
    sys.exit(f"{coll_path}: requests {got}\n  do not match the operations of {spec_path}: {ops}")
print(f"postman: {coll_path}: {len(got)} requests, one per operation")
EOF
}

if ! verify "$TMP/collection.json"; then
    cat "$TMP/convert.log" >&2
    echo "postman: openapi2postmanv2 failed on $SPEC" >&2
    exit 1
fi
if $check; then
    verify "$COLLECTION" || {
        echo "postman: $COLLECTION is out of date: run \`just openapi\` (or bash tests/contract/postman.sh)" >&2
        exit 1
    }
else
    mv "$TMP/collection.json" "$COLLECTION"
    echo "postman: wrote $COLLECTION"
fi
