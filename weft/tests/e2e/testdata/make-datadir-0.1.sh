#!/usr/bin/env bash
# Writes datadir-0.1/: a data directory of the release before the crate split (commit
# 960d30e), for the `upgrade` e2e test. Kept for the record; the directory is checked in.
#   usage: make-datadir-0.1.sh <weft binary built from 960d30e> <output dir>
# It holds 40 spans named `flushed` and 3 metric points in Parquet files (a graceful stop
# flushes), and 25 spans named `in-wal` only in the WAL (the second process is killed).
set -euo pipefail
weft="$1"; out="$2"
rm -rf "$out"; mkdir -p "$out"
now=$(date +%s%N)
spans() { # name count
    local name="$1" n="$2" items=()
    for i in $(seq 1 "$n"); do
        items+=("{\"traceId\":\"$(printf '%032x' $((i + 1000)))\",\"spanId\":\"$(printf '%016x' "$i")\",\"name\":\"$name\",\"kind\":2,\"startTimeUnixNano\":\"$now\",\"endTimeUnixNano\":\"$((now + 5000000))\"}")
    done
    local joined; joined=$(IFS=,; echo "${items[*]}")
    echo "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"upgrade\"}}]},\"scopeSpans\":[{\"spans\":[$joined]}]}]}"
}
metrics() {
    echo "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"upgrade\"}}]},\"scopeMetrics\":[{\"metrics\":[{\"name\":\"upgrade.requests\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{\"asInt\":\"1\",\"timeUnixNano\":\"$now\"},{\"asInt\":\"2\",\"timeUnixNano\":\"$((now + 1000000000))\"},{\"asInt\":\"3\",\"timeUnixNano\":\"$((now + 2000000000))\"}]}}]}]}]}"
}
start() {
    "$weft" up --data-dir "$out" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:14318 \
        --query-http 127.0.0.1:0 --postgres 127.0.0.1:0 > /tmp/make-datadir.log 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        grep -q "weft: ready" /tmp/make-datadir.log && return 0
        sleep 0.1
    done
    echo "weft did not start" >&2; exit 1
}
post() { curl -sf -H 'content-type: application/json' --data-binary "$2" "http://127.0.0.1:14318$1" > /dev/null; }
start
post /v1/traces "$(spans flushed 40)"
post /v1/metrics "$(metrics)"
kill -TERM "$pid"; wait "$pid" || true
start
post /v1/traces "$(spans in-wal 25)"
kill -KILL "$pid"; wait "$pid" || true
find "$out" -type f | sort
