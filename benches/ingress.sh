#!/usr/bin/env bash
# Ingress load benchmark (issue 2): Postfix's smtp-source, SESSIONS parallel
# sessions of SIZE-byte messages, into smtp-sink (discards everything) and
# into `spate serve` (every message durable before its 250), in the same
# run, RUNS times each. Reports the median messages/s of each, the ratio
# spate/smtp-sink (target >= 0.75) and spate's ack latency percentiles
# (end of DATA -> 250, from its `stats` line).
#
#   benches/ingress.sh                      # 20000 messages, 50 sessions, 4 KiB
#   MESSAGES=5000 RUNS=1 benches/ingress.sh # quick look
#
# Environment:
#   MESSAGES (20000)  SESSIONS (50)  SIZE (4096)  RUNS (3)
#   CORES (0: one executor per CPU)  SOURCE_FLAGS (extra smtp-source flags,
#   e.g. "-d" to keep each session open for many messages)
#   SPATE (path to a spate binary; default: cargo build --release)
#   BENCH_DIR (where spools live; must be a real disk, default /var/tmp)
#   POSTFIX_TOOLS (cache for the unpacked postfix package,
#   default target/postfix-tools)
#
# smtp-source and smtp-sink come from Debian's postfix package, unpacked
# with dpkg -x (Postfix is never installed or started as a service). Only
# 127.0.0.0/8 addresses are used.
set -euo pipefail

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-3}
CORES=${CORES:-0}
SOURCE_FLAGS=${SOURCE_FLAGS:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

BENCH_NAME=ingress
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# spate_once RUN: sets RESULT to "rate p50 p99 p999 max messages"
spate_once() {
    local n=$1 dir=$WORK/spate-$1 pid addr port stats i
    mkdir -p "$dir"
    cat >"$dir/spate.toml" <<EOF
hostname = "bench.test"
spool_dir = "$dir/spool"
cores = $CORES
shutdown_grace = "10s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[relay]
allow_networks = ["127.0.0.0/8"]

# Never the system resolver: a closed loopback port (the bench sends to a
# local domain, so nothing is looked up anyway).
[dns]
nameservers = ["$IP:53"]

[local]
domains = ["example.test"]

[smtp]
max_connections = 20000
max_connections_per_ip = 20000
EOF
    start_spate "$dir/spate.toml" "$dir"
    pid=$SPATE_PID
    port=$SPATE_PORT
    source_run "$IP" "$port"
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        die "spate did not exit within 30 s of SIGTERM (run $n)"
    fi
    local rc=0
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || die "spate exited with $rc (run $n); stderr: $(tail -5 "$dir/stderr")"
    stats=$(sed -n 's/^stats //p' "$dir/stdout" | tail -1)
    [[ -n $stats ]] || die "no stats line from spate (run $n)"
    RESULT="$(rate "$SECS") $(python3 -c '
import json, sys
s = json.loads(sys.argv[1]); l = s["ack_latency_us"]
print(l["p50"], l["p99"], l["p999"], l["max"], s["messages"])' "$stats")"
    rm -rf "$dir/spool"
}

log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS on $IP, $RUNS runs each; spool under $WORK ($(stat -f -c %T "$WORK"))"
SINK=()
SPATE_RATES=()
SPATE_LINES=()
for ((r = 1; r <= RUNS; r++)); do
    sink_once
    log "run $r: smtp-sink $RESULT msg/s"
    SINK+=("$RESULT")
    spate_once "$r"
    line=$RESULT
    read -r rt p50 p99 p999 max msgs <<<"$line"
    log "run $r: spate $rt msg/s (ack p50 ${p50} us, p99 ${p99} us, p999 ${p999} us, max ${max} us; $msgs messages)"
    [[ $msgs -eq $MESSAGES ]] || log "warning: spate accepted $msgs of $MESSAGES messages"
    SPATE_RATES+=("$rt")
    SPATE_LINES+=("$line")
done

sink_med=$(median "${SINK[@]}")
spate_med=$(median "${SPATE_RATES[@]}")
ratio=$(awk -v a="$spate_med" -v b="$sink_med" 'BEGIN { printf "%.3f", a / b }')
# Latencies of the run whose rate is the median.
for l in "${SPATE_LINES[@]}"; do
    read -r rt p50 p99 p999 max msgs <<<"$l"
    [[ $rt == "$spate_med" ]] && break
done
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.75) ? "met" : "NOT met" }')

cat <<EOF

Ingress: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS, $RUNS runs each, $(nproc) CPUs, spool on $(stat -f -c %T "$WORK")

| receiver | runs (msg/s) | median msg/s | spate / smtp-sink | ack p50 (us) | ack p99 (us) | ack p999 (us) |
| --- | --- | --- | --- | --- | --- | --- |
| smtp-sink (discards) | ${SINK[*]} | $sink_med | | | | |
| spate (durable 250) | ${SPATE_RATES[*]} | $spate_med | $ratio (target >= 0.75: $verdict) | $p50 | $p99 | $p999 |
EOF
