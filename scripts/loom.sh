#!/usr/bin/env bash
# Model-checks the engine's concurrency protocols with loom: every model in
# loom-tests/ (see loom-tests/src/lib.rs), over every interleaving with up to
# three preemptions. Extra arguments go to `cargo test`, e.g.
# `scripts/loom.sh --test m06a_publish_wakes_fetch` or
# `scripts/loom.sh -- --nocapture`.
#
# One model per test binary (one file per model in loom-tests/tests/): a
# deadlock aborts its binary, so a binary holding several models would hide
# the others. `--no-fail-fast` runs every binary even after one fails; cargo
# then names each failed one (`--test <model>`) and exits non-zero.
#
# A separate target directory keeps the normal build cache: `--cfg loom`
# changes every crate's flags, so sharing `target/` would rebuild it all.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release --target-dir target/loom --no-fail-fast "$@"
