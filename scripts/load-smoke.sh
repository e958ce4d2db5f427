#!/usr/bin/env bash
# Smoke run of the HTTP load generator and the Rust client: start a broker
# (`ubroker --port 0`) and a bare hyper server, run `ubroker-load` for a few
# seconds in each mode, single and with `--batch` (and one --compare round,
# and over partitions with `--partitions`),
# run the client's example worker (`client/examples/worker.rs`) against the
# broker, and check that every run completes without an error and that the
# broker exits 0 on SIGTERM. Debug build: this checks that the pieces work
# together, not how fast they are.
#
# Usage: scripts/load-smoke.sh    (from anywhere; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p ubroker-server -p ubroker-benches --bin ubroker --bin ubroker-load --bin bare-hyper
cargo build --quiet -p ubroker-client --example worker
bin="${CARGO_TARGET_DIR:-target}/debug"

work=$(mktemp -d)
broker_pid=""
bare_pid=""
cleanup() {
    for pid in $broker_pid $bare_pid; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "load-smoke: FAILED: $*" >&2
    for log in "$work"/*.err; do
        [[ -s $log ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

# Starts "$@" in the background with stdout and stderr in $work/NAME.*, sets
# $started_pid, and waits (10 s at most) for its `listening on URL` line;
# sets $started_url.
start() {
    local name=$1
    shift
    # Created here, not by the background job's redirection, which may not
    # have run yet when the loop below first reads the file.
    : >"$work/$name.out"
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    started_pid=$!
    local line=""
    for _ in $(seq 100); do
        line=$(head -n 1 "$work/$name.out")
        [[ $line == "listening on "* ]] && break
        kill -0 "$started_pid" 2>/dev/null || fail "$name exited before listening"
        sleep 0.1
    done
    [[ $line == "listening on "* ]] || fail "$name printed no 'listening on' line within 10 s"
    started_url=${line#listening on }
}

start broker "$bin/ubroker" --port 0
broker_pid=$started_pid
broker_url=$started_url
start bare "$bin/bare-hyper" --port 0
bare_pid=$started_pid
bare_url=$started_url
echo "load-smoke: broker at $broker_url, bare hyper at $bare_url"

for mode in publish consume mixed; do
    echo "load-smoke: $mode"
    "$bin/ubroker-load" --url "$broker_url" --mode "$mode" --connections 4 \
        --warmup 0.5 --duration 2s ||
        fail "ubroker-load --mode $mode exited with status $?"
done
for mode in publish consume mixed; do
    echo "load-smoke: $mode --batch 50"
    "$bin/ubroker-load" --url "$broker_url" --mode "$mode" --batch 50 --connections 4 \
        --pid "$broker_pid" --warmup 0.5 --duration 2s ||
        fail "ubroker-load --mode $mode --batch 50 exited with status $?"
done
for mode in publish consume mixed; do
    # All partitions on this one broker: the partitioned queue's paths
    # (load--0 ... load--2); scripts/cluster-test.sh runs it through HAProxy.
    echo "load-smoke: $mode --partitions 3 (single, then --batch 20)"
    "$bin/ubroker-load" --url "$broker_url" --mode "$mode" --partitions 3 --connections 4 \
        --warmup 0.2 --duration 1s ||
        fail "ubroker-load --mode $mode --partitions 3 exited with status $?"
    "$bin/ubroker-load" --url "$broker_url" --mode "$mode" --partitions 3 --batch 20 \
        --connections 4 --warmup 0.2 --duration 1s ||
        fail "ubroker-load --mode $mode --partitions 3 --batch 20 exited with status $?"
done
echo "load-smoke: the client's example worker"
"$bin/examples/worker" "$broker_url" || fail "client/examples/worker.rs exited with status $?"
echo "load-smoke: --compare"
"$bin/ubroker-load" --url "$broker_url" --compare "$bare_url" --mode consume \
    --pid "$broker_pid" --compare-pid "$bare_pid" --connections 4 --warmup 0.2 --duration 1s --rounds 1 ||
    fail "ubroker-load --compare exited with status $?"

# Both servers must stop cleanly on SIGTERM.
for name in broker bare; do
    pid_var=${name}_pid
    pid=${!pid_var}
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    printf -v "$pid_var" '%s' ""
    [[ $status -eq 0 ]] || fail "$name exited with status $status after SIGTERM"
done
echo "load-smoke: ok"
