#!/usr/bin/env bash
# Runs Weft's whole test suite: unit tests, property tests, and the end-to-end tests that
# start real `weft up` processes on loopback and drive them with the OpenTelemetry SDK.
# Everything the tests need comes from crates.io, except `psql` (the Postgres wire protocol
# tests drive the real client), which this script installs when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v psql >/dev/null 2>&1; then
    echo "test.sh: installing psql (Debian package postgresql-client)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo test --workspace --locked "$@"
