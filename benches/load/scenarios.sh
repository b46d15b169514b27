#!/usr/bin/env bash
# Question: does joinshield hold up under the traffic it exists for, not just pass-through? Eight
# scenarios, each with its own baseline and target (the goals of the performance issue, the
# connection flood of the front-door issue, HTTP/2 of the HTTP/2 issue):
#   flood        a flood over the limit from MANY client addresses (10,000 taking turns, each far
#                over its per-IP limit): how fast are denials answered, and does the log stay
#                small? Baselines, interleaved round by round: the same flood forwarded by
#                joinshield with no limits, nginx answering its limit_req 429s and HAProxy its
#                stick-table 429s, all with an IP and a token limit. Target: >= 2x nginx's 429s.
#   mixed        1,000 guessing clients flooding (about 95 % of requests) while legitimate guests
#                keep using the app: the guests' p99 against the same guests alone just before,
#                and every guest failure counted, for joinshield, nginx and HAProxy (each with the
#                shipped limits; joinshield also with its guessing detection), in interleaved
#                rounds; each round's attackers are fresh addresses. Target: <= 1.5x, 0 failures.
#   connflood    one address (a loopback alias, 127.0.0.99 by default) opens 20,000 idle
#                connections while the guests run (guests.lua's 10,000 guests over wrk's
#                connections from 127.0.0.1): the guests' success rate and p99 against the guests
#                alone, for joinshield (max_connections_per_ip), nginx (limit_conn) and HAProxy
#                (src_conn_cur), interleaved. Target: 100 % success, p99 <= 1.5x.
#   http2        h2load over TLS, 100 streams per connection, against joinshield and against
#                nginx's http2 on the same certificate: req/s and CPU per request, interleaved.
#                Target: >= 1.0x nginx at equal or lower CPU per request. A joinshield that does
#                not offer h2 by ALPN is reported as such (its figure is left out, nginx's kept).
#   cardinality  1,000,000 distinct tokens against a per-token limit: peak memory, and memory once
#                the keys go idle and the janitor has pruned them. Baseline: RSS before the traffic.
#   reload       POST /admin/reload every 100 ms (each one changing a limit's rate) under
#                pass-through load: any failed request? Baseline: zero errors.
#   blocklist    a 1,000,000-line blocklist: how long `joinshield check` and a live reload take, and
#                what a reload does to p99 under load. Baseline: p99 of the same load without reload.
#   guessing     100,000 distinct bad tokens from 50,000 addresses inside one IPv6 /48: how many
#                reach the app, and the shield's peak memory. Baseline: the 100,000 sent.
#
# Usage, from the repository root:   benches/load/scenarios.sh
# Knobs (environment):  SCENARIOS        which to run   (default "flood mixed connflood http2 cardinality reload blocklist guessing")
#                       FLOOD_SECONDS    seconds per flood run, 4 targets x FLOOD_ROUNDS   (default 3)
#                       FLOOD_ROUNDS     interleaved flood rounds                         (default 5)
#                       FLOOD_ADDRESSES  flooding client addresses, 198.18.0.0/15         (default 10000)
#                       FLOOD_CONNECTIONS  wrk connections of the flood                   (default 64)
#                       MIXED_SECONDS    seconds of each mixed run (alone, then attacked) (default 10)
#                       MIXED_ROUNDS     interleaved mixed rounds, at most 16             (default 5)
#                       CONNFLOOD_CONNECTIONS  connections the flooding address opens     (default 20000)
#                       CONNFLOOD_SOURCE the flooder's address (127.0.0.0/8 is loopback)  (default 127.0.0.99)
#                       CONNFLOOD_PER_IP the per-client bound given to every proxy        (default 256)
#                       CONNFLOOD_MAX    the total connection cap given to every proxy    (default 10000)
#                       CONNFLOOD_SECONDS  seconds of each guests' run (alone, flooded)   (default 10)
#                       CONNFLOOD_ROUNDS interleaved connection-flood rounds              (default 5)
#                       CONNFLOOD_GUEST_CONNECTIONS  wrk connections of the guests        (default 64)
#                       CONNFLOOD_RECONNECT_MS  pause before the flooder reopens a closed or
#                                        failed connection; "off": hold only              (default 1000)
#                       H2_SECONDS       seconds per h2load run                           (default 5)
#                       H2_ROUNDS        interleaved HTTP/2 rounds                        (default 5)
#                       H2_CLIENTS       h2load connections (each with 100 streams)       (default 8)
#                       CARD_TOKENS      distinct tokens sent at most                     (default 1000000)
#                       CARD_SECONDS     the cardinality run stops after this anyway      (default 180)
#                       CARD_IDLE        seconds without traffic before the last sample   (default 80)
#                       BLOCK_LINES      blocklist lines                                  (default 1000000)
#                       GUESS_TOKENS     distinct bad tokens                              (default 100000)
#                       GUESS_ADDRESSES  rotating client addresses in the /48             (default 50000)
#                       SHIELD_TOML      a TOML fragment merged into every joinshield config
#                                        (lib.sh toml_merge), e.g. the access log once it
#                                        exists: SHIELD_TOML=$'[log]\naccess = "json"'. A key
#                                        the binary does not know stops the script, saying so.
#                       BASELINE_ACCESS_LOG  1: nginx and HAProxy write an access log line per
#                                        request (with SHIELD_TOML's access log: goal 5)
#
# Everything listens on loopback only. Every run is bounded in time. The script exits non-zero
# only when it cannot set a scenario up; performance figures never fail it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=$PWD/benches/load

SCENARIOS=${SCENARIOS:-flood mixed connflood http2 cardinality reload blocklist guessing}
FLOOD_SECONDS=${FLOOD_SECONDS:-3}
FLOOD_ROUNDS=${FLOOD_ROUNDS:-5}
FLOOD_ADDRESSES=${FLOOD_ADDRESSES:-10000}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-64}
MIXED_SECONDS=${MIXED_SECONDS:-10}
MIXED_ROUNDS=${MIXED_ROUNDS:-5}
CONNFLOOD_CONNECTIONS=${CONNFLOOD_CONNECTIONS:-20000}
CONNFLOOD_SOURCE=${CONNFLOOD_SOURCE:-127.0.0.99}
CONNFLOOD_PER_IP=${CONNFLOOD_PER_IP:-256}
CONNFLOOD_MAX=${CONNFLOOD_MAX:-10000}
CONNFLOOD_SECONDS=${CONNFLOOD_SECONDS:-10}
CONNFLOOD_ROUNDS=${CONNFLOOD_ROUNDS:-5}
CONNFLOOD_GUEST_CONNECTIONS=${CONNFLOOD_GUEST_CONNECTIONS:-64}
CONNFLOOD_RECONNECT_MS=${CONNFLOOD_RECONNECT_MS:-1000}
H2_SECONDS=${H2_SECONDS:-5}
H2_ROUNDS=${H2_ROUNDS:-5}
H2_CLIENTS=${H2_CLIENTS:-8}
CARD_TOKENS=${CARD_TOKENS:-1000000}
CARD_SECONDS=${CARD_SECONDS:-180}
CARD_IDLE=${CARD_IDLE:-80}
BLOCK_LINES=${BLOCK_LINES:-1000000}
GUESS_TOKENS=${GUESS_TOKENS:-100000}
GUESS_ADDRESSES=${GUESS_ADDRESSES:-50000}
SHIELD_TOML=${SHIELD_TOML:-}
GUEST_PATH=/api/v1/events/load-000001
ADMIN_TOKEN=bench-$RANDOM$RANDOM$RANDOM
export JOINSHIELD_ADMIN_TOKEN=$ADMIN_TOKEN

