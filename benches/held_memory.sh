#!/usr/bin/env bash
# Memory of held messages (issue 13 section 2): what 1,000,000 queued
# messages for one suspended (or throttled) site cost spate, and whether
# mail to another site still leaves meanwhile. spate (release build,
# `cores = CORES`) relays through two `[[route]]`s to two `spate sink`s on
# private 127.x addresses: held.test to a site suspended beforehand with
# `spate queue suspend` (its sink refuses every connection, so nothing
# can slip through), live.test to a sink that writes each message to a
# directory. MODE=throttled instead lets the held site take THROTTLE_RATE
# messages (default 1/min) over one connection, by a shaping rule for its
# address: its ready queue fills to `max_queued_per_destination` (20,000)
# and the rest is held, rechecked every minute.
# `spate blast` injects MESSAGES small messages for held.test in steps;
# after each step, once the engine has queued or held every one, the bench
# reads spate's /proc/PID/status (VmRSS, RssAnon: the heap; RssFile: the
# spool's memory maps, page cache). All along, a trickle of one message
# every TRICKLE_EVERY seconds goes to live.test and the time from its
# connection to the sink's file is measured: it must stay under
# TRICKLE_LIMIT.
#
# Then spate restarts on the same spool (RESTART=1): recovery time, memory
# at `ready` (VmHWM: the peak of recovery), after the first dispatch of the
# 1M recovered messages, and after the 60 s recheck of the held ones. A
# restart forgets suspensions; in suspended mode the held site's sink
# answers `421 4.7.0 Too many connections`, and a `[[backoff]]` rule of
# the bench's shaping file suspends the site on that reply (the first
# batches sent to it are deferred, as they would be in production).
#
#   benches/held_memory.sh                          # 1,000,000 messages of 200 bytes
#   MODE=throttled benches/held_memory.sh
#   MESSAGES=100000 CHECKPOINTS="50000 100000" RESTART=0 benches/held_memory.sh
#
# Needs about 1.5 KiB of disk per message under BENCH_DIR (checked first);
# the spool is deleted at the end. SPATE=path uses a built binary.
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
CHECKPOINTS=${CHECKPOINTS:-"100000 500000 $MESSAGES"}
SIZE=${SIZE:-200}
CONNECTIONS=${CONNECTIONS:-20}
CORES=${CORES:-1}
TRICKLE_EVERY=${TRICKLE_EVERY:-2}
TRICKLE_LIMIT=${TRICKLE_LIMIT:-5}
RESTART=${RESTART:-1}
MODE=${MODE:-suspended}
THROTTLE_RATE=${THROTTLE_RATE:-1/min}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
NEEDS_POSTFIX_TOOLS=0

BENCH_NAME=held_memory
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need=$((MESSAGES * 1536))
avail=$(df --output=avail -B1 "$BENCH_DIR" | tail -1)
((avail > need + (1 << 30))) ||
    die "$BENCH_DIR has $((avail >> 20)) MiB free; $MESSAGES messages need about $((need >> 20)) MiB (plus 1 GiB of margin)"
log "disk: $((avail >> 20)) MiB free under $BENCH_DIR, about $((need >> 20)) MiB needed"
[[ $MODE == suspended || $MODE == throttled ]] || die "MODE is suspended or throttled, not $MODE"

# start_sink NAME ADDRESS FLAG...: a spate sink on ADDRESS, port 0; sets
# SINK_PORT.
start_sink() {
    local name=$1 address=$2 i
    shift 2
    "$SPATE" sink --listen "$address:0" --cores 1 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    for ((i = 0; i < 200; i++)); do
        grep -qx ready "$WORK/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -qx ready "$WORK/$name.out" || { cat "$WORK/$name.err" >&2; die "sink $name did not start"; }
    SINK_PORT=$(awk '$1 == "listening" && $2 == "smtp" { n = split($3, a, ":"); print a[n]; exit }' "$WORK/$name.out")
}

# The held site on an address of its own, so that a shaping rule can name
# it.
HELD_IP=$IP
until [[ $HELD_IP != "$IP" ]]; do
    HELD_IP=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))
done
mkdir -p "$WORK/live-mail"
if [[ $MODE == suspended ]]; then
    start_sink held "$HELD_IP" --max-per-ip 0
else
    start_sink held "$HELD_IP"
fi
HELD_PORT=$SINK_PORT
start_sink live "$IP" --dir "$WORK/live-mail"
LIVE_PORT=$SINK_PORT
SITE="[$HELD_IP]:$HELD_PORT"

if [[ $MODE == suspended ]]; then
    cat >"$WORK/shaping.toml" <<EOF
# After a restart (suspensions are not persisted) the held site's refusal
# suspends it again.
[[backoff]]
reply = "421 4\\\\.7\\\\.0 Too many connections"
suspend = "1d"
EOF
else
    cat >"$WORK/shaping.toml" <<EOF
