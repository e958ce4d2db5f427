#!/usr/bin/env bash
# Does the broker's memory follow live state? Starts a release broker with a
# one-hour TTL, records its idle RSS, publishes N messages, fetches and
# acknowledges every one over HTTP, and prints the RSS one and two seconds
# after the queue is empty. With the old expiry FIFO, every fetch left an
# entry for one TTL; now nothing outlives its lease.
#
# Usage: scripts/drain-rss.sh [N] [TTL_MS]   (defaults: 500000, 3600000)
# Needs: cargo build --release -p ubroker-server -p ubroker-benches
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500000}
ttl=${2:-3600000}
bin=${UBROKER_BIN:-target/release/ubroker}
load=target/release/ubroker-load
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

out=$(mktemp)
"$bin" --port 0 --ttl "$ttl" >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$out")
sleep 1
idle=$(rss $pid)
"$load" --url "$url" --mode publish --messages "$n" --connections 32 >/dev/null 2>&1
full=$(rss $pid)
"$load" --url "$url" --mode consume --prefill 0 --messages "$n" --connections 32 >/dev/null 2>&1
sleep 1
one=$(rss $pid)
sleep 1
two=$(rss $pid)
echo "messages=$n ttl_ms=$ttl idle_kib=$idle full_kib=$full drained_1s_kib=$one drained_2s_kib=$two"
awk -v i="$idle" -v t="$two" 'BEGIN { printf "after 2 s: %+.1f%% of idle (%+d KiB); allowance idle + 10%% + 2 MiB -> %s\n", (t-i)*100/i, t-i, (t <= i*1.10 + 2048) ? "within" : "OVER" }'
