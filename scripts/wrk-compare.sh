#!/usr/bin/env bash
# wrk against the bare hyper server and the release ubroker (issue 9, part-1
# targets measured with a lighter client than ubroker-load): single publish,
# and fetch + acknowledge, 2 threads and 64 connections, on the same machine.
# Prints Markdown rows: requests/s, p50 and p99, and each server's CPU per
# request (utime + stime from /proc/PID/stat over the run), each as a ratio
# to the bare server's figure of the same round.
#
# Usage: scripts/wrk-compare.sh      (needs wrk: apt-get install wrk)
# Environment: DURATION (seconds per run, 10), ROUNDS (3; each round runs
# bare then ubroker), THREADS (2), CONNECTIONS (64), UBROKER_BIN (another
# ubroker binary, e.g. an older build kept for a before/after).
#
# Starts both servers (release builds, built here) on free ports and stops
# them. Publish rounds all run first: they fill ubroker's queue for the
# fetch + acknowledge rounds, which then never find it empty (the script
# prints how many are ready, and every non-2xx answer).
#
# The fetch + acknowledge client (scripts/wrk/fetch_ack.lua) acknowledges
# the ids it fetched; the bare server gets the same alternation of
# GET /fetch?wait=0 and POST /acknowledge/1. Requests/s counts both.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
TICK=$(getconf CLK_TCK)
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "wrk-compare: $tool not found (apt-get install wrk curl)" >&2; exit 1; }
done

cargo build --release --quiet -p ubroker-server -p ubroker-benches --bin ubroker --bin bare-hyper
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME CMD...: sets started_pid and started_url (its `listening on` line).
start() {
    local name=$1 line=""
    shift
    : >"$work/$name.out"
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    started_pid=$!
    pids+=("$started_pid")
    for _ in $(seq 100); do
        line=$(head -n 1 "$work/$name.out")
        [[ $line == "listening on "* ]] && break
        sleep 0.1
    done
    [[ $line == "listening on "* ]] || { echo "$name did not start" >&2; cat "$work/$name.err" >&2; exit 1; }
    started_url=${line#listening on }
}

start bare "$bin/bare-hyper" --port 0
bare_pid=$started_pid bare_url=$started_url
RUST_LOG=warn start ubroker "${UBROKER_BIN:-$bin/ubroker}" --port 0
broker_pid=$started_pid broker_url=$started_url

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run SCRIPT URL PID [ARGS]: prints "rps p50_us p99_us cpu_us_per_request non2xx"
run() {
    local script=$1 url=$2 pid=$3 before after out
    shift 3
    before=$(ticks "$pid")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "scripts/wrk/$script" "$url" -- "$@")
    after=$(ticks "$pid")
    echo "$out" | awk -v cpu="$((after - before))" -v tick="$TICK" '/^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s %s %s %.3f %s\n", v["rps"], v["p50_us"], v["p99_us"],
            cpu / tick * 1e6 / v["requests"], v["non2xx"] + v["errors"] }'
}

echo "wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}'), -t$THREADS -c$CONNECTIONS, ${DURATION}s per run; bare-hyper at $bare_url, ubroker at $broker_url"
echo "load average at start: $(cat /proc/loadavg)"
echo
echo "| mode | round | bare req/s | ubroker req/s | ratio | bare p50 / p99 ms | ubroker p50 / p99 ms | p99 ratio | bare CPU µs/req | ubroker CPU µs/req | CPU ratio | ubroker non-2xx | load (1 min) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for mode in publish fetch_ack; do
    if [[ $mode == fetch_ack ]]; then
        ready=$(curl -s "$broker_url/stats" | grep -o '"ready":[0-9]*' | head -n 1)
        echo "| (before fetch + acknowledge: ubroker default queue $ready) |||||||||||||"
    fi
    for round in $(seq "$ROUNDS"); do
        if [[ $mode == publish ]]; then
            read -r b_rps b_p50 b_p99 b_cpu b_bad < <(run publish.lua "$bare_url" "$bare_pid")
            read -r u_rps u_p50 u_p99 u_cpu u_bad < <(run publish.lua "$broker_url" "$broker_pid")
        else
            read -r b_rps b_p50 b_p99 b_cpu b_bad < <(run fetch_ack.lua "$bare_url" "$bare_pid" bare)
            read -r u_rps u_p50 u_p99 u_cpu u_bad < <(run fetch_ack.lua "$broker_url" "$broker_pid")
        fi
        awk -v m="$mode" -v r="$round" -v br="$b_rps" -v ur="$u_rps" -v b50="$b_p50" -v b99="$b_p99" \
            -v u50="$u_p50" -v u99="$u_p99" -v bc="$b_cpu" -v uc="$u_cpu" -v bad="$u_bad" \
            -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
            printf "| %s | %d | %.0f | %.0f | **%.3f** | %.3f / %.3f | %.3f / %.3f | %.2f | %.2f | %.2f | %.2f | %d | %s |\n",
                m, r, br, ur, ur / br, b50 / 1000, b99 / 1000, u50 / 1000, u99 / 1000, u99 / b99,
                bc, uc, uc / bc, bad, load }'
    done
done
