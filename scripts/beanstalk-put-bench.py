#!/usr/bin/env python3
"""Closed-loop `put` benchmark for beanstalkd: N connections, each with one
put in flight, for a fixed time; prints puts/s and p50/p99 latency.

Debian's beanstalkd ships no load generator, so this is the small script
BENCHMARKS.md names. Python's own overhead caps it (see the in-memory
beanstalkd row measured with it beside the `-b` rows).

usage: beanstalk-put-bench.py [--host 127.0.0.1] [--port 11300]
                              [--connections 64] [--seconds 10] [--body-bytes 32]
"""
import argparse
import asyncio
import time


async def worker(host, port, body, deadline, latencies):
    reader, writer = await asyncio.open_connection(host, port)
    command = b"put 0 0 600 %d\r\n%s\r\n" % (len(body), body)
    while time.monotonic() < deadline:
        started = time.monotonic()
        writer.write(command)
        line = await reader.readline()
        if not line.startswith(b"INSERTED"):
            raise SystemExit(f"unexpected answer {line!r}")
        latencies.append(time.monotonic() - started)
    writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11300)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--body-bytes", type=int, default=32)
    args = parser.parse_args()
    body = b"x" * args.body_bytes
    latencies = []
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(
        *(worker(args.host, args.port, body, deadline, latencies) for _ in range(args.connections))
    )
    elapsed = time.monotonic() - started
    latencies.sort()
    n = len(latencies)
    p = lambda q: latencies[min(n - 1, int(q * n))] * 1e3
    print(f"{n} puts in {elapsed:.1f} s: {n / elapsed:.0f} puts/s, p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms")


asyncio.run(main())
