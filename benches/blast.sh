#!/usr/bin/env bash
# Load tools benchmark (issue 6): `spate blast` -> `spate sink` beside
# Postfix's smtp-source -> smtp-sink in the same run, same sessions,
# message size and count, plus the cross pairs blast -> smtp-sink and
# smtp-source -> spate sink. RUNS runs of each pair, interleaved; reports
# the median messages/s (messages over the sender's wall-clock time,
# process start to exit) and the ratios.
#
#   benches/blast.sh                          # 50000 messages, 50 sessions, 4 KiB
#   MESSAGES=10000 RUNS=1 benches/blast.sh    # quick look
#
# Environment:
#   MESSAGES (50000)  SESSIONS (50)  SIZE (4096)  RUNS (5)
#   CORES (0: one executor per CPU the tool may use, for blast and sink)
#   SENDER_CPUS, RECEIVER_CPUS (taskset lists; default: the first half of
#     the CPUs for every sender, the second half for every receiver, as if
#     they were two hosts, so neither side's pinned threads take the
#     other's CPU; "" runs them unconfined)
#   PER_CONNECTION (0: one connection carries many messages, smtp-source -d;
#     1: one connection per message, smtp-source's default)
#   SPATE (path to a spate binary; default: cargo build --release)
#
# smtp-source and smtp-sink: /usr/sbin when installed, else Debian's
# postfix package unpacked with dpkg -x (see common.sh). Only 127.0.0.0/8.
set -euo pipefail

MESSAGES=${MESSAGES:-50000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-5}
CORES=${CORES:-0}
PER_CONNECTION=${PER_CONNECTION:-0}
HALF=$(($(nproc) / 2))
if ((HALF >= 1)); then
    SENDER_CPUS=${SENDER_CPUS-0-$((HALF - 1))}
    RECEIVER_CPUS=${RECEIVER_CPUS-$HALF-$(($(nproc) - 1))}
else
    SENDER_CPUS=${SENDER_CPUS-}
    RECEIVER_CPUS=${RECEIVER_CPUS-}
fi
# on_cpus LIST COMMAND...: COMMAND confined to LIST (unconfined when empty).
on_cpus() {
    local cpus=$1
    shift
    if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
if [[ $PER_CONNECTION -eq 1 ]]; then SOURCE_FLAGS=""; else SOURCE_FLAGS="-d"; fi
if [[ $PER_CONNECTION -gt 1 ]]; then
    echo "PER_CONNECTION is 0 (reuse) or 1 (smtp-source has nothing between)" >&2
    exit 1
fi

BENCH_NAME=blast
# Use the installed Postfix tools rather than downloading the package.
if [[ -z ${POSTFIX_TOOLS:-} && -x /usr/sbin/smtp-source && -x /usr/sbin/smtp-sink ]]; then
    POSTFIX_TOOLS=$(mktemp -d)
    mkdir -p "$POSTFIX_TOOLS/root/usr/sbin"
    ln -s /usr/sbin/smtp-source /usr/sbin/smtp-sink "$POSTFIX_TOOLS/root/usr/sbin/"
fi
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Receivers: start_receiver KIND; sets RECV_PID and RECV_PORT.
start_receiver() {
    case $1 in
    smtp-sink)
        RECV_PORT=$(free_port)
        on_cpus "$RECEIVER_CPUS" "$SMTP_SINK" "${USER_FLAG[@]}" "$IP:$RECV_PORT" 1024 >"$WORK/recv.out" 2>&1 &
        RECV_PID=$!
        PIDS+=("$RECV_PID")
        wait_port "$IP" "$RECV_PORT"
        ;;
    sink)
        on_cpus "$RECEIVER_CPUS" "$SPATE" sink --listen "$IP:0" --cores "$CORES" >"$WORK/recv.out" 2>"$WORK/recv.err" &
        RECV_PID=$!
        PIDS+=("$RECV_PID")
        local i
        for ((i = 0; i < 300; i++)); do
            grep -qx ready "$WORK/recv.out" 2>/dev/null && break
            sleep 0.1
        done
        grep -qx ready "$WORK/recv.out" || die "spate sink not ready: $(cat "$WORK/recv.err")"
        RECV_PORT=$(awk '$1 == "listening" {n = split($3, a, ":"); print a[n]; exit}' "$WORK/recv.out")
        ;;
    esac
}

