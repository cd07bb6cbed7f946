#!/usr/bin/env bash
# IMAP load benchmark: CLIENTS parallel clients (examples/imap_load.rs,
# one thread each, each with its own user), each looping whole sessions
# for SECONDS_PER_RUN: LOGIN, SELECT INBOX, UID FETCH 1:* (FLAGS
# RFC822.SIZE), FETCH of BODIES random messages (BODY.PEEK[], one command
# with a sequence set), LOGOUT. Nothing changes the mailboxes. Against
# `spate serve` (once per value of SPATE_CORES) and against Dovecot's IMAP
# (Debian's dovecot-imapd, a private instance: `dovecot -c` with its own
# base_dir, logs and passwd-file under the bench's work directory,
# listening only on the bench's 127.x address), each with its own copy of
# the same Maildirs (MESSAGES messages of SIZE bytes per user, CRLF line
# ends, in cur/ as a client that has seen them leaves them). Dovecot runs
# in its documented high-performance mode (login and imap processes
# reused, kept ready) and, with DOVECOT_MODES="performance default", with
# its defaults too. RUNS runs each, alternating, after a warm-up session
# per user that lets every server build its index (spate builds its UID
# index on first open, Dovecot its dovecot.index*). Reports the median
# sessions/s, the ratio spate / Dovecot (issue target: >= 2 against
# high-performance Dovecot), session latencies, server and client CPU.
#
#   benches/imap.sh                      # 10 clients, 2000 x 4 KiB, 10 s, 3 runs
#   SECONDS_PER_RUN=5 RUNS=1 SPATE_CORES=1 benches/imap.sh
#   SHARED=1 benches/imap.sh             # every client as user1: one mailbox (issue 15 item 2)
#
# Environment:
#   CLIENTS (10)  MESSAGES (2000 per mailbox)  SIZE (4096)  BODIES (20)
#   SECONDS_PER_RUN (10)  RUNS (3)  SPATE_CORES ("1 2": one spate per value)
#   DOVECOT_MODES ("performance"; "performance default" adds Dovecot's
#   defaults; "" skips Dovecot)  SPATE, BENCH_DIR as in benches/pop3.sh
# Installs Debian's dovecot-imapd when missing (no service is started).
# Dovecot needs root (it drops to the mail user, nobody).
set -euo pipefail

CLIENTS=${CLIENTS:-10}
MESSAGES=${MESSAGES:-2000}
SIZE=${SIZE:-4096}
BODIES=${BODIES:-20}
SHARED=${SHARED:-0}
SHARED_ARGS=()
WHO="own user each"
if [[ $SHARED == 1 ]]; then
    SHARED_ARGS=(--user user1)
    WHO="all as user1, one mailbox"
fi
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-3}
SPATE_CORES=${SPATE_CORES:-1 2}
DOVECOT_MODES=${DOVECOT_MODES-performance}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

BENCH_NAME=imap
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=benches/dovecot.sh
source "$(dirname "${BASH_SOURCE[0]}")/dovecot.sh"

log "building the load client (examples/imap_load.rs)"
(cd "$ROOT" && cargo build --release --quiet --example imap_load)
LOAD=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/imap_load
[[ -x $LOAD ]] || die "no load client at $LOAD"

if [[ -n $DOVECOT_MODES ]]; then
    if [[ ! -x /usr/lib/dovecot/imap ]]; then
        log "installing Debian's dovecot-imapd (no service is started)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null; }
    fi
    [[ -x /usr/lib/dovecot/imap ]] || die "dovecot-imapd is not installed"
    [[ $(id -u) -eq 0 ]] || die "the Dovecot comparison needs root (DOVECOT_MODES= skips it)"
fi
chmod 755 "$WORK" # mktemp made it 0700; Dovecot's mail processes run as nobody

