#!/usr/bin/env python3
"""RSS of a running ubroker before, during and after N connections that each
send a partial request head of B bytes and then close (issue 13, item 6).

    target/release/ubroker --port 8080 --header-read-timeout 120000 &
    python3 scripts/closed-connections-rss.py PID 127.0.0.1 8080 [N] [B]

Prints the VmRSS of PID (from /proc/PID/status) at each step.
"""
import resource
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1500
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 32_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))
    head = b"GET /fetch HTTP/1.1\r\nhost: x\r\nx-pad: "
    partial = head + b"a" * (size - len(head))  # no CRLF CRLF: never complete
    before = rss_kb(pid)
    print(f"before:  {before / 1024:7.1f} MB")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(partial)
        socks.append(s)
    time.sleep(2)
    during = rss_kb(pid)
    print(f"during:  {during / 1024:7.1f} MB  ({(during - before) * 1024 / n / 1024:.1f} KB per connection)")
    for s in socks:
        s.close()
    for wait in (1, 3):
        time.sleep(wait if wait == 1 else 2)
        after = rss_kb(pid)
        print(f"after {wait} s: {after / 1024:6.1f} MB  ({(during - after) / 1024:.1f} MB of {(during - before) / 1024:.1f} MB came back)")


if __name__ == "__main__":
    main()
