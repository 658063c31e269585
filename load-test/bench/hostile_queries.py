#!/usr/bin/env python3
"""Hostile queries against a fresh `weft up`: status, time to answer, the server's peak RSS.

    load-test/bench/hostile_queries.py path/to/weft [--set query.timeout_secs=4 ...]

Starts the binary on loopback ports with a temporary data directory, sends each input over
HTTP (and a few over psql), and prints one line per input. A server that died is reported
and restarted for the next input. Standard library only (plus the `psql` binary).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def start(binary, extra):
    data = tempfile.mkdtemp(prefix="weft-hostile-")
    args = [binary, "up", "--data-dir", data, "--otlp-grpc", "127.0.0.1:0",
            "--otlp-http", "127.0.0.1:0", "--query-http", "127.0.0.1:0",
            "--postgres", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "WEFT_LOG": "error"})
    urls = {}
    for line in proc.stdout:
        line = line.strip()
        for key, prefix in [("otlp", "weft: otlp-http listening on "),
                            ("query", "weft: query-http listening on "),
                            ("pg", "weft: postgres listening on ")]:
            if line.startswith(prefix):
                urls[key] = line[len(prefix):]
        if line == "weft: ready":
            break
    return proc, urls


def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except FileNotFoundError:
        return None


def http(method, url, body=None, timeout=300):
    started = time.time()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
        status = f"{status} {e.read()[:110].decode(errors='replace')}"
    except Exception as e:  # noqa: BLE001 - a dead server is a result here
        status = f"no answer ({type(e).__name__})"
    return status, time.time() - started


def psql(urls, sql=None, file=None):
    host, port = urls["pg"].rsplit(":", 1)
    args = ["psql", "-h", host, "-p", port, "-U", "weft", "-d", "weft", "-X", "-w", "-At",
            "-v", "VERBOSITY=verbose"]
    args += ["-f", file] if file else ["-c", sql]
    started = time.time()
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=300)
        out = (run.stderr.strip() or run.stdout.strip()[:40])[:110]
        status = f"psql rc={run.returncode} {out}"
    except subprocess.TimeoutExpired:
        status = "psql timeout"
    return status, time.time() - started


def sum_sql(n):
    return "SELECT " + "+".join(["1"] * n) + " AS s"


def main():
    binary, extra = sys.argv[1], sys.argv[2:]
    big = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False)
    big.write("SELECT 1 AS x /*" + "x" * (64 << 20) + "*/;\n")
    big.close()
    attrs = "".join(f"&attr=k{i}%3Dv" for i in range(2000))
    tags = "".join(f"&tag=k{i}:v" for i in range(2000))
    cross = ("SELECT count(*) FROM generate_series(1, 200000) a CROSS JOIN "
             "generate_series(1, 200000) b WHERE regexp_replace(CAST(a.value AS VARCHAR) "
             "|| 'x' || CAST(b.value AS VARCHAR), '^([0-9]+)+x', 'y') = 'z'")
    cases = [
        ("sql 1+1+... 2000 terms", "sql", sum_sql(2000)),
        ("sql OR chain 2000", "sql", "SELECT count(*) FROM spans WHERE "
         + " OR ".join(f"flags = {i}" for i in range(2000))),
        ("sql 5000 UNION ALL", "sql", " UNION ALL ".join(["SELECT 1"] * 5000)),
        ("psql 1+1+... 2000 terms", "psql", sum_sql(2000)),
        ("search 2000 attr=", "get", "/api/v1/search?limit=5" + attrs),
        ("jaeger 2000 tag=", "get", "/api/traces?service=x" + tags),
        ("repeat('x', 1e9)", "sql", "SELECT length(repeat('x', 1000000000)) AS v"),
        ("lpad('x', 1e9)", "sql", "SELECT length(lpad('x', 1000000000)) AS v"),
        ("regexp_replace 10 MB x10", "sql",
         "SELECT length(regexp_replace(repeat('x', 10000000), '', 'yyyyyyyyyy', 'g')) AS v"),
        ("array_repeat(1, 1.5e8)", "sql", "SELECT cardinality(array_repeat(1, 150000000)) AS v"),
        ("string_agg 1 GB", "sql", "SELECT length(string_agg(repeat('x', 1000), ',')) AS v "
         "FROM generate_series(1, 1000000)"),
        ("psql 64 MiB SQL", "psqlfile", big.name),
        # Last: on a server without a bulkhead it wedges the process for minutes.
        ("cross join regexp_replace", "cross", cross),
    ]
    proc, urls = start(binary, extra)
    print(f"{'input':28} {'status':70} {'secs':>6} {'peak RSS MiB':>12}")
    for name, kind, what in cases:
        if proc.poll() is not None:
            proc, urls = start(binary, extra)
        if kind == "sql":
            status, secs = http("POST", urls["query"] + "/api/v1/sql", {"sql": what})
        elif kind == "get":
            status, secs = http("GET", urls["query"] + what)
        elif kind == "psql":
            status, secs = psql(urls, sql=what)
        elif kind == "psqlfile":
            status, secs = psql(urls, file=what)
        else:  # the cross join, with probes of /readyz and an export while it runs
            result = {}
            t = threading.Thread(target=lambda: result.update(
                r=http("POST", urls["query"] + "/api/v1/sql", {"sql": what})))
            t.start()
            time.sleep(0.5)
            ready = http("GET", urls["otlp"] + "/readyz", timeout=120)
            export = http("POST", urls["otlp"] + "/v1/traces", {"resourceSpans": []},
                          timeout=120)
            t.join()
            status, secs = result["r"]
            status = (f"{status} | during it: readyz {ready[0]} in {ready[1]:.2f}s, "
                      f"export {export[0]} in {export[1]:.2f}s")
        time.sleep(0.5)  # let a crash be reaped before looking
        alive = proc.poll() is None
        rss = hwm(proc.pid) if alive else None
        status = str(status).replace("\n", " ")
        if not alive:
            status += f" [PROCESS DIED rc={proc.returncode}]"
        print(f"{name:28} {status[:200]:70} {secs:6.2f} {rss if rss else '-':>12}", flush=True)
    proc.kill()
    os.unlink(big.name)


if __name__ == "__main__":
    main()
