#!/usr/bin/env bash
# Question: what does putting joinshield in front of the guest API cost a forwarded request, in
# throughput, latency, proxy CPU and memory, on one machine?
# Baselines: the stand-in guest API hit directly (the cost of no proxy at all), and nginx and
# HAProxy set up to do the same job: keep-alive reverse proxies of the same upstream with the same
# forwarding headers and the same two rate limits, per client IP and per join token (the cost of
# the usual front doors).
#
# Usage, from the repository root:   benches/load/run.sh
# Knobs (environment):  BENCH_DURATION  seconds per wrk run        (default 5)
#                       BENCH_ROUNDS    interleaved A B C rounds    (default 3)
#                       BENCH_CONNECTIONS  wrk connections          (default 32)
#                       BENCH_THREADS   wrk threads                 (default 1)
#
# Everything listens on 127.0.0.1 only. Every run is bounded in time. The script exits non-zero
# only when it cannot set the benchmark up; performance figures never fail it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=benches/load

DURATION=${BENCH_DURATION:-5}
DURATION=${DURATION%s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
GUEST_PATH=/api/v1/events/load-000001 # what the warm-up, checks and upload use; wrk spreads tokens
# The shipped guest limits, given to all three proxies (none of the benchmark traffic exceeds them).
IP_PER_MIN=300 IP_BURST=100 TOKEN_PER_MIN=3000 TOKEN_BURST=600

die() {
    echo "run.sh: setup failed: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }

for v in DURATION ROUNDS CONNECTIONS THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for tool in cargo wrk nginx haproxy curl ss taskset timeout awk sort; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nginx-light haproxy wrk)"
done

# ------------------------------------------------------------------------------ processes, cleanup
WORK=$(mktemp -d -t joinshield-load.XXXXXX) || die "mktemp failed"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        # Give each a second to go, then insist.
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# cpu_ticks PID...: user+system clock ticks of the processes (all their threads), summed.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        # Fields after the ")" that closes the command name: utime and stime are 12th and 13th.
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------------------------------ build
note "building the release binary"
BUILD_JSON=$(timeout 1800 cargo build --release --message-format=json 2>"$WORK/build.log") ||
    die "cargo build --release failed: $(tail -n 20 "$WORK/build.log")"
BIN=$(grep -o '"executable":"[^"]*/joinshield"' <<<"$BUILD_JSON" | tail -n 1 | cut -d'"' -f4)
[[ -x $BIN ]] || die "cannot find the built joinshield binary"

# ------------------------------------------------------------------------------------------ start
UPSTREAM_PORT=$(free_port) || die "no free port"
SHIELD_PORT=$(free_port) || die "no free port"
ADMIN_PORT=$(free_port) || die "no free port"
NGINX_PORT=$(free_port) || die "no free port"
HAPROXY_PORT=$(free_port) || die "no free port"
# fill TEMPLATE: the template with every @…@ value of this run.
fill() {
    sed -e "s/@SHIELD_PORT@/$SHIELD_PORT/g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" \
        -e "s/@ADMIN_PORT@/$ADMIN_PORT/g" -e "s/@NGINX_PORT@/$NGINX_PORT/g" \
        -e "s/@HAPROXY_PORT@/$HAPROXY_PORT/g" -e "s#@DIR@#$WORK/nginx#g" \
        -e "s#@IP_RATE@#$IP_PER_MIN/min#g" -e "s/@IP_BURST@/$IP_BURST/g" \
        -e "s#@TOKEN_RATE@#$TOKEN_PER_MIN/min#g" -e "s/@TOKEN_BURST@/$TOKEN_BURST/g" \
        -e "s/@IP_PER_MIN@/$((IP_PER_MIN + IP_BURST))/g" \
        -e "s/@TOKEN_PER_MIN@/$((TOKEN_PER_MIN + TOKEN_BURST))/g" "$1"
}

"${SERVE_PIN[@]}" "$BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" "$WORK/upstream.log" 15

fill "$HERE/joinshield.toml.in" >"$WORK/joinshield.toml"
"$BIN" check -c "$WORK/joinshield.toml" >"$WORK/check.log" 2>&1 ||
    die "the joinshield config was refused: $(cat "$WORK/check.log")"
"${SERVE_PIN[@]}" "$BIN" run -c "$WORK/joinshield.toml" >"$WORK/joinshield.log" 2>&1 &
SHIELD_PID=$!
PIDS+=("$SHIELD_PID")
wait_http "$SHIELD_PORT" "$SHIELD_PID" "$WORK/joinshield.log" 15
SHIELD_RSS_START=$(rss_kb "$SHIELD_PID")

mkdir -p "$WORK/nginx" && chmod 755 "$WORK" "$WORK/nginx"
# nginx writes rates as r/m.
fill "$HERE/nginx.conf.in" | sed -e 's#\([0-9]\)/min;#\1r/m;#g' >"$WORK/nginx/nginx.conf"
nginx -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx-check.log" 2>&1 ||
    die "nginx refused its config: $(cat "$WORK/nginx-check.log")"
"${SERVE_PIN[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "$NGINX_PORT" "$NGINX_PID" "$WORK/nginx.log" 15
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
[[ -n $NGINX_WORKER ]] || die "nginx has no worker process"

fill "$HERE/haproxy.cfg.in" >"$WORK/haproxy.cfg"
haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
    die "HAProxy refused its config: $(cat "$WORK/haproxy-check.log")"
"${SERVE_PIN[@]}" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_http "$HAPROXY_PORT" "$HAPROXY_PID" "$WORK/haproxy.log" 15

# ----------------------------------------------------------------- check the proxies are equivalent
for target in upstream:$UPSTREAM_PORT joinshield:$SHIELD_PORT nginx:$NGINX_PORT haproxy:$HAPROXY_PORT; do
    name=${target%%:*} port=${target##*:}
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$GUEST_PATH")
    [[ $code == 200 ]] || die "$name answered $code to GET $GUEST_PATH"
done
for target in joinshield:$SHIELD_PORT nginx:$NGINX_PORT haproxy:$HAPROXY_PORT; do
    name=${target%%:*} port=${target##*:}
    seen=$(curl -s -D "$WORK/$name.head" --max-time 5 -H 'X-Forwarded-For: 192.0.2.7, 10.9.8.7' \
        -H 'X-Real-IP: 6.6.6.6' "http://127.0.0.1:$port/__standin/echo")
    grep -q '"x-forwarded-for":"10.9.8.7"' <<<"$seen" ||
        die "$name did not forward the client IP as the shield does: $seen"
    grep -q '"x-request-id"' <<<"$seen" || die "$name sent no X-Request-Id upstream: $seen"
    grep -q '"x-real-ip"' <<<"$seen" && die "$name forwarded a client-sent X-Real-IP: $seen"
    grep -qi '^x-request-id:' "$WORK/$name.head" || die "$name returned no X-Request-Id"
done

# ----------------------------------------------------------------------------------------- runs
# run_wrk NAME PORT SECONDS: one wrk run; prints "requests rps p50_ms p99_ms non2xx socket_errors".
run_wrk() {
    local out="$WORK/wrk-$1.txt"
    timeout -k 5 $(($3 + 30)) "${LOAD_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" \
        --timeout 5s --latency -s "$HERE/guests.lua" "http://127.0.0.1:$2$GUEST_PATH" >"$out" 2>&1
    wrk_summary "$out"
}

TARGETS=(direct joinshield nginx haproxy)
declare -A PORT=([direct]=$UPSTREAM_PORT [joinshield]=$SHIELD_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
proxy_pids() {
    case $1 in
        joinshield) echo "$SHIELD_PID" ;;
        nginx) echo "$NGINX_PID $NGINX_WORKER" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        *) echo "" ;;
    esac
}

note "warm-up: 1 s per target"
for t in "${TARGETS[@]}"; do run_wrk "warmup-$t" "${PORT[$t]}" 1 >/dev/null; done
sleep 1 # let the warm-up's connections close before reading idle memory
SHIELD_RSS_IDLE=$(rss_kb "$SHIELD_PID")
NGINX_RSS_IDLE=$(($(rss_kb "$NGINX_PID") + $(rss_kb "$NGINX_WORKER")))
HAPROXY_RSS_IDLE=$(rss_kb "$HAPROXY_PID")

RESULTS="$WORK/results.txt" # round target requests rps p50 p99 non2xx errors proxy_cpu_us upstream_cpu_us
: >"$RESULTS"
note "$ROUNDS rounds of: direct, joinshield, nginx, haproxy; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s each"
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        pids=$(proxy_pids "$t")
        # shellcheck disable=SC2086 # pids is a list
        p0=$(cpu_ticks $pids) u0=$(cpu_ticks "$UPSTREAM_PID")
        read -r req rps p50 p99 bad err <<<"$(run_wrk "$t-$r" "${PORT[$t]}" "$DURATION")"
        # shellcheck disable=SC2086
        p1=$(cpu_ticks $pids) u1=$(cpu_ticks "$UPSTREAM_PID")
        awk -v r="$r" -v t="$t" -v req="$req" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
            -v bad="$bad" -v err="$err" -v pt=$((p1 - p0)) -v ut=$((u1 - u0)) -v hz="$CLK_TCK" \
            -v proxy="$pids" 'BEGIN {
                pc = (proxy == "" || req !~ /^[0-9]+$/ || req == 0) ? "NA" : sprintf("%.1f", pt * 1e6 / hz / req)
                uc = (req !~ /^[0-9]+$/ || req == 0) ? "NA" : sprintf("%.1f", ut * 1e6 / hz / req)
                print r, t, req, rps, p50, p99, bad, err, pc, uc
            }' >>"$RESULTS"
        note "round $r $t: $(tail -n 1 "$RESULTS" | awk '{printf "%s req/s, p50 %s ms, p99 %s ms", $4, $5, $6}')"
    done
