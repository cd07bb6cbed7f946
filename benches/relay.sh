#!/usr/bin/env bash
# End-to-end relay benchmark (issue 3), spate's side: Postfix's smtp-source
# (SESSIONS sessions of SIZE-byte messages) into `spate serve`, which relays
# every message through a [[route]] to smtp-sink; timed from the first
# connection until spate's queue is empty (every message accepted durably,
# delivered and finished). Then the same with Postfix from Debian as the
# relay (a private instance: its own config directory, queue and log under
# the bench's work directory, listening on the bench's 127.x address, the
# same transport to smtp-sink), timed until its queue is empty. RUNS times
# each, alternating; reports the median end-to-end rates, their ratio, the
# ingress-only rates, and the latency from the 250 to delivery (spate's
# histogram; Postfix's `delay=` from its log, which starts when the
# message arrived rather than at its 250).
#
#   benches/relay.sh                     # 20000 messages, 50 sessions, 4 KiB
#   MESSAGES=5000 RUNS=1 benches/relay.sh
#
# Environment as benches/ingress.sh (CORES defaults to 1 here: the load
# generator and the sink need the other core of a 2-core machine).
# POSTFIX=0 skips Postfix.
#
# DKIM=1 measures what DKIM signing costs instead (Postfix skipped): each
# run relays the same load three times, unsigned, signed with an Ed25519
# key and signed with an RSA-2048 key (keys made by openssl for the
# sender's domain; smtp-source's From: is bench@example.test, a relay
# client by network), and reports the medians, each signed rate's ratio
# to the unsigned one (target: at least 0.85; as the ratio of the medians
# and as the median of each run's ratio, the runs being interleaved on a
# noisy machine), and spate's CPU time per message (user + system, /proc).
#
#   MESSAGES=20000 RUNS=3 DKIM=1 benches/relay.sh
#
# EVENTS=1 measures message-life events instead (Postfix skipped): each
# run relays the same load without events and with [[events.webhook]]
# posting to a local endpoint (a small Python HTTP/1.1 server on the
# bench address that counts the events of each batch), and reports both
# rates, their ratio, and whether the endpoint kept up: events made
# (spate_events_written_total), posted and acknowledged, dropped, and the
# lag (seconds from the queue being empty until every event made was
# acknowledged).
#
#   MESSAGES=20000 RUNS=3 EVENTS=1 benches/relay.sh
#   EVENTS_TOML='received_sync_wait = "0s"' EVENTS=1 benches/relay.sh  # more [events] keys Installs Debian's postfix package when missing
# (debconf "No configuration": no system instance is set up or started).
set -euo pipefail

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-3}
CORES=${CORES:-1}
SOURCE_FLAGS=${SOURCE_FLAGS:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
POSTFIX=${POSTFIX:-1}
DKIM=${DKIM:-0}
EVENTS=${EVENTS:-0}
EVENTS_TOML=${EVENTS_TOML:-}
[[ $DKIM == 1 || $EVENTS == 1 ]] && POSTFIX=0

BENCH_NAME=relay
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# relay_once RUN [EXTRA_TOML]: sets RESULT to "end-to-end-rate
# ingress-rate p50 p99 count cpu-us-per-message"
relay_once() {
    local n=$1 extra=${2:-} dir=$WORK/relay-$1 sink_pid sink_port pid addr port t0 t1 i left ingress cpu
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
$extra
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
    EVENT_FIGURES=""
    if [[ $extra == *events.webhook* ]]; then
        events_caught_up "$dir" "$t1"
    fi
    # utime + stime (fields 14, 15 of /proc/PID/stat, in clock ticks).
    cpu=$(awk -v hz="$(getconf CLK_TCK)" -v m="$MESSAGES" '{ printf "%.0f", ($14 + $15) / hz * 1e6 / m }' "/proc/$pid/stat")
    kill -TERM "$pid" "$sink_pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    stats=$(sed -n 's/^stats //p' "$dir/stdout" | tail -1)
    [[ -n $stats ]] || die "no stats line from spate (run $n)"
    latency=$(python3 -c 'import json,sys; l=json.loads(sys.argv[1])["delivery_latency_us"]
print("%.1f %.1f %d" % (l["p50"] / 1000, l["p99"] / 1000, l["count"]))' "$stats")
    RESULT="$(rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')") $ingress $latency $cpu"
    rm -rf "$dir/spool"
}

# dkim_mode: in each run the unsigned relay, then signed with Ed25519 and
# with RSA-2048; prints the comparison.
dkim_mode() {
    local r mode e2e ing p50 p99 count cpu extra base m c run_base
    command -v openssl >/dev/null || die "openssl is needed to make the keys"
    openssl genpkey -algorithm ed25519 -out "$WORK/ed25519.pem" 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa2048.pem" 2>/dev/null
    declare -A RATES CPUS RATIOS
    local modes=(none ed25519 rsa2048)
    log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> relay (unsigned, Ed25519, RSA-2048) -> smtp-sink on $IP, $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
        for mode in "${modes[@]}"; do
            extra=""
            if [[ $mode != none ]]; then
                extra=$(printf '[dkim.domain."example.test"]\nselector = "%s"\nprivate_key = "%s"\n' "$mode" "$WORK/$mode.pem")
            fi
            relay_once "$r-$mode" "$extra"
            read -r e2e ing p50 p99 count cpu <<<"$RESULT"
            log "run $r, $mode: end to end $e2e msg/s (ingress $ing msg/s), 250 to delivery p50 $p50 ms p99 $p99 ms ($count), spate CPU $cpu us/message"
            RATES[$mode]+="$e2e "
            CPUS[$mode]+="$cpu "
            [[ $mode == none ]] && run_base=$e2e
            RATIOS[$mode]+="$(awk -v a="$e2e" -v b="$run_base" 'BEGIN { printf "%.2f", a / b }') "
        done
    done
    # shellcheck disable=SC2086
    base=$(median ${RATES[none]})
    echo
    echo "DKIM signing cost: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES -> spate (cores=$CORES) -> smtp-sink, $RUNS runs, $(nproc) CPUs"
    echo
    echo "| signing | end-to-end runs (msg/s) | median | ratio of medians | ratios in each run (median; target >= 0.85) | spate CPU per message (us, median) |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for mode in "${modes[@]}"; do
        # shellcheck disable=SC2086
        m=$(median ${RATES[$mode]})
        # shellcheck disable=SC2086
        c=$(median ${CPUS[$mode]})
        # shellcheck disable=SC2086
        echo "| $mode | ${RATES[$mode]}| $m | $(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", a / b }') | ${RATIOS[$mode]}($(median ${RATIOS[$mode]})) | $c |"
    done
}