die() {
    echo "scenarios.sh: setup failed: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }

for v in FLOOD_SECONDS FLOOD_ROUNDS FLOOD_ADDRESSES FLOOD_CONNECTIONS MIXED_SECONDS MIXED_ROUNDS \
    CONNFLOOD_CONNECTIONS CONNFLOOD_PER_IP CONNFLOOD_MAX CONNFLOOD_SECONDS CONNFLOOD_ROUNDS \
    CONNFLOOD_GUEST_CONNECTIONS H2_SECONDS H2_ROUNDS H2_CLIENTS CARD_TOKENS CARD_SECONDS CARD_IDLE \
    BLOCK_LINES GUESS_TOKENS GUESS_ADDRESSES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ $CONNFLOOD_RECONNECT_MS == off || $CONNFLOOD_RECONNECT_MS =~ ^[0-9]+$ ]] ||
    die "CONNFLOOD_RECONNECT_MS must be a number of milliseconds or off, got '$CONNFLOOD_RECONNECT_MS'"
[[ $CONNFLOOD_SOURCE =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ && $CONNFLOOD_SOURCE != 127.0.0.1 ]] ||
    die "CONNFLOOD_SOURCE must be a loopback address other than 127.0.0.1 (the guests'), got '$CONNFLOOD_SOURCE'"
((GUESS_ADDRESSES <= 65536)) || die "GUESS_ADDRESSES must be at most 65536 (one /64 each inside a /48)"
((FLOOD_ADDRESSES <= 131072)) || die "FLOOD_ADDRESSES must be at most 131072 (198.18.0.0/15)"
((MIXED_ROUNDS <= 16)) || die "MIXED_ROUNDS must be at most 16 (each round's attackers get their own 172.16.0.0/12 /16)"
for s in $SCENARIOS; do
    [[ " flood mixed connflood http2 cardinality reload blocklist guessing " == *" $s "* ]] || die "unknown scenario '$s'"
done
for tool in cargo wrk nginx haproxy curl ss taskset timeout awk sort date find; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nginx-light haproxy wrk)"
done
if [[ " $SCENARIOS " == *" http2 "* ]]; then
    for tool in h2load openssl; do
        command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nghttp2-client openssl)"
    done
fi

