#!/usr/bin/env bash
# POP3 load benchmark (issue 4): CLIENTS parallel clients (examples/
# pop3_load.rs, one thread each, each with its own user: a POP3 server
# locks a maildrop per session), each looping whole sessions for SECONDS:
# USER/PASS, STAT, LIST, UIDL, RETR of every message, QUIT (no DELE: the
# mailboxes never change). Against `spate serve` and against Dovecot's
# POP3 (Debian's dovecot-pop3d, a private instance: `dovecot -c` with its
# own base_dir, logs and passwd-file under the bench's work directory,
# listening only on the bench's 127.x address), each with its own copy of
# the same Maildirs (MESSAGES messages of SIZE bytes per user). Dovecot
# runs twice: in its documented high-performance mode (login and pop3
# processes reused, kept ready) and with its defaults (a new login and a
# new pop3 process per connection). RUNS runs each, alternating, after a
# warm-up session that lets every server build its index. Reports the
# median sessions/s and messages/s, the ratio spate / Dovecot (issue
# target: >= 2 against high-performance Dovecot), session latencies, and
# the client's own CPU time.
#
#   benches/pop3.sh                      # 10 clients, 20 x 4 KiB, 10 s, 3 runs
#   SECONDS_PER_RUN=5 RUNS=1 benches/pop3.sh
#   MESSAGES=2000 SIZE=512-8192 benches/pop3.sh            # whole maildrops (issue 15 item 1)
#   MESSAGES=2000 SIZE=512-8192 SHARED=1 benches/pop3.sh   # one maildrop, 10 sessions at once (item 3)
#
# SIZE may be a range LOW-HIGH: each message's size is drawn from it
# (the same sizes for every server). SHARED=1: every client logs in as
# user1 (no session lock: Dovecot's default, spate's `[pop3]
# lock_session = false`).
# Environment:
#   CLIENTS (10)  MESSAGES (20 per mailbox)  SIZE (4096)  SECONDS_PER_RUN (10)
#   RUNS (3)  CORES (1: the client needs the other core of a 2-core host)
#   DOVECOT_MODES ("performance default"; "" skips Dovecot)
#   SPATE, BENCH_DIR, POSTFIX_TOOLS as in benches/ingress.sh
# Installs Debian's dovecot-pop3d when missing (no service is started:
# Debian's policy-rc.d or the absence of an init system; the bench never
# touches /etc/dovecot's instance). Dovecot needs root (it drops to the
# mail user, nobody, and to its dovecot/dovenull users).
set -euo pipefail

CLIENTS=${CLIENTS:-10}
MESSAGES=${MESSAGES:-20}
SIZE=${SIZE:-4096}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-3}
CORES=${CORES:-1}
SHARED=${SHARED:-0}
SHARED_ARGS=()
WHO="own user each"
if [[ $SHARED == 1 ]]; then
    SHARED_ARGS=(--user user1)
    WHO="all as user1, one maildrop"
fi
DOVECOT_MODES=${DOVECOT_MODES-performance default}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

BENCH_NAME=pop3
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=benches/dovecot.sh
source "$(dirname "${BASH_SOURCE[0]}")/dovecot.sh"

log "building the load client (examples/pop3_load.rs)"
(cd "$ROOT" && cargo build --release --quiet --example pop3_load)
LOAD=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/pop3_load
[[ -x $LOAD ]] || die "no load client at $LOAD"

if [[ -n $DOVECOT_MODES ]]; then
    if [[ ! -x /usr/lib/dovecot/pop3 ]]; then
        log "installing Debian's dovecot-pop3d (no service is started)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d >/dev/null; }
    fi
    [[ -x /usr/lib/dovecot/pop3 ]] || die "dovecot-pop3d is not installed"
    [[ $(id -u) -eq 0 ]] || die "the Dovecot comparison needs root (DOVECOT_MODES= skips it)"
fi
chmod 755 "$WORK" # mktemp made it 0700; Dovecot's mail processes run as nobody

# ------------------------------------------------------------ mailboxes
# One source tree of Maildirs (user1..userN, MESSAGES messages each in
# new/, CRLF line ends, Dovecot-style names with ,S=size), copied per server.
python3 - "$WORK/maildirs" "$CLIENTS" "$MESSAGES" "$SIZE" <<'EOF'
import os, sys
import random
root, users, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
low, _, high = sys.argv[4].partition("-")
low = int(low); high = int(high or low)
line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n"
for u in range(1, users + 1):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, f"user{u}", sub))
    sizes = random.Random(u)
    for m in range(count):
        size = sizes.randint(low, high)
        head = (f"Return-Path: <bench@example.test>\r\nDelivered-To: user{u}@bench.test\r\n"
                f"From: bench@example.test\r\nTo: user{u}@bench.test\r\n"
                f"Message-ID: <{u}.{m}@bench.test>\r\nSubject: message {m}\r\n\r\n").encode()
        body = bytearray()
        # A dot-started line now and then, so dot-stuffing is exercised.
        while len(head) + len(body) < size - 2:
            body += b"." + line[1:] if len(body) % 1400 == 0 else line
        msg = (head + bytes(body))[: size - 2] + b"\r\n"
        assert len(msg) == size
        name = f"{1700000000 + m}.M{m}P{u}Q{m}.bench.test,S={size}"
        with open(os.path.join(root, f"user{u}", "new", name), "wb") as f:
            f.write(msg)
EOF