# events_receiver DIR: starts the bench's webhook endpoint; sets
# EVENTS_PID and EVENTS_PORT. It answers 200 to each POST and counts the
# events of the batch; GET answers the count so far.
events_receiver() {
    local dir=$1 i
    cat >"$dir/receiver.py" <<'PY'
import http.server, json, sys, threading
count = 0
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = len(json.loads(body))
        with lock:
            count += n
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        text = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
    python3 "$dir/receiver.py" "$IP" >"$dir/receiver.port" 2>"$dir/receiver.err" &
    EVENTS_PID=$!
    PIDS+=("$EVENTS_PID")
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/receiver.port ]] && break
        sleep 0.1
    done
    EVENTS_PORT=$(head -1 "$dir/receiver.port")
    [[ -n $EVENTS_PORT ]] || die "the events receiver did not start"
}

# metric DIR NAME: one sample of spate's /metrics (its address from the
# "listening metrics" line).
metric() {
    local addr
    addr=$(awk '$1 == "listening" && $2 == "metrics" {print $3; exit}' "$1/stdout")
    # awk reads to the end: an early exit would fail curl (pipefail).
    curl -s "http://$addr/metrics" | awk -v n="$2" '$1 == n {v = $2} END {print v}'
}

# events_caught_up DIR T_EMPTY: waits until every event made was
# acknowledged; sets EVENT_FIGURES to "made posted dropped lag-seconds
# received-by-endpoint".
events_caught_up() {
    local dir=$1 t_empty=$2 i written posted dropped t
    for ((i = 0; i < 600; i++)); do
        written=$(metric "$dir" spate_events_written_total)
        posted=$(metric "$dir" "spate_events_posted_total{endpoint=\"http://$IP:$EVENTS_PORT/events\"}")
        [[ -n $written && $written == "$posted" ]] && break
        sleep 0.1
    done
    t=$(now)
    dropped=$(metric "$dir" spate_events_dropped_total)
    EVENT_FIGURES="$written $posted $dropped $(awk -v a="$t_empty" -v b="$t" 'BEGIN { printf "%.2f", b - a }') $(curl -s "http://$IP:$EVENTS_PORT/")"
}

