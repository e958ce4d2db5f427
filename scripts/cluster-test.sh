#!/usr/bin/env bash
# The cluster tests of real processes (client/tests/cluster.rs): routing,
# the JSON 503 of a down node, a SIGSTOPped node, the partitioned client
# with a node down, and the kill -9 loop under traffic (UBROKER_CLUSTER_KILLS,
# default 6). They are #[ignore]d by `cargo test` because they need
# Debian's haproxy and curl; this script checks for them (installing
# nothing: .ci/run installs them on a fresh machine), builds the release
# binary the nodes run, and runs the tests one at a time; then it loads a
# cluster through the proxy with `ubroker-load --partitions 6`.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in haproxy curl setsid; do
    command -v "$tool" >/dev/null || {
        echo "cluster-test.sh: $tool is missing: apt-get install haproxy curl util-linux" >&2
        exit 1
    }
done
cargo build --release -p ubroker-server --bin ubroker
cargo build -p ubroker-benches --bin ubroker-load
export UBROKER_BIN="$PWD/target/release/ubroker"
cargo test -p ubroker-client --test cluster -- --ignored --test-threads=1 --nocapture

# ubroker-load --partitions through the proxy, in every mode: no request may
# fail (it exits non-zero if one does).
dir=$(mktemp -d)
trap 'scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
url=$(scripts/cluster.sh up "$dir" --port "$port")
url=${url#cluster at }
for mode in publish consume mixed; do
    echo "cluster-test: ubroker-load --mode $mode --partitions 6 --batch 20 via $url"
    target/debug/ubroker-load --url "$url" --mode "$mode" --partitions 6 --batch 20 \
        --connections 6 --warmup 0.2 --duration 2s
done
echo "cluster-test: ok"
