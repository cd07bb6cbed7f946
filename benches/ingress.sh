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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POSTFIX_TOOLS=${POSTFIX_TOOLS:-$ROOT/target/postfix-tools}

log() { echo "[ingress] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- setup
if [[ "$(stat -f -c %T "$BENCH_DIR")" == tmpfs ]]; then
    log "$BENCH_DIR is tmpfs; using $ROOT/target for the spool instead"
    BENCH_DIR=$ROOT/target
fi
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/spate-ingress.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

postfix_tools() {
    local sbin=$POSTFIX_TOOLS/root/usr/sbin
    if [[ ! -x $sbin/smtp-source || ! -x $sbin/smtp-sink ]]; then
        log "fetching smtp-source/smtp-sink from Debian's postfix package (dpkg -x, not installed)"
        rm -rf "$POSTFIX_TOOLS"
        mkdir -p "$POSTFIX_TOOLS/deb"
        chmod 777 "$POSTFIX_TOOLS/deb" # apt's _apt user downloads into it
        (cd "$POSTFIX_TOOLS/deb" && { apt-get download postfix 2>/dev/null ||
            { apt-get update -qq && apt-get download postfix; }; })
        local deb
        deb=$(ls "$POSTFIX_TOOLS"/deb/postfix_*.deb)
        dpkg -x "$deb" "$POSTFIX_TOOLS/root"
        # The shared libraries the binaries link besides Postfix's own.
        local libs
        libs=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*//; s/|.*//; s/ //g' | grep '^lib' || true)
        if LD_LIBRARY_PATH=$POSTFIX_TOOLS/root/usr/lib/postfix ldd "$sbin/smtp-source" "$sbin/smtp-sink" | grep -q 'not found'; then
            log "installing libraries: $libs"
            # shellcheck disable=SC2086
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $libs >/dev/null
        fi
    fi
    export LD_LIBRARY_PATH=$POSTFIX_TOOLS/root/usr/lib/postfix${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    SMTP_SOURCE=$sbin/smtp-source
    SMTP_SINK=$sbin/smtp-sink
    if LD_LIBRARY_PATH=$LD_LIBRARY_PATH ldd "$SMTP_SOURCE" "$SMTP_SINK" | grep 'not found'; then
        die "smtp-source/smtp-sink miss libraries"
    fi
}

if [[ -z "${SPATE:-}" ]]; then
    log "building spate (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin spate)
    SPATE=$ROOT/target/release/spate
fi
[[ -x $SPATE ]] || die "no spate binary at $SPATE"
postfix_tools

# A private loopback address for this run (never 127.0.0.1).
IP=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))
free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$IP"
}
wait_port() { # ip port: wait until it accepts, 20 s at most
    local i
    for ((i = 0; i < 200; i++)); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listening on $1:$2"
}
now() { date +%s.%N; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Runs smtp-source against ip:port; sets SECS to the elapsed seconds.
source_run() {
    local t0 t1
    t0=$(now)
    # shellcheck disable=SC2086
    timeout 600 "$SMTP_SOURCE" $SOURCE_FLAGS -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" \
        -f bench@example.test -t sink@example.test "$1:$2" >"$WORK/source.out" 2>&1 ||
        { cat "$WORK/source.out" >&2; die "smtp-source failed against $1:$2"; }
    t1=$(now)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}
rate() { awk -v m="$MESSAGES" -v s="$1" 'BEGIN { printf "%.1f", m / s }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

USER_FLAG=()
[[ $(id -u) -eq 0 ]] && USER_FLAG=(-u nobody) # smtp-sink refuses to run as root

# sink_once: sets RESULT to the messages/s of one smtp-sink run.
sink_once() {
    local port pid
    port=$(free_port)
    "$SMTP_SINK" "${USER_FLAG[@]}" "$IP:$port" 1024 >"$WORK/sink.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$IP" "$port"
    source_run "$IP" "$port"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    RESULT=$(rate "$SECS")
}

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
    "$SPATE" serve --config "$dir/spate.toml" >"$dir/stdout" 2>"$dir/stderr" &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
        grep -qx ready "$dir/stdout" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr" >&2; die "spate exited before ready"; }
        sleep 0.1
    done
    grep -qx ready "$dir/stdout" || { cat "$dir/stderr" >&2; die "spate not ready after 30 s"; }
    addr=$(awk '$1 == "listening" && $2 == "smtp" {print $3; exit}' "$dir/stdout")
    port=${addr##*:}
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