# ------------------------------------------------------------------------------ processes, cleanup
WORK=$(mktemp -d -t joinshield-scenarios.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"
PIDS=()
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    # BENCH_KEEP=1 keeps the work folder (configs, every wrk output, the logs) to look into.
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"

# The connection flood needs descriptors: every process started from here may use the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)

now_ms() { date +%s%3N; }

# sample_rss PID OUTFILE: in the background, append VmRSS (kB) of PID to OUTFILE every 200 ms
# until PID or the sampler is gone; the caller kills the sampler by its pid.
sample_rss() {
    while kill -0 "$1" 2>/dev/null; do
        rss_kb "$1" >>"$2"
        sleep 0.2
    done
}
max_of() { sort -n "$1" | tail -n 1; }

# run_wrk NAME URL SECONDS CONNECTIONS [wrk options...] [-- script args...]: one wrk run (-t1,
# pinned); prints "requests rps p50_ms p99_ms non2xx socket_errors".
run_wrk() {
    local name=$1 url=$2 secs=$3 conns=$4
    shift 4
    local opts=() args=()
    while (($#)); do
        [[ $1 == -- ]] && { args=("$@"); break; }
        opts+=("$1")
        shift
    done
    local out="$WORK/wrk-$name.txt"
    timeout -k 5 $((secs + 30)) "${LOAD_PIN[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s --latency \
        "${opts[@]}" "$url" "${args[@]}" >"$out" 2>&1
    wrk_summary "$out"
}

# ------------------------------------------------------------------------------------------ build
programs=()
[[ " $SCENARIOS " == *" connflood "* ]] && programs+=(conn_flood)
build_release "${programs[@]}"

# --------------------------------------------------------------------------------- the stand-in app
UPSTREAM_PORT=$(free_port) || die "no free port"
"${SERVE_PIN[@]}" "$BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" "$WORK/upstream.log"
standin_requests() {
    curl -s --max-time 5 "http://127.0.0.1:$UPSTREAM_PORT/__standin/stats" | grep -o '"requests":[0-9]*' | cut -d: -f2
}

# ------------------------------------------------------------------------------------ shields
# new_shield NAME EXTRA_TOML [TRUSTED]: writes $WORK/NAME/joinshield.toml (own ports, log file
# shield.log, state file, trusted proxies TRUSTED (default ["127.0.0.1/32"]), EXTRA_TOML and then
# SHIELD_TOML merged in) and sets SPORT[NAME], APORT[NAME].
declare -A SPORT APORT SPID
new_shield() {
    local name=$1 extra=$2 trusted=${3:-'["127.0.0.1/32"]'} dir="$WORK/$1"
    mkdir -p "$dir"
    SPORT[$name]=$(free_port) || die "no free port"
    APORT[$name]=$(free_port) || die "no free port"
    cat >"$dir/base.toml" <<EOF
[server]
listen = "127.0.0.1:${SPORT[$name]}"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
state_file = "state.json"

[admin]
listen = "127.0.0.1:${APORT[$name]}"

[client]
trusted_proxies = $trusted

[log]
file = "shield.log"
EOF
    toml_merge "$dir/base.toml" "$extra" >"$dir/with-extra.toml" || die "could not merge the $name config"
    toml_merge "$dir/with-extra.toml" "$SHIELD_TOML" >"$dir/joinshield.toml" || die "could not merge SHIELD_TOML: $SHIELD_TOML"
}
# start_shield NAME: runs the shield of NAME (pinned with the upstream), waits until it answers.
start_shield() {
    local dir="$WORK/$1"
    if ! "$BIN" check -c "$dir/joinshield.toml" >"$dir/check.log" 2>&1; then
        [[ -n $SHIELD_TOML ]] && die "this joinshield refuses the $1 config with SHIELD_TOML merged in (a key it does not know yet?): $(cat "$dir/check.log")"
        die "the $1 config was refused: $(cat "$dir/check.log")"
    fi
    "${SERVE_PIN[@]}" "$BIN" run -c "$dir/joinshield.toml" >"$dir/stdout.log" 2>&1 &
    SPID[$1]=$!
    PIDS+=("${SPID[$1]}")
    wait_http "${SPORT[$1]}" "${SPID[$1]}" "$dir/stdout.log"
}
stop_shield() { stop_pid "${SPID[$1]}"; }
# reload NAME: POST /admin/reload; prints "http_code seconds version".
reload() {
    local body code secs
    body=$(curl -s -w '\n%{http_code} %{time_total}' --max-time 60 -X POST \
        -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:${APORT[$1]}/admin/reload")
    read -r code secs <<<"$(tail -n 1 <<<"$body")"
    echo "$code $secs $(head -n -1 <<<"$body" | grep -o '"version":[0-9]*' | cut -d: -f2)"
}

# ------------------------------------------------------------------------------- nginx, HAProxy
# The pass-through configs of run.sh (benches/load/nginx.conf.in, haproxy.cfg.in) with other
# quotas. nginx logs each limit_req rejection at its default level (error), which error_log warn
# keeps: that is nginx as shipped, so it stays.
declare -A NPORT NPID NWORKER HPORT HPID
# nginx_from_template NAME IP_RATE IP_BURST TOKEN_RATE TOKEN_BURST (rates as nginx writes them, 10r/m)
nginx_from_template() {
    local dir="$WORK/nginx-$1"
    mkdir -p "$dir" && chmod 755 "$dir"
    NPORT[$1]=$(free_port) || die "no free port"
    sed -e "s#@DIR@#$dir#g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" -e "s/@NGINX_PORT@/${NPORT[$1]}/g" \
        -e "s#@IP_RATE@#$2#g" -e "s/@IP_BURST@/$3/g" -e "s#@TOKEN_RATE@#$4#g" \
        -e "s/@TOKEN_BURST@/$5/g" "$HERE/nginx.conf.in" >"$dir/nginx.conf"
}
# start_nginx NAME [https]: runs $WORK/nginx-NAME/nginx.conf (port NPORT[NAME]); sets NPID, NWORKER.
start_nginx() {
    local dir="$WORK/nginx-$1"
    baseline_access_log "$dir/nginx.conf" nginx "$dir"
    nginx -t -p "$dir" -c "$dir/nginx.conf" >"$WORK/nginx-$1-check.log" 2>&1 ||
        die "nginx refused its $1 config: $(cat "$WORK/nginx-$1-check.log")"
    "${SERVE_PIN[@]}" nginx -p "$dir" -c "$dir/nginx.conf" >"$WORK/nginx-$1.log" 2>&1 &
    NPID[$1]=$!
    PIDS+=("${NPID[$1]}")
    if [[ ${2:-} == https ]]; then
        wait_https "${NPORT[$1]}" "${NPID[$1]}" "$WORK/nginx-$1.log"
    else
        wait_http "${NPORT[$1]}" "${NPID[$1]}" "$WORK/nginx-$1.log"
    fi
    NWORKER[$1]=$(pgrep -P "${NPID[$1]}" | head -n 1)
    [[ -n ${NWORKER[$1]} ]] || die "nginx ($1) has no worker process"
}
# haproxy_from_template NAME IP_PER_MIN TOKEN_PER_MIN (requests a sliding minute: rate + burst)
haproxy_from_template() {
    local dir="$WORK/haproxy-$1"
    mkdir -p "$dir"
    HPORT[$1]=$(free_port) || die "no free port"
    sed -e "s/@HAPROXY_PORT@/${HPORT[$1]}/g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" \
        -e "s/@IP_PER_MIN@/$2/g" -e "s/@TOKEN_PER_MIN@/$3/g" "$HERE/haproxy.cfg.in" >"$dir/haproxy.cfg"
}
# start_haproxy NAME: runs $WORK/haproxy-NAME/haproxy.cfg (port HPORT[NAME]); sets HPID.
start_haproxy() {
    local dir="$WORK/haproxy-$1"
    baseline_access_log "$dir/haproxy.cfg" haproxy
    haproxy -c -f "$dir/haproxy.cfg" >"$WORK/haproxy-$1-check.log" 2>&1 ||
        die "HAProxy refused its $1 config: $(cat "$WORK/haproxy-$1-check.log")"
    "${SERVE_PIN[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    HPID[$1]=$!
    PIDS+=("${HPID[$1]}")
    wait_http "${HPORT[$1]}" "${HPID[$1]}" "$dir/haproxy.log"
}

# field_median FILE KEY_FIELD VALUE_FIELD KEY: median of VALUE_FIELD over the lines of FILE whose
# KEY_FIELD is KEY (numbers only).
field_median() {
    awk -v kf="$2" -v vf="$3" -v k="$4" '$kf == k && $vf ~ /^[0-9.]+$/ {print $vf}' "$1" | median
}
# in_rounds FILE KEY_FIELD VALUE_FIELD KEY: those values in file (round) order, comma-separated.
in_rounds() {
    awk -v kf="$2" -v vf="$3" -v k="$4" '$kf == k {printf "%s%s", (n++ ? ", " : ""), $vf} END {if (!n) printf "–"}' "$1"
}

echo
echo "joinshield scenarios: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(uname -sr)"
echo "$(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | head -n 1 | awk '{print $3}'), $("$BIN" --version 2>/dev/null), $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}'); $PINNING"
echo "joinshield config fragment (SHIELD_TOML): $([[ -n $SHIELD_TOML ]] && tr '\n' ' ' <<<"$SHIELD_TOML" || echo "none")"
echo "nginx and HAProxy access logs: $([[ ${BASELINE_ACCESS_LOG:-0} == 1 ]] && echo "on (BASELINE_ACCESS_LOG=1)" || echo off)"

# ========================================================================================= flood
scenario_flood() {
    note "flood: $FLOOD_ROUNDS rounds of limited shield, forwarding shield, nginx limit_req, HAProxy stick table; ${FLOOD_SECONDS}s each from $FLOOD_ADDRESSES addresses"
    # An IP and a token limit in every proxy, as on the pass-through path: the per-IP one far
    # below the flood (1/min, burst 5: an address is over it from its 7th request on; 10,000
    # addresses then get about 170 requests a second forwarded between them, well under 1 %), the
    # per-token one far above it (every request names the same token).
    new_shield flood-limited '[[limit]]
name = "flood-ip"
routes = ["*"]
key = "ip"
rate = "1/min"
burst = 5

[[limit]]
name = "flood-token"
routes = ["*"]
key = "token"
rate = "6000000/min"
burst = 100000'
    new_shield flood-open ''
    start_shield flood-limited
    start_shield flood-open
    nginx_from_template flood 1r/m 5 6000000r/m 100000
    grep -q 'limit_req zone=guest_ip burst=5 nodelay' "$WORK/nginx-flood/nginx.conf" || die "could not set nginx's flood limit"
    start_nginx flood
    # HAProxy counts requests over a sliding minute: rate + burst = 6.
    haproxy_from_template flood 6 6100000
    start_haproxy flood

    local t r code
    declare -A URL=([joinshield-limited]="http://127.0.0.1:${SPORT[flood-limited]}$GUEST_PATH"
        [joinshield-forwarding]="http://127.0.0.1:${SPORT[flood-open]}$GUEST_PATH"
        [nginx-limit_req]="http://127.0.0.1:${NPORT[flood]}$GUEST_PATH"
        [haproxy-stick_table]="http://127.0.0.1:${HPORT[flood]}$GUEST_PATH")
    local targets=(joinshield-limited joinshield-forwarding nginx-limit_req haproxy-stick_table)
    # Warm-up: every address over its limit before anything is counted (the share denied of
    # each run below shows how nearly that held).
    for t in "${targets[@]}"; do
        run_wrk "flood-warm-$t" "${URL[$t]}" 3 "$FLOOD_CONNECTIONS" -s "$HERE/flood.lua" -- "$FLOOD_ADDRESSES" >/dev/null
    done
    for t in joinshield-limited nginx-limit_req haproxy-stick_table; do
        for _ in $(seq 10); do code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Forwarded-For: 198.18.0.7' "${URL[$t]}"); done
        [[ $code == 429 ]] || die "$t answered $code, not 429, after 10 more requests from a flooding address"
    done
    local log="$WORK/flood-limited/shield.log" nlog="$WORK/nginx-flood/error.log"
    local lines0 nlines0
    lines0=$(wc -l <"$log")
    nlines0=$(wc -l <"$nlog")
    local t0=$SECONDS
    local res="$WORK/flood.txt"
    : >"$res"
    for r in $(seq "$FLOOD_ROUNDS"); do
        for t in "${targets[@]}"; do
            # The proxy's CPU time per answer: robust where wall-clock rates are not (a shared
            # machine's scheduling moves req/s by 2x between runs, CPU per request far less).
            local pids
            case $t in
                joinshield-limited) pids=${SPID[flood-limited]} ;;
                joinshield-forwarding) pids=${SPID[flood-open]} ;;
                nginx-limit_req) pids="${NPID[flood]} ${NWORKER[flood]}" ;;
                haproxy-stick_table) pids=${HPID[flood]} ;;
            esac
            local c0 c1 line
            # shellcheck disable=SC2086 # pids is a list
            c0=$(cpu_ticks $pids)
            line=$(run_wrk "flood-$t-$r" "${URL[$t]}" "$FLOOD_SECONDS" "$FLOOD_CONNECTIONS" -s "$HERE/flood.lua" -- "$FLOOD_ADDRESSES")
            # shellcheck disable=SC2086
            c1=$(cpu_ticks $pids)
            # round target requests rps p50 p99 non2xx errors cpu_us_per_answer denied_share denials_per_s
            awk -v r="$r" -v t="$t" -v line="$line" -v ticks=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN {
                split(line, f, " ")
                ok = f[1] ~ /^[0-9]+$/ && f[1] > 0
                cpu = ok ? sprintf("%.1f", ticks * 1e6 / hz / f[1]) : "NA"
                share = ok ? sprintf("%.4f", f[5] / f[1]) : "NA"
                dps = ok ? sprintf("%.0f", f[2] * f[5] / f[1]) : "NA"
                print r, t, line, cpu, share, dps
            }' >>"$res"
            note "round $r $t: $(tail -n 1 "$res" | awk '{print $4 " req/s, " $11 " denials/s, CPU " $9 " µs/answer"}')"
        done
    done
    sleep 11 # the fold flushes its "repeated" lines after 10 s
    local span=$((SECONDS - t0))
    local lines=$(($(wc -l <"$log") - lines0)) nlines=$(($(wc -l <"$nlog") - nlines0))
    local limited_total
    limited_total=$(awk '$2 == "joinshield-limited" {s += $7} END {print s + 0}' "$res")

    echo
    echo "## flood: $FLOOD_ADDRESSES client addresses (198.18.0.0/15 as X-Forwarded-For) taking turns, wrk -t1 -c$FLOOD_CONNECTIONS, per-IP limit 1/min burst 5 (and a per-token limit far above the flood)"
    echo
    echo "| round | target | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU µs/answer | share denied | denials/s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}' "$res"
    echo
    awk '
        { dps[$1, $2] = $11; rps[$1, $2] = $4; cpu[$1, $2] = $9; rounds[$1] = 1 }
        function med(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function q(a, b) { return (b > 0) ? a / b : 0 }
        END {
            n = 0
            for (r = 1; (r in rounds); r++) {
                n++
                f[n] = q(rps[r, "joinshield-limited"], rps[r, "joinshield-forwarding"])
                g[n] = q(dps[r, "joinshield-limited"], dps[r, "nginx-limit_req"])
                h[n] = q(dps[r, "joinshield-limited"], dps[r, "haproxy-stick_table"])
                c[n] = q(cpu[r, "nginx-limit_req"], cpu[r, "joinshield-limited"])
                d[n] = q(cpu[r, "haproxy-stick_table"], cpu[r, "joinshield-limited"])
                gl = gl sprintf("%s%.2f", (n > 1 ? ", " : ""), g[n])
                printf "round %s: joinshield denials/s ÷ nginx 429s/s %.2f, ÷ HAProxy 429s/s %.2f, its answers ÷ its own forwarded rate %.2f; CPU per answer, nginx ÷ joinshield %.2f, HAProxy ÷ joinshield %.2f\n", r, g[n], h[n], f[n], c[n], d[n]
            }
            if (n == 0) { print "no complete round"; exit }
            m = med(g, n)
            printf "median: **joinshield denials/s ÷ nginx limit_req 429s/s %.2f** (rounds: %s; target ≥ 2: %s), ÷ HAProxy 429s/s %.2f, ÷ its own forwarded rate %.2f\n", m, gl, (m >= 2 ? "met" : "**missed**"), med(h, n), med(f, n)
            printf "median: answers per CPU-second, joinshield ÷ nginx %.2f, joinshield ÷ HAProxy %.2f\n", med(c, n), med(d, n)
        }' "$res"
    echo "log: the limited shield wrote $lines line(s) for $limited_total denials over ${span} s ($(grep -c '"repeated"' "$log") with \"repeated\"); nginx's error log got $nlines line(s)"
    grep '"repeated"' "$log" | tail -n 1
    stop_shield flood-limited
    stop_shield flood-open
    stop_pid "${NPID[flood]}"
    stop_pid "${HPID[flood]}"
}

# ========================================================================================= mixed
scenario_mixed() {
    note "mixed: $MIXED_ROUNDS rounds of joinshield, nginx, HAProxy: ${MIXED_SECONDS}s of guests alone, then ${MIXED_SECONDS}s beside 1,000 guessing clients"
    # The shipped guest limits in all three; joinshield also with its guessing detection (nginx
    # and HAProxy have none: their limits are their defence).
    new_shield mixed '[[limit]]
name = "guest-ip"
routes = ["*"]
key = "ip"
rate = "300/min"
burst = 100

[[limit]]
name = "guest-token"
routes = ["*"]
key = "token"
rate = "3000/min"
burst = 600

[enumeration]
statuses = [403, 404, 410]
max_failures = 20
prefix_max_failures = 100
window = "10m"
ban = "15m"
max_ban = "24h"
token_pattern = "^[A-Za-z0-9_-]{8,128}$"'
    start_shield mixed
    nginx_from_template mixed 300r/m 100 3000r/m 600
    start_nginx mixed
    haproxy_from_template mixed 400 3600
    start_haproxy mixed
    declare -A URL=([joinshield]="http://127.0.0.1:${SPORT[mixed]}$GUEST_PATH"
        [nginx]="http://127.0.0.1:${NPORT[mixed]}$GUEST_PATH"
        [haproxy]="http://127.0.0.1:${HPORT[mixed]}$GUEST_PATH")
    local res="$WORK/mixed.txt" r t alone loaded apid
    : >"$res"
    for r in $(seq "$MIXED_ROUNDS"); do
        for t in joinshield nginx haproxy; do
            # Guests: guests.lua (10,000 tokens from 10.0.0.0/18) over 2 connections; the attack:
            # 38 connections, this round's own 1,000 clients in 172.(15 + round).0.0/22.
            alone=$(run_wrk "mixed-alone-$t-$r" "${URL[$t]}" "$MIXED_SECONDS" 2 -s "$HERE/guests.lua")
            run_wrk "mixed-attack-$t-$r" "${URL[$t]}" "$MIXED_SECONDS" 38 -s "$HERE/mixed-attack.lua" -- $((15 + r)) \
                >"$WORK/mixed-attack.res" &
            apid=$!
            loaded=$(run_wrk "mixed-guests-$t-$r" "${URL[$t]}" "$MIXED_SECONDS" 2 -s "$HERE/guests.lua")
            wait "$apid"
            # round target | alone: req rps p50 p99 non2xx errors | attacked: the same | attack: the same
            echo "$r $t $alone $loaded $(cat "$WORK/mixed-attack.res")" >>"$res"
            note "round $r $t: guests p99 $(awk '{print $6 " ms alone, " $12 " ms attacked"}' <<<"$(tail -n 1 "$res")")"
        done
    done
    local bans
    bans=$(grep -c 'Join token brute force detected' "$WORK/mixed/shield.log")
    echo
    echo "## mixed: guests (guests.lua, wrk -c2) alone, then beside 1,000 guessing clients (mixed-attack.lua, wrk -c38, fresh clients each round)"
    echo
    echo "| round | target | guests alone: requests, p99 ms | attacked: requests, p99 ms | p99 attacked ÷ alone | guest failures alone / attacked | attack req/s | attack share of requests | attack answered non-2xx |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk '{
        ratio = ($6 > 0 && $12 ~ /^[0-9.]+$/) ? sprintf("%.2f", $12 / $6) : "NA"
        share = ($9 + $15 > 0) ? sprintf("%.1f %%", 100 * $15 / ($9 + $15)) : "NA"
        denied = ($15 > 0) ? sprintf("%.1f %%", 100 * $19 / $15) : "NA"
        printf "| %s | %s | %s, %s | %s, %s | %s | %d / %d | %s | %s | %s |\n", $1, $2, $3, $6, $9, $12, ratio, $7 + $8, $13 + $14, $16, share, denied
    }' "$res"
    echo
    echo "| target | guests' p99 attacked ÷ alone (median) | per round | target ≤ 1.5 | guest failures (all rounds, alone + attacked) | target 0 |"
    echo "|---|---|---|---|---|---|"
    for t in joinshield nginx haproxy; do
        awk -v t="$t" '$2 == t && $6 > 0 && $12 ~ /^[0-9.]+$/ {print $12 / $6}' "$res" | median >"$WORK/mixed-med"
        local m per fails
        m=$(cat "$WORK/mixed-med")
        per=$(awk -v t="$t" '$2 == t {printf "%s%.2f", (n++ ? ", " : ""), ($6 > 0 ? $12 / $6 : 0)}' "$res")
        fails=$(awk -v t="$t" '$2 == t {s += $7 + $8 + $13 + $14} END {print s + 0}' "$res")
        printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$(fmt "$m")" "$per" "$(verdict "$m" "<=" 1.5)" "$fails" \
            "$( ((fails == 0)) && echo met || echo "**missed**")"
    done
    echo
    echo "joinshield's ban lines in the log: $bans (clients and prefixes banned for guessing, over all rounds)"
    stop_shield mixed
    stop_pid "${NPID[mixed]}"
    stop_pid "${HPID[mixed]}"
}

