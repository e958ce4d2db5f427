#!/usr/bin/env bash
# The web console (GET /ui) in a real browser: Playwright for Python driving
# Debian's chromium against brokers that scripts/console_test.py starts on
# 127.0.0.1 and stops by PID (and a cluster through scripts/cluster.sh and
# HAProxy). Installs chromium, haproxy and curl (apt) and playwright (pip)
# if they are missing; never runs `playwright install` (it downloads a
# browser build, which fails offline).
#
# Usage: scripts/console-test.sh [--screenshot PATH] [-k SUBSTRING]
#   UBROKER_BIN: the broker binary (default: a debug build of target/debug/ubroker).
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium for the browser; haproxy and curl for scripts/cluster.sh.
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "console-test: installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import playwright' 2>/dev/null; then
    echo "console-test: installing playwright (pip)"
    python3 -m pip install --quiet playwright
fi

bin="${UBROKER_BIN:-}"
if [[ -z $bin ]]; then
    cargo build --quiet -p ubroker-server --bin ubroker
    bin="${CARGO_TARGET_DIR:-target}/debug/ubroker"
fi
exec python3 scripts/console_test.py "$bin" "$@"