# events_mode: in each run the relay without events, then with events
# posted to a local endpoint; prints the comparison.
events_mode() {
    local r e2e ing p50 p99 count cpu base made posted dropped lag got
    local -a PLAIN=() WITH=() EV_RATIOS=() FIGURES=()
    command -v curl >/dev/null || die "curl is needed to read spate's metrics"
    log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> relay (without, with events) -> smtp-sink on $IP, $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
        relay_once "$r-plain"
        read -r e2e ing p50 p99 count cpu <<<"$RESULT"
        log "run $r, no events: end to end $e2e msg/s (ingress $ing msg/s), spate CPU $cpu us/message"
        PLAIN+=("$e2e")
        base=$e2e
        mkdir -p "$WORK/events-$r"
        events_receiver "$WORK/events-$r"
        relay_once "$r-events" "$(printf '[metrics]\naddress = "%s:0"\n[events]\n%s\n[[events.webhook]]\nurl = "http://%s:%s/events"\n' "$IP" "$EVENTS_TOML" "$IP" "$EVENTS_PORT")"
        read -r e2e ing p50 p99 count cpu <<<"$RESULT"
        read -r made posted dropped lag got <<<"$EVENT_FIGURES"
        kill "$EVENTS_PID" 2>/dev/null || true
        wait "$EVENTS_PID" 2>/dev/null || true
        log "run $r, events: end to end $e2e msg/s (ingress $ing msg/s), spate CPU $cpu us/message; events made $made, acknowledged $posted, received $got, dropped $dropped, lag ${lag}s after the queue emptied"
        WITH+=("$e2e")
        EV_RATIOS+=("$(awk -v a="$e2e" -v b="$base" 'BEGIN { printf "%.2f", a / b }')")
        FIGURES+=("$made/$posted/$dropped/${lag}s")
    done
    cat <<EOF

Events: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> spate (cores=$CORES) -> smtp-sink, events to a local HTTP endpoint, $RUNS runs, $(nproc) CPUs

| relay | end-to-end runs (msg/s) | median | ratio in each run (median) | events made/acknowledged/dropped/lag after the queue emptied |
| --- | --- | --- | --- | --- |
| no events | ${PLAIN[*]} | $(median "${PLAIN[@]}") | | |
| events to a webhook | ${WITH[*]} | $(median "${WITH[@]}") | ${EV_RATIOS[*]} ($(median "${EV_RATIOS[@]}")) | ${FIGURES[*]} |
EOF
}

postfix_setup() {
    if ! command -v postfix >/dev/null; then
        log "installing Debian's postfix (no configuration, not started)"
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; }
    fi
    command -v postfix >/dev/null || die "postfix is not installed"
    [[ $(id -u) -eq 0 ]] || die "the Postfix comparison needs root (set POSTFIX=0 to skip it)"
}

