#!/usr/bin/env bash
# The cluster tests of real processes (client/tests/cluster.rs): routing,
# the JSON 503 of a down node, a SIGSTOPped node, the partitioned client
# with a node down, and the kill -9 loop under traffic (UBROKER_CLUSTER_KILLS,
# default 6). They are #[ignore]d by `cargo test` because they need
# Debian's haproxy and curl; this script checks for them (installing
# nothing: .ci/run installs them on a fresh machine), builds the release
# binary the nodes run, and runs the tests one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in haproxy curl setsid; do
    command -v "$tool" >/dev/null || {
        echo "cluster-test.sh: $tool is missing: apt-get install haproxy curl util-linux" >&2
        exit 1
    }
done
cargo build --release -p ubroker-server --bin ubroker
UBROKER_BIN="$PWD/target/release/ubroker" \
    cargo test -p ubroker-client --test cluster -- --ignored --test-threads=1 --nocapture
