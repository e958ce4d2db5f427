#!/usr/bin/env bash
# Server CPU per message for batch publish and batch fetch+acknowledge,
# driven by wrk (issue 9). Starts target/release/ubroker on a free port,
# reads its utime+stime from /proc/PID/stat around each wrk run, and divides
# by the messages the run moved.
#   benches/wrk/cpu_per_message.sh [SECONDS] [CONNECTIONS]
# Build first: cargo build --release -p ubroker-server --bin ubroker
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
CONNS=${2:-16}
TICK=$(getconf CLK_TCK)
BIN=${UBROKER_BIN:-target/release/ubroker}
LOG=$(mktemp)
"$BIN" --port 0 >"$LOG" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do grep -q listening "$LOG" && break; sleep 0.05; done
URL=$(sed -n 's/^listening on //p' "$LOG")
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
echo "load average before: $(cat /proc/loadavg)"

before=$(cpu)
out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s benches/wrk/publish_batch.lua "$URL")
after=$(cpu)
echo "$out"
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers: the figures below are void"; fi
msgs=$((reqs * 100))
awk -v c=$((after - before)) -v t="$TICK" -v m="$msgs" -v s="$SECS" 'BEGIN {
  printf "publish: %d messages, %.0f messages/s, server CPU %.2f s, %.3f us per message\n",
    m, m / s, c / t, c / t * 1e6 / m }'
grep VmRSS "/proc/$PID/status"

before=$(cpu)
out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s benches/wrk/fetch_ack_batch.lua "$URL")
after=$(cpu)
echo "$out"
acked=$(echo "$out" | awk '/^acknowledged/ {print $2}')
awk -v c=$((after - before)) -v t="$TICK" -v m="$acked" -v s="$SECS" 'BEGIN {
  printf "fetch+ack: %d messages, %.0f messages/s, server CPU %.2f s, %.3f us per message\n",
    m, m / s, c / t, c / t * 1e6 / m }'
echo "load average after: $(cat /proc/loadavg)"