# ===================================================================================== connflood
# flood_start TARGET_PORT TAG: starts the flooder (as many processes as the descriptor limit
# needs, all from CONNFLOOD_SOURCE) and waits until each has made its first attempt at every one
# of its connections; sets FLOODERS (pids) and FLOOD_OUTS (their output files).
flood_start() {
    local port=$1 tag=$2 cap=$((NOFILE - 64)) left=$CONNFLOOD_CONNECTIONS p=0 n out per
    local reconnect=()
    [[ $CONNFLOOD_RECONNECT_MS != off ]] && reconnect=(--reconnect-ms "$CONNFLOOD_RECONNECT_MS")
    FLOODERS=() FLOOD_OUTS=()
    # As few processes as the limit allows, sharing the connections evenly.
    per=$(((left + (left + cap - 1) / cap - 1) / ((left + cap - 1) / cap)))
    while ((left > 0)); do
        n=$((left < per ? left : per))
        p=$((p + 1))
        out="$WORK/connflood-$tag-$p.out"
        # Pinned with wrk: the flooder is load, not the system under test.
        "${LOAD_PIN[@]}" "$FLOOD_BIN" --target "127.0.0.1:$port" --source "$CONNFLOOD_SOURCE" --connections "$n" \
            --seconds $((CONNFLOOD_SECONDS + 150)) --connect-concurrency 1024 --connect-timeout-ms 1000 \
            "${reconnect[@]}" >"$out" 2>&1 &
        FLOODERS+=($!)
        PIDS+=($!)
        FLOOD_OUTS+=("$out")
        left=$((left - n))
    done
    local deadline=$((SECONDS + 120)) f all
    while ((SECONDS < deadline)); do
        all=1
        for f in "${FLOOD_OUTS[@]}"; do grep -q '^ready' "$f" || all=0; done
        ((all)) && return 0
        sleep 0.2
    done
    note "the flooder did not make all its first attempts within 120 s; the guests start anyway"
}
# flood_stop: ends the flooder processes and sets FLOOD_COUNTERS to their summed counters,
# "key=value ...", of the ready lines (prefixed ready_) and of the final lines. (Not to be run
# in a subshell: it waits for its children.)
flood_stop() {
    local pid
    for pid in "${FLOODERS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${FLOODERS[@]}"; do wait "$pid" 2>/dev/null; done
    FLOOD_COUNTERS=$(cat "${FLOOD_OUTS[@]}" | awk '
        /^(ready|flood) / {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); s[($1 == "ready" ? "ready_" : "") kv[1]] += kv[2] }
        }
        END { for (k in s) printf "%s=%s ", k, s[k]; print "" }')
}
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2; found = 1} END {if (!found) print "NA"}'; }

