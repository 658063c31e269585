#!/usr/bin/env python3
"""Storage and trace-lookup figures for a running Weft (standard library only).

  python3 load-test/bench/trace_lookup.py --query http://127.0.0.1:3200 --data-dir weft-data

Prints: spans stored, Parquet bytes per span (from manifest.json), and the latency of
GET /api/v1/traces/{id} (no time hint) for --samples trace IDs picked at random from
what is stored. Bounded: --samples requests, each with a 30 s timeout.
"""
import argparse
import json
import os
import time
import urllib.request


def post_sql(base, sql):
    req = urllib.request.Request(
        f"{base}/api/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--query", default="http://127.0.0.1:3200")
    parser.add_argument("--data-dir", default="weft-data")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    with open(os.path.join(args.data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    files = manifest["tables"]["spans"]["files"]
    rows = sum(f["rows"] for f in files)
    size = sum(f["bytes"] for f in files)
    print(f"parquet: {len(files)} span files, {rows} spans, {size} bytes")
    if rows:
        print(f"bytes per stored span: {size / rows:.1f}")

    total = post_sql(args.query, "SELECT count(*) AS n FROM spans")[0]["n"]
    print(f"spans queryable (files + live): {total}")
    ids = [
        r["id"]
        for r in post_sql(
            args.query,
            f"SELECT hex_id(trace_id) AS id FROM spans ORDER BY random() LIMIT {args.samples}",
        )
    ]
    latencies = []
    spans = 0
    for trace_id in ids:
        start = time.perf_counter()
        with urllib.request.urlopen(f"{args.query}/api/v1/traces/{trace_id}", timeout=30) as resp:
            body = resp.read()
            spans += int(resp.headers.get("x-weft-span-count", "0"))
        latencies.append((time.perf_counter() - start) * 1000)
        assert body.startswith(b'{"resourceSpans"'), body[:100]
    print(
        f"trace by id ({len(latencies)} lookups, {spans / max(1, len(latencies)):.1f} spans each): "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )


if __name__ == "__main__":
    main()