# postfix_once RUN: the same relay with Postfix; sets RESULT like relay_once
# (the latency is Postfix's logged delay=, from arrival to delivery).
postfix_once() {
    local n=$1 dir=$WORK/postfix-$1 sink_pid sink_port port t0 t1 i left ingress latency
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data"
    chmod 755 "$WORK" # mktemp made it 0700; Postfix's daemons run as postfix
    chown postfix "$dir/data"
    sink_port=$(free_port)
    port=$(free_port)
    "$SMTP_SINK" "${USER_FLAG[@]}" "$IP:$sink_port" 1024 >"$dir/sink.out" 2>&1 &
    sink_pid=$!
    PIDS+=("$sink_pid")
    wait_port "$IP" "$sink_port"
    # Debian's master.cf with smtpd on our address and no chroot.
    sed -e "s/^smtp      inet .*/$IP:$port inet n - n - - smtpd/" \
        -e '/^[a-z]/s/^\(\S\+\s\+\S\+\s\+\S\+\s\+\S\+\s\+\)y/\1n/' \
        /etc/postfix/master.cf >"$dir/conf/master.cf"
    cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
# master.cf binds the bench address; "all" only passes Postfix's check
# that inet_interfaces names a configured interface address.
inet_interfaces = all
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
transport_maps = inline:{ example.test=smtp:[$IP]:$sink_port }
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
maillog_file = $dir/maillog
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF
    postfix -c "$dir/conf" set-permissions >/dev/null 2>&1 || true
    postfix -c "$dir/conf" start >/dev/null 2>&1 || { cat "$dir/maillog" >&2 2>/dev/null; die "postfix did not start"; }
    PF_RUNNING=$dir/conf
    wait_port "$IP" "$port"
    t0=$(now)
    source_run "$IP" "$port"
    ingress=$(rate "$SECS")
    for ((i = 0; i < 3000; i++)); do
        left=$(find "$dir/queue/incoming" "$dir/queue/active" "$dir/queue/deferred" "$dir/queue/maildrop" -type f | wc -l)
        [[ $left -eq 0 ]] && break
        sleep 0.2
    done
    t1=$(now)
    [[ $left -eq 0 ]] || die "$left messages still in Postfix's queue after 600 s (run $n)"
    postfix -c "$dir/conf" stop >/dev/null 2>&1 || true
    PF_RUNNING=
    kill "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    latency=$(grep -o ' delay=[0-9.]*' "$dir/maillog" | cut -d= -f2 | sort -g |
        awk '{a[NR]=$1} END {
            if (!NR) { print "0 0 0"; exit }
            h = int((NR + 1) / 2); t = int(NR * 0.99); if (t < 1) t = 1
            printf "%.1f %.1f %d", a[h] * 1000, a[t] * 1000, NR }')
    RESULT="$(rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')") $ingress $latency"
    rm -rf "$dir/queue"
}
PF_RUNNING=
stop_postfix() { [[ -n $PF_RUNNING ]] && postfix -c "$PF_RUNNING" stop >/dev/null 2>&1; true; }
trap 'stop_postfix; cleanup' EXIT
if [[ $DKIM == 1 ]]; then
    dkim_mode
    exit 0
fi
if [[ $EVENTS == 1 ]]; then
    events_mode
    exit 0
fi
[[ $POSTFIX == 1 ]] && postfix_setup

log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> relay -> smtp-sink on $IP, $RUNS runs"
E2E=() INGRESS=() P50=() P99=() PF_E2E=() PF_INGRESS=() PF_P50=() PF_P99=()
for ((r = 1; r <= RUNS; r++)); do
    relay_once "$r"
    read -r e2e ing p50 p99 count _ <<<"$RESULT"
    log "run $r: spate end to end $e2e msg/s (ingress $ing msg/s), 250 to delivery p50 $p50 ms p99 $p99 ms ($count messages)"
    E2E+=("$e2e") INGRESS+=("$ing") P50+=("$p50") P99+=("$p99")
    if [[ $POSTFIX == 1 ]]; then
        postfix_once "$r"
        read -r e2e ing p50 p99 count _ <<<"$RESULT"
        log "run $r: postfix end to end $e2e msg/s (ingress $ing msg/s), delay p50 $p50 ms p99 $p99 ms ($count messages)"
        PF_E2E+=("$e2e") PF_INGRESS+=("$ing") PF_P50+=("$p50") PF_P99+=("$p99")
    fi
done

cat <<EOF

Relay: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> relay -> smtp-sink, $RUNS runs, $(nproc) CPUs

| relay | end-to-end runs (msg/s) | median | ingress median (msg/s) | to delivery p50 / p99 (ms, medians) |
| --- | --- | --- | --- | --- |
| spate (cores=$CORES, durable 250, delivered and finished) | ${E2E[*]} | $(median "${E2E[@]}") | $(median "${INGRESS[@]}") | $(median "${P50[@]}") / $(median "${P99[@]}") from the 250 |
EOF
if [[ $POSTFIX == 1 ]]; then
    cat <<EOF
| Postfix $(postconf -d -h mail_version) (Debian, all cores, default concurrency) | ${PF_E2E[*]} | $(median "${PF_E2E[@]}") | $(median "${PF_INGRESS[@]}") | $(median "${PF_P50[@]}") / $(median "${PF_P99[@]}") from arrival (delay=) |

spate / Postfix end to end: $(awk -v a="$(median "${E2E[@]}")" -v b="$(median "${PF_E2E[@]}")" 'BEGIN { printf "%.2f", a / b }')x (target 5x)
EOF
fi
