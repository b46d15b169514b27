#!/usr/bin/env bash
# Question: does joinshield hold up under the traffic it exists for, not just pass-through? Five
# scenarios, each with its own target:
#   flood        one client far over its limit: how fast are denials answered, and does the log
#                stay small? Baselines: the same flood forwarded by joinshield with no limits, and
#                nginx answering its own limit_req 429s at the same rate (interleaved rounds).
#   cardinality  1,000,000 distinct tokens against a per-token limit: peak memory, and memory once
#                the keys go idle and the janitor has pruned them. Baseline: RSS before the traffic.
#   mixed        1,000 guessing clients flooding (about 95 % of requests) while legitimate guests
#                keep using the app (about 5 %): the guests' success rate and p99. Baseline: the
#                same guests alone, just before.
#   reload       POST /admin/reload every 100 ms (each one changing a limit's rate) under
#                pass-through load: any failed request? Baseline: zero errors.
#   blocklist    a 1,000,000-line blocklist: how long `joinshield check` and a live reload take, and
#                what a reload does to p99 under load. Baseline: p99 of the same load without reload.
#   guessing     100,000 distinct bad tokens from 50,000 addresses inside one IPv6 /48: how many
#                reach the app, and the shield's peak memory. Baseline: the 100,000 sent.
#
# Usage, from the repository root:   benches/load/scenarios.sh
# Knobs (environment):  SCENARIOS        which to run   (default "flood mixed cardinality reload blocklist guessing")
#                       FLOOD_SECONDS    seconds per flood run, 3 targets x FLOOD_ROUNDS (default 3)
#                       FLOOD_ROUNDS     interleaved flood rounds                       (default 3)
#                       MIXED_SECONDS    seconds of the mixed run and of its baseline    (default 10)
#                       CARD_TOKENS      distinct tokens sent at most                   (default 1000000)
#                       CARD_SECONDS     the cardinality run stops after this anyway    (default 180)
#                       CARD_IDLE        seconds without traffic before the last sample (default 80)
#                       BLOCK_LINES      blocklist lines                                (default 1000000)
#                       GUESS_TOKENS     distinct bad tokens                            (default 100000)
#                       GUESS_ADDRESSES  rotating client addresses in the /48           (default 50000)
#
# Everything listens on 127.0.0.1 only. Every run is bounded in time. The script exits non-zero
# only when it cannot set a scenario up; performance figures never fail it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=$PWD/benches/load

SCENARIOS=${SCENARIOS:-flood mixed cardinality reload blocklist guessing}
FLOOD_SECONDS=${FLOOD_SECONDS:-3}
FLOOD_ROUNDS=${FLOOD_ROUNDS:-3}
CARD_TOKENS=${CARD_TOKENS:-1000000}
MIXED_SECONDS=${MIXED_SECONDS:-10}
CARD_SECONDS=${CARD_SECONDS:-180}
CARD_IDLE=${CARD_IDLE:-80}
BLOCK_LINES=${BLOCK_LINES:-1000000}
GUESS_TOKENS=${GUESS_TOKENS:-100000}
GUESS_ADDRESSES=${GUESS_ADDRESSES:-50000}
GUEST_PATH=/api/v1/events/load-000001
ADMIN_TOKEN=bench-$RANDOM$RANDOM$RANDOM
export JOINSHIELD_ADMIN_TOKEN=$ADMIN_TOKEN

die() {
    echo "scenarios.sh: setup failed: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }

for v in FLOOD_SECONDS FLOOD_ROUNDS MIXED_SECONDS CARD_TOKENS CARD_SECONDS CARD_IDLE BLOCK_LINES GUESS_TOKENS GUESS_ADDRESSES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
((GUESS_ADDRESSES <= 65536)) || die "GUESS_ADDRESSES must be at most 65536 (one /64 each inside a /48)"
for s in $SCENARIOS; do
    [[ " flood mixed cardinality reload blocklist guessing " == *" $s "* ]] || die "unknown scenario '$s'"
done
for tool in cargo wrk nginx haproxy curl ss taskset timeout awk sort date; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nginx-light wrk)"
done

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
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
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
# cpu_ticks PID...: user+system clock ticks of the processes (all their threads), summed.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

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
note "building the release binary"
BUILD_JSON=$(timeout 1800 cargo build --release --message-format=json 2>"$WORK/build.log") ||
    die "cargo build --release failed: $(tail -n 20 "$WORK/build.log")"
