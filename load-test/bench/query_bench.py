#!/usr/bin/env python3
"""Query figures for a running Weft loaded with data (standard library only).

  python3 load-test/bench/query_bench.py --query http://127.0.0.1:3200 \
      --data-dir weft-data --server-pid $(pgrep -f 'weft up')

For each query kind it prints p50 / p99 / max latency over --repeats runs (after one warm-up)
and, with --server-pid, the bytes the server read through read(2)/pread(2) per query
(`rchar` in /proc/<pid>/io: page-cache hits included, so it is the data a query touches,
not only what came from the disk). Every loop is bounded: --samples trace lookups,
--repeats runs of every other query, each request with a 60 s timeout.

Kinds: trace by ID (no time hint) for random stored IDs; search with structured filters
over one hour; search on a non-promoted attribute; the dependency graph over all data;
latency percentiles for every (service, operation) over all data and for one service.
"""
import argparse
import json
import os
import random
import time
import urllib.parse
import urllib.request


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read(), resp.headers


def post_sql(base, sql):
    body, _ = request(f"{base}/api/v1/sql", {"sql": sql})
    return json.loads(body)


def rchar(pid):
    if not pid:
        return 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def measure(name, urls, pid, check):
    """Runs every URL once untimed (warm-up), then each timed; prints one line."""
    request(urls[0])
    latencies, read = [], []
    for url in urls:
        before = rchar(pid)
        start = time.perf_counter()
        body, headers = request(url)
        latencies.append((time.perf_counter() - start) * 1000)
        read.append(rchar(pid) - before)
        check(body, headers)
    line = (
        f"{name} ({len(latencies)} runs): p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms"
    )
    if pid:
        line += f"; read per query p50 {percentile(read, 50) / 1e6:.2f} MB"
    print(line, flush=True)


def q(base, path, **params):
    return f"{base}{path}?{urllib.parse.urlencode(params)}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--query", default="http://127.0.0.1:3200")
    parser.add_argument("--data-dir", default="weft-data")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated kinds to run")
    args = parser.parse_args()
    base = args.query
    only = set(filter(None, args.only.split(",")))
    want = lambda kind: not only or kind in only  # noqa: E731

    with open(os.path.join(args.data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    files = manifest["tables"]["spans"]["files"]
    rows = sum(f["rows"] for f in files)
    size = sum(f["bytes"] for f in files)
    print(f"parquet: {len(files)} span files, {rows} spans, {size} bytes")
    if rows:
        print(f"bytes per stored span: {size / rows:.1f}")
    total = post_sql(base, "SELECT count(*) AS n FROM spans")[0]["n"]
    print(f"spans queryable (files + live): {total}")
    bounds = post_sql(
        base,
        "SELECT CAST(min(start_time) AS BIGINT) AS lo, CAST(max(start_time) AS BIGINT) AS hi FROM spans",
    )[0]
    lo, hi = int(bounds["lo"]), int(bounds["hi"]) + 1
    hour_lo = max(lo, hi - 3600 * 10**9)

    if want("trace"):
        ids = [
            r["id"]
            for r in post_sql(
                base,
                f"SELECT hex_id(trace_id) AS id FROM spans ORDER BY random() LIMIT {args.samples}",
            )
        ]

        def check_trace(body, headers):
            assert body.startswith(b'{"resourceSpans"'), body[:100]
            assert int(headers["x-weft-span-count"]) > 0

        measure(
            "trace by id, no time hint",
            [f"{base}/api/v1/traces/{i}" for i in ids],
            args.server_pid,
            check_trace,
        )

    # The busiest service and operation, and a non-promoted attribute value to look for.
    top = post_sql(
        base,
        "SELECT CAST(service_name AS VARCHAR) AS s, CAST(span_name AS VARCHAR) AS o, count(*) AS n "
        "FROM spans GROUP BY 1, 2 ORDER BY n DESC LIMIT 1",
    )[0]
    user = post_sql(
        base,
        "SELECT attributes['user.id'] AS u FROM spans WHERE attributes['user.id'] IS NOT NULL LIMIT 1",
    )
    ok = lambda body, headers: json.loads(body)  # noqa: E731

    if want("search"):
        measure(
            "search: service + operation + duration > 1 ms + error status, one hour, limit 20",
            [
                q(base, "/api/v1/search", service=top["s"], operation=top["o"],
                  min_duration="1ms", status="error", start=hour_lo, end=hi, limit=20)
            ] * args.repeats,
            args.server_pid,
            ok,
        )
        if user:
            measure(
                f"search: non-promoted attribute user.id={user[0]['u']}, one hour, limit 20",
                [
                    q(base, "/api/v1/search", attr=f"user.id={user[0]['u']}",
                      start=hour_lo, end=hi, limit=20)
                ] * args.repeats,
                args.server_pid,
                ok,
            )
    if want("dependencies"):
        measure(
            f"dependency graph over {total} spans",
            [q(base, "/api/v1/dependencies", start=lo, end=hi)] * args.repeats,
            args.server_pid,
            ok,
        )
    if want("latency"):
        measure(
            f"latency percentiles for every (service, operation) over {total} spans",
            [q(base, "/api/v1/latency", start=lo, end=hi)] * args.repeats,
            args.server_pid,
            ok,
        )
        measure(
            f"latency report for service {top['s']} (step 1 min) over {total} spans",
            [q(base, "/api/v1/latency", service=top["s"], start=lo, end=hi, step="1m")]
            * args.repeats,
            args.server_pid,
            ok,
        )


if __name__ == "__main__":
    random.seed(1)
    main()
