#!/usr/bin/env bash
# A ubroker cluster on this machine (SPEC part 3, "Cluster"): N nodes,
# each its own process with its own --data-dir, behind HAProxy.
#
#   scripts/cluster.sh up DIR [--nodes N] [--port P] [--replicas 3]
#                                                       start (defaults N=3, P=7000)
#   scripts/cluster.sh kill DIR I                       SIGKILL node I
#   scripts/cluster.sh stop DIR I                       SIGSTOP node I
#   scripts/cluster.sh cont DIR I                       SIGCONT node I
#   scripts/cluster.sh restart DIR I                    start node I again on its data
#   scripts/cluster.sh down DIR                         stop everything (data stays)
#
# Nodes run target/release/ubroker (or $UBROKER_BIN) on ports P+1 ... P+N,
# node i with --data-dir DIR/node-i; HAProxy listens on P with the
# configuration written to DIR/haproxy.cfg (every line explained there).
# Other UBROKER_* variables in the environment reach every node (for
# example UBROKER_DRAIN_MS, UBROKER_FSYNC, UBROKER_AUTH_TOKEN);
# UBROKER_MAX_FETCH_WAIT also sets HAProxy's timeouts above it. Node logs
# are DIR/node-i.log. Installs nothing: it says what is missing.
#
# With --replicas 3 (step 2, "Replication"; N a multiple of 3, default 3),
# nodes 3g, 3g+1 and 3g+2 form Raft group g: node i also gets --replicas 3
# --node i --raft-listen 127.0.0.1:P+101+i and --raft-peers naming its
# group, and node 3g gets --raft-bootstrap on 'up' (never on 'restart', so
# a node whose data dir was wiped rejoins as a follower and catches up).
# HAProxy then has one backend per group, checked with GET /health/leader
# so that each request goes to the group's leader; partition k goes to
# group k mod (N/3), /nodes/{i}/... to node i, anything else to group 0.
# 'up' waits until every group has a leader through the proxy.
# UBROKER_ELECTION_TIMEOUT_MS, like any UBROKER_* variable, reaches the
# nodes.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Absolute, so that pid files and logs do not depend on the caller's cwd.
abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

load_env() {
    [ -f "$DIR/cluster.env" ] || die "$DIR holds no cluster (no cluster.env): run 'up' first"
    # shellcheck disable=SC1091
    . "$DIR/cluster.env"
}

bin() {
    local b="${UBROKER_BIN:-$ROOT/target/release/ubroker}"
    [ -x "$b" ] || die "no ubroker binary at $b: build it with 'cargo build --release -p ubroker-server', or set UBROKER_BIN"
    echo "$b"
}

alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_index() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -lt "$NODES" ] || die "no node $1 (nodes are 0 to $((NODES - 1)))"
}

