#!/usr/bin/env bash
# Redis beside ubroker (issue 9): Debian's redis-server measured with
# redis-benchmark on this machine, printed as Markdown rows for
# BENCHMARKS.md. Another protocol (RESP over TCP) and another client, so
# only the order of magnitude compares; redis-server's CPU per message is
# the figure that holds when client and server share the cores.
#
# Usage: scripts/redis-compare.sh      (needs redis-server, redis-benchmark,
#        python3 with redis-py: apt-get install redis-server python3-redis)
#
# Starts its own redis-server on a free port (no RDB, no AOF), runs, stops
# it. Rows, 64 clients, 30-byte values:
#   * lists: LPUSH then RPOP of what it pushed (redis-benchmark -t), -P 100
#     and -P 1;
#   * streams: XADD with -P 100 and -P 1; XREADGROUP COUNT 100 without
#     acknowledging (redis-benchmark, as the issue's figure);
#   * streams, XREADGROUP COUNT 100 then XACK of exactly the ids received,
#     two ways: (a) scripts/redis-stream-consumer.py (redis-py, the XACK of
#     one batch pipelined with the next XREADGROUP; the Python client is the
#     bottleneck, see its CPU), and (b) one Lua script via EVAL doing both
#     inside redis per call (redis-benchmark, 64 clients): the server's whole
#     cost of reading and acknowledging, but the entries are never sent to a
#     client, which flatters redis.
# Environment: N_P100 (5000000), N_P1 (500000), CLIENTS (64),
# CONSUMER_PROCS (3), CONSUMER_SECONDS (10).
set -euo pipefail
cd "$(dirname "$0")/.."

N_P100=${N_P100:-5000000}
N_P1=${N_P1:-500000}
CLIENTS=${CLIENTS:-64}
CONSUMER_PROCS=${CONSUMER_PROCS:-3}
CONSUMER_SECONDS=${CONSUMER_SECONDS:-10}
PY=${PYTHON:-/usr/bin/python3}
VALUE=$(printf 'v%.0s' $(seq 30))          # 30 bytes
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "redis-compare: $tool not found (apt-get install redis-server)" >&2; exit 1; }
done
"$PY" -c 'import redis' 2>/dev/null ||
    { echo "redis-compare: $PY has no redis module (apt-get install python3-redis, or PYTHON=...)" >&2; exit 1; }
TICK=$(getconf CLK_TCK)

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
redis_pid=""
cleanup() {
    [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(redis-cli -p "$port" ping) == PONG ]] || { echo "redis-server did not start" >&2; exit 1; }
cli() { redis-cli -p "$port" "$@"; }

ticks() { awk '{print $14 + $15}' "/proc/$redis_pid/stat"; }
load() { cut -d' ' -f1 /proc/loadavg; }

# row LABEL PIPELINE MESSAGES_PER_REQUEST REQUESTS -- redis-benchmark args...
row() {
    local label=$1 pipeline=$2 per=$3 requests=$4
    shift 5
    local before after rps
    before=$(ticks)
    rps=$(redis-benchmark -p "$port" -c "$CLIENTS" -n "$requests" -P "$pipeline" --csv "$@" \
        | tail -n 1 | cut -d, -f2 | tr -d '"')
    after=$(ticks)
    awk -v l="$label" -v p="$pipeline" -v per="$per" -v n="$requests" -v rps="$rps" \
        -v cpu="$((after - before))" -v tick="$TICK" -v load="$(load)" -v c="$CLIENTS" 'BEGIN {
        printf "| %s | %s | %s | %d | %.0f | %.0f | %.3f | %s |\n",
            l, p, c, n, rps, rps * per, cpu / tick * 1e6 / (n * per), load }'
}

echo "redis $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port, $(nproc) cores, load average at start: $(cat /proc/loadavg)"
echo
echo "| test | pipeline (-P) | clients | requests | requests/s | messages/s | redis-server CPU µs per message | load (1 min) |"
echo "|---|---|---|---|---|---|---|---|"
row "LPUSH" 100 1 "$N_P100" -- -d 30 -t lpush
row "RPOP (of those pushed)" 100 1 "$N_P100" -- -d 30 -t rpop
row "LPUSH" 1 1 "$N_P1" -- -d 30 -t lpush
row "RPOP (of those pushed)" 1 1 "$N_P1" -- -d 30 -t rpop
row "XADD s * body <30 B>" 100 1 "$N_P100" -- XADD s '*' body "$VALUE"
row "XADD s * body <30 B>" 1 1 "$N_P1" -- XADD s '*' body "$VALUE"

entries=$(cli XLEN s)
# Each group reads the whole stream independently.
for group in g1 g2 g3; do cli XGROUP CREATE s "$group" 0 >/dev/null; done
reads=$(( entries / 100 * 8 / 10 ))   # stay clear of the end of the stream
row "XREADGROUP COUNT 100, no XACK" 1 100 "$reads" -- XREADGROUP GROUP g1 c COUNT 100 STREAMS s '>'

before=$(ticks)
result=$("$PY" scripts/redis-stream-consumer.py "$port" s g2 "$CONSUMER_PROCS" 1 100 "$CONSUMER_SECONDS")
after=$(ticks)
messages=${result#messages=}; messages=${messages%% *}
seconds=${result##*seconds=}
pending=$(cli XPENDING s g2 | head -n 1)
awk -v m="$messages" -v s="$seconds" -v cpu="$((after - before))" -v tick="$TICK" \
    -v load="$(load)" -v procs="$CONSUMER_PROCS" -v pending="$pending" 'BEGIN {
    printf "| XREADGROUP COUNT 100 + XACK, redis-py (%d processes, XACK pipelined with the next read; %d left pending) | 2 commands per round trip | %d | %d batches | %.0f | %.0f | %.3f | %s |\n",
        procs, pending, procs, m / 100, m / s / 100, m / s, cpu / tick * 1e6 / m, load }'

lua='local r = redis.call("XREADGROUP", "GROUP", "g3", "c", "COUNT", 100, "STREAMS", "s", ">")
if not r then return 0 end
local ids = {}
for _, e in ipairs(r[1][2]) do ids[#ids + 1] = e[1] end
if #ids > 0 then redis.call("XACK", "s", "g3", unpack(ids)) end
return #ids'
row "EVAL: XREADGROUP COUNT 100 + XACK inside redis (entries not sent)" 1 100 "$reads" -- EVAL "$lua" 0
pending=$(cli XPENDING s g3 | head -n 1)
read3=$(cli XINFO GROUPS s | awk '/^g3$/ {found = 1} found && /^entries-read$/ {getline; print; exit}')
echo
echo "check: EVAL group g3 read $read3 entries (expected $((reads * 100))), $pending left pending (expected 0)"