# ------------------------------------------------------------ mailboxes
# One source tree of Maildirs (user1..userN, MESSAGES messages each in
# cur/ with the :2, info and Dovecot's ,S=size, CRLF line ends), copied
# per server.
log "writing $CLIENTS Maildirs of $MESSAGES x $SIZE bytes"
python3 - "$WORK/maildirs" "$CLIENTS" "$MESSAGES" "$SIZE" <<'EOF'
import os, sys
root, users, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n"
for u in range(1, users + 1):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, f"user{u}", sub))
    for m in range(count):
        head = (f"Return-Path: <bench@example.test>\r\nDelivered-To: user{u}@bench.test\r\n"
                f"From: bench@example.test\r\nTo: user{u}@bench.test\r\n"
                f"Message-ID: <{u}.{m}@bench.test>\r\nSubject: message {m}\r\n\r\n").encode()
        body = bytearray()
        while len(head) + len(body) < size - 2:
            body += line
        msg = (head + bytes(body))[: size - 2] + b"\r\n"
        assert len(msg) == size
        name = f"{1700000000 + m}.M{m}P{u}Q{m}.bench.test,S={size}:2,"
        with open(os.path.join(root, f"user{u}", "cur", name), "wb") as f:
            f.write(msg)
EOF

# ------------------------------------------------------------ spate
# start_imap_spate CORES
start_imap_spate() {
    local cores=$1 dir=$WORK/spate-c$1 u
    mkdir -p "$dir"
    cp -a "$WORK/maildirs" "$dir/mail"
    : >"$dir/users"
    for ((u = 1; u <= CLIENTS; u++)); do echo "user$u:{PLAIN}x" >>"$dir/users"; done
    cat >"$dir/spate.toml" <<EOF
hostname = "bench.test"
spool_dir = "$dir/spool"
cores = $cores
shutdown_grace = "2s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[[listener]]
address = "$IP:0"
protocol = "imap"

[relay]
allow_networks = ["127.0.0.0/8"]

# Never the system resolver: a closed port on the bench address.
[dns]
nameservers = ["$IP:53"]

[local]
domains = ["bench.test"]
mailbox_dir = "$dir/mail"
users_file = "$dir/users"
EOF
    start_spate "$dir/spate.toml" "$dir"
    local addr
    addr=$(awk '$1 == "listening" && $2 == "imap" {print $3; exit}' "$dir/stdout")
    [[ -n $addr ]] || die "spate printed no imap listener"
    ADDR[spate-c$cores]=$addr
    CPU_PID[spate-c$cores]=$SPATE_PID
}

# ------------------------------------------------------------ Dovecot


declare -A ADDR CPU_PID
SERVERS=()
for c in $SPATE_CORES; do start_imap_spate "$c"; SERVERS+=("spate-c$c"); done
for m in $DOVECOT_MODES; do start_dovecot "$m" imap; SERVERS+=("dovecot-$m"); done