BIN=$(grep -o '"executable":"[^"]*/joinshield"' <<<"$BUILD_JSON" | tail -n 1 | cut -d'"' -f4)
[[ -x $BIN ]] || die "cannot find the built joinshield binary"

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
# new_shield NAME EXTRA_TOML: writes $WORK/NAME/joinshield.toml (own ports, log file shield.log,
# state file, EXTRA_TOML appended) and sets SPORT[NAME], APORT[NAME].
declare -A SPORT APORT SPID
new_shield() {
    local name=$1 extra=$2 dir="$WORK/$1"
    mkdir -p "$dir"
    SPORT[$name]=$(free_port) || die "no free port"
    APORT[$name]=$(free_port) || die "no free port"
    cat >"$dir/joinshield.toml" <<EOF
[server]
listen = "127.0.0.1:${SPORT[$name]}"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
state_file = "state.json"

[admin]
listen = "127.0.0.1:${APORT[$name]}"

[client]
trusted_proxies = ["127.0.0.1/32"]

[log]
file = "shield.log"

$extra
EOF
}
# start_shield NAME: runs the shield of NAME (pinned with the upstream), waits until it answers.
start_shield() {
    local dir="$WORK/$1"
    "$BIN" check -c "$dir/joinshield.toml" >"$dir/check.log" 2>&1 ||
        die "the $1 config was refused: $(cat "$dir/check.log")"
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

echo
echo "joinshield scenarios: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(uname -sr)"
echo "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $("$BIN" --version 2>/dev/null), $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}'); $PINNING"

# ========================================================================================= flood
scenario_flood() {
    note "flood: $FLOOD_ROUNDS rounds of limited shield, forwarding shield, nginx limit_req, HAProxy stick table; ${FLOOD_SECONDS}s each"
    new_shield flood-limited '[[limit]]
name = "flood-ip"
routes = ["*"]
key = "ip"
rate = "10/min"
burst = 10'
    new_shield flood-open ''
    start_shield flood-limited
    start_shield flood-open

    local ndir="$WORK/nginx" nport
    nport=$(free_port) || die "no free port"
    mkdir -p "$ndir" && chmod 755 "$ndir"
    # The pass-through baseline config with a limit_req of the same quota on the same key (the
    # real_ip from X-Forwarded-For). nginx logs each rejection at limit_req_log_level (error),
    # which error_log warn keeps: that is nginx as shipped, so it stays.
    # The template's guest_ip zone gets the flood quota; its token zone gets one the flood stays under.
    sed -e "s#@DIR@#$ndir#g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" -e "s/@NGINX_PORT@/$nport/g" \
        -e "s#@IP_RATE@#10r/m#g" -e "s/@IP_BURST@/10/g" -e "s#@TOKEN_RATE@#6000000r/m#g" \
        -e "s/@TOKEN_BURST@/100000/g" "$HERE/nginx.conf.in" >"$ndir/nginx.conf"
    grep -q 'limit_req zone=guest_ip burst=10 nodelay' "$ndir/nginx.conf" || die "could not set nginx's flood limit"
    nginx -t -p "$ndir" -c "$ndir/nginx.conf" >"$WORK/nginx-check.log" 2>&1 ||
        die "nginx refused its config: $(cat "$WORK/nginx-check.log")"
    "${SERVE_PIN[@]}" nginx -p "$ndir" -c "$ndir/nginx.conf" >"$WORK/nginx.log" 2>&1 &
    local npid=$!
    PIDS+=("$npid")
    wait_http "$nport" "$npid" "$WORK/nginx.log"
    local nworker
    nworker=$(pgrep -P "$npid" | head -n 1)

    # HAProxy: the same, a stick table on the client IP (10/min + burst 10 = 20 a sliding minute).
    local hport
    hport=$(free_port) || die "no free port"
    sed -e "s/@HAPROXY_PORT@/$hport/g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" \
        -e "s/@IP_PER_MIN@/20/g" -e "s/@TOKEN_PER_MIN@/6100000/g" "$HERE/haproxy.cfg.in" >"$WORK/haproxy.cfg"
    haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
        die "HAProxy refused its config: $(cat "$WORK/haproxy-check.log")"
    "${SERVE_PIN[@]}" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    local hpid=$!
    PIDS+=("$hpid")
    wait_http "$hport" "$hpid" "$WORK/haproxy.log"

    local xff=(-H "X-Forwarded-For: 198.51.100.9")
    local url t r code
    declare -A URL=([joinshield-limited]="http://127.0.0.1:${SPORT[flood-limited]}$GUEST_PATH"
        [joinshield-forwarding]="http://127.0.0.1:${SPORT[flood-open]}$GUEST_PATH"
        [nginx-limit_req]="http://127.0.0.1:$nport$GUEST_PATH"
        [haproxy-stick_table]="http://127.0.0.1:$hport$GUEST_PATH")
    for t in joinshield-limited nginx-limit_req haproxy-stick_table; do
        for _ in $(seq 25); do code=$(curl -s -o /dev/null -w '%{http_code}' "${xff[@]}" "${URL[$t]}"); done
        [[ $code == 429 ]] || die "$t answered $code, not 429, after 25 requests from one client"
    done
    local log="$WORK/flood-limited/shield.log"
    local lines0 nlines0
    lines0=$(wc -l <"$log")
    nlines0=$(wc -l <"$ndir/error.log")
    local t0=$SECONDS
    local res="$WORK/flood.txt"
    : >"$res"
    for r in $(seq "$FLOOD_ROUNDS"); do
        for t in joinshield-limited joinshield-forwarding nginx-limit_req haproxy-stick_table; do
            # The proxy's CPU time per request: robust where wall-clock rates are not (a shared
            # machine's scheduling moves req/s by 2x between runs, CPU per request far less).
            local pids
            case $t in
                joinshield-limited) pids=${SPID[flood-limited]} ;;
                joinshield-forwarding) pids=${SPID[flood-open]} ;;
                nginx-limit_req) pids="$npid $nworker" ;;
                haproxy-stick_table) pids=$hpid ;;
            esac
            local c0 c1 line
            # shellcheck disable=SC2086 # pids is a list
            c0=$(cpu_ticks $pids)
            line=$(run_wrk "flood-$t-$r" "${URL[$t]}" "$FLOOD_SECONDS" 32 "${xff[@]}")
            # shellcheck disable=SC2086
            c1=$(cpu_ticks $pids)
            echo "$r $t $line $(awk -v req="${line%% *}" -v t=$((c1 - c0)) -v hz="$CLK_TCK" \
                'BEGIN { print (req ~ /^[0-9]+$/ && req > 0) ? sprintf("%.1f", t * 1e6 / hz / req) : "NA" }')" >>"$res"
            note "round $r $t: $(tail -n 1 "$res" | awk '{print $4 " req/s, non-2xx " $7 ", CPU " $9 " µs/req"}')"
        done
    done
    sleep 11 # the fold flushes its "repeated" line after 10 s
    local span=$((SECONDS - t0))
    local lines=$(($(wc -l <"$log") - lines0)) nlines=$(($(wc -l <"$ndir/error.log") - nlines0))
    local limited_total
    limited_total=$(awk '$2 == "joinshield-limited" {s += $7} END {print s + 0}' "$res")

    echo
    echo "## flood: one client (X-Forwarded-For 198.51.100.9) at wrk -t1 -c32, limit 10/min burst 10"
    echo
    echo "| round | target | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU µs/req |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}' "$res"
    echo
    awk '
        { rps[$1, $2] = $4; cpu[$1, $2] = $9; rounds[$1] = 1 }
        function med(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            n = 0
            for (r in rounds) {
                n++
                f[n] = rps[r, "joinshield-limited"] / rps[r, "joinshield-forwarding"]
                g[n] = rps[r, "joinshield-limited"] / rps[r, "nginx-limit_req"]
                h[n] = rps[r, "joinshield-limited"] / rps[r, "haproxy-stick_table"]
                c[n] = cpu[r, "nginx-limit_req"] / cpu[r, "joinshield-limited"]
                d[n] = cpu[r, "haproxy-stick_table"] / cpu[r, "joinshield-limited"]
                printf "round %s: denials ÷ forwarded %.2f, ÷ nginx 429s %.2f, ÷ HAProxy 429s %.2f; CPU per 429, nginx ÷ joinshield %.2f, HAProxy ÷ joinshield %.2f\n", r, f[n], g[n], h[n], c[n], d[n]
            }
            printf "median: joinshield denials ÷ nginx 429 rate %.2f (target ≥ 2), ÷ HAProxy 429 rate %.2f, ÷ its own forwarded rate %.2f\n", med(g, n), med(h, n), med(f, n)
            printf "median: denials per CPU-second, joinshield ÷ nginx %.2f, joinshield ÷ HAProxy %.2f\n", med(c, n), med(d, n)
        }' "$res"
    echo "log: the limited shield wrote $lines line(s) for $limited_total denials over ${span} s ($(grep -c '"repeated"' "$log") with \"repeated\"); nginx's error log got $nlines line(s)"
    grep '"repeated"' "$log" | tail -n 1
    stop_shield flood-limited
    stop_shield flood-open
    stop_pid "$npid"
    stop_pid "$hpid"
}

