#!/usr/bin/env python3
"""Before/after figures for issue 14 items 7 and 9 against a real `weft up`.
usage: load-test/bench/edge_figures.py WEFT_BINARY [loris_cap_secs]

Starts `weft up`, sends two 16 MB protobuf bodies of 8M empty spans and one 15 MB OTLP/JSON
body of 5M empty spans at once plus a one-span export, prints the answers, their latency and
the peak RSS (VmHWM), then how long a one-header-byte-per-second client stays connected."""
import os, socket, subprocess, sys, tempfile, threading, time, http.client, struct, random

binary = sys.argv[1]
loris_cap = float(sys.argv[2]) if len(sys.argv) > 2 else 90.0

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)

def field(key, inner): return bytes([key]) + varint(len(inner)) + inner

def proto_bomb(n): return field(0x0a, field(0x12, b"\x12\x00" * n))
def json_bomb(n): return b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * n) + b"]}]}]}"

def one_span():
    tid = random.randbytes(16); sid = random.randbytes(8)
    now = time.time_ns()
    span = field(0x0a, tid) + field(0x12, sid) + field(0x2a, b"small") + b"\x39" + struct.pack("<Q", now - 10**9) + b"\x41" + struct.pack("<Q", now)
    return field(0x0a, field(0x12, field(0x12, span)))

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"): return int(line.split()[1]) * 1024

data = tempfile.mkdtemp()
proc = subprocess.Popen([binary, "up", "--data-dir", data, "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0",
                         "--query-http", "127.0.0.1:0", "--postgres", "127.0.0.1:0"], stdout=subprocess.PIPE,
                        env={**os.environ, "WEFT_LOG": "error"}, text=True)
addrs = {}
for line in proc.stdout:
    line = line.strip()
    if "otlp-http listening on" in line: addrs["http"] = line.split("http://")[1]
    if "query-http listening on" in line: addrs["query"] = line.split("http://")[1]
    if line == "weft: ready": break
host, port = addrs["http"].split(":")

def post(body, ctype, out, key):
    c = http.client.HTTPConnection(host, int(port), timeout=600)
    t = time.time()
    c.request("POST", "/v1/traces", body=body, headers={"Content-Type": ctype})
    r = c.getresponse(); text = r.read()
    out[key] = (r.status, round(time.time() - t, 2), text[:160])

print("rss before:", status(proc.pid, "VmRSS") // 2**20, "MiB")
res = {}
pb = proto_bomb(8_000_000); jb = json_bomb(5_000_000)
threads = [threading.Thread(target=post, args=(pb, "application/x-protobuf", res, "proto")),
           threading.Thread(target=post, args=(jb, "application/json", res, "json")),
           threading.Thread(target=post, args=(pb, "application/x-protobuf", res, "proto2"))]
for t in threads: t.start()
time.sleep(0.5)
post(one_span(), "application/x-protobuf", res, "small")
for t in threads: t.join()
print("bombs:", {k: v for k, v in res.items()})
print("peak rss (VmHWM):", status(proc.pid, "VmHWM") // 2**20, "MiB")

# slow loris: one header byte per second until the server closes the connection
s = socket.create_connection((host, int(port)))
s.settimeout(1.0)
t0 = time.time(); closed = False
req = b"POST /v1/traces HTTP/1.1\r\nHost: weft\r\nX-Slow: " + b"a" * 200
for b in req:
    if time.time() - t0 > loris_cap: break
    try:
        s.send(bytes([b]))
        d = s.recv(100)
        if d == b"" or d: closed = True; break
    except socket.timeout:
        continue
    except OSError:
        closed = True; break
print("slow-loris open for %.1f s (%s)" % (time.time() - t0, "closed by server" if closed else "still open, gave up"))
proc.kill()
