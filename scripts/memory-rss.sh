#!/usr/bin/env bash
# Issue 18's two memory figures (SPEC part 3 "Memory"), for one binary:
#
# 1. few-left: idle RSS; N messages published (32 connections), then all but
#    LEFT fetched and acknowledged, so the broker is never empty; RSS 1, 2
#    and 5 s later against idle + 10% + 2 MiB.
# 2. restored: M messages of 30 bytes in batches of 100 published to a fresh
#    broker in memory, RSS less idle after 5 s idle; the same M published to
#    a --data-dir broker, restarted, RSS less idle 5 s after the restart.
#
#   scripts/memory-rss.sh [N] [LEFT] [M]   (defaults 500000, 38, 1000000)
#
# UBROKER_BIN picks the binary (default target/release/ubroker); needs
# cargo build --release -p ubroker-server -p ubroker-benches.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500000}
left=${2:-38}
m=${3:-1000000}
bin=${UBROKER_BIN:-target/release/ubroker}
load=target/release/ubroker-load
dir=${DATA_DIR:-/var/tmp}/ubroker-memory-rss.$$
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
out=$(mktemp)
pid=
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=; }
trap 'stop; rm -rf "$out" "$dir"' EXIT
start() { # args...
    : > "$out"
    "$bin" --port 0 --max-queue-bytes 68719476736 "$@" >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 3000); do grep -q listening "$out" && break; sleep 0.02; done
    url=$(sed -n 's/^listening on //p' "$out")
}

echo "== load: $(cat /proc/loadavg); binary $bin"
if [ "${PARTS:-both}" != restored ]; then
start --ttl 3600000
sleep 1
idle=$(rss $pid)
"$load" --url "$url" --mode publish --messages "$n" --connections 32 >/dev/null 2>&1
full=$(rss $pid)
"$load" --url "$url" --mode consume --prefill 0 --messages $((n - left)) --connections 32 >/dev/null 2>&1
held=$(python3 -c "import json,urllib.request; s=json.load(urllib.request.urlopen('$url/stats')); print(sum(q['ready']+q['in_flight'] for q in s['queues'].values()))")
sleep 1; one=$(rss $pid)
sleep 1; two=$(rss $pid)
sleep 3; five=$(rss $pid)
stop
echo "few-left: messages=$n held=$held idle_kib=$idle full_kib=$full after_1s_kib=$one after_2s_kib=$two after_5s_kib=$five"
awk -v i="$idle" -v t="$five" 'BEGIN { printf "few-left after 5 s: %+d KiB over idle; allowance 10%% + 2 MiB = %d KiB -> %s\n", t-i, i*0.10+2048, (t <= i*1.10 + 2048) ? "within" : "OVER" }'
fi

publish_m() {
    "$load" --url "$url" --mode publish --messages "$m" --batch 100 --body-bytes 30 --connections 16 >/dev/null 2>&1
}
start
sleep 1; idle_live=$(rss $pid)
publish_m
sleep 5; live=$(rss $pid)
stop
rm -rf "$dir"
start --data-dir "$dir" --fsync never
publish_m
sleep 5; durable_live=$(rss $pid)
stop
start --data-dir "$dir"
sleep 5; restored=$(rss $pid)
stop
start
sleep 1; idle_restart=$(rss $pid)
stop
echo "restored: messages=$m idle_kib=$idle_live live_kib=$live durable_live_kib=$durable_live restored_kib=$restored idle_again_kib=$idle_restart"
awk -v i="$idle_live" -v l="$live" -v d="$durable_live" -v r="$restored" -v m="$m" 'BEGIN { printf "restored: live %.1f B/message (with --data-dir %.1f), restored %.1f B/message, ratio to live %.3f -> %s\n", (l-i)*1024/m, (d-i)*1024/m, (r-i)*1024/m, (r-i)/(l-i), ((r-i) <= 1.10*(l-i)) ? "within 10%" : "OVER" }'
