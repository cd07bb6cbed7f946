#!/usr/bin/env bash
# What traffic shaping costs (issue 13): the end-to-end relay rate to
# DOMAINS destination domains, each with its own MX host (so each is its
# own site, resolved through dnsmasq on loopback), with RULES shaping rules
# in force (half providers matched by MX suffix, half domain rules, all
# with limits too loose to slow anything: only their cost shows), against
# the same run with the shipped rules alone. `spate blast` sends MESSAGES
# messages over SESSIONS connections into `spate serve` (cores = CORES),
# which relays every one to smtp-sink; timed until spate's queue is empty.
# Also prints spate's CPU time per relayed message (user + system, from
# /proc), the figure Postfix needs 2,500-3,400 us for. RUNS times each,
# alternating; medians and the ratio.
#
#   benches/shaping.sh                    # 20000 messages, 10000 domains, 1000 rules
#   MESSAGES=5000 RUNS=1 benches/shaping.sh
#
# Installs Debian's dnsmasq when missing (only the binary is used: it runs
# in the foreground on the bench's own address, with a generated zone).
set -euo pipefail

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-3}
CORES=${CORES:-1}
DOMAINS=${DOMAINS:-10000}
RULES=${RULES:-1000}
# shellcheck disable=SC2034 # read by common.sh
SOURCE_FLAGS=
BENCH_DIR=${BENCH_DIR:-/var/tmp}

# shellcheck disable=SC2034 # read by common.sh
BENCH_NAME=shaping
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ! command -v dnsmasq >/dev/null; then
    log "installing Debian's dnsmasq-base (binary only, nothing started)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null; }
fi

# The zone: d{i}.bench.test MX mx{i}.bench.test, each mx{i} at $IP.
DNS_PORT=$(free_port)
{
    for ((i = 1; i <= DOMAINS; i++)); do
        echo "mx-host=d$i.bench.test,mx$i.bench.test,10"
        echo "host-record=mx$i.bench.test,$IP"
    done
} >"$WORK/zone.conf"
dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
    --listen-address="$IP" --port="$DNS_PORT" --conf-file="$WORK/zone.conf" \
    --user=root --pid-file="$WORK/dnsmasq.pid" --log-facility=- --cache-size=0 \
    >"$WORK/dnsmasq.out" 2>&1 &
PIDS+=("$!")
sleep 1
kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/dnsmasq.out" >&2; die "dnsmasq did not start"; }

# The rules: RULES/2 providers (suffixes no site has) and RULES/2 domain
# rules for the first domains, every limit far above what the run needs.
RULES_FILE=$WORK/rules.toml
{
    for ((i = 1; i <= RULES / 2; i++)); do
        printf '[provider.p%d]\nmx_suffix = [".provider%d.example", ".alt%d.example"]\nconnections = 40\nmessage_rate = "1000000/s"\n' "$i" "$i" "$i"
    done
    for ((i = 1; i <= RULES - RULES / 2; i++)); do
        printf '[domain."d%d.bench.test"]\nconnections = 40\nmessage_rate = "1000000/s"\nidle = "2s"\n' "$i"
    done
} >"$RULES_FILE"

# relay_once RUN WITH_RULES: sets RESULT to "end-to-end-rate cpu-us-per-message"
relay_once() {
    local n=$1 rules=$2 dir=$WORK/relay-$1-$2 deferred sink_pid sink_port pid port t0 t1 i left ticks cpu_us shaping=""
    mkdir -p "$dir"
    sink_port=$(free_port)
    "$SMTP_SINK" "${USER_FLAG[@]}" "$IP:$sink_port" 1024 >"$dir/sink.out" 2>&1 &
    sink_pid=$!
    PIDS+=("$sink_pid")
    wait_port "$IP" "$sink_port"
    [[ $rules == 1 ]] && shaping="shaping_file = \"$RULES_FILE\""
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

[dns]
nameservers = ["$IP:$DNS_PORT"]

[delivery]
mx_port = $sink_port
max_connections = 500
# A lookup dnsmasq drops under the burst is retried in seconds, not minutes.
minimal_backoff = "2s"
maximal_backoff = "4s"
$shaping

[smtp]
max_connections = 20000
max_connections_per_ip = 20000
EOF
    start_spate "$dir/spate.toml" "$dir"
    pid=$SPATE_PID
    port=$SPATE_PORT
    t0=$(now)
    "$SPATE" blast --to "$IP:$port" -c "$SESSIONS" -n "$MESSAGES" -s "$SIZE" --cores 1 \
        --domain-pattern 'd{}.bench.test' --domain-count "$DOMAINS" >"$dir/blast.out" 2>&1 ||
        { cat "$dir/blast.out" >&2; die "blast failed (run $n)"; }
    for ((i = 0; i < 3000; i++)); do
        left=$("$SPATE" queue list --config "$dir/spate.toml" --json | wc -l)
        [[ $left -eq 0 ]] && break
        sleep 0.2
    done
    t1=$(now)
    [[ $left -eq 0 ]] || die "$left messages still queued after 600 s (run $n)"
    # utime + stime, in clock ticks, of the whole process.
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    cpu_us=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v m="$MESSAGES" 'BEGIN { printf "%.0f", t / hz * 1e6 / m }')
    kill -TERM "$pid" "$sink_pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    deferred=$(grep -c '"deferred"\|deferred id=' "$dir/stderr" || true)
    [[ $deferred -gt 0 ]] && log "run $n: $deferred deliveries deferred (retried after 2 s)"
    RESULT="$(rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')") $cpu_us"
    rm -rf "$dir/spool"
}

log "blast -c $SESSIONS -s $SIZE -n $MESSAGES to $DOMAINS domains (each its own MX) -> spate -> smtp-sink on $IP, $RUNS runs"
PLAIN=() PLAIN_CPU=() RULED=() RULED_CPU=()
for ((r = 1; r <= RUNS; r++)); do
    relay_once "$r" 0
    read -r e2e cpu <<<"$RESULT"
    log "run $r: shipped rules only: $e2e msg/s, $cpu us CPU per message"
    PLAIN+=("$e2e") PLAIN_CPU+=("$cpu")
    relay_once "$r" 1
    read -r e2e cpu <<<"$RESULT"
    log "run $r: with $RULES more rules: $e2e msg/s, $cpu us CPU per message"
    RULED+=("$e2e") RULED_CPU+=("$cpu")
done

plain=$(median "${PLAIN[@]}")
ruled=$(median "${RULED[@]}")
cat <<EOF

Shaping cost: blast -c $SESSIONS -s $SIZE -n $MESSAGES to $DOMAINS sites -> spate (cores=$CORES) -> smtp-sink, $RUNS runs, $(nproc) CPUs

| rules | end-to-end runs (msg/s) | median | spate CPU per message (us, median) |
| --- | --- | --- | --- |
| shipped only | ${PLAIN[*]} | $plain | $(median "${PLAIN_CPU[@]}") |
| shipped + $RULES | ${RULED[*]} | $ruled | $(median "${RULED_CPU[@]}") |

ratio (with rules / without): $(awk -v a="$ruled" -v b="$plain" 'BEGIN { printf "%.2f", a / b }') (target at least 0.9)
EOF
