# shellcheck shell=bash
# Shared by the benches that compare with Dovecot (sourced after
# common.sh, not run): a private Dovecot instance per call, with its own
# base_dir, state, logs and passwd-file under DIR, serving one protocol
# on $IP only; no system service is touched. Dovecot needs root (it drops
# to the mail user, nobody).

DOVECOT_RUNNING=()
stop_dovecots() {
    local c
    for c in "${DOVECOT_RUNNING[@]}"; do doveadm -c "$c" stop 2>/dev/null || true; done
    DOVECOT_RUNNING=()
}
trap 'stop_dovecots; cleanup' EXIT

# dovecot_start DIR PROTOCOL PORT MODE PROCESSES [EXTRA]: DIR/passwd must
# hold the users (passwd-file lines with {PLAIN} passwords and homes that
# are Maildirs). PROTOCOL is imap or pop3; MODE is "performance" (Dovecot's
# documented high-performance mode: login and PROTOCOL processes reused,
# PROCESSES of them kept ready) or "default"; EXTRA is appended to the
# configuration. Returns once the port accepts; the master's pid is then
# in DIR/run/master.pid.
dovecot_start() {
    local dir=$1 protocol=$2 port=$3 mode=$4 processes=$5 extra=${6:-} tuning
    mkdir -p "$dir/run" "$dir/state"
    local listener="
service $protocol-login {
  inet_listener $protocol {
    address = $IP
    port = $port
  }
  inet_listener ${protocol}s {
    port = 0
  }"
    case $mode in
    performance) # doc.dovecot.org/2.3/admin_manual/login_processes
        tuning="$listener
  service_count = 0
  process_min_avail = $(nproc)
}
service $protocol {
  service_count = 0
  process_min_avail = $processes
}
service auth {
  client_limit = 2000
}" ;;
    default) tuning="$listener
}" ;;
    *) die "unknown Dovecot mode $mode" ;;
    esac
    cat >"$dir/dovecot.conf" <<CONF
instance_name = bench-$protocol-$mode-$port
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/log
info_log_path = $dir/log
protocols = $protocol
listen = $IP
ssl = no
disable_plaintext_auth = no
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = scheme=PLAIN $dir/passwd
}
userdb {
  driver = passwd-file
  args = $dir/passwd
}
mail_location = maildir:~
mail_max_userip_connections = 1000
$extra
$tuning
CONF
    dovecot -c "$dir/dovecot.conf" || { cat "$dir/log" >&2 2>/dev/null; die "dovecot ($protocol, $mode) did not start"; }
    DOVECOT_RUNNING+=("$dir/dovecot.conf")
    wait_port "$IP" "$port"
}

# start_dovecot MODE PROTOCOL [EXTRA]: for the load benches, a private
# instance in MODE on its own copy of $WORK/maildirs, users user1..user$CLIENTS
# (password x); records its address in ADDR[dovecot-MODE] and its master's
# pid in CPU_PID[dovecot-MODE].
start_dovecot() {
    local mode=$1 protocol=$2 extra=${3:-} dir=$WORK/dovecot-$1 port u
    mkdir -p "$dir"
    cp -a "$WORK/maildirs" "$dir/mail"
    chown -R nobody:nogroup "$dir/mail"
    : >"$dir/passwd"
    for ((u = 1; u <= CLIENTS; u++)); do
        echo "user$u:{PLAIN}x:65534:65534::$dir/mail/user$u::" >>"$dir/passwd"
    done
    port=$(free_port)
    dovecot_start "$dir" "$protocol" "$port" "$mode" "$CLIENTS" "$extra"
    # ADDR and CPU_PID are the caller's associative arrays (declare -A).
    # shellcheck disable=SC2034,SC2154
    ADDR[dovecot-$mode]=$IP:$port
    # shellcheck disable=SC2034,SC2154
    CPU_PID[dovecot-$mode]=$(cat "$dir/run/master.pid")
}

# cpu_of PID: CPU seconds (user+sys) of the process tree rooted at PID,
# reaped children included (Dovecot forks login, auth and mail processes
# under its master).
cpu_of() {
    python3 - "$1" <<'PYCPU'
import os, sys
tck = os.sysconf("SC_CLK_TCK")
def kids(p):
    try:
        with open(f"/proc/{p}/task/{p}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
total, todo = 0, [int(sys.argv[1])]
while todo:
    p = todo.pop()
    try:
        with open(f"/proc/{p}/stat") as f:
            s = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in s[11:15])  # utime stime cutime cstime
    except OSError:
        pass
    todo += kids(p)
print("%.2f" % (total / tck))
PYCPU
}
