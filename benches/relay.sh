#!/usr/bin/env bash
# End-to-end relay benchmark (issue 3), spate's side: Postfix's smtp-source
# (SESSIONS sessions of SIZE-byte messages) into `spate serve`, which relays
# every message through a [[route]] to smtp-sink; timed from the first
# connection until spate's queue is empty (every message accepted durably,
# delivered and finished). RUNS times; reports the median end-to-end rate
# and the ingress-only rate of the same runs.
#
#   benches/relay.sh                     # 20000 messages, 50 sessions, 4 KiB
#   MESSAGES=5000 RUNS=1 benches/relay.sh
#
# Environment as benches/ingress.sh (CORES defaults to 1 here: the load
# generator and the sink need the other core of a 2-core machine).
# Postfix as the same relay beside it is still to come (see README).
set -euo pipefail

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-3}
CORES=${CORES:-1}
SOURCE_FLAGS=${SOURCE_FLAGS:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

BENCH_NAME=relay
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# relay_once RUN: sets RESULT to "end-to-end-rate ingress-rate"
relay_once() {
    local n=$1 dir=$WORK/relay-$1 sink_pid sink_port pid addr port t0 t1 i left ingress
    mkdir -p "$dir"
    sink_port=$(free_port)
    "$SMTP_SINK" "${USER_FLAG[@]}" "$IP:$sink_port" 1024 >"$dir/sink.out" 2>&1 &
    sink_pid=$!
    PIDS+=("$sink_pid")
    wait_port "$IP" "$sink_port"
    cat >"$dir/spate.toml" <<EOF
hostname = "relay.bench.test"
spool_dir = "$dir/spool"
cores = $CORES
shutdown_grace = "10s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[relay]
allow_networks = ["127.0.0.0/8"]

# Never the system resolver; the route below needs no lookup.
[dns]
nameservers = ["$IP:53"]

[[route]]
domain = "example.test"
to = "$IP:$sink_port"

[smtp]
max_connections = 20000
max_connections_per_ip = 20000
EOF
    start_spate "$dir/spate.toml" "$dir"
    pid=$SPATE_PID
    port=$SPATE_PORT
    t0=$(now)
    source_run "$IP" "$port"
    ingress=$(rate "$SECS")
    for ((i = 0; i < 3000; i++)); do
        left=$("$SPATE" queue list --config "$dir/spate.toml" --json | wc -l)
        [[ $left -eq 0 ]] && break
        sleep 0.2
    done
    t1=$(now)
    [[ $left -eq 0 ]] || die "$left messages still queued after 600 s (run $n)"
    kill -TERM "$pid" "$sink_pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    RESULT="$(rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')") $ingress"
    rm -rf "$dir/spool"
}

log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> spate (cores=$CORES) -> smtp-sink on $IP, $RUNS runs"
E2E=()
INGRESS=()
for ((r = 1; r <= RUNS; r++)); do
    relay_once "$r"
    read -r e2e ing <<<"$RESULT"
    log "run $r: end to end $e2e msg/s (ingress $ing msg/s)"
    E2E+=("$e2e")
    INGRESS+=("$ing")
done

cat <<EOF

Relay: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> spate -> smtp-sink, $RUNS runs, $(nproc) CPUs

| relay | end-to-end runs (msg/s) | median | ingress median (msg/s) |
| --- | --- | --- | --- |
| spate (cores=$CORES, durable 250, delivered and finished) | ${E2E[*]} | $(median "${E2E[@]}") | $(median "${INGRESS[@]}") |
EOF
