#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): targets in fuzz/fuzz_targets/, seed corpora in
# fuzz/corpus/<target>/ (built from the fixtures by fuzz/make_corpus.py).
#
#   scripts/fuzz.sh smoke               replay every seed corpus, then fuzz each decoder target
#                                       for FUZZ_SMOKE_SECS (default 20) seconds; what CI runs.
#                                       The query-parameter target needs DataFusion built with
#                                       instrumentation (tens of minutes cold), so CI leaves it to
#                                       `long` and runs its entry points as unit tests instead.
#   scripts/fuzz.sh long [secs]         fuzz every target for secs seconds (default 600)
#   scripts/fuzz.sh run TARGET [secs]   one target (default 60 s)
#
# New inputs the fuzzer finds go to $FUZZ_WORK/<target> (default under the build directory),
# never into the committed seeds. A crash stops the run: its input is in
# fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run TARGET <file>`); fix
# it, add a regression unit test, and copy the input into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ci-tools.sh cargo-fuzz

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
# cargo-fuzz passes unstable flags (-Zsanitizer, ...): nightly when installed, else stable
# told to accept them.
cargo=(cargo)
if rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
# The same flags for build and run, so `run` reuses the build. Sixteen codegen units build
# the instrumented DataFusion (query_params) much faster, for a little run speed.
build_flags=(--codegen-units 16 --target-dir "$CARGO_TARGET_DIR/fuzz")
work="${FUZZ_WORK:-$CARGO_TARGET_DIR/fuzz-work}"

targets() {
    "${cargo[@]}" fuzz list --fuzz-dir fuzz
}

# fuzz TARGET SECS: libFuzzer first runs every seed (the replay), then mutates for SECS.
fuzz() {
    local target=$1 secs=$2 log
    mkdir -p "$work/$target"
    log="$work/$target.log"
    # Bounded twice: libFuzzer's own time limits, and a hard stop well past them.
    if ! timeout --kill-after=30 "$((secs + 300))" \
        "${cargo[@]}" fuzz run --fuzz-dir fuzz "${build_flags[@]}" "$target" \
        "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $target failed (log: $log; crashing input in fuzz/artifacts/$target/)" >&2
        return 1
    fi
    local runs rate
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-24s %12s execs %8s exec/s %5ss\n' "$target" "${runs:-?}" "${rate:-?}" "$secs"
}

mode=${1:-smoke}
case "$mode" in
    smoke | long)
        if [ "$mode" = smoke ]; then
            secs=${FUZZ_SMOKE_SECS:-20}
            build_flags+=(--no-default-features)
        else
            secs=${2:-600}
        fi
        "${cargo[@]}" fuzz build --fuzz-dir fuzz "${build_flags[@]}"
        for target in $(targets); do
            if [ "$mode" = smoke ] && [ "$target" = query_params ]; then
                continue
            fi
            fuzz "$target" "$secs"
        done
        ;;
    run)
        target=${2:?usage: scripts/fuzz.sh run TARGET [secs]}
        fuzz "$target" "${3:-60}"
        ;;
    *)
        echo "usage: scripts/fuzz.sh smoke | long [secs] | run TARGET [secs]" >&2
        exit 2
        ;;
esac
