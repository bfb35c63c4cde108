#!/usr/bin/env bash
# Installs moto's S3 server (pinned) into target/moto-venv, once, and prints the path
# of its moto_server for the S3 test:
#   export PIXBATCH_TEST_MOTO_SERVER=$(bash tests/s3/moto-venv.sh)
# Needs python3 with venv and pip (PyPI). Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

MOTO_VERSION=5.2.5
VENV=${CARGO_TARGET_DIR:-target}/moto-venv

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null ||
    [[ ! -x $VENV/bin/moto_server ]]; then
    echo "moto-venv: installing moto[server]==$MOTO_VERSION into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
realpath "$VENV/bin/moto_server"