scenario_connflood() {
    ((NOFILE > 1000)) || die "the descriptor limit ($NOFILE) is too low for the connection flood"
    [[ -x ${FLOOD_BIN:-} ]] || die "the conn_flood bench program was not built"
    note "connflood: $CONNFLOOD_ROUNDS rounds of joinshield, nginx, HAProxy: ${CONNFLOOD_SECONDS}s of guests alone, then with $CONNFLOOD_CONNECTIONS idle connections from $CONNFLOOD_SOURCE"
    # Every proxy: at most CONNFLOOD_MAX client connections, CONNFLOOD_PER_IP per client address,
    # an idle connection closed after 10 s (joinshield's header_timeout default), no rate limits
    # and no trusted proxies: the guests are one ordinary client (127.0.0.1) on wrk's connections.
    local per_ip_note="max_connections_per_ip = $CONNFLOOD_PER_IP, accepted"
    new_shield connflood "[server]
max_connections = $CONNFLOOD_MAX
max_connections_per_ip = $CONNFLOOD_PER_IP" '[]'
    if ! "$BIN" check -c "$WORK/connflood/joinshield.toml" >"$WORK/connflood/check.log" 2>&1 &&
        grep -q 'max_connections_per_ip' "$WORK/connflood/check.log"; then
        per_ip_note="**max_connections_per_ip is refused by this joinshield** ($(grep -m1 -o 'unknown key[^;:]*' "$WORK/connflood/check.log")): it runs WITHOUT a per-client connection bound"
        note "joinshield refuses max_connections_per_ip: the flood runs against it without a per-client bound"
        new_shield connflood "[server]
max_connections = $CONNFLOOD_MAX" '[]'
    fi
    start_shield connflood

    local dir="$WORK/nginx-connflood"
    mkdir -p "$dir" && chmod 755 "$dir"
    NPORT[connflood]=$(free_port) || die "no free port"
    # worker_connections counts the upstream connections too (at most 64 kept alive).
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((CONNFLOOD_MAX + 100)); }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    client_header_timeout 10s;
    keepalive_timeout 10s;
    keepalive_requests 1000000;
    limit_conn_zone \$binary_remote_addr zone=perip:10m;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${NPORT[connflood]};
        location / {
            limit_conn perip $CONNFLOOD_PER_IP;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    start_nginx connflood

    # HAProxy needs two descriptors per connection (client and server side) and refuses to start
    # when the limit cannot hold maxconn of each.
    local hmax=$(((NOFILE - 64) / 2))
    ((hmax > CONNFLOOD_MAX)) && hmax=$CONNFLOOD_MAX
    dir="$WORK/haproxy-connflood"
    mkdir -p "$dir"
    HPORT[connflood]=$(free_port) || die "no free port"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $hmax

defaults
    mode http
    maxconn $hmax
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s

frontend guests
    bind 127.0.0.1:${HPORT[connflood]}
    tcp-request connection track-sc0 src table per_conn
    tcp-request connection reject if { sc0_conn_cur gt $CONNFLOOD_PER_IP }
    default_backend app

backend per_conn
    stick-table type ip size 100k expire 10m store conn_cur

backend app
    server app 127.0.0.1:$UPSTREAM_PORT
EOF
    start_haproxy connflood

    declare -A URL=([joinshield]="http://127.0.0.1:${SPORT[connflood]}$GUEST_PATH"
        [nginx]="http://127.0.0.1:${NPORT[connflood]}$GUEST_PATH"
        [haproxy]="http://127.0.0.1:${HPORT[connflood]}$GUEST_PATH")
    declare -A TPORT=([joinshield]=${SPORT[connflood]} [nginx]=${NPORT[connflood]} [haproxy]=${HPORT[connflood]})
    local res="$WORK/connflood.txt" r t alone flooded counters
    : >"$res"
    for r in $(seq "$CONNFLOOD_ROUNDS"); do
        for t in joinshield nginx haproxy; do
            alone=$(run_wrk "connflood-alone-$t-$r" "${URL[$t]}" "$CONNFLOOD_SECONDS" "$CONNFLOOD_GUEST_CONNECTIONS" -s "$HERE/guests.lua")
            flood_start "${TPORT[$t]}" "$t-$r"
            flooded=$(run_wrk "connflood-guests-$t-$r" "${URL[$t]}" "$CONNFLOOD_SECONDS" "$CONNFLOOD_GUEST_CONNECTIONS" -s "$HERE/guests.lua")
            flood_stop
            counters=$FLOOD_COUNTERS
            # round target | alone: req rps p50 p99 non2xx errors | flooded: the same | flooder counters
            echo "$r $t $alone $flooded $(kv "$counters" ready_open) $(kv "$counters" established) $(kv "$counters" closed_by_peer) $(kv "$counters" timed_out) $(kv "$counters" refused) $(kv "$counters" local_errors) $(kv "$counters" max_open)" >>"$res"
            note "round $r $t: guests $(awk '{print $4 " req/s, p99 " $6 " ms alone; " $10 " req/s, p99 " $12 " ms flooded (" $15 " flood connections open when they started)"}' <<<"$(tail -n 1 "$res")")"
            # Let the proxy see the flood's resets before the next target's run.
            sleep 2
        done
    done
    echo
    echo "## connection flood: $CONNFLOOD_CONNECTIONS idle connections from $CONNFLOOD_SOURCE (reconnecting after ${CONNFLOOD_RECONNECT_MS} ms) while the guests run (guests.lua, wrk -c$CONNFLOOD_GUEST_CONNECTIONS from 127.0.0.1)"
    echo
    echo "caps: at most $CONNFLOOD_MAX client connections (joinshield max_connections $CONNFLOOD_MAX, nginx worker_connections $((CONNFLOOD_MAX + 100)) including upstream ones, HAProxy maxconn $hmax), $CONNFLOOD_PER_IP per client address (nginx limit_conn, which counts only connections with a request in progress; HAProxy src_conn_cur at tcp-request connection; joinshield: $per_ip_note); idle connections closed after 10 s; descriptor limit $NOFILE"
    echo
    echo "| round | target | alone: req/s, p99 ms | flooded: req/s, p99 ms | guests' success flooded | p99 flooded ÷ alone | req/s flooded ÷ alone | flood: open when the guests started, established, closed by the proxy, timed out, refused, max open |"
    echo "|---|---|---|---|---|---|---|---|"
    # Success: answers that were 2xx over every answer and socket error (a timeout or a connection
    # that could not be made counts as a failed guest request).
    awk '{
        ok = $9 - $13; all = $9 + $14
        succ = (all > 0) ? sprintf("%.3f %%", 100 * ok / all) : "0 of 0 answered"
        p = ($6 > 0 && $12 ~ /^[0-9.]+$/) ? sprintf("%.2f", $12 / $6) : "NA"
        q = ($4 > 0 && $10 ~ /^[0-9.]+$/) ? sprintf("%.2f", $10 / $4) : "NA"
        printf "| %s | %s | %s, %s | %s, %s | %s | %s | %s | %s, %s, %s, %s, %s, %s |\n", $1, $2, $4, $6, $10, $12, succ, p, q, $15, $16, $17, $18, $19, $21
    }' "$res"
    awk '$20 ~ /^[0-9]+$/ && $20 > 0 {n += $20} END {if (n) printf "\nNOTE: the flooder itself ran out of descriptors or ports %d time(s): it opened fewer connections than asked.\n", n}' "$res"
    echo
    echo "| target | guests' success flooded (lowest round) | target 100 % | p99 flooded ÷ alone (median) | per round | target ≤ 1.5 | req/s flooded ÷ alone (median) |"
    echo "|---|---|---|---|---|---|---|"
    local m low per q
    for t in joinshield nginx haproxy; do
        m=$(awk -v t="$t" '$2 == t && $6 > 0 && $12 ~ /^[0-9.]+$/ {print $12 / $6}' "$res" | median)
        per=$(awk -v t="$t" '$2 == t {printf "%s%s", (n++ ? ", " : ""), ($6 > 0 && $12 ~ /^[0-9.]+$/ ? sprintf("%.2f", $12 / $6) : "NA")}' "$res")
        low=$(awk -v t="$t" '$2 == t {all = $9 + $14; v = (all > 0) ? 100 * ($9 - $13) / all : 0; if (!n++ || v < low) low = v} END {printf "%.3f", low}' "$res")
        q=$(awk -v t="$t" '$2 == t && $4 > 0 && $10 ~ /^[0-9.]+$/ {print $10 / $4}' "$res" | median)
        printf '| %s | %s %% | %s | %s | %s | %s | %s |\n' "$t" "$low" "$(verdict "$low" ">=" 100)" "$(fmt "$m")" "$per" \
            "$(verdict "$m" "<=" 1.5)" "$(fmt "$q")"
    done
    stop_shield connflood
    stop_pid "${NPID[connflood]}"
    stop_pid "${HPID[connflood]}"
}

