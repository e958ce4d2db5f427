#!/usr/bin/env bash
# Two durability figures of BENCHMARKS.md: the restart time with 1M ready
# messages (recovery rate), and the log's size after draining 200k messages
# against its peak. Needs release binaries (cargo build --release -p
# ubroker-server -p ubroker-benches).
#
#   scripts/durability-recovery.sh [DISK_DIR]     (default /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
DISK=${1:-/var/tmp}
BIN=target/release
work=$(mktemp -d)
dir="$DISK/ubroker-bench-recovery"
pid=
cleanup() { [ -n "$pid" ] && { kill -9 "$pid"; wait "$pid"; } 2>/dev/null; rm -rf "$work" "$dir"; }
trap cleanup EXIT

start() { # args...
    : > "$work/out"
    "$BIN/ubroker" --port 18111 --max-queue-bytes 17179869184 --data-dir "$dir" "$@" > "$work/out" 2> "$work/err" &
    pid=$!
    for _ in $(seq 6000); do grep -q listening "$work/out" 2>/dev/null && return; sleep 0.01; done
    echo "no start"; cat "$work/err"; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
stat() { python3 -c "import json,sys,urllib.request; s=json.load(urllib.request.urlopen('http://127.0.0.1:18111/stats')); print($1)"; }

echo "== load: $(cat /proc/loadavg)"
rm -rf "$dir"
echo "== filling 1M ready messages (32-byte bodies; --fsync never to fill fast)"
start --fsync never
$BIN/ubroker-load --url http://127.0.0.1:18111 --messages 1000000 --connections 64 --body-bytes 32 | tail -2
stop
du -sh "$dir"
for run in 1 2 3; do
    started=$(date +%s.%N)
    start
    ready=$(date +%s.%N)
    cpu=$(python3 -c "import os; f=open('/proc/$pid/stat').read().rsplit(')',1)[1].split(); print(f'{(int(f[11])+int(f[12]))/os.sysconf(\"SC_CLK_TCK\"):.2f}')")
    echo "restart $run: listening after $(python3 -c "print(f'{$ready - $started:.2f}')") s (CPU $cpu s so far), $(stat 's["queues"]["default"]["ready"]') ready; $(grep -o 'recovered the write-ahead log.*' "$work/err" | sed 's/\x1b\[[0-9;]*m//g')"
    stop
done
rm -rf "$dir"

echo
echo "== draining 200k: the log's peak and what is left (--fsync always)"
start
( peak=0; while kill -0 "$pid" 2>/dev/null; do b=$(stat 's["log"]["bytes"]' 2>/dev/null || echo 0); [ "$b" -gt "$peak" ] && peak=$b && echo "$peak" > "$work/peak"; sleep 0.1; done ) &
poller=$!
$BIN/ubroker-load --url http://127.0.0.1:18111 --mode consume --messages 200000 --connections 64 --body-bytes 32 | tail -2
for s in 0 1 2 3; do
    sleep 1
    echo "after ${s}+1 s: log bytes $(stat 's["log"]["bytes"]'), segments $(stat 's["log"]["segments"]'), live $(stat 's["log"]["live_messages"]'); du: $(du -sb --exclude=reserve "$dir" | cut -f1) bytes of segments"
done
echo "peak log bytes: $(cat "$work/peak")"
kill "$poller" 2>/dev/null || true
stop
echo "== load: $(cat /proc/loadavg)"
