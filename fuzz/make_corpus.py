#!/usr/bin/env python3
"""Builds the seed corpora under fuzz/corpus/ from the vendored fixtures (schemas/testdata,
licences and provenance in schemas/testdata/MANIFEST.txt) plus a few hand-written query
strings. Deterministic: re-running it rewrites the same files. Run from anywhere:
    python3 fuzz/make_corpus.py
"""
import pathlib
import shutil
import struct
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "schemas" / "testdata"
CORPUS = ROOT / "fuzz" / "corpus"

JSON_TRACES = [
    "otlp-proto-examples/trace.json",
    "otlp-proto-examples/events.json",
    "real-client-captures/node-http-json.traces.json",
    "real-client-captures/rust-http-json.traces.json",
    "jaeger-memory/otel_traces_01.json",
    "jaeger-query-golden/otlp2jaeger-in.json",
    "jaeger-ui/otlp2jaeger-multi-in-combined.json",
    "jaeger-storage-integration/traces/example_trace.json",
    "jaeger-storage-integration/traces/link_attributes_trace.json",
    "jaeger-storage-integration/traces/log_tags_trace.json",
    "jaeger-storage-integration/traces/scope_attributes_trace.json",
    "jaeger-storage-integration/traces/tags_escaped_operator_trace_1.json",
    "otelcol-contrib-servicegraph/messaging-system-trace.otlp.json",
    "derived-dependency-golden/jaeger-memory-deps-part1.otlp.json",
]
JSON_METRICS = [
    "otlp-proto-examples/metrics.json",
    "real-client-captures/node-http-json.metrics.json",
    "real-client-captures/rust-http-json.metrics.json",
]
PB_TRACES = sorted((TESTDATA / "real-client-captures").glob("*.traces.pb"))
PB_METRICS = sorted((TESTDATA / "real-client-captures").glob("*.metrics.pb"))
REMOTE_WRITE = TESTDATA / "real-client-captures" / "prometheus-2.42-remote-write.snappy.pb"

# Real query strings: the README's examples and what the viewer, Grafana and the Jaeger UI send.
QUERY_STRINGS = {
    "search_readme": "service=checkout&status=error&attr=http.response.status_code>=500&min_duration=100ms&limit=20",
    "search_times": "service=web&start=2026-01-01T00:00:00Z&end=1767225600000000000&kind=server&max_duration=1.5s",
    "search_attrs": "attr=code%3Eabc&resource_attr=host.name%3Dweb-1&tag=http.method%3DGET&scope_name=io.opentelemetry&scope_version=1.2",
    "search_traces": "root_service=frontend&root_operation=GET%20%2F&min_trace_duration=1s&max_trace_duration=2m&min_spans=2&max_spans=500",
    "graph": "start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00Z",
    "graph_ns": "start=1704067200000000000&end=1704153600000000000",
    "latency": "service=mobile_api&operation=GET&start=2026-01-01T00:00:00Z&end=2026-01-01T01:00:00Z&step=250ms",
    "latency_compare": "service=a&compare_start=2025-12-31T00:00:00Z&compare_end=2025-12-31T01:00:00Z",
    "metrics_rate": "metric=my.counter&start=1544712600&end=1544712720&step=15s&agg=rate&group_by=route",
    "metrics_quantile": "metric=http.server.duration&agg=histogram_quantile&q=0.99&match[service_name]=web&resolution=1m",
    "jaeger_v1": "service=web&operation=GET%20%2Fapi&tags=%7B%22http.status_code%22%3A%22500%22%7D&start=1485445591639875&end=1485452791639875&minDuration=10ms&maxDuration=1s&limit=20&lookback=1h",
    "jaeger_v1_tag": "service=web&tag=error:true&tag=http.method:GET&lookback=custom",
    "jaeger_v3": "query.service_name=web&query.operation_name=GET%20%2F&query.start_time_min=2017-01-26T15:46:31.639875Z&query.start_time_max=2017-01-26T17:46:31.639875Z&query.duration_min=2us&query.duration_max=1s&query.search_depth=7&query.attributes=%7B%22a%22%3A%22b%22%7D",
    "jaeger_v3_camel": "query.serviceName=web&query.startTimeMin=2017-01-26T15:46:31Z&query.startTimeMax=2017-01-26T16:46:31Z&query.rawTraces=true&query.num_traces=20",
}


