#!/usr/bin/env bash
# Instructions per operation, engine against the mutex baseline, counted by
# callgrind (repeatable on a noisy machine, unlike wall-clock time).
#
# Usage: scripts/engine-profile.sh [N] [OPS...]
#   N: messages per run (default 100000); OPS default: publish fetch
#   acknowledge requeue fetch_ack fetch_requeue expiry publish_batch fetch_batch acknowledge_batch.
# Prints, per operation, Ir per message for both, their ratio, and the top
# source-level buckets (callgrind's file:function, inlined code attributed
# to the file it came from) per message for each, and the atomic RMWs and
# allocator and clock calls per message (scripts/callgrind-atomics.py). Out files stay in
# ${OUT:-target/callgrind}. Needs valgrind; builds the example in release
# (debug info on, as the workspace's release profile has it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
shift || true
OPS=("$@")
if [ ${#OPS[@]} -eq 0 ]; then
    OPS=(publish fetch acknowledge requeue fetch_ack fetch_requeue expiry publish_batch fetch_batch acknowledge_batch)
fi
TOP=${TOP:-14}
OUT=${OUT:-target/callgrind}
mkdir -p "$OUT"
cargo build --release -q -p ubroker-benches --example op_profile
BIN=target/release/examples/op_profile

ir() { # total Ir of the measured phase
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}'
}

top() { # the heaviest file:function buckets, per message
    callgrind_annotate --threshold=99 "$1" 2>/dev/null \
        | sed -n "/file:function/,\$p" | tail -n +3 | awk -v top="$TOP" "NR <= top" \
        | awk -v n="$N" '{
            c = $1; gsub(",", "", c);
            line = $0;
            sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", line);
            sub(/ \[[^]]*\]$/, "", line);
            gsub(/\/rustc\/[0-9a-f]+\/library\//, "std:", line);
            gsub(/\/root\/\.cargo\/registry\/src\/[^\/]+\//, "", line);
            gsub(/\/work\/[^\/]+\//, "", line);
            printf "    %8.1f  %s\n", c / n, substr(line, 1, 150) }'
}

printf '%-18s %12s %12s %8s\n' op "ubroker Ir" "baseline Ir" ratio
for op in "${OPS[@]}"; do
    for imp in ubroker baseline; do
        valgrind --tool=callgrind --dump-instr=yes --dump-line=no --toggle-collect='*op_profile::measure*' \
            --callgrind-out-file="$OUT/$imp-$op.out" "$BIN" "$imp" "$op" "$N" >/dev/null 2>&1
    done
    e=$(ir "$OUT/ubroker-$op.out")
    b=$(ir "$OUT/baseline-$op.out")
    awk -v op="$op" -v e="$e" -v b="$b" -v n="$N" \
        'BEGIN { printf "%-18s %12.1f %12.1f %8.2f\n", op, e / n, b / n, e / b }'
done
if [ -z "${QUIET:-}" ]; then
    for op in "${OPS[@]}"; do
        for imp in ubroker baseline; do
            echo
            echo "== $imp $op: Ir per message by file:function (self cost)"
            top "$OUT/$imp-$op.out"
            python3 scripts/callgrind-atomics.py "$OUT/$imp-$op.out" "$N"
        done
    done
fi