# ========================================================================================= http2
# run_h2load NAME URIS_FILE SECONDS: h2load over TLS (HTTP/2, 100 streams per connection, pinned),
# the URIs of URIS_FILE in turn; prints "done rps succeeded failed mean_ms".
run_h2load() {
    local out="$WORK/h2load-$1.txt"
    timeout -k 5 $(($3 + 30)) "${LOAD_PIN[@]}" h2load -t1 -c"$H2_CLIENTS" -m100 -D"$3" -i "$2" >"$out" 2>&1
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return "NA"
        }
        /^finished in/ { gsub(/,/, ""); rps = $4 }
        /^requests:/   { done = $6; ok = $8; bad = $10 + $12 + $14 }
        /^time for request:/ { mean = ms($6) }
        END {
            if (done == "" || rps == "") { print "NA NA NA NA NA"; exit }
            printf "%d %.0f %d %d %.3f\n", done, rps, ok, bad, mean
        }' "$out"
}

scenario_http2() {
    note "http2: $H2_ROUNDS rounds of h2load (-c$H2_CLIENTS -m100, TLS) against joinshield and nginx http2, ${H2_SECONDS}s each"
    local cert="$WORK/h2-cert"
    mkdir -p "$cert" && chmod 755 "$cert"
    make_cert "$cert"
    # Both terminate TLS with the same certificate and forward to the stand-in over keep-alive
    # HTTP/1.1, no limits (as tls.sh): the figure is the cost of serving HTTP/2.
    local tls_port h2_note="http2 = true, accepted"
    tls_port=$(free_port) || die "no free port"
    local tls_keys="[server]
tls_listen = \"127.0.0.1:$tls_port\"
tls_cert = \"$cert/fullchain.pem\"
tls_key = \"$cert/privkey.pem\""
    new_shield h2 "$tls_keys
http2 = true"
    if ! "$BIN" check -c "$WORK/h2/joinshield.toml" >"$WORK/h2/check.log" 2>&1 && grep -q 'http2' "$WORK/h2/check.log"; then
        h2_note="the http2 key is refused by this joinshield ($(grep -m1 -o 'unknown key[^;:]*' "$WORK/h2/check.log")), left out"
        new_shield h2 "$tls_keys"
    fi
    start_shield h2
    wait_https "$tls_port" "${SPID[h2]}" "$WORK/h2/stdout.log"

    local dir="$WORK/nginx-h2"
    mkdir -p "$dir" && chmod 755 "$dir"
    NPORT[h2]=$(free_port) || die "no free port"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;   # also the requests of one HTTP/2 connection (nginx >= 1.19.7)
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${NPORT[h2]} ssl http2;
        ssl_certificate $cert/fullchain.pem;
        ssl_certificate_key $cert/privkey.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;   # rustls/ring's groups, in its order
        http2_max_concurrent_streams 128;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
    start_nginx h2 https

    declare -A TPORT=([joinshield]=$tls_port [nginx]=${NPORT[h2]})
    declare -A PROTO
    local t targets=()
    for t in joinshield nginx; do
        PROTO[$t]=$(curl -sk --http2 -o /dev/null -w '%{http_version}' --max-time 5 "https://127.0.0.1:${TPORT[$t]}$GUEST_PATH")
        # h2load speaks HTTP/2 only when ALPN gives it h2; a server that does not is left out.
        [[ ${PROTO[$t]} == 2 ]] && targets+=("$t")
        # 10,000 guest tokens, in turn.
        awk -v base="https://127.0.0.1:${TPORT[$t]}" 'BEGIN {for (k = 0; k < 10000; k++) printf "%s/api/v1/events/load-%06d\n", base, k}' >"$WORK/h2-uris-$t.txt"
    done
    [[ ${PROTO[nginx]} == 2 ]] || die "nginx did not negotiate HTTP/2 (curl saw HTTP/${PROTO[nginx]})"
    for t in "${targets[@]}"; do run_h2load "warm-$t" "$WORK/h2-uris-$t.txt" 1 >/dev/null; done
    local res="$WORK/h2.txt" r pids c0 c1 line
    : >"$res"
    for r in $(seq "$H2_ROUNDS"); do
        for t in "${targets[@]}"; do
            [[ $t == joinshield ]] && pids=${SPID[h2]} || pids="${NPID[h2]} ${NWORKER[h2]}"
            # shellcheck disable=SC2086 # pids is a list
            c0=$(cpu_ticks $pids)
            line=$(run_h2load "$t-$r" "$WORK/h2-uris-$t.txt" "$H2_SECONDS")
            # shellcheck disable=SC2086
            c1=$(cpu_ticks $pids)
            # round target done rps succeeded failed mean_ms cpu_us_per_request
            awk -v r="$r" -v t="$t" -v line="$line" -v ticks=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN {
                split(line, f, " ")
                cpu = (f[1] ~ /^[0-9]+$/ && f[1] > 0) ? sprintf("%.1f", ticks * 1e6 / hz / f[1]) : "NA"
                print r, t, line, cpu
            }' >>"$res"
            note "round $r $t: $(tail -n 1 "$res" | awk '{print $4 " req/s, CPU " $8 " µs/req, " $6 " failed"}')"
        done
    done
    echo
    echo "## HTTP/2 over TLS: h2load -t1 -c$H2_CLIENTS -m100 -D$H2_SECONDS (10,000 guest paths in turn), same certificate (ECDSA P-256), no limits in either"
    echo
    echo "protocol negotiated (curl --http2): joinshield HTTP/${PROTO[joinshield]:-?}, nginx HTTP/${PROTO[nginx]}; joinshield config: $h2_note"
    if [[ ${PROTO[joinshield]} != 2 ]]; then
        echo
        echo "**joinshield does not offer HTTP/2 by ALPN** (its TLS listener answers HTTP/${PROTO[joinshield]:-?}): no joinshield figure; nginx's below is the baseline it will be held to."
    fi
    echo
    echo "| round | target | requests | req/s | succeeded | failed | mean ms per request | proxy CPU µs/req |"
    echo "|---|---|---|---|---|---|---|---|"
    awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8}' "$res"
    if [[ ${PROTO[joinshield]} == 2 ]]; then
        echo
        awk '
            { rps[$1, $2] = $4; cpu[$1, $2] = $8; rounds[$1] = 1 }
            function med(a, n,   i, j, t) {
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            END {
                n = 0
                for (r = 1; (r in rounds); r++) {
                    if (!(rps[r, "nginx"] > 0 && cpu[r, "nginx"] > 0)) continue
                    n++
                    g[n] = rps[r, "joinshield"] / rps[r, "nginx"]; c[n] = cpu[r, "joinshield"] / cpu[r, "nginx"]
                    gl = gl sprintf("%s%.2f", (n > 1 ? ", " : ""), g[n]); cl = cl sprintf("%s%.2f", (n > 1 ? ", " : ""), c[n])
                }
                if (n == 0) { print "no complete round"; exit }
                m = med(g, n); k = med(c, n)
                printf "median: **joinshield ÷ nginx HTTP/2 req/s %.2f** (rounds: %s; target ≥ 1.0: %s); CPU per request %.2f (rounds: %s; target ≤ 1.0: %s)\n", m, gl, (m >= 1 ? "met" : "**missed**"), k, cl, (k <= 1 ? "met" : "**missed**")
            }' "$res"
    fi
    stop_shield h2
    stop_pid "${NPID[h2]}"
}

