#!/usr/bin/env bash
# What tail sampling costs and saves, against a release `weft up` on this machine, with the
# load generator:
#
#   1. ingest throughput (spans/s acknowledged, flat out, same load settings) with tail
#      sampling on (default policies) versus off, and their ratio;
#   2. memory per pending trace: RSS before/after sending a known number of traces that
#      all stay pending (decision wait 10 min), against weft_tail_sampling_pending_bytes;
#   3. storage saved at the default policies (errors, traces over 1 s, 10 % of the rest):
#      the same traces (same seed) stored with tail sampling off and on; Parquet bytes of
#      the spans table, span counts and sum(sample_weight) via SQL. (The generator's root
#      spans last 10-800 ms, so the "over 1 s" policy never fires here.)
#
#   cargo build --release -p weft -p weft-load-test
#   load-test/bench/sampling_bench.sh [seconds] [memory-test spans] [storage-test spans]
#
# Defaults: 20 s, 400000 spans (about 23,000 traces), 1000000 spans. Everything listens
# on loopback (ports 263xx); one `weft up` at a time; data goes to a temporary directory
# that is removed at the end (KEEP=1 keeps it). WAL_SYNC=fsync to use the default WAL
# mode (default here "os", as cluster_bench.sh, so the disk is not what is measured).
set -euo pipefail

SECS=${1:-20}
MEM_SPANS=${2:-400000}
STORE_SPANS=${3:-1000000}
WAL_SYNC=${WAL_SYNC:-os}
SEED=${SEED:-20261124}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$(mktemp -d)
GRPC=127.0.0.1:26317
QUERY=http://127.0.0.1:26320
# Own metrics are served on the OTLP/HTTP port (/metrics on the query port is the viewer).
OTLP_HTTP=http://127.0.0.1:26318
LOAD_COMMON=(--protocol grpc --endpoint "http://$GRPC" --rate 0 --concurrency 8
             --batch-spans 500 --services 10 --error-rate 0.01 --quiet --max-retries 50)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 300); do # bounded: 30 s, then SIGKILL
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for b in weft weft-load; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p weft -p weft-load-test" >&2; exit 1; }
done

# Sums the samples of metric $1 whose labels include every k=v given after it (0 if none).
cat >"$WORK/prom.py" <<'EOF'
import re, sys
name, want = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
total = 0.0
for line in sys.stdin:
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
    if not m or m.group(1) != name:
        continue
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
    if all(labels.get(k) == v for k, v in want.items()):
        total += float(m.group(4))
print(f"{total:.0f}")
EOF
prom() { curl -sf --max-time 10 "$OTLP_HTTP/metrics" | python3 "$WORK/prom.py" "$@"; }
# Every tail-sampling series, for the record.
prom_dump() { curl -sf --max-time 10 "$OTLP_HTTP/metrics" | grep '^weft_tail_sampling' | sed 's/^/    /' || true; }
# One-row SQL answer, printed as k=v lines.
sql() {
  curl -sf --max-time 60 "$QUERY/api/v1/sql" -H 'content-type: application/json' \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$1")" |
    python3 -c 'import json,sys; [print(f"{k}={v}") for k,v in json.load(sys.stdin)[0].items()]'
}
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
field() { sed -n "s/^$2=//p" "$1"; }

