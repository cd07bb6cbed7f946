#!/usr/bin/env bash
# Management API latency with a big queue (issue 14 section 5): how long
# `GET /api/v1/queue/summary` takes with MESSAGES (default 1,000,000)
# messages queued, against the same call on the empty server in the same
# run. spate (release build, `cores = CORES`) relays everything through
# `[relay] smarthost` to a `spate sink` that refuses every connection, at
# a site suspended beforehand through the API itself, so every message
# stays queued (held). `spate blast` injects the messages, to DOMAINS
# recipient domains, so the summary has that many rows to sum. Each measurement is CALLS curl calls; the median
# and the slowest are reported, and the summary's counts are checked
# against what was injected.
#
#   benches/api_summary.sh                      # 1,000,000 messages
#   MESSAGES=100000 CALLS=20 benches/api_summary.sh
#
# Needs about 1.5 KiB of disk per message under BENCH_DIR (checked first).
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
SIZE=${SIZE:-200}
CONNECTIONS=${CONNECTIONS:-20}
CORES=${CORES:-2}
DOMAINS=${DOMAINS:-1000}
CALLS=${CALLS:-30}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
NEEDS_POSTFIX_TOOLS=0

BENCH_NAME=api_summary
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need=$((MESSAGES * 1536))
avail=$(df --output=avail -B1 "$BENCH_DIR" | tail -1)
((avail > need + (1 << 30))) ||
    die "$BENCH_DIR has $((avail >> 20)) MiB free; $MESSAGES messages need about $((need >> 20)) MiB (plus 1 GiB of margin)"

"$SPATE" sink --listen "$IP:0" --cores 1 --max-per-ip 0 >"$WORK/sink.out" 2>"$WORK/sink.err" &
PIDS+=("$!")
for ((i = 0; i < 200; i++)); do
    grep -qx ready "$WORK/sink.out" 2>/dev/null && break
    sleep 0.1
done
SINK=$(awk '$1 == "listening" && $2 == "smtp" { print $3; exit }' "$WORK/sink.out")
[[ -n $SINK ]] || die "the sink did not start"
TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
echo "$TOKEN" >"$WORK/token"

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
smarthost = "$SINK"

[dns]
nameservers = ["$IP:53"]

[smtp]
max_connections = 20000
max_connections_per_ip = 20000

[api]
address = "$IP:0"
token_file = "$WORK/token"

[log]
level = "warn"
EOF

start_spate "$WORK/spate.toml" "$WORK"
API=$(awk '$1 == "listening" && $2 == "api" {print $3; exit}' "$WORK/stdout")
log "spate $SPATE_PID on $IP:$SPATE_PORT (cores = $CORES), API on $API, smarthost $SINK (refusing)"

api() { # METHOD PATH [BODY]
    if [[ $# -gt 2 ]]; then
        curl -sSf --max-time 60 -X "$1" -H "Authorization: Bearer $TOKEN" --data "$3" "http://$API$2"
    else
        curl -sSf --max-time 60 -X "$1" -H "Authorization: Bearer $TOKEN" "http://$API$2"
    fi
}
api POST /api/v1/suspend "{\"site\":\"[${SINK%:*}]:${SINK##*:}\",\"duration\":\"1d\"}" >/dev/null

# latency LABEL: CALLS summary calls; sets LAT_MEDIAN and LAT_MAX (ms).
latency() {
    local times=() t i
    for ((i = 0; i < CALLS; i++)); do
        t=$(curl -sSf --max-time 60 -o "$WORK/summary.json" -w '%{time_total}' \
            -H "Authorization: Bearer $TOKEN" "http://$API/api/v1/queue/summary")
        times+=("$(awk -v t="$t" 'BEGIN { printf "%.2f", t * 1000 }')")
    done
    LAT_MEDIAN=$(median "${times[@]}")
    LAT_MAX=$(printf '%s\n' "${times[@]}" | sort -g | tail -1)
    log "$1: median $LAT_MEDIAN ms, slowest $LAT_MAX ms over $CALLS calls"
}

latency "empty queue"
EMPTY_MEDIAN=$LAT_MEDIAN EMPTY_MAX=$LAT_MAX

t0=$(now)
"$SPATE" blast --to "$IP:$SPATE_PORT" -c "$CONNECTIONS" --cores 1 -n "$MESSAGES" -s "$SIZE" \
    --domain-pattern "d{}.bench.test" --domain-count "$DOMAINS" --json >"$WORK/blast.json" 2>"$WORK/blast.err" ||
    { cat "$WORK/blast.err" >&2; die "blast failed"; }
ok=$(jq -r .delivered "$WORK/blast.json")
((ok == MESSAGES)) || die "blast: $ok of $MESSAGES messages accepted"
log "injected $MESSAGES messages in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s"

# Wait until the engine has held every message (the summary says so).
for ((i = 0; i < 600; i++)); do
    held=$(api GET /api/v1/queue/summary | jq -r .held)
    ((held >= MESSAGES)) && break
    sleep 1
done
((held >= MESSAGES)) || die "only $held of $MESSAGES held after 10 minutes"

latency "$MESSAGES queued"
jq -e --argjson n "$MESSAGES" --argjson d "$DOMAINS" \
    '.messages == $n and .recipients == $n and (.domains | length) == $d and ([.domains[]] | add) == $n' \
    "$WORK/summary.json" >/dev/null || die "the summary's counts are wrong: $(jq -c '{messages, recipients, held, domains: (.domains | length)}' "$WORK/summary.json")"
RSS=$(awk '$1 == "VmRSS:" {print int($2 / 1024)}' "/proc/$SPATE_PID/status")

cat <<EOF

API latency, GET /api/v1/queue/summary, $CALLS calls each, spate cores = $CORES, $(nproc) CPUs

| queue | median ms | slowest ms |
| --- | --- | --- |
| empty | $EMPTY_MEDIAN | $EMPTY_MAX |
| $MESSAGES messages held, $DOMAINS domains | $LAT_MEDIAN | $LAT_MAX |

spate VmRSS with the queue: $RSS MiB. Summary counts checked: $MESSAGES messages and recipients in $DOMAINS domains.
EOF
