#!/usr/bin/env bash
# Ingest throughput of a cluster (2 `weft ingest`, 3 `weft collector`, replication R) against
# one `weft up` node, on this machine, flat out, with the load generator.
#
#   cargo build --release -p weft -p weft-load-test
#   load-test/bench/cluster_bench.sh [seconds] [replication]
#
# Everything listens on loopback (ports 24xxx); data goes to a temporary directory that is
# removed at the end. Prints both throughputs and their ratio.
set -euo pipefail

SECS=${1:-20}
REPLICATION=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until process output $1 contains `weft: ready` (bounded: 60 s).
wait_ready() {
  for _ in $(seq 600); do
    grep -q '^weft: ready' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2
  cat "$1" >&2
  exit 1
}

load() { # endpoint report-file
  "$BIN/weft-load" --protocol grpc --endpoint "$1" --rate 0 --duration "$SECS" \
    --concurrency 8 --batch-spans 500 --quiet --max-retries 50 --report-json "$2" >/dev/null
}

rate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans_per_sec_accepted"])' "$1"; }

echo "== one node: weft up"
WEFT_LOG=warn "$BIN/weft" up --data-dir "$WORK/single" --otlp-grpc 127.0.0.1:24317 \
  --otlp-http 127.0.0.1:24318 --query-http 127.0.0.1:24320 --postgres 127.0.0.1:24321 \
  --set collector.wal.sync='"os"' >"$WORK/up.out" &
PIDS+=($!)
wait_ready "$WORK/up.out"
load http://127.0.0.1:24317 "$WORK/single.json"
SINGLE=$(rate "$WORK/single.json")
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" || true
PIDS=()
echo "one node: $SINGLE spans/s"

echo "== cluster: 3 collectors, 2 ingest, R=$REPLICATION"
COMMON=(--storage "$WORK/storage" --set cluster.replication="$REPLICATION"
        --set collector.wal.sync='"os"')
COLLECTORS=127.0.0.1:24419,127.0.0.1:24429,127.0.0.1:24439
for i in 1 2 3; do
  WEFT_LOG=warn "$BIN/weft" collector "${COMMON[@]}" --node-id "c$i" \
    --cluster-grpc "127.0.0.1:244${i}7" --cluster-http "127.0.0.1:244${i}9" >"$WORK/c$i.out" &
  PIDS+=($!)
done
for i in 1 2 3; do wait_ready "$WORK/c$i.out"; done
for i in 1 2; do
  WEFT_LOG=warn "$BIN/weft" ingest "${COMMON[@]}" --node-id "i$i" --collectors "$COLLECTORS" \
    --otlp-grpc "127.0.0.1:245${i}7" --otlp-http "127.0.0.1:245${i}8" \
    --spool-dir "$WORK/spool-i$i" >"$WORK/i$i.out" &
  PIDS+=($!)
done
for i in 1 2; do wait_ready "$WORK/i$i.out"; done
# Membership is probed: wait until both ingest nodes see three collectors up.
for i in 1 2; do
  for _ in $(seq 600); do
    UP=$(curl -s "http://127.0.0.1:245${i}8/api/v1/cluster" | python3 -c \
      'import json,sys; print(sum(m["state"]=="up" for m in json.load(sys.stdin)["members"]))' \
      2>/dev/null || echo 0)
    [ "$UP" = 3 ] && break
    sleep 0.1
  done
done
load http://127.0.0.1:24517 "$WORK/cluster1.json" &
L1=$!
load http://127.0.0.1:24527 "$WORK/cluster2.json" &
L2=$!
wait $L1 $L2
C1=$(rate "$WORK/cluster1.json")
C2=$(rate "$WORK/cluster2.json")
python3 - "$SINGLE" "$C1" "$C2" "$REPLICATION" <<'EOF'
import sys
single, c1, c2, r = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
total = c1 + c2
print(f"cluster (R={r}): {total:.0f} spans/s acknowledged ({c1:.0f} + {c2:.0f})")
print(f"one node: {single:.0f} spans/s")
print(f"ratio cluster / one node: {total / single:.2f}")
EOF