def snappy_decompress(data: bytes) -> bytes:
    """Raw (unframed) snappy, as Prometheus remote write uses it."""
    pos, shift, length = 0, 0, 0
    while True:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            n = ((tag >> 2) & 7) + 4
            off = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            n = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            n = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        for _ in range(n):
            out.append(out[-off])
    assert len(out) == length, "snappy length"
    return bytes(out)


def wal_frame(seq: int, kind: int, payload: bytes) -> bytes:
    """`len u32 | crc32 u32 | seq u64 | kind u8 | payload` (collector/src/wal.rs)."""
    head = struct.pack("<QB", seq, kind)
    crc = zlib.crc32(head + payload) & 0xFFFFFFFF
    return struct.pack("<II", len(payload), crc) + head + payload


def tail_decision(decided, kept: bytes) -> bytes:
    """`WTD1 | n u32 | n x (trace id 16 | threshold u64 | keep u8) | kept spans`."""
    out = b"WTD1" + struct.pack("<I", len(decided))
    for trace_id, threshold, keep in decided:
        out += trace_id + struct.pack("<QB", threshold, keep)
    return out + kept


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)

    def put(target: str, name: str, data: bytes) -> None:
        path = CORPUS / target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def fixture(rel: str) -> bytes:
        return (TESTDATA / rel).read_bytes()

    for rel in JSON_TRACES:
        put("otlp_json_traces", rel.replace("/", "_"), fixture(rel))
    for rel in JSON_METRICS:
        put("otlp_json_metrics", rel.replace("/", "_"), fixture(rel))

    remote_write_pb = snappy_decompress(REMOTE_WRITE.read_bytes())
    for path in PB_TRACES:
        put("otlp_protobuf_traces", path.name, path.read_bytes())
        put("otlp_protobuf_prescan", path.name, path.read_bytes())
    for path in PB_METRICS:
        put("otlp_protobuf_metrics", path.name, path.read_bytes())
        put("otlp_protobuf_prescan", path.name, path.read_bytes())
    put("otlp_protobuf_prescan", "prometheus-2.42-remote-write.pb", remote_write_pb)

    put("remote_write", REMOTE_WRITE.name, REMOTE_WRITE.read_bytes())
    # The target also snappy-compresses its input, so the bare protobuf reaches the decoder.
    put("remote_write", "prometheus-2.42-remote-write.pb", remote_write_pb)

    traces = [p.read_bytes() for p in PB_TRACES]
    metrics = [p.read_bytes() for p in PB_METRICS]
    decision = tail_decision(
        [(bytes(range(1, 17)), 0, 1), (bytes(range(17, 33)), 1 << 55, 0)], traces[0]
    )
    put("tail_decision", "two_decisions_with_kept_spans", decision)
    put("tail_decision", "no_decisions", tail_decision([], traces[1]))

    # WAL segments: one record of each kind, a torn tail, and damage between good frames.
    frames = [
        wal_frame(1, 1, traces[0]),
        wal_frame(2, 2, metrics[0]),
        wal_frame(3, 3, remote_write_pb[:2000]),
        wal_frame(4, 4, traces[1]),
        wal_frame(5, 5, decision),
    ]
    put("wal_replay", "every_kind", b"".join(frames))
    put("wal_replay", "torn_tail", b"".join(frames[:2]) + frames[2][:40])
    damaged = bytearray(b"".join(frames[:3]))
    damaged[len(frames[0]) + 30] ^= 0xFF
    put("wal_replay", "damage_between_frames", bytes(damaged))

    for name, query in QUERY_STRINGS.items():
        put("query_params", name, query.encode())


if __name__ == "__main__":
    main()