stop_receiver() {
    kill -TERM "$RECV_PID" 2>/dev/null || true
    wait "$RECV_PID" 2>/dev/null || true
}

# send KIND: runs the sender against the receiver; sets SECS.
send() {
    local t0 t1
    t0=$(now)
    case $1 in
    smtp-source)
        # shellcheck disable=SC2086
        timeout 600 taskset -c "${SENDER_CPUS:-0-$(($(nproc) - 1))}" "$SMTP_SOURCE" $SOURCE_FLAGS -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" \
            -f bench@example.test -t sink@example.test "$IP:$RECV_PORT" >"$WORK/send.out" 2>&1 ||
            { cat "$WORK/send.out" >&2; die "smtp-source failed"; }
        ;;
    blast)
        timeout 600 taskset -c "${SENDER_CPUS:-0-$(($(nproc) - 1))}" "$SPATE" blast --to "$IP:$RECV_PORT" -c "$SESSIONS" -n "$MESSAGES" \
            --size "$SIZE" --per-connection "$PER_CONNECTION" --cores "$CORES" --json \
            --from bench@example.test --domains example.test >"$WORK/send.out" 2>"$WORK/send.err" ||
            { cat "$WORK/send.err" >&2; die "blast failed"; }
        local delivered
        delivered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "$WORK/send.out")
        [[ $delivered -eq $MESSAGES ]] || die "blast delivered $delivered of $MESSAGES: $(cat "$WORK/send.out")"
        ;;
    esac
    t1=$(now)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

PAIRS=("blast sink" "smtp-source smtp-sink" "blast smtp-sink" "smtp-source sink")
declare -A RATES
log "$MESSAGES messages of $SIZE bytes over $SESSIONS sessions (per connection: ${PER_CONNECTION/#0/unlimited}), $RUNS runs, cores=$CORES, $(nproc) CPUs (senders on ${SENDER_CPUS:-any}, receivers on ${RECEIVER_CPUS:-any}), on $IP"
for ((r = 1; r <= RUNS; r++)); do
    for pair in "${PAIRS[@]}"; do
        read -r sender receiver <<<"$pair"
        start_receiver "$receiver"
        send "$sender"
        stop_receiver
        rt=$(rate "$SECS")
        RATES[$pair]="${RATES[$pair]:-} $rt"
        log "run $r: $sender -> $receiver: $rt msg/s"
    done
done

declare -A MED
for pair in "${PAIRS[@]}"; do
    # shellcheck disable=SC2086
    MED[$pair]=$(median ${RATES[$pair]})
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
base=${MED[smtp-source smtp-sink]}

cat <<EOF

Load tools: $MESSAGES messages x $SIZE bytes, $SESSIONS sessions, $RUNS runs, cores=$CORES, $(nproc) CPUs, senders on CPUs ${SENDER_CPUS:-any}, receivers on ${RECEIVER_CPUS:-any}

| sender -> receiver | runs (msg/s) | median msg/s | vs smtp-source -> smtp-sink |
| --- | --- | --- | --- |
EOF
for pair in "${PAIRS[@]}"; do
    read -r sender receiver <<<"$pair"
    echo "| $sender -> $receiver |${RATES[$pair]} | ${MED[$pair]} | $(ratio "${MED[$pair]}" "$base")x |"
done
cat <<EOF

blast vs smtp-source, both into smtp-sink: $(ratio "${MED[blast smtp-sink]}" "$base")x
sink vs smtp-sink, both fed by smtp-source: $(ratio "${MED[smtp-source sink]}" "$base")x
blast+sink vs smtp-source+smtp-sink: $(ratio "${MED[blast sink]}" "$base")x (target >= 2x)
EOF