# load SERVER SECONDS [CLIENTS]: sets RESULT to the client's JSON line,
# CLIENT_CPU to the client's CPU seconds and SERVER_CPU to the server's.
load() {
    local s=$1 secs=$2 n=${3:-$CLIENTS} c0 c1
    c0=$(cpu_of "${CPU_PID[$s]}")
    RESULT=$( { /usr/bin/time -f '%U %S' -o "$WORK/time.$s" \
        "$LOAD" "${ADDR[$s]}" "$secs" --clients "$n" --expect "$MESSAGES" --bodies "$BODIES" "${SHARED_ARGS[@]}"; } ) ||
        die "load client failed against $s"
    c1=$(cpu_of "${CPU_PID[$s]}")
    CLIENT_CPU=$(awk '{printf "%.2f", $1 + $2}' "$WORK/time.$s")
    SERVER_CPU=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

command -v /usr/bin/time >/dev/null 2>&1 || {
    log "installing GNU time (client CPU accounting)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
}

# Warm-up: the first session per user (seconds 0: each client thread runs
# exactly one session) builds the indexes; its time is reported.
for s in "${SERVERS[@]}"; do
    load "$s" 0
    [[ $(field "$RESULT" errors) -eq 0 ]] || die "$s warm-up: $(field "$RESULT" first_error)"
    log "warm-up: $s: first session per user (index build) p50 $(field "$RESULT" session_ms_p50) ms, max $(field "$RESULT" session_ms_p99) ms, server CPU $SERVER_CPU s"
done

declare -A SESS LINES
log "$CLIENTS clients, $MESSAGES x $SIZE-byte messages each, $BODIES bodies per session, ${SECONDS_PER_RUN}s per run, $RUNS runs, spate cores: $SPATE_CORES, $(nproc) CPUs"
for ((r = 1; r <= RUNS; r++)); do
    for s in "${SERVERS[@]}"; do
        load "$s" "$SECONDS_PER_RUN"
        errs=$(field "$RESULT" errors)
        [[ $errs -eq 0 ]] || log "warning: $s run $r: $errs failed sessions, first: $(field "$RESULT" first_error)"
        read -r sps p50 p99 <<<"$(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
print("%.1f %.2f %.2f" % (j["sessions"] / j["seconds"], j["session_ms_p50"], j["session_ms_p99"]))' "$RESULT")"
        log "run $r: $s: $sps sessions/s, session p50 ${p50} ms p99 ${p99} ms; CPU s: server $SERVER_CPU, client $CLIENT_CPU"
        SESS[$s]+="$sps "
        LINES[$s]+="$sps $p50 $p99 $SERVER_CPU $CLIENT_CPU $(field "$RESULT" sessions);"
    done
done

efficiency() { awk -v n="$1" -v c="$2" 'BEGIN { printf "%.1f", (c > 0) ? n / c : 0 }'; }
# The latencies and CPU of the run whose session rate is the median.
row() {
    local s=$1 med l rest
    # shellcheck disable=SC2086
    med=$(median ${SESS[$s]})
    IFS=';' read -ra rest <<<"${LINES[$s]}"
    for l in "${rest[@]}"; do
        read -r sps p50 p99 scpu ccpu nsess <<<"$l"
        [[ $sps == "$med" ]] && break
    done
    echo "$med $p50 $p99 $scpu $ccpu $(efficiency "$nsess" "$scpu")"
}
DV=""
for m in $DOVECOT_MODES; do [[ $m == performance ]] && DV=dovecot-performance; done
[[ -z $DV && -n $DOVECOT_MODES ]] && DV=dovecot-${DOVECOT_MODES%% *}
cat <<EOF

IMAP: $CLIENTS clients ($WHO) x [LOGIN, SELECT INBOX ($MESSAGES x $SIZE B), UID FETCH 1:* (FLAGS RFC822.SIZE), FETCH $BODIES random (BODY.PEEK[]), LOGOUT] for ${SECONDS_PER_RUN}s, $RUNS runs, $(nproc) CPUs, Maildir on $(stat -f -c %T "$WORK")

| server | runs (sessions/s) | median sessions/s | this / ${DV:-dovecot} | session p50 (ms) | session p99 (ms) | server CPU s | sessions per server CPU s | client CPU s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
[[ -n $DV ]] && read -r d_s _ _ _ _ d_eff <<<"$(row "$DV")"
for s in "${SERVERS[@]}"; do
    read -r x_s x_50 x_99 x_sc x_cc x_eff <<<"$(row "$s")"
    ratio=""
    if [[ -n $DV ]]; then
        ratio=$(awk -v a="$x_s" -v b="$d_s" 'BEGIN { printf "%.2f", a / b }')
        [[ $s == spate-* && $DV == dovecot-performance ]] &&
            ratio+=" (target >= 2: $(awk -v r="$ratio" 'BEGIN { print (r >= 2) ? "met" : "NOT met" }'))"
    fi
    name=$s
    [[ $s == spate-c* ]] && name="spate, cores=${s#spate-c}"
    [[ $s == dovecot-* ]] && name="Dovecot $(dovecot --version | cut -d' ' -f1), ${s#dovecot-} mode"
    echo "| $name | ${SESS[$s]% } | $x_s | $ratio | $x_50 | $x_99 | $x_sc | $x_eff | $x_cc |"
done
