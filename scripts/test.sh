#!/usr/bin/env bash
# Runs Weft's whole test suite: unit tests, property tests, and the end-to-end tests that
# start real `weft up` processes on loopback and drive them with the OpenTelemetry SDK.
# Everything the tests need comes from crates.io; nothing else must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo test --workspace --locked "$@"
