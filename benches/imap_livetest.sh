#!/usr/bin/env bash
# The live test suite shipped with the Python package imapclient
# (`python -m imapclient.livetest`) against spate and against Dovecot
# (Debian's dovecot-imapd, a private instance on this bench's 127.x
# address) in the same run, so their results can be compared line for
# line. Not a timing benchmark: it prints each server's summary and the
# tests that failed, with the first line of the reason.
#
#   benches/imap_livetest.sh           # both servers
#   DOVECOT=0 benches/imap_livetest.sh # spate only
#
# Installs imapclient with pip and dovecot-imapd with apt when missing.
# Dovecot needs root (it drops to the mail user, nobody).
set -euo pipefail

DOVECOT=${DOVECOT:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
BENCH_NAME=imap-livetest
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=benches/dovecot.sh
source "$(dirname "${BASH_SOURCE[0]}")/dovecot.sh"

python3 -c 'import imapclient' 2>/dev/null || python3 -m pip install -q imapclient
if [[ $DOVECOT == 1 && ! -x /usr/lib/dovecot/imap ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null; }
fi
chmod 755 "$WORK"

# run_livetest NAME PORT: the suite against IP:PORT as alice/secret.
run_livetest() {
    local name=$1 port=$2
    printf '[DEFAULT]\nhost = %s\nport = %s\nssl = false\nusername = alice\npassword = secret\n' \
        "$IP" "$port" >"$WORK/$name.ini"
    timeout 600 python3 -m imapclient.livetest "$WORK/$name.ini" >"$WORK/$name.out" 2>&1 || true
    echo "== $name: $(grep -E '^(OK|FAILED)' "$WORK/$name.out" | tail -1) ($(grep -E '^Ran ' "$WORK/$name.out"))"
    python3 - "$WORK/$name.out" <<'PYLIVE'
import re, sys
text = open(sys.argv[1]).read()
for block in re.split(r"\n={50,}\n", text)[1:]:
    lines = block.strip().split("\n")
    reason = next((l for l in reversed(lines) if l.strip() and not l.startswith("-")), "")
    print(f"   {lines[0]}\n      {reason.strip()[:150]}")
PYLIVE
}

# spate: one IMAP listener, one user.
mkdir -p "$WORK/spate"
echo 'alice:{PLAIN}secret' >"$WORK/spate/users"
port=$(free_port)
cat >"$WORK/spate/spate.toml" <<TOML
hostname = "livetest.example.test"
spool_dir = "$WORK/spate/spool"
[[listener]]
address = "$IP:$port"
protocol = "imap"
[dns]
nameservers = ["127.0.0.1:9"]
[local]
domains = ["example.test"]
mailbox_dir = "$WORK/spate/mail"
users_file = "$WORK/spate/users"
TOML
"$SPATE" serve --config "$WORK/spate/spate.toml" >"$WORK/spate/log" 2>&1 &
PIDS+=($!)
wait_port "$IP" "$port"
run_livetest spate "$port"

if [[ $DOVECOT == 1 ]]; then
    dir=$WORK/dovecot
    mkdir -p "$dir/mail/alice"
    chown -R nobody:nogroup "$dir/mail"
    echo "alice:{PLAIN}secret:65534:65534::$dir/mail/alice::" >"$dir/passwd"
    port=$(free_port)
    dovecot_start "$dir" imap "$port" default 1
    run_livetest "dovecot-$(dovecot --version | cut -d' ' -f1)" "$port"
fi
