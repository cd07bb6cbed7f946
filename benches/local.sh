#!/usr/bin/env bash
# End-to-end local delivery benchmark (issue 4): Postfix's smtp-source
# (SESSIONS sessions of SIZE-byte messages) into `spate serve` with a
# local domain and one user, `sink`; timed from the first connection until
# spate's queue is empty and every message is a file in sink's Maildir
# (each one fsynced, linked into new/, new/ fsynced; the UID index is
# left to the next reader). Measured with the folder empty and with
# PREFILLS messages already in it (written into cur/ before the run,
# indexed by one POP3 login), to show delivery does not depend on the
# folder's size.
# In the same run, on the same filesystem, the baselines: a plain loop of
# create + write + fsync of SIZE-byte files (and the same with an fsync of
# the directory after each), one at a time as spate delivers to one
# folder. RUNS runs, alternating; reports medians and ratios.
#
#   benches/local.sh                        # 2000 messages, 20 sessions, 4 KiB
#   MESSAGES=500 RUNS=1 benches/local.sh    # quick look
#
# Environment as benches/ingress.sh, plus PREFILLS ("0 10000": folder
# sizes before the run) and RAW (1000: files per baseline measurement).
# CORES defaults to 1 (smtp-source needs the other core).
set -euo pipefail

MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
RUNS=${RUNS:-3}
CORES=${CORES:-1}
PREFILLS=${PREFILLS:-0 10000}
RAW=${RAW:-1000}
SOURCE_FLAGS=${SOURCE_FLAGS:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

BENCH_NAME=local
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# raw_once DIRSYNC: sets RESULT to the files/s of RAW create+write+fsync
# (+ fsync of the directory when DIRSYNC is 1) in a fresh directory.
raw_once() {
    local dir=$WORK/raw
    rm -rf "$dir"
    mkdir -p "$dir"
    RESULT=$(python3 - "$dir" "$RAW" "$SIZE" "$1" <<'EOF'
import os, sys, time
d, n, size, dirsync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
data = b"x" * size
t0 = time.monotonic()
for i in range(n):
    fd = os.open(os.path.join(d, f"m{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    if dirsync:
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
print("%.1f" % (n / (time.monotonic() - t0)))
EOF
)
    rm -rf "$dir"
}

# local_once RUN PREFILL: sets RESULT to "end-to-end-rate ingress-rate"
local_once() {
    local n=$1 prefill=$2 dir=$WORK/local-$1-$2 pid port pop3 t0 t1 i left ingress files
    mkdir -p "$dir/mail/sink/cur" "$dir/mail/sink/new" "$dir/mail/sink/tmp"
    echo 'sink:{PLAIN}x' >"$dir/users"
    # Messages already delivered: plain files in cur/ (setup, no fsync).
    python3 - "$dir/mail/sink/cur" "$prefill" "$SIZE" <<'EOF'
import os, sys
cur, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = b"Subject: old\r\n\r\n" + b"x" * (size - 18) + b"\r\n"
for i in range(n):
    with open(os.path.join(cur, f"1700000000.M{i}P1Q{i}.prefill,S={size}:2,S"), "wb") as f:
        f.write(data)
EOF
    cat >"$dir/spate.toml" <<EOF
hostname = "bench.test"
spool_dir = "$dir/spool"
cores = $CORES
shutdown_grace = "10s"

[[listener]]
address = "$IP:0"
protocol = "smtp"

[[listener]]
address = "$IP:0"
protocol = "pop3"

[relay]
allow_networks = ["127.0.0.0/8"]

# Never the system resolver (the bench's domain is local anyway).
[dns]
nameservers = ["$IP:53"]

[local]
domains = ["example.test"]
mailbox_dir = "$dir/mail"
users_file = "$dir/users"

[smtp]
max_connections = 20000
max_connections_per_ip = 20000
EOF
    start_spate "$dir/spate.toml" "$dir"
    pid=$SPATE_PID
    port=$SPATE_PORT
    pop3=$(awk '$1 == "listening" && $2 == "pop3" {print $3; exit}' "$dir/stdout")
    # One POP3 login builds the index of the prefilled folder (untimed).
    python3 - "${pop3%:*}" "${pop3##*:}" "$prefill" <<'EOF' || die "POP3 check of the prefilled folder failed"
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=120)
p.user("sink"); p.pass_("x")
count = p.stat()[0]
p.quit()
assert count == int(sys.argv[3]), f"{count} messages, expected {sys.argv[3]}"
EOF
    t0=$(now)
    source_run "$IP" "$port"
    ingress=$(rate "$SECS")
    for ((i = 0; i < 6000; i++)); do
        left=$("$SPATE" queue list --config "$dir/spate.toml" --json | wc -l)
        [[ $left -eq 0 ]] && break
        sleep 0.1
    done
    t1=$(now)
    [[ $left -eq 0 ]] || die "$left messages still queued after 600 s (run $n, prefill $prefill)"
    files=$(find "$dir/mail/sink/new" -type f | wc -l)
    [[ $files -eq $MESSAGES ]] || die "$files of $MESSAGES messages in the Maildir (run $n, prefill $prefill)"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    RESULT="$(rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')") $ingress"
    rm -rf "$dir"
}

log "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS to one local user, folder sizes before: $PREFILLS; $RUNS runs; spate cores=$CORES; Maildir under $WORK ($(stat -f -c %T "$WORK"))"
RAW1=()
RAW2=()
declare -A E2E ING
for ((r = 1; r <= RUNS; r++)); do
    raw_once 0
    RAW1+=("$RESULT")
    raw_once 1
    RAW2+=("$RESULT")
    log "run $r: raw create+write+fsync ${RAW1[-1]}/s, with dir fsync ${RAW2[-1]}/s"
    for p in $PREFILLS; do
        local_once "$r" "$p"
        read -r e2e ing <<<"$RESULT"
        log "run $r: $p messages already in the folder: $e2e msg/s end to end (ingress $ing msg/s)"
        E2E[$p]+="$e2e "
        ING[$p]+="$ing "
    done
done

raw1=$(median "${RAW1[@]}")
raw2=$(median "${RAW2[@]}")
first=${PREFILLS%% *}
# shellcheck disable=SC2086
first_med=$(median ${E2E[$first]})
cat <<EOF

Local delivery end to end: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES $SOURCE_FLAGS -> spate (cores=$CORES) -> one Maildir, $RUNS runs, $(nproc) CPUs, on $(stat -f -c %T "$WORK")

| case | runs (msg/s) | median msg/s | / raw write+fsync ($raw1/s) | / raw + dir fsync ($raw2/s) | / folder of $first | ingress median msg/s |
| --- | --- | --- | --- | --- | --- | --- |
EOF
for p in $PREFILLS; do
    # shellcheck disable=SC2086
    m=$(median ${E2E[$p]})
    # shellcheck disable=SC2086
    i=$(median ${ING[$p]})
    awk -v p="$p" -v runs="${E2E[$p]% }" -v m="$m" -v r1="$raw1" -v r2="$raw2" -v f="$first_med" -v i="$i" 'BEGIN {
        printf "| spate, %d messages already in the folder | %s | %s | %.3f | %.3f | %.3f | %s |\n", p, runs, m, m / r1, m / r2, m / f, i }'
done
echo "| raw create+write+fsync, one at a time | ${RAW1[*]} | $raw1 | 1 | | | |"
echo "| raw create+write+fsync+dir fsync | ${RAW2[*]} | $raw2 | | 1 | | |"