done

# ------------------------------------------------------------------------------- upload memory
UPLOAD="$WORK/upload.bin"
head -c 64M /dev/urandom >"$UPLOAD" || die "cannot write the 64 MiB upload file"
# upload NAME PORT PID...: POST the file through a proxy, sampling the summed VmRSS of the PIDs
# every 50 ms; prints "status before_kb max_kb after_kb samples seconds".
upload() {
    local name=$1 port=$2
    shift 2
    local before max now samples=0 pid
    before=0
    for pid in "$@"; do before=$((before + $(rss_kb "$pid"))); done
    max=$before
    curl -s -o "$WORK/upload-$name.out" -w '%{http_code} %{time_total}' --max-time 60 \
        -H 'Content-Type: application/octet-stream' --data-binary "@$UPLOAD" \
        "http://127.0.0.1:$port/api/v1/events/load-000001/photos" >"$WORK/upload-$name.status" &
    local curl_pid=$!
    while kill -0 "$curl_pid" 2>/dev/null; do
        now=0
        for pid in "$@"; do now=$((now + $(rss_kb "$pid"))); done
        ((now > max)) && max=$now
        samples=$((samples + 1))
        sleep 0.05
    done
    wait "$curl_pid"
    now=0
    for pid in "$@"; do now=$((now + $(rss_kb "$pid"))); done
    ((now > max)) && max=$now
    read -r status secs <"$WORK/upload-$name.status"
    echo "$status $before $max $now $samples $secs"
}
note "64 MiB upload through each proxy"
read -r SU_STATUS SU_BEFORE SU_MAX SU_AFTER SU_SAMPLES SU_SECS <<<"$(upload joinshield "$SHIELD_PORT" "$SHIELD_PID")"
read -r NU_STATUS NU_BEFORE NU_MAX NU_AFTER NU_SAMPLES NU_SECS <<<"$(upload nginx "$NGINX_PORT" "$NGINX_PID" "$NGINX_WORKER")"
read -r HU_STATUS HU_BEFORE HU_MAX HU_AFTER HU_SAMPLES HU_SECS <<<"$(upload haproxy "$HAPROXY_PORT" "$HAPROXY_PID")"