# =================================================================================== cardinality
scenario_cardinality() {
    note "cardinality: up to $CARD_TOKENS fresh tokens, at most ${CARD_SECONDS}s, then ${CARD_IDLE}s idle"
    new_shield card '[[limit]]
name = "token"
routes = ["*"]
key = "token"
rate = "1/min"     # one request leaves a bucket 60 s from full: keys linger, the table fills
burst = 1'
    start_shield card
    local pid=${SPID[card]} samples="$WORK/card-rss.txt"
    local before peak during after res
    before=$(rss_kb "$pid")
    : >"$samples"
    sample_rss "$pid" "$samples" &
    local spid=$!
    res=$(run_wrk card "http://127.0.0.1:${SPORT[card]}/" "$CARD_SECONDS" 16 -s "$HERE/fresh-tokens.lua" -- "$CARD_TOKENS")
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    peak=$(max_of "$samples")
    during=$(rss_kb "$pid")
    sleep "$CARD_IDLE"
    after=$(rss_kb "$pid")
    local req rps p50 p99 bad err
    read -r req rps p50 p99 bad err <<<"$res"
    echo
    echo "## cardinality: fresh tokens (one request each) against key=\"token\" rate 1/min burst 1, max_keys 200000"
    echo
    local stopped
    stopped=$(grep -o 'stopped after [0-9]* s' "$WORK/wrk-card.txt" | head -n 1)
    echo "sent $req requests (as many distinct tokens; target $CARD_TOKENS), ${stopped:-ran the full ${CARD_SECONDS} s}; $bad answered non-2xx (limited), $err socket errors"
    echo "| | VmRSS |"
    echo "|---|---|"
    echo "| before | $(mib "$before") |"
    echo "| peak (every 200 ms, $(wc -l <"$samples") samples) | $(mib "$peak") (target ≤ 128 MiB) |"
    echo "| right after the traffic | $(mib "$during") |"
    echo "| after ${CARD_IDLE} s idle | $(mib "$after") (target < 40 MiB) |"
    stop_shield card
}