# Waits until http://127.0.0.1:PORT$2 answers 200, up to $3 seconds.
wait_ok() {
    local url="http://127.0.0.1:$1$2" deadline=$((SECONDS + $3))
    until curl -sf -o /dev/null --max-time 2 "$url"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# The Raft flags of node $1 in a replicated cluster (none otherwise); $2 is
# "bootstrap" on 'up' only.
raft_flags() {
    [ "${REPLICAS:-1}" = 3 ] || return 0
    local i=$1 first=$(($1 / 3 * 3)) peers="" j
    for ((j = first; j < first + 3; j++)); do
        peers+="${peers:+,}$j=127.0.0.1:$((PORT + 101 + j))"
    done
    printf '%s\n' --replicas 3 --node "$i" --raft-listen "127.0.0.1:$((PORT + 101 + i))" --raft-peers "$peers"
    # Only the group's first node initialises its membership, and only on
    # 'up': a node that bootstrapped on its own after losing its data would
    # start a rival group instead of catching up.
    if [ "${2:-}" = bootstrap ] && [ "$i" -eq "$first" ]; then
        echo --raft-bootstrap
    fi
}

# Starts node $1; $2 is "bootstrap" on 'up' (see raft_flags).
start_node() {
    local i=$1 port=$((PORT + 1 + $1))
    local -a raft
    mapfile -t raft < <(raft_flags "$i" "${2:-}")
    mkdir -p "$DIR/node-$i"
    # setsid: a Ctrl-C in the caller's terminal does not reach the nodes.
    setsid "$BIN" --host 127.0.0.1 --port "$port" --data-dir "$DIR/node-$i" "${raft[@]}" \
        >>"$DIR/node-$i.log" 2>&1 </dev/null &
    echo $! >"$DIR/node-$i.pid"
}

wait_node() {
    local i=$1 deadline=$((SECONDS + 60))
    until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$((PORT + 1 + i))/health"; do
        if ! alive "$DIR/node-$i.pid" || [ $SECONDS -ge $deadline ]; then
            tail -5 "$DIR/node-$i.log" >&2 || true
            die "node $i did not become healthy on port $((PORT + 1 + i)) (log: $DIR/node-$i.log)"
        fi
        sleep 0.1
    done
}

# Waits up to $2 seconds until group $1 has a leader that HAProxy sends
# its partitions to: a partition's queue route answers from a leader
# (200, or 404 for a queue that does not exist) rather than the proxy's
# 503 (no leader up) or a follower's 503 not_leader. The probe names a
# partition of group $1 and creates nothing (a GET reads).
wait_leader() {
    local url="http://127.0.0.1:$PORT/queues/cluster-sh-probe--$1" deadline=$((SECONDS + $2)) status
    while :; do
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        case "$status" in 200 | 404) return 0 ;; esac
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# Stops the process in pid file $1: SIGTERM (and SIGCONT, in case it was
# stopped), then SIGKILL after 15 s.
stop_pid() {
    local f=$1
    if alive "$f"; then
        local pid
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$f"
}

# Writes DIR/haproxy.cfg for NODES nodes behind PORT.
write_config() {
    local fetch_wait=${UBROKER_MAX_FETCH_WAIT:-30000}
    local NGROUPS=0 MODE="no replication"
    if [ "$REPLICAS" = 3 ]; then
        NGROUPS=$((NODES / 3))
        MODE="$NGROUPS Raft groups of 3"
    fi
    # Proxy timeouts: the longest fetch wait plus 5 s, so that no long poll
    # is cut by the proxy.
    local t=$((fetch_wait + 5000))
    local unavailable='{"error": "node unavailable", "code": "unavailable"}'
    {
        cat <<EOF
# Generated by scripts/cluster.sh for $NODES nodes ($MODE) behind port $PORT; rewritten by every 'up'.
global
    # Connections HAProxy accepts at once (each node has its own --max-connections).
    maxconn 4096
    # No stats socket, no chroot, no user switch: a cluster for one user on 127.0.0.1.
    pidfile $DIR/haproxy.pid

defaults
    # HTTP mode: HAProxy reads each request, so it can route on the path.
    mode http
    # A node that refuses the connection is tried again (up to 3 times): nothing was sent.
    retries 3
    # Retry only when the connection failed: a request that reached a node is never sent again (a fetch leases, a publish is not idempotent).
    retry-on conn-failure
    # Connecting to a node on this machine is quick; longer means it is gone.
    timeout connect 1s
    # Above --max-fetch-wait ($fetch_wait ms): a long-polling fetch is never cut by the proxy.
    timeout server ${t}ms
    # The same on the client side, which is idle while its fetch waits.
    timeout client ${t}ms
    # A client has this long to send a whole request head.
    timeout http-request 10s
    # An idle keep-alive client connection is closed after this.
    timeout http-keep-alive 60s
    # Health checks answer within this, or count as failed (a SIGSTOPped node never answers).
    timeout check 1s
    # Errors HAProxy itself answers are JSON in the broker's shape, never HTML:
    # 503 when the node that owns the path is down (the SPEC's code for it).
    http-error status 503 content-type application/json string '$unavailable'
    # 502: the node closed or broke the connection after the request was sent (it may have acted on it).
    http-error status 502 content-type application/json string '{"error": "node failed during the request", "code": "unavailable"}'
    # 504: the node did not answer within the server timeout (it may have acted on it).
    http-error status 504 content-type application/json string '{"error": "node did not answer in time", "code": "unavailable"}'
    # 400: a request HAProxy rejects once parsed (one that is not HTTP at all gets HAProxy's built-in page, as SPEC part 1 allows).
    http-error status 400 content-type application/json string '{"error": "bad request", "code": "invalid_request"}'
    # 408: the request head did not arrive within timeout http-request (the broker's code for a late body).
    http-error status 408 content-type application/json string '{"error": "the request did not arrive in time", "code": "timeout"}'
    # 413: a request HAProxy cannot hold.
    http-error status 413 content-type application/json string '{"error": "request too large for the proxy", "code": "body_too_large"}'
    # 501: a request HAProxy does not implement (an unknown transfer coding).
    http-error status 501 content-type application/json string '{"error": "not implemented by the proxy", "code": "invalid_request"}'
    # 500: an error inside HAProxy.
    http-error status 500 content-type application/json string '{"error": "proxy error", "code": "unavailable"}'

frontend ubroker
    # The cluster's one address.
    bind 127.0.0.1:$PORT
    # GET /nodes is answered here: how many nodes there are.
    http-request return status 200 content-type application/json string '{"nodes": $NODES}' if { path /nodes } METH_GET
    # Any other method on /nodes is refused as the broker refuses one.
    http-request return status 405 content-type application/json hdr Allow GET string '{"error": "method not allowed", "code": "method_not_allowed"}' if { path /nodes } !METH_GET
EOF
        local i
        for ((i = 0; i < NODES; i++)); do
            echo "    # /nodes/$i and /nodes/$i/...: node $i (noted before the prefix is removed)."
            echo "    http-request set-var(txn.node) int($i) if { path_reg ^/nodes/$i(/|\$) }"
        done
        cat <<EOF
    # /nodes/{i}/... with no such node i: a JSON 404.
    http-request return status 404 content-type application/json string '{"error": "no such node", "code": "not_found"}' if { path_beg /nodes/ } !{ var(txn.node) -m found }
    # /nodes/{i}/rest becomes /rest (and /nodes/{i} becomes /) for node i.
    http-request set-path %[path,regsub(^/nodes/[0-9]+/?,/)] if { var(txn.node) -m found }
EOF
        if [ "$REPLICAS" = 3 ]; then
            cat <<EOF
    # /queues/{name}--{k}[.dead][/...]: partition k, which lives on group k mod $NGROUPS (nodes 3g, 3g+1, 3g+2).
    # (the third path field is the name; drop .dead; the digits after the last '-' are k).
    http-request set-var(txn.group) path,field(3,/),regsub([.]dead\$,),field(-1,-),mod($NGROUPS) if !{ var(txn.node) -m found } { path_reg ^/queues/[A-Za-z0-9_-]*--[0-9]+([.]dead)?(/|\$) }
    # /nodes/{i}/...: node i itself, leader or not (a follower answers queue routes with 503 not_leader).
    use_backend node%[var(txn.node)] if { var(txn.node) -m found }
    # A partition: its group's leader.
    use_backend group%[var(txn.group)] if { var(txn.group) -m found }
    # Everything else (names without --k, /publish, /stats, /health, /ui, ...): group 0's leader.
    default_backend group0
EOF
        else
            cat <<EOF
    # /queues/{name}--{k}[.dead][/...]: partition k, which lives on node k mod $NODES.
    # (the third path field is the name; drop .dead; the digits after the last '-' are k).
    http-request set-var(txn.node) path,field(3,/),regsub([.]dead\$,),field(-1,-),mod($NODES) if !{ var(txn.node) -m found } { path_reg ^/queues/[A-Za-z0-9_-]*--[0-9]+([.]dead)?(/|\$) }
    # The node chosen above, by its backend's name.
    use_backend node%[var(txn.node)] if { var(txn.node) -m found }
    # Everything else (names without --k, /publish, /stats, /health, /ui, ...): node 0.
    default_backend node0
EOF
        fi
        for ((i = 0; i < NODES; i++)); do
            cat <<EOF

backend node$i
    # Node $i is healthy while GET /health answers 200: a node that is down, stopped or draining (--drain-ms) gets no new requests.
    option httpchk GET /health
    # Only 200 is healthy (a draining or failed node answers 503).
    http-check expect status 200
    # Node $i on port $((PORT + 1 + i)), checked every 500 ms: down after 2 failed checks, up after 1 good one.
    server node$i 127.0.0.1:$((PORT + 1 + i)) check inter 500ms fall 2 rise 1
EOF
        done
        local g
        for ((g = 0; g < NGROUPS; g++)); do
            cat <<EOF

backend group$g
    # Group $g: nodes $((3 * g)) to $((3 * g + 2)). A server is up only while GET /health/leader answers 200, which only the group's
    # leader does (followers answer 503 not_leader): requests follow the leader within a check interval. With no leader up
    # (an election, or a majority down), HAProxy answers the JSON 503 unavailable above.
    option httpchk GET /health/leader
    # Only 200 is healthy: the leader, and not while it drains.
    http-check expect status 200
    # In the moment two servers both pass (a new leader elected while the old one's next check is not yet due), the first
    # one up gets the requests; the other answers 503 not_leader, which the client retries (nothing was done).
    balance first
    # A retry after a failed connect (the leader just died; retry-on conn-failure above) may go to another server: the new
    # leader, or a follower that answers 503 not_leader. Nothing was sent either way.
    option redispatch 1
EOF
            for ((i = 3 * g; i < 3 * g + 3; i++)); do
                echo "    # Node $i (port $((PORT + 1 + i)), Raft on $((PORT + 101 + i))), checked every 200 ms: out after 1 failed check, in after 1 good one."
                echo "    server node$i 127.0.0.1:$((PORT + 1 + i)) check inter 200ms fall 1 rise 1"
            done
        done
    } >"$DIR/haproxy.cfg"
}

cmd_up() {
    NODES=3
    PORT=7000
    REPLICAS=1
    while [ $# -gt 0 ]; do
        case "$1" in
        --nodes) NODES=${2:-}; shift 2 || usage ;;
        --port) PORT=${2:-}; shift 2 || usage ;;
        --replicas) REPLICAS=${2:-}; shift 2 || usage ;;
        *) usage ;;
        esac
    done
    [[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] && [ "$NODES" -le 100 ] || die "--nodes must be 1 to 100"
    case "$REPLICAS" in
    1) ;;
    3) [ $((NODES % 3)) -eq 0 ] || die "--replicas 3 needs --nodes a multiple of 3 (groups of nodes 3g, 3g+1, 3g+2), not $NODES" ;;
    *) die "--replicas must be 3 (replica sets of three nodes), not '$REPLICAS'" ;;
    esac
    # Raft ports P+101 ... P+100+N never meet the HTTP ports P+1 ... P+N (N <= 100).
    local last=$((PORT + NODES))
    [ "$REPLICAS" = 1 ] || last=$((PORT + 100 + NODES))
    [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$last" -le 65535 ] || die "--port must leave room for P+1 ... P+N (and P+101 ... P+100+N with --replicas)"
    command -v haproxy >/dev/null || die "haproxy is missing: install it with 'apt-get install haproxy' (Debian's package)"
    command -v curl >/dev/null || die "curl is missing: install it with 'apt-get install curl'"
    command -v setsid >/dev/null || die "setsid is missing: install it with 'apt-get install util-linux'"
    BIN=$(bin)
    if [ -f "$DIR/cluster.env" ]; then
        # shellcheck disable=SC1091
        (. "$DIR/cluster.env"
            for f in "$DIR"/node-*.pid "$DIR/haproxy.pid"; do
                if alive "$f"; then die "a cluster is already running in $DIR: run 'down' first"; fi
            done)
    fi
    printf 'NODES=%s\nPORT=%s\nREPLICAS=%s\n' "$NODES" "$PORT" "$REPLICAS" >"$DIR/cluster.env"
    # A start that fails half-way stops what it started.
    trap 'cmd_down >/dev/null 2>&1' EXIT
    write_config
    haproxy -c -q -f "$DIR/haproxy.cfg" || die "HAProxy rejected $DIR/haproxy.cfg"
    local i
    for ((i = 0; i < NODES; i++)); do start_node "$i" bootstrap; done
    for ((i = 0; i < NODES; i++)); do wait_node "$i"; done
    # -D: in the background, its pid in DIR/haproxy.pid.
    haproxy -D -f "$DIR/haproxy.cfg" || die "HAProxy did not start (is port $PORT free?)"
    wait_ok "$PORT" /nodes 30 || die "HAProxy does not answer on port $PORT"
    # Healthy through the proxy too: HAProxy's checks see every node up.
    for ((i = 0; i < NODES; i++)); do
        wait_ok "$PORT" "/nodes/$i/health" 30 || die "node $i is not healthy through HAProxy"
    done
    if [ "$REPLICAS" = 3 ]; then
        local g
        for ((g = 0; g < NODES / 3; g++)); do
            wait_leader "$g" 60 || die "group $g has no leader through HAProxy (logs: $DIR/node-$((3 * g)).log to node-$((3 * g + 2)).log)"
        done
    fi
    trap - EXIT
    echo "cluster at http://127.0.0.1:$PORT"
}

