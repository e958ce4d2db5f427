#!/usr/bin/env bash
# Checks the running broker against its API description, openapi.yaml, with
# schemathesis (property-based HTTP testing): builds the `ubroker` binary,
# starts it on a free port, lets schemathesis generate requests from the
# description (valid and invalid ones, every method on every path, and
# publish -> fetch -> acknowledge/requeue sequences through the description's
# links), and fails on any 5xx, any status, header, content type or body
# that the description does not list, and any failed check below. Then it
# stops the broker with SIGTERM and requires exit status 0.
#
# Three passes, each against a fresh broker:
#   main    default limits, every schemathesis check;
#   auth    with --auth-token, requests without it: every check, and every
#           answer must be a 401 (with WWW-Authenticate), but GET /health's,
#           GET /health/leader's (404 without --replicas) and GET /ui's, which
#           the token does not guard;
#   limits  tiny --max-body-bytes, --max-queue-bytes and --max-header-bytes,
#           so that 413, 429 (with Retry-After) and 431 are answered too.
# The last runs the conformance checks only (status, headers, content type,
# body schema, no 5xx): its point is that these answers are described, not
# that valid data is accepted.
#
# Generation is deterministic (no random seed, no example database), so a
# run sends the same requests every time (the stateful phase follows the
# server's answers, which depend on timing, so its scenarios vary a little). Python packages are pinned below;
# the virtualenv lives in target/ (ignored by git) and is reused while it
# holds the pinned versions. Reports go to target/schemathesis/: JUnit XML
# and every request and response as HAR, per pass.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-200}
VENV=target/venv-schemathesis
WORK=target/schemathesis
BROKER=target/debug/ubroker
# Short waits keep fetch tests fast: the default long poll is 50 ms and no
# `?wait=` makes a fetch wait more than 200 ms.
BROKER_FLAGS=(--port 0 --ttl 2000 --fetch-timeout 50 --max-fetch-wait 200)

step() { printf '\n==> %s\n' "$*"; }

BROKER_PID=
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        sleep 1
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$WORK"
mkdir -p "$WORK"