# ------------------------------------------------------------------------------------------ report
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# col TARGET FIELD: that field of every round of TARGET (numbers only).
col() { awk -v t="$1" -v f="$2" '$2 == t && $f ~ /^[0-9.]+$/ {print $f}' "$RESULTS"; }
# ratio_col A B FIELD: per-round A/B of FIELD.
ratio_col() {
    awk -v a="$1" -v b="$2" -v f="$3" '
        $f ~ /^[0-9.]+$/ { v[$1, $2] = $f; rounds[$1] = 1 }
        END { for (r in rounds) if (((r, a) in v) && ((r, b) in v) && v[r, b] > 0) print v[r, a] / v[r, b] }' "$RESULTS"
}
fmt() { [[ $1 == NA ]] && echo NA || awk -v x="$1" -v d="${2:-2}" 'BEGIN {printf "%.*f", d, x}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

echo
echo "joinshield load benchmark: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(uname -sr)"
echo "$(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | head -n 1 | awk '{print $3}'), $("$BIN" --version 2>/dev/null); $PINNING"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s benches/load/guests.lua, $ROUNDS interleaved rounds"
echo
echo "Per round (CPU µs/req: the proxy's own user+system time per request; upstream's alongside):"
echo
echo "| round | target | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU µs/req | upstream CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, ($9 == "NA" ? "–" : $9), $10}' "$RESULTS"
echo
echo "Medians over rounds; ratios are the median of the per-round ratios (each round's targets ran back to back):"
echo
echo "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | req/s ÷ direct | p50 ÷ direct | p99 ÷ direct |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
    cpu=$(col "$t" 9 | median)
    [[ $t == direct ]] && cpu="–" || cpu=$(fmt "$cpu" 1)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" \
        "$(fmt "$(col "$t" 4 | median)" 0)" "$(fmt "$(col "$t" 5 | median)" 3)" "$(fmt "$(col "$t" 6 | median)" 3)" \
        "$cpu" \
        "$(fmt "$(ratio_col "$t" direct 4 | median)")" "$(fmt "$(ratio_col "$t" direct 5 | median)")" \
        "$(fmt "$(ratio_col "$t" direct 6 | median)")"
done
for base in nginx haproxy; do
    printf '| **joinshield ÷ %s** | %s | %s | %s | %s | | | |\n' "$base" \
        "$(fmt "$(ratio_col joinshield "$base" 4 | median)")" "$(fmt "$(ratio_col joinshield "$base" 5 | median)")" \
        "$(fmt "$(ratio_col joinshield "$base" 6 | median)")" "$(fmt "$(ratio_col joinshield "$base" 9 | median)")"
done
echo
echo "Memory (VmRSS):"
echo
echo "| | joinshield | nginx (master + worker) | haproxy |"
echo "|---|---|---|---|"
echo "| right after startup | $(mib "$SHIELD_RSS_START") | | |"
echo "| idle after a warm-up | $(mib "$SHIELD_RSS_IDLE") | $(mib "$NGINX_RSS_IDLE") | $(mib "$HAPROXY_RSS_IDLE") |"
echo "| 64 MiB upload: status, time | $SU_STATUS, $(fmt "$SU_SECS") s | $NU_STATUS, $(fmt "$NU_SECS") s | $HU_STATUS, $(fmt "$HU_SECS") s |"
echo "| 64 MiB upload: before → max (samples every 50 ms) | $(mib "$SU_BEFORE") → $(mib "$SU_MAX") ($SU_SAMPLES) | $(mib "$NU_BEFORE") → $(mib "$NU_MAX") ($NU_SAMPLES) | $(mib "$HU_BEFORE") → $(mib "$HU_MAX") ($HU_SAMPLES) |"
echo "| **64 MiB upload: growth (max − before)** | **$(mib $((SU_MAX - SU_BEFORE)))** | **$(mib $((NU_MAX - NU_BEFORE)))** | **$(mib $((HU_MAX - HU_BEFORE)))** |"
echo "| after the upload | $(mib "$SU_AFTER") | $(mib "$NU_AFTER") | $(mib "$HU_AFTER") |"
bad=$(awk '$7 ~ /^[0-9]+$/ && $7 > 0 || $8 ~ /^[0-9]+$/ && $8 > 0 || $3 == "NA"' "$RESULTS" | wc -l)
((bad > 0)) && echo && echo "NOTE: $bad run(s) had non-2xx answers, socket errors or no result; read those rows with care."
[[ $SU_STATUS == 201 && $NU_STATUS == 201 && $HU_STATUS == 201 ]] ||
    echo "NOTE: an upload did not answer 201 (joinshield $SU_STATUS, nginx $NU_STATUS, haproxy $HU_STATUS)."
exit 0