cmd_signal() {
    local signal=$1 i=$2
    load_env
    node_index "$i"
    alive "$DIR/node-$i.pid" || die "node $i is not running"
    kill "-$signal" "$(cat "$DIR/node-$i.pid")"
    if [ "$signal" = KILL ]; then
        local pid
        pid=$(cat "$DIR/node-$i.pid")
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        rm -f "$DIR/node-$i.pid"
    fi
}

cmd_restart() {
    local i=$1
    load_env
    node_index "$i"
    BIN=$(bin)
    stop_pid "$DIR/node-$i.pid"
    start_node "$i"
    wait_node "$i"
}

cmd_down() {
    [ -f "$DIR/cluster.env" ] || return 0
    load_env
    stop_pid "$DIR/haproxy.pid"
    local i
    for ((i = 0; i < NODES; i++)); do stop_pid "$DIR/node-$i.pid"; done
}

[ $# -ge 2 ] || usage
COMMAND=$1
DIR=$(abs_dir "$2")
shift 2
case "$COMMAND" in
up) cmd_up "$@" ;;
kill) [ $# -eq 1 ] || usage; cmd_signal KILL "$1" ;;
stop) [ $# -eq 1 ] || usage; cmd_signal STOP "$1" ;;
cont) [ $# -eq 1 ] || usage; cmd_signal CONT "$1" ;;
restart) [ $# -eq 1 ] || usage; cmd_restart "$1" ;;
down) [ $# -eq 0 ] || usage; cmd_down ;;
*) usage ;;
esac