# --- schemathesis, pinned with everything it pulls in ------------------------
step "schemathesis $SCHEMATHESIS_VERSION in $VENV"
cat >"$WORK/constraints.txt" <<'EOF'
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.17
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema_rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.4
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
PyYAML==6.0.4
requests==2.34.2
rich==15.0.0
sortedcontainers==2.4.0
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9
EOF
# The virtualenv is reused while it holds exactly these versions.
STAMP="$VENV/ubroker-stamp"
WANT="schemathesis==$SCHEMATHESIS_VERSION $(sha256sum "$WORK/constraints.txt" | cut -d' ' -f1)"
if [[ ! -x $VENV/bin/schemathesis || $(cat "$STAMP" 2>/dev/null) != "$WANT" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -c "$WORK/constraints.txt" "schemathesis==$SCHEMATHESIS_VERSION"
    echo "$WANT" >"$STAMP"
fi
"$VENV/bin/schemathesis" --version

# --- checks beyond schemathesis' own, and per-operation expectations ---------
cat >"$WORK/hooks.py" <<'EOF'
import schemathesis

SETTLEMENTS = {
    "/acknowledge/{id}",
    "/requeue/{id}",
    "/touch/{id}",
    "/queues/{queue}/acknowledge/{id}",
    "/queues/{queue}/requeue/{id}",
    "/queues/{queue}/touch/{id}",
}


@schemathesis.check
def valid_ids_are_parsed(ctx, response, case):
    """A schema-valid delivery id may be unknown (400 "id is invalid"), but
    it must never be refused as malformed."""
    if case.operation.path not in SETTLEMENTS or case.meta is None:
        return None
    if not case.meta.generation.mode.is_positive or response.status_code != 400:
        return None
    # The stateful phase also feeds ids inferred from other requests (the
    # list of a batch settle's `ids`, say) into `{id}`: only a schema-valid
    # id, an integer, is this check's business.
    raw = (case.path_parameters or {}).get("id")
    if not (isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit())):
        return None
    body = response.json()
    if body != {"error": "id is invalid", "code": "invalid_id"}:
        raise AssertionError(f"a schema-valid id was refused as malformed: {body}")
    return None


@schemathesis.hook
def map_case(ctx, case):
    """`?delay=` and a batch body are each valid alone, but a batch takes no
    `delay` (its entries carry `delay_ms`): a positive case must not have
    both. (Negative cases are left as generated.)"""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and isinstance(case.body, dict) and "messages" in case.body and case.query:
        case.query.pop("delay", None)
    return case
EOF
# The part of the configuration every pass shares; "$@" are warnings not
# to display.
common_config() {
    local display=() warning
    for warning in missing_auth missing_test_data base_url_mismatch missing_deserializer \
        unused_openapi_auth unsupported_regex method_not_allowed constants_extraction \
        unmatched_filter unresolvable_reference rate_limited dictionary_mismatch timeout_units; do
        [[ " $* " == *" $warning "* ]] || display+=("\"$warning\"")
    done
    cat <<EOF
hooks = "$PWD/$WORK/hooks.py"
# No state kept between runs (by default, .schemathesis/ in the work tree
# replays earlier failures): every run is the same.
cache = { enabled = false }

# The default warnings but validation_mismatch, which would show on every
# run: most generated ids are unknown, so acknowledge and requeue mostly
# answer 400 by design (schemathesis reads warnings only from the top
# level, not per operation). Warnings that mean a defect in openapi.yaml
# fail the run.
[warnings]
display = [$(IFS=,; echo "${display[*]}")]
fail-on = ["missing_deserializer", "unsupported_regex", "unresolvable_reference"]
EOF
}

{
    common_config
    cat <<'EOF'

[checks]
# Invalid input of every kind is a 400, whatever the operation.
negative_data_rejection.expected-statuses = ["400"]

# Valid input: what each operation may still answer without violating the
# contract. A valid publish is always queued (this broker is far from
# --max-queue-bytes); a valid fetch finds a message or times out; a valid
# id need not be a live delivery (valid_ids_are_parsed checks the 400).
[[operations]]
include-operation-id = "publish"
checks.positive_data_acceptance.expected-statuses = ["200"]

[[operations]]
include-operation-id = ["fetch", "queueFetch"]
checks.positive_data_acceptance.expected-statuses = ["200", "408"]

[[operations]]
include-operation-id = ["acknowledge", "requeue", "touch", "queueAcknowledge", "queueRequeue", "queueTouch"]
checks.positive_data_acceptance.expected-statuses = ["200", "400"]

# A batch settle answers 200 with a result per id, valid or not.
[[operations]]
include-operation-id = ["acknowledgeBatch", "requeueBatch", "touchBatch", "queueAcknowledgeBatch", "queueRequeueBatch", "queueTouchBatch"]
checks.positive_data_acceptance.expected-statuses = ["200"]
EOF
} >"$WORK/main.toml"

{
    # Every answer is a 401 here: that is the point, not a missing token.
    common_config missing_auth
    cat <<'EOF'

# Without the token, valid and invalid requests alike are refused.
[checks]
positive_data_acceptance.expected-statuses = ["401"]
negative_data_rejection.expected-statuses = ["401"]

# But /health and /ui (the console's page, which holds no data), the
# routes the token does not guard.
[[operations]]
include-operation-id = ["health", "console"]
checks.positive_data_acceptance.expected-statuses = ["200"]

# Nor replication's leader check (HAProxy asks it without a token), which a
# node without --replicas answers 404: there is no leader to ask about.
[[operations]]
include-operation-id = ["healthLeader"]
checks.positive_data_acceptance.expected-statuses = ["404"]
EOF
} >"$WORK/auth.toml"

# Limits: the conformance checks only, which need nothing more.
common_config >"$WORK/limits.toml"

# --- the broker ---------------------------------------------------------------
step "cargo build -p ubroker-server --bin ubroker"
cargo build -p ubroker-server --bin ubroker

URL=
start_broker() {
    local out="$WORK/broker-$1.out" log="$WORK/broker-$1.log"
    shift
    "$BROKER" "${BROKER_FLAGS[@]}" "$@" >"$out" 2>"$log" &
    BROKER_PID=$!
    URL=
    for _ in $(seq 1 100); do
        URL=$(sed -n 's|^listening on \(http://.*\)$|\1|p' "$out")
        [[ -n $URL ]] && break
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "the broker exited before listening; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z $URL ]]; then
        echo "the broker did not print its address within 10 s" >&2
        exit 1
    fi
    echo "broker $BROKER_PID listening on $URL, flags: ${BROKER_FLAGS[*]}${*:+ $*}"
}

# SIGTERM, then the exit status, which must be 0 within 10 s.
stop_broker() {
    local pid=$BROKER_PID state status=0
    if ! kill -TERM "$pid" 2>/dev/null; then
        wait "$pid" || status=$?
        BROKER_PID=
        echo "the broker had already exited (status $status) before SIGTERM; see $WORK/broker-*.log" >&2
        exit 1
    fi
    for _ in $(seq 1 100); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
        [[ $state == Z || $state == gone ]] && break
        sleep 0.1
    done
    if [[ $state != Z && $state != gone ]]; then
        echo "the broker did not exit within 10 s of SIGTERM" >&2
        exit 1
    fi
    wait "$pid" || status=$?
    BROKER_PID=
    if ((status != 0)); then
        echo "the broker exited with status $status after SIGTERM" >&2
        exit 1
    fi
    echo "broker stopped by SIGTERM, exit status 0"
}

CONFORMANCE=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
FAILED=()

# run_pass NAME "BROKER FLAGS" SCHEMATHESIS-ARGS...
run_pass() {
    local name=$1 status=0 started=$SECONDS
    local -a flags
    read -r -a flags <<<"$2"
    shift 2
    step "schemathesis, pass '$name'"
    start_broker "$name" "${flags[@]}"
    "$VENV/bin/schemathesis" --config-file "$WORK/$name.toml" run openapi.yaml \
        --url "$URL" \
        --generation-deterministic \
        --request-timeout 10 \
        --max-response-time 5 \
        --no-color \
        --report junit,har --report-junit-path "$WORK/junit-$name.xml" \
        --report-har-path "$WORK/$name.har" \
        "$@" || status=$?
    stop_broker
    echo "pass '$name' took $((SECONDS - started)) s"
    if ((status != 0)); then
        FAILED+=("$name (schemathesis exit status $status)")
    fi
}

# A request head of up to 1 MiB in the main pass: its stateful phase feeds
# values seen elsewhere (a batch's whole `ids` list, say) into query
# parameters, and with the default 16 KiB limit such a request line is
# answered 431 before the route can answer its 400. The 431 itself is
# checked by the limits pass.
run_pass main "--max-header-bytes 1048576" \
    --checks all --max-examples "$MAX_EXAMPLES"
run_pass auth "--auth-token schemathesis-ci-token" \
    --checks all --phases examples,coverage,fuzzing --max-examples 20
run_pass limits "--max-body-bytes 64 --max-queue-bytes 16 --max-header-bytes 300" \
    --checks "$CONFORMANCE" --max-examples 50

if ((${#FAILED[@]})); then
    step "FAILED: ${FAILED[*]}"
    exit 1
fi
step "schemathesis: every pass conforms to openapi.yaml"
