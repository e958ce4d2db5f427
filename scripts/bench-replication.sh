#!/bin/bash
# Issue 21: replicated (3 nodes, --replicas 3) against one node with
# --fsync always, same run, alternating rounds (BENCHMARKS.md "Issue 21").
# Usage: scripts/bench-replication.sh [DIR]   (release build first:
#   cargo build --release -p ubroker-server -p ubroker-benches)
# Ports 7311-7313 (HTTP), 7411-7413 (Raft), 7320 (single node).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${UBROKER_BIN:-$ROOT/target/release/ubroker}
LOAD=$ROOT/target/release/ubroker-load
D=${1:-$(mktemp -d)}
rm -rf "$D"/n0 "$D"/n1 "$D"/n2 "$D"/single
mkdir -p "$D"
PIDS=()
stop() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
PEERS="0=127.0.0.1:7411,1=127.0.0.1:7412,2=127.0.0.1:7413"
for i in 0 1 2; do
  extra=()
  [ "$i" = 0 ] && extra=(--raft-bootstrap)
  RUST_LOG=warn "$B" --port $((7311 + i)) --data-dir "$D/n$i" --replicas 3 --node "$i" \
    --raft-listen 127.0.0.1:$((7411 + i)) --raft-peers "$PEERS" "${extra[@]}" >"$D/out$i" 2>"$D/err$i" &
  PIDS+=($!)
done
RUST_LOG=warn "$B" --port 7320 --data-dir "$D/single" --fsync always >"$D/outs" 2>"$D/errs" &
PIDS+=($!)
leader=""
for _ in $(seq 200); do
  for i in 0 1 2; do
    if curl -sf "127.0.0.1:$((7311 + i))/health/leader" >/dev/null; then leader=$i; break 2; fi
  done
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
A="http://127.0.0.1:$((7311 + leader))"
echo "== batch publish (100 a request, 16 connections): replicated (A) vs --fsync always (B)"
"$LOAD" --url "$A" --compare http://127.0.0.1:7320 --pid "${PIDS[$leader]}" --compare-pid "${PIDS[3]}" \
  --batch 100 -c 16 --duration 4s --warmup 1s --rounds 3 --threads 1 | grep -v "measuring\|warm-up\|stopping"
echo "== single publish, one connection (latency): replicated (A) vs --fsync always (B)"
"$LOAD" --url "$A" --compare http://127.0.0.1:7320 --pid "${PIDS[$leader]}" --compare-pid "${PIDS[3]}" \
  --batch 1 -c 1 --duration 3s --warmup 1s --rounds 3 --threads 1 | grep -v "measuring\|warm-up\|stopping"
