#!/usr/bin/env bash
# The web console (GET /ui) in a real browser: Playwright for Python driving
# Debian's chromium against brokers that scripts/console_test.py starts on
# 127.0.0.1 and stops by PID. Installs chromium (apt) and playwright (pip)
# if they are missing; never runs `playwright install` (it downloads a
# browser build, which fails offline).
#
# Usage: scripts/console-test.sh [--screenshot PATH] [-k SUBSTRING]
#   UBROKER_BIN: the broker binary (default: a debug build of target/debug/ubroker).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium ]]; then
    echo "console-test: installing chromium (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
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
