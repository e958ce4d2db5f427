#!/usr/bin/env bash
# Issue 18's durable batch figure: batches of 100 from C connections (default
# 16), `ubroker --data-dir DIR --fsync always` (A) against `ubroker` in memory
# (B), alternating rounds in one run, then the log's figures of A.
#
#   scripts/durability-batch-bench.sh [DIR] [CONNECTIONS]
#
# DIR (default /var/tmp) is where the log goes. Needs release binaries
# (cargo build --release -p ubroker-server -p ubroker-benches). DURATION
# (default 5 s) and ROUNDS (default 3) set the length.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/var/tmp}
CONNECTIONS=${2:-16}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
BIN=target/release
work=$(mktemp -d)
data="$DIR/ubroker-batch-bench.$$"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work" "$data"; }
trap cleanup EXIT

start() { # port args...
    local port=$1; shift
    "$BIN/ubroker" --port "$port" --max-queue-bytes 68719476736 "$@" > "$work/$port.out" 2> "$work/$port.err" &
    pids+=($!)
    for _ in $(seq 100); do grep -q listening "$work/$port.out" 2>/dev/null && return; sleep 0.05; done
    echo "ubroker on $port did not start"; cat "$work/$port.err"; exit 1
}

echo "== load: $(cat /proc/loadavg)"
echo "== log on: $(df -h "$DIR" | tail -1)"
start 18931 --data-dir "$data" --fsync always
a=${pids[-1]}
start 18932
b=${pids[-1]}
"$BIN/ubroker-load" --url http://127.0.0.1:18931 --compare http://127.0.0.1:18932 \
    --pid "$a" --compare-pid "$b" --batch 100 --connections "$CONNECTIONS" \
    --duration "$DURATION" --warmup 1 --rounds "$ROUNDS" --body-bytes 32
python3 scripts/log-stats.py http://127.0.0.1:18931
echo "== load: $(cat /proc/loadavg)"