UP_PID=
# Starts `weft up` on $WORK/$1 with the environment given after it; waits for `weft: ready`
# (bounded: 60 s).
start_up() {
  local name=$1; shift
  env WEFT_LOG=warn WEFT_COLLECTOR__WAL__SYNC="\"$WAL_SYNC\"" "$@" \
    "$BIN/weft" up --data-dir "$WORK/$name" --otlp-grpc "$GRPC" --otlp-http "${OTLP_HTTP#http://}" \
    --query-http "${QUERY#http://}" --postgres 127.0.0.1:26321 >"$WORK/$name.out" 2>&1 &
  UP_PID=$!
  PIDS+=("$UP_PID")
  for _ in $(seq 600); do
    grep -q '^weft: ready' "$WORK/$name.out" 2>/dev/null && return 0
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "weft up ($name) not ready:" >&2
  cat "$WORK/$name.out" >&2
  exit 1
}
# SIGTERM (graceful: drain, then flush to Parquet); bounded: 180 s, then SIGKILL.
stop_up() {
  local t0=$SECONDS
  kill -TERM "$UP_PID"
  for _ in $(seq 1800); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$UP_PID" 2>/dev/null; then
    echo "  weft up did not stop within 180 s: SIGKILL" >&2
    kill -KILL "$UP_PID"
  fi
  wait "$UP_PID" || echo "  weft up exited with status $?" >&2
  PIDS=()
  echo "  stopped (graceful shutdown + final flush: $((SECONDS - t0)) s)"
}
# Waits until metric $1 equals $2 (bounded: $3 seconds); prints the last value.
wait_metric() {
  local v=
  for _ in $(seq $(($3 * 10))); do
    v=$(prom "$1" || echo -1)
    [ "$v" = "$2" ] && break
    sleep 0.1
  done
  echo "$v"
}
parquet_bytes() { find "$1/spans" -name '*.parquet' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
parquet_files() { find "$1/spans" -name '*.parquet' 2>/dev/null | wc -l; }
tids_bytes() { find "$1/spans" -name '*.tids' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
TAIL_ON=(WEFT_SAMPLING__TAIL__ENABLED=true)

# ------------------------------------------------------------------------------------------
echo "== 1. ingest throughput, tail sampling off vs on ($SECS s flat out each, WAL sync $WAL_SYNC)"
# --max-spans only bounds the run by count as well; at this machine's rates the duration ends it.
THRU=(--duration "$SECS" --max-spans 100000000 --seed "$SEED")
# The load generator shares the CPUs with the server: its CPU time (bash `time`) and the
# load average before each run say who the bottleneck was.
TIMEFORMAT='%U %S %R'
for mode in off on; do
  if [ "$mode" = on ]; then start_up thru-on "${TAIL_ON[@]}"; else start_up thru-off; fi
  cut -d' ' -f1-3 /proc/loadavg >"$WORK/thru-$mode.loadavg"
  { time "$BIN/weft-load" "${LOAD_COMMON[@]}" "${THRU[@]}" --server-pid "$UP_PID" \
      --report-json "$WORK/thru-$mode.json" >"$WORK/thru-$mode.txt"; } 2>"$WORK/thru-$mode.time" ||
    { cat "$WORK/thru-$mode.txt" "$WORK/thru-$mode.time" >&2; exit 1; }
  sed 's/^/    /' "$WORK/thru-$mode.txt"
  echo "    load generator: user+sys $(awk '{printf "%.1f s over %.1f s = %.2f cores", $1+$2, $3, ($1+$2)/$3}' <(tail -1 "$WORK/thru-$mode.time")); load average before: $(cat "$WORK/thru-$mode.loadavg")"
  [ "$mode" = on ] && break
  stop_up
done
echo "  tail-sampling metrics right after the run:"
prom_dump
THRU_EVICTED=$(prom weft_tail_sampling_evicted_traces_total)
stop_up

# ------------------------------------------------------------------------------------------
echo "== 2. memory per pending trace ($MEM_SPANS spans in two halves, decision wait 600 s)"
# Two halves with different seeds: the second half's RSS growth is the marginal cost per
# trace, without what the first requests warm up (thread caches, connection buffers).
HALF=$((MEM_SPANS / 2))
MEM_TRACES=0
for h in 1 2; do
  "$BIN/weft-load" --dry-run "${LOAD_COMMON[@]}" --duration 600 --max-spans "$HALF" \
    --seed "$((SEED + 10 + h))" --report-json "$WORK/mem-dry$h.json" >/dev/null
  MEM_TRACES=$((MEM_TRACES + $(jget "$WORK/mem-dry$h.json" traces)))
done
echo "  the generator makes $MEM_TRACES traces of $((2 * HALF)) spans (dry runs, same seeds)"
start_up mem "${TAIL_ON[@]}" WEFT_SAMPLING__TAIL__DECISION_WAIT_MS=600000 \
  WEFT_SAMPLING__TAIL__MAX_TRACE_AGE_MS=600000 WEFT_SAMPLING__TAIL__MAX_PENDING_TRACES=10000000 \
  WEFT_SAMPLING__TAIL__MAX_PENDING_SPANS=100000000 WEFT_COLLECTOR__BUFFER__MAX_BYTES=8589934592
sleep 2
RSS0=$(rss_kb "$UP_PID" VmRSS); ANON0=$(rss_kb "$UP_PID" RssAnon)
MEM_ACCEPTED=0
for h in 1 2; do
  "$BIN/weft-load" "${LOAD_COMMON[@]}" --duration 300 --max-spans "$HALF" --seed "$((SEED + 10 + h))" \
    --report-json "$WORK/mem$h.json" >"$WORK/mem$h.txt"
  MEM_ACCEPTED=$((MEM_ACCEPTED + $(jget "$WORK/mem$h.json" spans_accepted)))
  echo "  half $h: $(jget "$WORK/mem$h.json" spans_accepted) spans accepted, $(jget "$WORK/mem$h.json" spans_failed) failed"
  PEND_SPANS=$(wait_metric weft_tail_sampling_pending_spans "$MEM_ACCEPTED" 30)
  sleep 2 # let in-flight buffers go
  if [ "$h" = 1 ]; then
    RSS_MID=$(rss_kb "$UP_PID" VmRSS); TRACES_MID=$(prom weft_tail_sampling_pending_traces)
  fi
done
RSS1=$(rss_kb "$UP_PID" VmRSS); ANON1=$(rss_kb "$UP_PID" RssAnon)
PEND_TRACES=$(prom weft_tail_sampling_pending_traces)
PEND_BYTES=$(prom weft_tail_sampling_pending_bytes)
MEM_DECIDED=$(prom weft_tail_sampling_traces_total)
echo "  pending: $PEND_TRACES traces, $PEND_SPANS spans, $PEND_BYTES bytes (estimated); decided meanwhile: $MEM_DECIDED traces"
echo "  VmRSS $RSS0 kB -> $RSS_MID kB ($TRACES_MID traces) -> $RSS1 kB; RssAnon $ANON0 kB -> $ANON1 kB"
stop_up

# ------------------------------------------------------------------------------------------
echo "== 3. storage, same $STORE_SPANS spans (seed $((SEED + 2))) with tail sampling off and on"
STORE=(--duration 600 --max-spans "$STORE_SPANS" --seed "$((SEED + 2))")
"$BIN/weft-load" --dry-run "${LOAD_COMMON[@]}" "${STORE[@]}" --report-json "$WORK/store-dry.json" >/dev/null
STORE_TRACES=$(jget "$WORK/store-dry.json" traces)
COUNTS="SELECT count(*) AS spans, sum(sample_weight) AS weighted, count(DISTINCT trace_id) AS traces,
  count(DISTINCT CASE WHEN status_code = 2 THEN trace_id END) AS error_traces,
  max(duration_ns) AS max_duration_ns FROM spans"
# Waits until the SQL counts stop changing (two equal answers 1 s apart; bounded: 60 s).
settle_counts() {
  local prev= cur=
  for _ in $(seq 60); do
    cur=$(sql "$COUNTS")
    [ "$cur" = "$prev" ] && break
    prev=$cur
    sleep 1
  done
  echo "$cur" >"$1"
}
for mode in off on; do
  if [ "$mode" = on ]; then
    start_up "store-$mode" "${TAIL_ON[@]}" WEFT_SAMPLING__TAIL__DECISION_WAIT_MS=1000
  else
    start_up "store-$mode"
  fi
  t0=$SECONDS
  "$BIN/weft-load" "${LOAD_COMMON[@]}" "${STORE[@]}" --report-json "$WORK/store-$mode.json" >"$WORK/store-$mode.txt"
  echo "  tail $mode: sent in $((SECONDS - t0)) s: $(jget "$WORK/store-$mode.json" spans_accepted) spans accepted, $(jget "$WORK/store-$mode.json" spans_failed) failed"
  if [ "$mode" = on ]; then
    t0=$SECONDS
    left=$(wait_metric weft_tail_sampling_pending_traces 0 120)
    echo "  pending traces $left after $((SECONDS - t0)) s of waiting for decisions"
    for d in kept dropped; do
      echo "$d=$(prom weft_tail_sampling_traces_total decision=$d) $d""_spans=$(prom weft_tail_sampling_spans_total decision=$d)"
    done | tr '\n' ' ' | sed 's/^/  decided traces: /'; echo
    prom_dump >"$WORK/store-on.metrics"
    sed 's/^/  /' "$WORK/store-on.metrics"
    prom weft_tail_sampling_spans_total decision=kept >"$WORK/store-on.kept_spans"
    prom weft_tail_sampling_spans_total >"$WORK/store-on.decided_spans"
  fi
  settle_counts "$WORK/store-$mode.sql"
  echo "  SQL: $(tr '\n' ' ' <"$WORK/store-$mode.sql")"
  stop_up
  echo "  spans Parquet: $(parquet_files "$WORK/store-$mode") files, $(parquet_bytes "$WORK/store-$mode") bytes (+ $(tids_bytes "$WORK/store-$mode") bytes of .tids trace-id filters)"
done

# ------------------------------------------------------------------------------------------
echo
echo "== results"
python3 - "$WORK" "$MEM_TRACES" "$PEND_TRACES" "$PEND_SPANS" "$PEND_BYTES" "$RSS0" "$RSS1" \
  "$ANON0" "$ANON1" "$STORE_TRACES" "$(parquet_bytes "$WORK/store-off")" \
  "$(parquet_bytes "$WORK/store-on")" "$(cat "$WORK/store-on.kept_spans")" \
  "$(cat "$WORK/store-on.decided_spans")" "$THRU_EVICTED" "$RSS_MID" "$TRACES_MID" <<'EOF'
import json, sys
(work, mem_traces, pend_traces, pend_spans, pend_bytes, rss0, rss1, anon0, anon1, store_traces,
 pq_off, pq_on, kept_spans, decided_spans, evicted, rss_mid, traces_mid) = sys.argv[1:]
j = lambda n: json.load(open(f"{work}/{n}.json"))
def kv(n):
    return {k: v for k, v in (l.strip().split("=", 1) for l in open(f"{work}/{n}.sql") if "=" in l)}
off, on = j("thru-off"), j("thru-on")
r_off, r_on = off["spans_per_sec_accepted"], on["spans_per_sec_accepted"]
cpu = lambda r: (r.get("server") or {}).get("cpu_us_per_accepted_span")
rss = lambda r: (r.get("server") or {}).get("peak_rss_bytes")
fmt = lambda v, f: "n/a" if v is None else format(v, f)
print(f"1. throughput: tail off {r_off:.0f} spans/s, tail on {r_on:.0f} spans/s acknowledged;"
      f" ratio on/off {r_on / r_off:.3f}")
print(f"   server CPU {fmt(cpu(off), '.2f')} vs {fmt(cpu(on), '.2f')} us/span;"
      f" peak RSS {fmt(rss(off) and rss(off) / 2**20, '.0f')} vs {fmt(rss(on) and rss(on) / 2**20, '.0f')} MiB;"
      f" export p99 {off['latency']['p99_ms']:.1f} vs {on['latency']['p99_ms']:.1f} ms;"
      f" retried {off['retried']} vs {on['retried']}; evicted traces (on) {evicted}")
def client(m):
    u, sy, r = map(float, open(f"{work}/thru-{m}.time").read().splitlines()[-1].split())
    return (u + sy) / r
print(f"   load generator CPU {client('off'):.2f} vs {client('on'):.2f} cores"
      f" (server {fmt((off.get('server') or {}).get('cpu_cores'), '.2f')} vs"
      f" {fmt((on.get('server') or {}).get('cpu_cores'), '.2f')} cores; {__import__('os').cpu_count()} CPUs)")
t, s, b = int(pend_traces), int(pend_spans), int(pend_bytes)
d_rss, d_anon = (int(rss1) - int(rss0)) * 1024, (int(anon1) - int(anon0)) * 1024
print(f"2. memory: {t} traces pending (generator made {mem_traces}), {s} spans,"
      f" {s / max(t, 1):.1f} spans/trace")
print(f"   VmRSS delta {d_rss / 2**20:.1f} MiB = {d_rss / max(t, 1):.0f} bytes/trace"
      f" ({d_rss / max(s, 1):.0f} bytes/span); RssAnon delta {d_anon / max(t, 1):.0f} bytes/trace")
d2, t2 = (int(rss1) - int(rss_mid)) * 1024, t - int(traces_mid)
print(f"   marginal (second half only): {d2 / 2**20:.1f} MiB for {t2} traces = {d2 / max(t2, 1):.0f} bytes/trace")
print(f"   estimated (weft_tail_sampling_pending_bytes) {b / 2**20:.1f} MiB = {b / max(t, 1):.0f} bytes/trace;"
      f" actual / estimated {d_rss / max(b, 1):.2f}")
so, sn = kv("store-off"), kv("store-on")
sent = j("store-on")["spans_accepted"]
w = float(sn["weighted"])
print(f"3. storage: {store_traces} traces, {j('store-off')['spans_accepted']} / {sent} spans accepted (off / on)")
print(f"   stored spans off {so['spans']} (traces {so['traces']}, error traces {so['error_traces']},"
      f" longest span {int(so['max_duration_ns']) / 1e6:.0f} ms)")
print(f"   stored spans on  {sn['spans']} (traces {sn['traces']}, error traces {sn['error_traces']});"
      f" tail decided {decided_spans} spans, kept {kept_spans}")
print(f"   Parquet bytes off {int(pq_off)}, on {int(pq_on)}: on/off {int(pq_on) / max(int(pq_off), 1):.3f}"
      f" (saved {100 * (1 - int(pq_on) / max(int(pq_off), 1)):.1f} %);"
      f" spans on/off {int(sn['spans']) / max(int(so['spans']), 1):.3f}")
print(f"   sum(sample_weight) on {w:.0f} vs {sent} spans sent: {100 * (w / sent - 1):+.2f} %"
      f" (off: {float(so['weighted']):.0f})")
EOF