# The held site takes $THROTTLE_RATE over one connection.
[provider.held]
mx_suffix = ["$HELD_IP"]
connections = 1
message_rate = "$THROTTLE_RATE"
EOF
fi
cat >"$WORK/spate.toml" <<EOF
hostname = "relay.bench.test"
spool_dir = "$WORK/spool"
cores = $CORES
shutdown_grace = "10s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[relay]
allow_networks = ["127.0.0.0/8"]

# Never the system resolver; the routes need no lookup.
[dns]
nameservers = ["$IP:53"]

[[route]]
domain = "held.test"
to = "$HELD_IP:$HELD_PORT"

[[route]]
domain = "live.test"
to = "$IP:$LIVE_PORT"

[delivery]
shaping_file = "$WORK/shaping.toml"

[smtp]
max_connections = 20000
max_connections_per_ip = 20000

[metrics]
address = "$IP:0"

[log]
level = "warn"
EOF

# launch: starts spate; sets PID, PORT, METRICS and RECOVERY (seconds to
# `ready`).
launch() {
    local t0 t1
    : >"$WORK/stdout"
    t0=$(now)
    start_spate "$WORK/spate.toml" "$WORK"
    t1=$(now)
    PID=$SPATE_PID
    PORT=$SPATE_PORT
    METRICS=$(awk '$1 == "listening" && $2 == "metrics" {print $3; exit}' "$WORK/stdout")
    RECOVERY=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "$PORT" >"$WORK/port"
}

# metric NAME (with labels): its value, summed over the scrape's lines. A
# scrape that fails (a core busy for over 5 s answers 503) is counted in
# $WORK/scrape-failures and tried again.
metric() {
    local text i
    for ((i = 0; i < 120; i++)); do
        if text=$(curl -sf --max-time 10 "http://$METRICS/metrics"); then
            awk -v k="$1" '$1 == k { s += $2 } END { printf "%d", s }' <<<"$text"
            return 0
        fi
        echo "$(cat "$PHASE_FILE") scrape failed" >>"$WORK/scrape-failures"
        sleep 1
    done
    die "no metrics from $METRICS for 2 minutes"
}

# status FIELD: a /proc/PID/status field in KiB.
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }

# settle INJECTED: waits until every held.test message was held, waits in
# a ready queue, was deferred or delivered (held + active + deferred +
# delivered >= INJECTED; delivered counts the trickle too) and the held
# count stands still.
settle() {
    local want=$1 held active deferred delivered last=-1 i
    for ((i = 0; i < 6000; i++)); do
        held=$(metric spate_delivery_held_total)
        active=$(metric 'spate_queue_messages{state="active"}')
        deferred=$(metric 'spate_queue_messages{state="deferred"}')
        delivered=$(metric 'spate_delivery_messages_total{result="delivered"}')
        if ((held + active + deferred + delivered >= want && held == last)); then return 0; fi
        last=$held
        sleep 1
    done
    die "not settled: held $held + active $active + deferred $deferred + delivered $delivered < $want"
}

PHASE_FILE=$WORK/phase
echo start >"$PHASE_FILE"
# One message to live.test every TRICKLE_EVERY seconds; logs "phase
# seconds" (from blast's start, so a stall of the server's ingress counts
# too, to the sink's file) or "phase down" while spate is away.
trickle() {
    local before t0 took port sent i
    while [[ ! -e $WORK/trickle.stop ]]; do
        port=$(cat "$WORK/port" 2>/dev/null || true)
        before=$(find "$WORK/live-mail" -type f -name "*.eml" | wc -l)
        t0=$(now)
        sent=$("$SPATE" blast --to "$IP:$port" -n 1 -c 1 --cores 1 -s 200 --domains live.test \
            --timeout 10s --json 2>/dev/null | jq -r .delivered 2>/dev/null || echo 0)
        if [[ $sent != 1 ]]; then
            echo "$(cat "$PHASE_FILE") down" >>"$WORK/trickle.log"
            sleep 1
            continue
        fi
        took=timeout
        for ((i = 0; i < 3000; i++)); do
            if (($(find "$WORK/live-mail" -type f -name "*.eml" | wc -l) > before)); then
                took=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
                break
            fi
            sleep 0.02
        done
        echo "$(cat "$PHASE_FILE") $took" >>"$WORK/trickle.log"
        sleep "$TRICKLE_EVERY"
    done
}

# trickle_summary PHASE: "n=N median=S max=S" of the deliveries in PHASE.
trickle_summary() {
    awk -v p="$1" '$1 == p && $2 != "down" { print ($2 == "timeout") ? 999 : $2 }' "$WORK/trickle.log" |
        sort -g | awk '{ a[NR] = $1 } END { if (!NR) { print "n=0"; exit }
            printf "n=%d median=%.2fs max=%.2fs", NR, a[int((NR + 1) / 2)], a[NR] }'
}

