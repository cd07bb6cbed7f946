# Shared by the load benchmarks (sourced, not run): Postfix's smtp-source
# and smtp-sink from Debian's package (dpkg -x, never installed as a
# service), a private 127.x address, timing and statistics helpers. The
# sourcing script sets BENCH_NAME, MESSAGES, SESSIONS, SIZE, SOURCE_FLAGS
# and BENCH_DIR first (and NEEDS_POSTFIX_TOOLS=0 when it uses spate's own
# load tools only).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POSTFIX_TOOLS=${POSTFIX_TOOLS:-$ROOT/target/postfix-tools}

log() { echo "[$BENCH_NAME] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- setup
if [[ "$(stat -f -c %T "$BENCH_DIR")" == tmpfs ]]; then
    log "$BENCH_DIR is tmpfs; using $ROOT/target for the spool instead"
    BENCH_DIR=$ROOT/target
fi
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/spate-$BENCH_NAME.XXXXXX")
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
[[ ${NEEDS_POSTFIX_TOOLS:-1} == 0 ]] || postfix_tools

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


# start_spate CONFIG DIR: starts spate, waits for its "ready" line; sets
# SPATE_PID and SPATE_PORT (the smtp listener's port).
start_spate() {
    local config=$1 dir=$2 i addr
    "$SPATE" serve --config "$config" >"$dir/stdout" 2>"$dir/stderr" &
    SPATE_PID=$!
    PIDS+=("$SPATE_PID")
    for ((i = 0; i < 300; i++)); do
        grep -qx ready "$dir/stdout" 2>/dev/null && break
        kill -0 "$SPATE_PID" 2>/dev/null || { cat "$dir/stderr" >&2; die "spate exited before ready"; }
        sleep 0.1
    done
    grep -qx ready "$dir/stdout" || { cat "$dir/stderr" >&2; die "spate not ready after 30 s"; }
    addr=$(awk '$1 == "listening" && $2 == "smtp" {print $3; exit}' "$dir/stdout")
    SPATE_PORT=${addr##*:}
}
