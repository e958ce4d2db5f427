#!/usr/bin/env python3
"""RSS of the server under two body-storage scenarios (issue 9, BENCHMARKS.md).

Usage: benches/wrk/body_storage_rss.py target/release/ubroker
(a) publishes 1M 30-byte messages in batches of 100, reads VmRSS, drains.
(b) publishes 60 requests of 1,000 x 1,000-byte messages, fetches them all,
acknowledges all but one per fetch, then opens and closes 400 connections
(the server trims after connections close in bulk) and reads VmRSS: what the
kept messages still hold. Over HTTP on one connection, standard library only.
"""
import http.client, json, sys, time, subprocess, re
binary = sys.argv[1]
p = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = p.stdout.readline()
host, port = re.search(r"http://([\d.]+):(\d+)", line).groups()
c = http.client.HTTPConnection(host, int(port))
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) // 1024
def call(method, path, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    assert r.status == 200, (r.status, data[:200])
    return json.loads(data)
print("start RSS MiB", rss())
# (a) 1M messages of 30 bytes in batches of 100
small = json.dumps({"messages": [{"body": "m%029d" % i} for i in range(100)]})
for _ in range(10000):
    call("POST", "/queues/small/publish", small)
time.sleep(1)
print("(a) 1M x 30 B ready: RSS MiB", rss())
# drain (a)
while True:
    c.request("GET", "/queues/small/fetch?max=1000&wait=0"); r = c.getresponse(); data = r.read()
    if r.status != 200: break
    ids = [m["id"] for m in json.loads(data)["messages"]]
    call("POST", "/queues/small/acknowledge", json.dumps({"ids": ids}))
time.sleep(3)
print("(a) drained: RSS MiB", rss())
# (b) 60 requests of 1000 x 1000-byte bodies (~1 MB each), keep one message of each
big_body = "x" * 1000
big = json.dumps({"messages": [{"body": big_body} for _ in range(1000)]})
print("(b) request bytes", len(big))
for _ in range(60):
    call("POST", "/queues/big/publish", big)
print("(b) 60k x 1000 B ready: RSS MiB", rss())
kept = 0
while True:
    c.request("GET", "/queues/big/fetch?max=1000&wait=0"); r = c.getresponse(); data = r.read()
    if r.status != 200: break
    ids = [m["id"] for m in json.loads(data)["messages"]]
    kept += 1
    call("POST", "/queues/big/acknowledge", json.dumps({"ids": ids[1:]}))
time.sleep(1)
print("(b) kept %d leased messages, before a trim: RSS MiB" % kept, rss())
# Make the server trim while it still holds the kept messages: close many
# connections at once (the bulk-close trim of issue 13).
import socket
socks = []
for _ in range(400):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(4096)
for s in socks:
    s.close()
time.sleep(3)
print("(b) kept %d leased messages (%d KiB of bodies): RSS MiB" % (kept, kept * 1000 // 1024), rss())
p.terminate(); p.wait()
