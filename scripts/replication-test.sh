#!/usr/bin/env bash
# The replication tests of real processes (client/tests/replication.rs,
# SPEC part 3 "Replication, step 2"): a leader kill loop under traffic
# (UBROKER_REPLICATION_KILLS leader kills, default 5) with zero loss of
# anything answered 200 and the failover time measured; a SIGSTOPped
# leader that must hand out no stale lease and settle no old id; a
# follower restarted from an empty --data-dir that catches up and then
# holds the data alone. They are #[ignore]d by `cargo test` because they
# need Debian's haproxy and curl; this script checks for them (installing
# nothing: .ci/run installs them on a fresh machine), builds the release
# binary the nodes run, and runs the tests one at a time. Every node and
# HAProxy is stopped by the PIDs scripts/cluster.sh keeps, whatever
# happens (each test's guard runs `cluster.sh down`).
#
# The kill loop's figures ("failover ... median ... max ...") are printed
# and, with UBROKER_REPLICATION_REPORT=FILE, also appended to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in haproxy curl setsid; do
    command -v "$tool" >/dev/null || {
        echo "replication-test.sh: $tool is missing: apt-get install haproxy curl util-linux" >&2
        exit 1
    }
done
cargo build --release -p ubroker-server --bin ubroker
export UBROKER_BIN="$PWD/target/release/ubroker"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test -p ubroker-client --test replication -- --ignored --test-threads=1 --nocapture 2>&1 | tee "$log"
if [ -n "${UBROKER_REPLICATION_REPORT:-}" ]; then
    grep '^replication kill loop:' "$log" >>"$UBROKER_REPLICATION_REPORT" || true
fi
echo "replication-test: ok"