ROWS=()
row() { # LABEL MESSAGES EXTRA: one line of the results table, from /proc now
    local rss anon file hwm per
    rss=$(status VmRSS) anon=$(status RssAnon) file=$(status RssFile) hwm=$(status VmHWM)
    per=$(awk -v a="$anon" -v b="$BASE_ANON" -v m="$2" 'BEGIN { if (m > 0) printf "%.0f", (a - b) * 1024 / m; else print "-" }')
    ROWS+=("| $1 | $2 | $((rss / 1024)) | $((anon / 1024)) | $((file / 1024)) | $((hwm / 1024)) | $per | $3 |")
    log "$1: $2 messages, VmRSS $((rss / 1024)) MiB, RssAnon $((anon / 1024)) MiB ($per bytes/message over the empty server), RssFile $((file / 1024)) MiB, VmHWM $((hwm / 1024)) MiB; $3"
}

launch
log "spate $PID on $IP:$PORT (cores = $CORES); held site $SITE ($MODE), live site [$IP]:$LIVE_PORT"
if [[ $MODE == suspended ]]; then
    "$SPATE" queue suspend "$SITE" --for 1d --config "$WORK/spate.toml" >/dev/null
fi
trickle &
TRICKLE_PID=$!
PIDS+=("$TRICKLE_PID")
sleep 5
BASE_ANON=$(status RssAnon)
row "empty, site $MODE" 0 "trickle $(trickle_summary start)"

sent=0
for target in $CHECKPOINTS; do
    n=$((target - sent))
    echo "to-$target" >"$PHASE_FILE"
    t0=$(now)
    "$SPATE" blast --to "$IP:$PORT" -c "$CONNECTIONS" --cores 1 -n "$n" -s "$SIZE" \
        --domains held.test --json >"$WORK/blast.json" 2>"$WORK/blast.err" ||
        { cat "$WORK/blast.err" >&2; die "blast failed"; }
    ok=$(jq -r .delivered "$WORK/blast.json")
    ((ok == n)) || die "blast: $ok of $n messages accepted"
    rate=$(awk -v a="$t0" -v b="$(now)" -v n="$n" 'BEGIN { printf "%.0f", n / (b - a) }')
    sent=$target
    settle "$sent"
    sleep 2
    row "$sent queued, site $MODE" "$sent" "ingress $rate msg/s; trickle $(trickle_summary "to-$target")"
done

if [[ $RESTART == 1 ]]; then
    echo restart >"$PHASE_FILE"
    t0=$(now)
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    stop=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    rm -f "$WORK/port"
    launch
    BASE_ANON_BEFORE=$BASE_ANON
    row "restarted: at ready" "$sent" "recovery $RECOVERY s (stop took $stop s)"
    echo "after-restart" >"$PHASE_FILE"
    settle "$sent"
    row "restarted: first dispatch done" "$sent" "held $(metric spate_delivery_held_total), active $(metric 'spate_queue_messages{state="active"}'), deferred (by the 421) $(metric 'spate_queue_messages{state="deferred"}')"
    sleep 65
    settle 0
    row "restarted: after the 60 s recheck" "$sent" "held $(metric spate_delivery_held_total); trickle since restart $(trickle_summary after-restart)"
    BASE_ANON=$BASE_ANON_BEFORE
fi

touch "$WORK/trickle.stop"
wait "$TRICKLE_PID" 2>/dev/null || true
kill -USR1 "${PIDS[0]}" 2>/dev/null || true
sleep 0.5
HELD_COUNTERS=$(sed -n 's/^counters //p' "$WORK/held.out" | tail -1)
held_messages=$(jq -r .messages <<<"${HELD_COUNTERS:-{\}}" 2>/dev/null || echo "?")
worst=$(awk '$2 != "down" { v = ($2 == "timeout") ? 999 : $2; if (v > m) m = v } END { printf "%.2f", m }' "$WORK/trickle.log")
downs=$(awk '$2 == "down"' "$WORK/trickle.log" | wc -l)

cat <<EOF

Held messages: $MESSAGES messages of $SIZE bytes for one $MODE site, spate cores = $CORES, $(nproc) CPUs

| point | messages | VmRSS MiB | RssAnon MiB | RssFile MiB | VmHWM MiB | anon bytes/message | notes |
| --- | --- | --- | --- | --- | --- | --- | --- |
$(printf '%s\n' "${ROWS[@]}")

Trickle to the live site: slowest delivery ${worst} s (limit $TRICKLE_LIMIT s); $downs sends while spate was down.
Metrics scrapes that failed (a core busy for over 5 s): $(touch "$WORK/scrape-failures"; wc -l <"$WORK/scrape-failures").
Messages the held site's sink accepted: $held_messages$([[ $MODE == suspended ]] && echo " (must be 0)").
EOF
[[ $MODE != suspended || $held_messages == 0 ]] || die "the suspended site received mail"
awk -v w="$worst" -v l="$TRICKLE_LIMIT" 'BEGIN { exit !(w <= l) }' ||
    die "a message to the live site took $worst s (limit $TRICKLE_LIMIT s)"
