#!/usr/bin/env bash
# The durability figures of BENCHMARKS.md ("Durability (issue 11)"), with the
# peers measured beside us. Needs release binaries (cargo build --release
# -p ubroker-server -p ubroker-benches) and, for the peers, Debian's
# beanstalkd and redis-server (apt-get install beanstalkd redis-server).
#
#   scripts/durability-bench.sh [DISK_DIR] [TMPFS_DIR]
#
# DISK_DIR (default /var/tmp) is on the machine's disk, TMPFS_DIR (default
# /dev/shm) on a tmpfs. Each run: 64 connections, one request in flight each,
# 32-byte bodies, 2 s warm-up, DURATION (default 8 s) measured.
set -euo pipefail
cd "$(dirname "$0")/.."
DISK=${1:-/var/tmp}
TMPFS=${2:-/dev/shm}
DURATION=${DURATION:-8}
BIN=target/release
LOAD="$BIN/ubroker-load --connections 64 --duration $DURATION --warmup 2 --body-bytes 32"
work=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p"; wait "$p"; done 2>/dev/null || true; pids=(); }
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work" "$DISK"/ubroker-bench-* "$TMPFS"/ubroker-bench-*; }
trap cleanup EXIT

start_ubroker() { # port args...
    local port=$1; shift
    "$BIN/ubroker" --port "$port" "$@" > "$work/ub-$port.out" 2> "$work/ub-$port.err" &
    pids+=($!)
    for _ in $(seq 100); do grep -q listening "$work/ub-$port.out" 2>/dev/null && return; sleep 0.05; done
    echo "ubroker on $port did not start"; cat "$work/ub-$port.err"; exit 1
}

echo "== load: $(cat /proc/loadavg)"
echo "== disk: $(df -h "$DISK" | tail -1)"
echo "== tmpfs: $(df -h "$TMPFS" | tail -1)"

for where in disk tmpfs; do
    dir=$DISK; [ $where = tmpfs ] && dir=$TMPFS
    rm -rf "$dir/ubroker-bench-$where"
    echo
    echo "== single publishes, 64 connections: --fsync always on $where ($dir) vs in memory"
    start_ubroker 18101 --max-queue-bytes 17179869184
    start_ubroker 18102 --max-queue-bytes 17179869184 --data-dir "$dir/ubroker-bench-$where" --fsync always
    $LOAD --url http://127.0.0.1:18102 --compare http://127.0.0.1:18101 --rounds 2
    python3 scripts/log-stats.py http://127.0.0.1:18102
    stop_all
    rm -rf "$dir/ubroker-bench-$where"

    echo
    echo "== redis-server appendonly yes appendfsync always on $where: redis-benchmark LPUSH, 64 clients, unpipelined"
    mkdir -p "$dir/ubroker-bench-redis"
    redis-server --port 18103 --save '' --appendonly yes --appendfsync always --dir "$dir/ubroker-bench-redis" --daemonize no > "$work/redis.log" 2>&1 &
    pids+=($!); sleep 0.5
    redis-benchmark -p 18103 -t lpush -c 64 -n 300000 -d 32 -q | tr '\r' '\n' | tail -1
    redis-benchmark -p 18103 -t lpush -c 64 -n 300000 -d 32 --csv | tail -1
    stop_all
    rm -rf "$dir/ubroker-bench-redis"

    echo
    echo "== beanstalkd -b DIR -f 0 on $where: scripts/beanstalk-put-bench.py, 64 connections"
    mkdir -p "$dir/ubroker-bench-bs"
    beanstalkd -l 127.0.0.1 -p 18104 -b "$dir/ubroker-bench-bs" -f 0 &
    pids+=($!); sleep 0.3
    python3 scripts/beanstalk-put-bench.py --port 18104 --connections 64 --seconds "$DURATION"
    stop_all
    rm -rf "$dir/ubroker-bench-bs"
done

echo
echo "== the beanstalk client's own ceiling: beanstalkd in memory (no -b)"
beanstalkd -l 127.0.0.1 -p 18105 &
pids+=($!); sleep 0.3
python3 scripts/beanstalk-put-bench.py --port 18105 --connections 64 --seconds "$DURATION"
stop_all
echo "== load: $(cat /proc/loadavg)"