# ------------------------------------------------------------ spate
start_pop3_spate() {
    local dir=$WORK/spate u
    mkdir -p "$dir"
    cp -a "$WORK/maildirs" "$dir/mail"
    : >"$dir/users"
    for ((u = 1; u <= CLIENTS; u++)); do echo "user$u:{PLAIN}x" >>"$dir/users"; done
    cat >"$dir/spate.toml" <<EOF
hostname = "bench.test"
spool_dir = "$dir/spool"
cores = $CORES
shutdown_grace = "2s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[[listener]]
address = "$IP:0"
protocol = "pop3"

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
    addr=$(awk '$1 == "listening" && $2 == "pop3" {print $3; exit}' "$dir/stdout")
    [[ -n $addr ]] || die "spate printed no pop3 listener"
    ADDR[spate]=$addr
    CPU_PID[spate]=$SPATE_PID
}

# ------------------------------------------------------------ Dovecot


declare -A ADDR CPU_PID
start_pop3_spate
for m in $DOVECOT_MODES; do start_dovecot "$m" pop3 'pop3_uidl_format = %08Xu%08Xv'; done
SERVERS=(spate)
for m in $DOVECOT_MODES; do SERVERS+=("dovecot-$m"); done

# load SERVER SECONDS: sets RESULT to the client's JSON line, CLIENT_CPU
# to the client's CPU seconds and SERVER_CPU to the server's.
load() {
    local s=$1 secs=$2 c0 c1
    c0=$(cpu_of "${CPU_PID[$s]}")
    RESULT=$( { /usr/bin/time -f '%U %S' -o "$WORK/time.$s" \
        "$LOAD" "${ADDR[$s]}" "$secs" --clients "$CLIENTS" --expect "$MESSAGES" "${SHARED_ARGS[@]}"; } ) ||
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

log "warm-up: one second per server (indexes are built on first open)"
for s in "${SERVERS[@]}"; do
    load "$s" 1
    [[ $(field "$RESULT" errors) -eq 0 ]] || die "$s warm-up: $(field "$RESULT" first_error)"
done

declare -A SESS MSGS LINES
log "$CLIENTS clients, $MESSAGES x $SIZE-byte messages each, ${SECONDS_PER_RUN}s per run, $RUNS runs, spate cores=$CORES, $(nproc) CPUs"
for ((r = 1; r <= RUNS; r++)); do
    for s in "${SERVERS[@]}"; do
        load "$s" "$SECONDS_PER_RUN"
        errs=$(field "$RESULT" errors)
        [[ $errs -eq 0 ]] || log "warning: $s run $r: $errs failed sessions, first: $(field "$RESULT" first_error)"
        read -r sps mps p50 p99 <<<"$(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
print("%.1f %.1f %.2f %.2f" % (j["sessions"] / j["seconds"], j["messages"] / j["seconds"],
      j["session_ms_p50"], j["session_ms_p99"]))' "$RESULT")"
        log "run $r: $s: $sps sessions/s, $mps msg/s, session p50 ${p50} ms p99 ${p99} ms; CPU s: server $SERVER_CPU, client $CLIENT_CPU"
        SESS[$s]+="$sps "
        MSGS[$s]+="$mps "
        LINES[$s]+="$sps $p50 $p99 $SERVER_CPU $CLIENT_CPU $(field "$RESULT" sessions);"
    done
done

# Sessions per CPU second the server used (the load is the same for
# every server, so this is work per unit of CPU).
efficiency() { awk -v n="$1" -v c="$2" 'BEGIN { printf "%.0f", (c > 0) ? n / c : 0 }'; }
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
    # shellcheck disable=SC2086
    echo "$med $(median ${MSGS[$s]}) $p50 $p99 $scpu $ccpu $(efficiency "$nsess" "$scpu")"
}
read -r sp_s sp_m sp_50 sp_99 sp_sc sp_cc sp_eff <<<"$(row spate)"
cat <<EOF

POP3: $CLIENTS clients ($WHO) x [USER/PASS, STAT, LIST, UIDL, RETR x $MESSAGES ($SIZE B), QUIT] for ${SECONDS_PER_RUN}s, $RUNS runs, spate cores=$CORES, $(nproc) CPUs, Maildir on $(stat -f -c %T "$WORK")

| server | runs (sessions/s) | median sessions/s | median msg/s | spate / this | session p50 (ms) | session p99 (ms) | server CPU s | sessions per server CPU s | spate / this per CPU s | client CPU s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| spate | ${SESS[spate]% } | $sp_s | $sp_m | | $sp_50 | $sp_99 | $sp_sc | $sp_eff | | $sp_cc |
EOF
for m in $DOVECOT_MODES; do
    read -r d_s d_m d_50 d_99 d_sc d_cc d_eff <<<"$(row "dovecot-$m")"
    ratio=$(awk -v a="$sp_s" -v b="$d_s" 'BEGIN { printf "%.2f", a / b }')
    target=""
    [[ $m == performance ]] && target=" (target >= 2: $(awk -v r="$ratio" 'BEGIN { print (r >= 2) ? "met" : "NOT met" }'))"
    eff_ratio=$(awk -v a="$sp_eff" -v b="$d_eff" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
    echo "| Dovecot $(dovecot --version | cut -d' ' -f1), $m mode | ${SESS[dovecot-$m]% } | $d_s | $d_m | $ratio$target | $d_50 | $d_99 | $d_sc | $d_eff | $eff_ratio | $d_cc |"
done
