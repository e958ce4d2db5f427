#!/usr/bin/env python3
"""The smallest honest Redis Streams consumer: XREADGROUP ... COUNT n, then
XACK of exactly the ids it got, with the XACK of one batch pipelined with
the XREADGROUP of the next (one round trip per batch), on redis-py.

Usage: redis-stream-consumer.py PORT STREAM GROUP PROCESSES CONNECTIONS_PER_PROCESS COUNT SECONDS

Runs PROCESSES processes, each with CONNECTIONS_PER_PROCESS connections
served round robin (one process is one Python thread of CPU), for SECONDS,
and prints one line: `messages=<acked> seconds=<elapsed>`. Python is slower
than redis at this, so the client, not the server, may be the bottleneck:
the caller also reports redis-server's own CPU per message.
"""
import multiprocessing
import sys
import time

import redis


def worker(port, stream, group, connections, count, seconds, name, out):
    clients = [redis.Redis(host="127.0.0.1", port=port) for _ in range(connections)]
    pending = [[] for _ in clients]
    acked = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, client in enumerate(clients):
            pipe = client.pipeline(transaction=False)
            if pending[i]:
                pipe.xack(stream, group, *pending[i])
            pipe.xreadgroup(group, f"{name}-{i}", {stream: ">"}, count=count)
            replies = pipe.execute()
            if pending[i]:
                acked += replies[0]
            got = replies[-1]
            pending[i] = [entry_id for _, entries in got for entry_id, _ in entries]
    for i, client in enumerate(clients):
        if pending[i]:
            acked += client.xack(stream, group, *pending[i])
    out.put(acked)


def main():
    port, stream, group = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    processes, connections, count = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    seconds = float(sys.argv[7])
    out = multiprocessing.Queue()
    began = time.monotonic()
    procs = [
        multiprocessing.Process(
            target=worker,
            args=(port, stream, group, connections, count, seconds, f"c{p}", out),
        )
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    total = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    print(f"messages={total} seconds={time.monotonic() - began:.3f}")


if __name__ == "__main__":
    main()
