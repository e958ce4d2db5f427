#!/usr/bin/env bash
# Callgrind instructions per request (issue 19): the release ubroker and the
# bare hyper server, each under `valgrind --tool=callgrind`, given the same
# single-message requests by wrk (1 thread, 4 connections): POST /publish
# with a 30-byte body, then the fetch + acknowledge alternation of
# scripts/wrk/fetch_ack.lua. Counters are zeroed before each run and dumped
# after it, so each dump holds that run's requests only. User-space
# instructions only: the kernel's share (socket reads and writes, epoll) is
# not counted, and it is the same for both servers.
#
# Usage: scripts/request-profile.sh [OUT_DIR]     (needs valgrind and wrk)
# Environment: DURATION (seconds per run, 10), UBROKER_BIN (another ubroker
# binary to profile, e.g. an older build kept for a before/after), ATOMICS=1 to also run
# scripts/callgrind-atomics.py on each ubroker dump (allocator and clock
# calls, atomic RMWs and the top functions, per request).
#
# Prints one Markdown row per (server, mode): requests and instructions per
# request. The dumps stay in OUT_DIR (default: a temporary directory, kept)
# for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
for tool in wrk valgrind callgrind_control; do
    command -v "$tool" >/dev/null || { echo "request-profile: $tool not found (apt-get install wrk valgrind)" >&2; exit 1; }
done

cargo build --release --quiet -p ubroker-server -p ubroker-benches --bin ubroker --bin bare-hyper
bin="${CARGO_TARGET_DIR:-target}/release"
ubroker=${UBROKER_BIN:-$bin/ubroker}

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# profile NAME CMD...: runs CMD under callgrind, then both modes against it.
profile() {
    local name=$1 line="" pid url mode script requests ir
    shift
    : >"$out/$name.stdout"
    RUST_LOG=warn valgrind --tool=callgrind --dump-instr=yes --dump-line=no \
        --callgrind-out-file="$out/$name.%p.out" "$@" >"$out/$name.stdout" 2>"$out/$name.stderr" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 300); do
        line=$(head -n 1 "$out/$name.stdout")
        [[ $line == "listening on "* ]] && break
        sleep 0.1
    done
    [[ $line == "listening on "* ]] || { echo "$name did not start" >&2; cat "$out/$name.stderr" >&2; exit 1; }
    url=${line#listening on }
    for mode in publish fetch_ack; do
        script=scripts/wrk/$mode.lua
        callgrind_control -z "$pid" >/dev/null 2>&1
        if [[ $name == bare && $mode == fetch_ack ]]; then
            result=$(wrk -t1 -c4 -d"${DURATION}s" -s "$script" "$url" -- bare | grep '^RESULT')
        else
            result=$(wrk -t1 -c4 -d"${DURATION}s" -s "$script" "$url" | grep '^RESULT')
        fi
        callgrind_control -d "$name-$mode" "$pid" >/dev/null 2>&1
        requests=$(echo "$result" | sed 's/.*requests=\([0-9]*\).*/\1/')
        bad=$(echo "$result" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
        dump=$(ls -t "$out/$name".*.out.* | head -n 1)
        cp "$dump" "$out/$name-$mode.callgrind"
        ir=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
        awk -v n="$name" -v m="$mode" -v r="$requests" -v ir="$ir" -v bad="$bad" \
            'BEGIN { printf "| %s | %s | %d | %d | %.0f |\n", n, m, r, bad, ir / r }' | tee -a "$out/table.md"
        if [[ ${ATOMICS:-0} == 1 ]]; then
            python3 scripts/callgrind-atomics.py "$out/$name-$mode.callgrind" "$requests" >"$out/$name-$mode.atomics.txt" || true
        fi
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

{
    echo "callgrind dumps in $out; load average at start: $(cat /proc/loadavg)"
    echo
    echo "| server | mode | requests | non-2xx | instructions per request |"
    echo "|---|---|---|---|---|"
} | tee "$out/table.md"
profile bare "$bin/bare-hyper" --port 0
profile ubroker "$ubroker" --port 0
