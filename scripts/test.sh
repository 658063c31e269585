#!/usr/bin/env bash
# Runs Weft's whole test suite: unit tests, property tests, and the end-to-end tests that
# start real `weft up` processes on loopback and drive them with the OpenTelemetry SDK.
# Everything the tests need comes from crates.io, PyPI (moto's S3-compatible server, see
# scripts/s3-server.sh) and the npm registry (the viewer and its Playwright tests), except
# two Debian packages this script installs when missing: `psql` (the Postgres wire protocol
# tests drive the real client) and `chromium` (the viewer's end-to-end tests run in it
# headless), plus util-linux's `prlimit` on minimal images.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
# `prlimit` starts a server with a low open-file limit (the fd-exhaustion test).
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing Debian packages: ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The object-storage tests run a real S3-compatible server (moto, from PyPI, in a venv).
./scripts/s3-server.sh install
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo test --workspace --locked "$@"
