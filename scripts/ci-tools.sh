#!/usr/bin/env bash
# Installs the cargo tools CI uses, from crates.io, when they are missing:
#   scripts/ci-tools.sh cargo-fuzz cargo-machete     (no argument: both)
# cargo-fuzz also needs a nightly toolchain for its sanitizer flags; scripts/fuzz.sh falls
# back to RUSTC_BOOTSTRAP=1 on stable when there is none.
set -euo pipefail
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(cargo-fuzz cargo-machete)
for tool in "${tools[@]}"; do
    case "$tool" in
        cargo-fuzz | cargo-machete) ;;
        *) echo "ci-tools.sh: unknown tool $tool" >&2; exit 2 ;;
    esac
    # `cargo fuzz` / `cargo machete` find the binary on PATH, as cargo does.
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ci-tools.sh: installing $tool from crates.io" >&2
        cargo install "$tool" --locked --quiet
    fi
done