# ======================================================================================== reload
scenario_reload() {
    note "reload storm: 10 s of pass-through load, POST /admin/reload every 100 ms"
    local limit_a='rate = "100000/min"' limit_b='rate = "100001/min"'
    new_shield storm "[[limit]]
name = \"storm-ip\"
routes = [\"*\"]
key = \"ip\"
$limit_a
burst = 1000"
    start_shield storm
    local cfg="$WORK/storm/joinshield.toml"
    local v0
    read -r _ _ v0 <<<"$(reload storm)"
    run_wrk storm "http://127.0.0.1:${SPORT[storm]}$GUEST_PATH" 10 16 -s "$HERE/guests.lua" >"$WORK/storm-wrk.res" &
    local wpid=$!
    local sent=0 ok=0 last=$v0 code secs v flip=0 deadline=$((SECONDS + 10))
    sleep 0.2
    while kill -0 "$wpid" 2>/dev/null && ((SECONDS < deadline)); do
        # Change the limit's rate on every reload, written to a temporary file renamed over the
        # config (as an editor would), so each reload really has something to apply.
        if ((flip)); then sed "s|^$limit_b|$limit_a|" "$cfg" >"$cfg.new"; else sed "s|^$limit_a|$limit_b|" "$cfg" >"$cfg.new"; fi
        mv "$cfg.new" "$cfg"
        flip=$((1 - flip))
        read -r code secs v <<<"$(reload storm)"
        sent=$((sent + 1))
        [[ $code == 200 ]] && ok=$((ok + 1))
        [[ -n $v ]] && last=$v
        sleep 0.1
    done
    wait "$wpid"
    local req rps p50 p99 bad err
    read -r req rps p50 p99 bad err <"$WORK/storm-wrk.res"
    read -r _ _ v <<<"$(reload storm)"
    echo
    echo "## reload storm: wrk -t1 -c16 -d10s (guests.lua) while POST /admin/reload every 100 ms"
    echo
    echo "wrk: $req requests, $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $bad, socket errors $err (target 0 and 0)"
    echo "reloads: $sent sent, $ok answered 200; version $v0 -> $last during the storm ($((last - v0)) applied; the file watcher also sees each edit), $v after it"
    echo "rejected reloads in the log: $(grep -c 'Shield configuration rejected' "$WORK/storm/shield.log")"
    stop_shield storm
}

# ===================================================================================== blocklist
scenario_blocklist() {
    note "blocklist: generating $BLOCK_LINES lines"
    local dir="$WORK/block"
    mkdir -p "$dir"
    # 60 % IPv4 /32 from 20.0.0.0 up, 30 % IPv4 /24 from 30.0.0.0 up, 10 % IPv6 /48 in 2a00::/16;
    # none of them covers the benchmark's clients (10.0.0.0/18, 127.0.0.1).
    awk -v n="$BLOCK_LINES" 'BEGIN {
        for (i = 0; i < n; i++) {
            k = i % 10
            if (k < 6) {
                a = 20 * 16777216 + int(i / 10) * 6 + k
                printf "%d.%d.%d.%d\n", int(a / 16777216), int(a / 65536) % 256, int(a / 256) % 256, a % 256
            } else if (k < 9) {
                a = 30 * 65536 + int(i / 10) * 3 + (k - 6)
                printf "%d.%d.%d.0/24\n", int(a / 65536), int(a / 256) % 256, a % 256
            } else {
                b = int(i / 10)
                printf "2a00:%x:%x::/48\n", int(b / 65536), b % 65536
            }
        }
    }' >"$dir/blocklist.txt" || die "cannot write the blocklist"
    new_shield block '[lists]
blocklist = "blocklist.txt"'
    local t0 t1 check_ms
    t0=$(now_ms)
    "$BIN" check -c "$dir/joinshield.toml" >"$dir/check.log" 2>&1 || die "check refused the blocklist: $(tail -n 5 "$dir/check.log")"
    t1=$(now_ms)
    check_ms=$((t1 - t0))
    t0=$(now_ms)
    start_shield block
    t1=$(now_ms)
    local start_ms=$((t1 - t0)) pid=${SPID[block]}
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Forwarded-For: 20.0.0.7' "http://127.0.0.1:${SPORT[block]}$GUEST_PATH")
    [[ $code == 403 ]] || die "a blocklisted client got $code, not 403"
    local rss
    rss=$(rss_kb "$pid")
    local url="http://127.0.0.1:${SPORT[block]}$GUEST_PATH"
    run_wrk block-warm "$url" 1 16 -s "$HERE/guests.lua" >/dev/null
    local res="$WORK/block.txt"
    : >"$res"
    local r quiet with secs v rl=()
    for r in 1 2; do
        quiet=$(run_wrk "block-quiet-$r" "$url" 4 16 -s "$HERE/guests.lua")
        run_wrk "block-reload-$r" "$url" 4 16 -s "$HERE/guests.lua" >"$WORK/block-with.res" &
        local wpid=$!
        sleep 1.5
        read -r code secs v <<<"$(reload block)"
        rl+=("$code/${secs}s/v$v")
        wait "$wpid"
        with=$(cat "$WORK/block-with.res")
        echo "$r quiet $quiet" >>"$res"
        echo "$r reload $with $code $secs" >>"$res"
    done
    echo
    echo "## large blocklist: $BLOCK_LINES lines (60 % IPv4 /32, 30 % IPv4 /24, 10 % IPv6 /48)"
    echo
    echo "joinshield check: $(awk -v m="$check_ms" 'BEGIN {printf "%.2f", m / 1000}') s; shield start to first answer: $(awk -v m="$start_ms" 'BEGIN {printf "%.2f", m / 1000}') s; RSS with the list loaded: $(mib "$rss")"
    echo
    echo "| round | run (wrk -t1 -c16 -d4s, guests.lua) | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | reload answer | reload s |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, ($2 == "quiet" ? "no reload" : "reload at 1.5 s"), $3, $4, $5, $6, $7, $8, ($9 == "" ? "–" : $9), ($10 == "" ? "–" : $10)}' "$res"
    echo
    echo "reloads (code/time/version): ${rl[*]}; RSS after them: $(mib "$(rss_kb "$pid")")"
    stop_shield block
}

# ====================================================================================== guessing
scenario_guessing() {
    note "guessing: $GUESS_TOKENS bad tokens from $GUESS_ADDRESSES addresses in 2001:db8:abcd::/48"
    new_shield guess '[enumeration]'
    start_shield guess
    local pid=${SPID[guess]} samples="$WORK/guess-rss.txt" before after0 rss0
    rss0=$(rss_kb "$pid")
    before=$(standin_requests)
    : >"$samples"
    sample_rss "$pid" "$samples" &
    local spid=$!
    local res
    res=$(run_wrk guess "http://127.0.0.1:${SPORT[guess]}/" 20 16 -s "$HERE/guessing.lua" -- "$GUESS_TOKENS" "$GUESS_ADDRESSES")
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    after0=$(standin_requests)
    local req rps p50 p99 bad err
    read -r req rps p50 p99 bad err <<<"$res"
    local bans
    bans=$(curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:${APORT[guess]}/admin/bans")
    echo
    echo "## token guessing: $GUESS_TOKENS distinct bad tokens, $GUESS_ADDRESSES rotating /64s in one /48, [enumeration] defaults"
    echo
    echo "sent $req requests, $(grep -o 'stopped after [0-9]* s' "$WORK/wrk-guess.txt" | head -n 1) (non-2xx $bad, socket errors $err)"
    echo "reached the app: $((after0 - before)) (target < 200)"
    echo "shield VmRSS: $(mib "$rss0") at start, peak $(mib "$(max_of "$samples")") (target < 128 MiB, $(wc -l <"$samples") samples)"
    echo "bans: $(grep -o '"net":"[^"]*"' <<<"$bans" | head -n 5 | tr '\n' ' ') ($(grep -o '"net"' <<<"$bans" | wc -l) in all); brute-force lines: $(grep -c 'brute force detected' "$WORK/guess/shield.log")"
    stop_shield guess
}


for s in $SCENARIOS; do "scenario_$s"; done
exit 0