# ========================================================================================= mixed
scenario_mixed() {
    note "mixed: ${MIXED_SECONDS}s of guests alone, then ${MIXED_SECONDS}s of guests beside 1,000 guessing clients"
    # The shipped guest limits and guessing detection.
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
    local url="http://127.0.0.1:${SPORT[mixed]}$GUEST_PATH"
    local alone loaded attack
    # Guests: guests.lua (10,000 tokens from 10.0.0.0/18) over 2 connections; the attack: 38.
    alone=$(run_wrk mixed-alone "$url" "$MIXED_SECONDS" 2 -s "$HERE/guests.lua")
    run_wrk mixed-attack "$url" "$MIXED_SECONDS" 38 -s "$HERE/mixed-attack.lua" >"$WORK/mixed-attack.res" &
    local apid=$!
    loaded=$(run_wrk mixed-guests "$url" "$MIXED_SECONDS" 2 -s "$HERE/guests.lua")
    wait "$apid"
    attack=$(cat "$WORK/mixed-attack.res")
    local areq arps ap50 ap99 abad aerr greq grps gp50 gp99 gbad gerr breq brps bp50 bp99 bbad berr
    read -r breq brps bp50 bp99 bbad berr <<<"$alone"
    read -r greq grps gp50 gp99 gbad gerr <<<"$loaded"
    read -r areq arps ap50 ap99 abad aerr <<<"$attack"
    local bans
    bans=$(grep -c 'Join token brute force detected' "$WORK/mixed/shield.log")
    echo
    echo "## mixed: guests (guests.lua, wrk -c2) beside 1,000 guessing clients (mixed-attack.lua, wrk -c38)"
    echo
    echo "| run | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|"
    echo "| guests alone | $breq | $brps | $bp50 | $bp99 | $bbad | $berr |"
    echo "| guests during the attack | $greq | $grps | $gp50 | $gp99 | $gbad | $gerr |"
    echo "| the attack | $areq | $arps | $ap50 | $ap99 | $abad | $aerr |"
    echo
    awk -v g="$greq" -v gb="$gbad" -v ge="$gerr" -v a="$areq" -v p="$gp99" -v bp="$bp99" 'BEGIN {
        printf "attack share of requests %.1f %%; guests succeeded %.3f %% (target ≥ 99.9 %%); guests p99 %.2f× unloaded (target ≤ 2)\n",
            100 * a / (a + g), 100 * (g - gb - ge) / g, p / bp
    }'
    echo "ban lines in the log: $bans (clients and prefixes banned for guessing)"
    stop_shield mixed
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
