#!/usr/bin/env bash
# Question: what does putting joinshield in front of the guest API cost a forwarded request, in
# throughput, latency, proxy CPU and memory, on one machine? (Goals 1, 4 and 5 of the
# performance issue: pass-through req/s >= 1.2x nginx-with-limits, CPU per request <= 0.85x
# nginx's, p99 <= nginx's, idle RSS < 20 MiB; all of it also with the access log on.)
# Baselines, all against the same stand-in upstream, in interleaved rounds:
#   - direct: the stand-in hit without a proxy (the cost of no proxy at all);
#   - bare: benches/bare_proxy.rs, the thinnest hyper 1 HTTP/1.1 reverse proxy with a pooled
#     keep-alive client and no features (the floor: what hyper alone costs);
#   - nginx and HAProxy set up to do the same job as joinshield: keep-alive reverse proxies of
#     the same upstream with the same forwarding headers and the same two rate limits, per
#     client IP and per join token (nginx limit_req, HAProxy stick tables).
# Ratios are the median of the per-round ratios (each round runs every target back to back);
# every round's figures are listed too.
#
# Usage, from the repository root:   benches/load/run.sh
# Knobs (environment):  BENCH_DURATION     seconds per wrk run                 (default 5)
#                       BENCH_ROUNDS       interleaved rounds                  (default 5)
#                       BENCH_CONNECTIONS  wrk connections                     (default 64)
#                       BENCH_THREADS      wrk threads                         (default 1)
#                       BENCH_UPLOAD       1: also the 64 MiB upload memory run (default 1)
#                       SHIELD_TOML        a TOML fragment merged into joinshield's config
#                                          (lib.sh toml_merge: keys under a [table] header go
#                                          into that table), e.g. its access log once it exists:
#                                          SHIELD_TOML=$'[log]\naccess = "json"'. A key the
#                                          binary does not know is refused by `joinshield
#                                          check`, and the script stops saying so.
#                       BASELINE_ACCESS_LOG  1: nginx and HAProxy write an access log line per
#                                          request (nginx "combined" to a file, HAProxy httplog
#                                          to its stdout); give it with the access log fragment
#                                          above for goal 5. The report counts every target's
#                                          log lines per request, so a log that is not on shows.
#
# Everything listens on 127.0.0.1 only. Every run is bounded in time. The script exits non-zero
# only when it cannot set the benchmark up; performance figures never fail it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=benches/load

DURATION=${BENCH_DURATION:-5}
DURATION=${DURATION%s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
UPLOAD=${BENCH_UPLOAD:-1}
SHIELD_TOML=${SHIELD_TOML:-}
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
for tool in cargo wrk nginx haproxy curl ss taskset timeout awk sort find; do
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
    # BENCH_KEEP=1 keeps the work folder (configs, every wrk output, the logs) to look into.
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"

# ------------------------------------------------------------------------------------------ build
build_release bare_proxy

# ------------------------------------------------------------------------------------------ start
UPSTREAM_PORT=$(free_port) || die "no free port"
SHIELD_PORT=$(free_port) || die "no free port"
ADMIN_PORT=$(free_port) || die "no free port"
NGINX_PORT=$(free_port) || die "no free port"
HAPROXY_PORT=$(free_port) || die "no free port"
BARE_PORT=$(free_port) || die "no free port"
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

"${SERVE_PIN[@]}" "$BARE_BIN" --listen "127.0.0.1:$BARE_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_http "$BARE_PORT" "$BARE_PID" "$WORK/bare.log" 15

# The shield's folder holds its config, its stdout and whatever log files SHIELD_TOML names
# (relative paths are relative to the config's folder): log_lines counts them all.
mkdir -p "$WORK/shield"
fill "$HERE/joinshield.toml.in" >"$WORK/shield/template.toml"
toml_merge "$WORK/shield/template.toml" "$SHIELD_TOML" >"$WORK/shield/joinshield.toml" ||
    die "SHIELD_TOML could not be merged: $SHIELD_TOML"
if ! "$BIN" check -c "$WORK/shield/joinshield.toml" >"$WORK/check.log" 2>&1; then
    [[ -n $SHIELD_TOML ]] && die "this joinshield refuses its config with SHIELD_TOML merged in (a key it does not know yet?):
$(cat "$WORK/check.log")"
    die "the joinshield config was refused: $(cat "$WORK/check.log")"
fi
"${SERVE_PIN[@]}" "$BIN" run -c "$WORK/shield/joinshield.toml" >"$WORK/shield/stdout.log" 2>&1 &
SHIELD_PID=$!
PIDS+=("$SHIELD_PID")
wait_http "$SHIELD_PORT" "$SHIELD_PID" "$WORK/shield/stdout.log" 15
SHIELD_RSS_START=$(rss_kb "$SHIELD_PID")

mkdir -p "$WORK/nginx" && chmod 755 "$WORK" "$WORK/nginx"
# nginx writes rates as r/m.
fill "$HERE/nginx.conf.in" | sed -e 's#\([0-9]\)/min;#\1r/m;#g' >"$WORK/nginx/nginx.conf"
baseline_access_log "$WORK/nginx/nginx.conf" nginx "$WORK/nginx"
nginx -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx-check.log" 2>&1 ||
    die "nginx refused its config: $(cat "$WORK/nginx-check.log")"
"${SERVE_PIN[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "$NGINX_PORT" "$NGINX_PID" "$WORK/nginx.log" 15
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
[[ -n $NGINX_WORKER ]] || die "nginx has no worker process"

mkdir -p "$WORK/haproxy"
fill "$HERE/haproxy.cfg.in" >"$WORK/haproxy/haproxy.cfg"
baseline_access_log "$WORK/haproxy/haproxy.cfg" haproxy
haproxy -c -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
    die "HAProxy refused its config: $(cat "$WORK/haproxy-check.log")"
"${SERVE_PIN[@]}" haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_http "$HAPROXY_PORT" "$HAPROXY_PID" "$WORK/haproxy/haproxy.log" 15

# ----------------------------------------------------------------- check the proxies are equivalent
for target in upstream:$UPSTREAM_PORT bare:$BARE_PORT joinshield:$SHIELD_PORT nginx:$NGINX_PORT haproxy:$HAPROXY_PORT; do
    name=${target%%:*} port=${target##*:}
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$GUEST_PATH")
    [[ $code == 200 ]] || die "$name answered $code to GET $GUEST_PATH"
done
# The bare proxy is the floor: it forwards the request as it came, so it is left out here.
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

TARGETS=(direct bare joinshield nginx haproxy)
declare -A PORT=([direct]=$UPSTREAM_PORT [bare]=$BARE_PORT [joinshield]=$SHIELD_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
proxy_pids() {
    case $1 in
        bare) echo "$BARE_PID" ;;
        joinshield) echo "$SHIELD_PID" ;;
        nginx) echo "$NGINX_PID $NGINX_WORKER" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        *) echo "" ;;
    esac
}
# logged TARGET: lines its logs hold so far ("NA" for targets without logs).
logged() {
    case $1 in
        joinshield) log_lines "$WORK/shield" ;;
        nginx) log_lines "$WORK/nginx" ;;
        haproxy) log_lines "$WORK/haproxy" ;;
        *) echo NA ;;
    esac
}

note "warm-up: 1 s per target"
for t in "${TARGETS[@]}"; do run_wrk "warmup-$t" "${PORT[$t]}" 1 >/dev/null; done
sleep 1 # let the warm-up's connections close before reading idle memory
SHIELD_RSS_IDLE=$(rss_kb "$SHIELD_PID")
BARE_RSS_IDLE=$(rss_kb "$BARE_PID")
NGINX_RSS_IDLE=$(($(rss_kb "$NGINX_PID") + $(rss_kb "$NGINX_WORKER")))
HAPROXY_RSS_IDLE=$(rss_kb "$HAPROXY_PID")

# round target requests rps p50 p99 non2xx errors proxy_cpu_us upstream_cpu_us log_lines_per_req
RESULTS="$WORK/results.txt"
: >"$RESULTS"
note "$ROUNDS rounds of: ${TARGETS[*]}; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s each"
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        pids=$(proxy_pids "$t")
        l0=$(logged "$t")
        # shellcheck disable=SC2086 # pids is a list
        p0=$(cpu_ticks $pids) u0=$(cpu_ticks "$UPSTREAM_PID")
        read -r req rps p50 p99 bad err <<<"$(run_wrk "$t-$r" "${PORT[$t]}" "$DURATION")"
        # shellcheck disable=SC2086
        p1=$(cpu_ticks $pids) u1=$(cpu_ticks "$UPSTREAM_PID")
        l1=$(logged "$t")
        awk -v r="$r" -v t="$t" -v req="$req" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
            -v bad="$bad" -v err="$err" -v pt=$((p1 - p0)) -v ut=$((u1 - u0)) -v hz="$CLK_TCK" \
            -v proxy="$pids" -v l0="$l0" -v l1="$l1" 'BEGIN {
                ok = req ~ /^[0-9]+$/ && req > 0
                pc = (proxy == "" || !ok) ? "NA" : sprintf("%.1f", pt * 1e6 / hz / req)
                uc = !ok ? "NA" : sprintf("%.1f", ut * 1e6 / hz / req)
                ll = (l0 == "NA" || !ok) ? "NA" : sprintf("%.2f", (l1 - l0) / req)
                print r, t, req, rps, p50, p99, bad, err, pc, uc, ll
            }' >>"$RESULTS"
        note "round $r $t: $(tail -n 1 "$RESULTS" | awk '{printf "%s req/s, p50 %s ms, p99 %s ms, CPU %s µs/req", $4, $5, $6, $9}')"
    done
done

# ------------------------------------------------------------------------------- upload memory
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
        -H 'Content-Type: application/octet-stream' --data-binary "@$UPLOAD_FILE" \
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
if [[ $UPLOAD == 1 ]]; then
    UPLOAD_FILE="$WORK/upload.bin"
    head -c 64M /dev/urandom >"$UPLOAD_FILE" || die "cannot write the 64 MiB upload file"
    note "64 MiB upload through each proxy"
    read -r BU_STATUS BU_BEFORE BU_MAX BU_AFTER BU_SAMPLES BU_SECS <<<"$(upload bare "$BARE_PORT" "$BARE_PID")"
    read -r SU_STATUS SU_BEFORE SU_MAX SU_AFTER SU_SAMPLES SU_SECS <<<"$(upload joinshield "$SHIELD_PORT" "$SHIELD_PID")"
    read -r NU_STATUS NU_BEFORE NU_MAX NU_AFTER NU_SAMPLES NU_SECS <<<"$(upload nginx "$NGINX_PORT" "$NGINX_PID" "$NGINX_WORKER")"
    read -r HU_STATUS HU_BEFORE HU_MAX HU_AFTER HU_SAMPLES HU_SECS <<<"$(upload haproxy "$HAPROXY_PORT" "$HAPROXY_PID")"
fi

# ------------------------------------------------------------------------------------------ report
# col TARGET FIELD: that field of every round of TARGET (numbers only).
col() { awk -v t="$1" -v f="$2" '$2 == t && $f ~ /^[0-9.]+$/ {print $f}' "$RESULTS"; }
# ratios A B FIELD: "round A/B" of FIELD for every round where both are numbers, in round order.
ratios() {
    awk -v a="$1" -v b="$2" -v f="$3" '
        $f ~ /^[0-9.]+$/ { v[$1, $2] = $f; rounds[$1] = 1 }
        END { for (r in rounds) if (((r, a) in v) && ((r, b) in v) && v[r, b] > 0) print r, v[r, a] / v[r, b] }' "$RESULTS" |
        sort -n
}
med_ratio() { ratios "$@" | awk '{print $2}' | median; }
list_ratio() { ratios "$@" | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $2} END {if (NR == 0) printf "–"}'; }
# ratio_in_round ROUND A B FIELD
ratio_in_round() { ratios "$2" "$3" "$4" | awk -v r="$1" '$1 == r {printf "%.2f", $2; found = 1} END {if (!found) printf "–"}'; }

echo
echo "joinshield load benchmark: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(uname -sr)"
echo "$(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | head -n 1 | awk '{print $3}'), $("$BIN" --version 2>/dev/null), bare hyper proxy (benches/bare_proxy.rs); $PINNING"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s benches/load/guests.lua, $ROUNDS interleaved rounds"
if [[ -n $SHIELD_TOML ]]; then
    echo "joinshield config fragment (SHIELD_TOML): $(tr '\n' ' ' <<<"$SHIELD_TOML")"
else
    echo "joinshield config fragment (SHIELD_TOML): none (the shipped logging: denials only, no access log)"
fi
echo "nginx and HAProxy access logs: $([[ ${BASELINE_ACCESS_LOG:-0} == 1 ]] && echo "on (BASELINE_ACCESS_LOG=1)" || echo off)"
echo
echo "Per round (CPU µs/req: the proxy's own user+system time per request; upstream's alongside; log lines/req: lines its logs gained per request):"
echo
echo "| round | target | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU µs/req | upstream CPU µs/req | log lines/req |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, ($9 == "NA" ? "–" : $9), $10, ($11 == "NA" ? "–" : $11)}' "$RESULTS"
echo
echo "Per-round ratios (joinshield ÷ each baseline; the bare proxy ÷ nginx is the room hyper alone leaves):"
echo
echo "| round | ÷ nginx req/s | ÷ nginx CPU/req | ÷ nginx p99 | ÷ HAProxy req/s | ÷ HAProxy CPU/req | ÷ HAProxy p99 | ÷ bare req/s | ÷ bare CPU/req | ÷ bare p99 | bare ÷ nginx req/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    printf '| %s |' "$r"
    for base in nginx haproxy bare; do
        printf ' %s | %s | %s |' "$(ratio_in_round "$r" joinshield $base 4)" "$(ratio_in_round "$r" joinshield $base 9)" \
            "$(ratio_in_round "$r" joinshield $base 6)"
    done
    printf ' %s |\n' "$(ratio_in_round "$r" bare nginx 4)"
done
echo
echo "Medians over rounds; ratios are the median of the per-round ratios:"
echo
echo "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | req/s ÷ direct | p50 ÷ direct | p99 ÷ direct |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
    cpu=$(col "$t" 9 | median)
    [[ $t == direct ]] && cpu="–" || cpu=$(fmt "$cpu" 1)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" \
        "$(fmt "$(col "$t" 4 | median)" 0)" "$(fmt "$(col "$t" 5 | median)" 3)" "$(fmt "$(col "$t" 6 | median)" 3)" \
        "$cpu" "$(fmt "$(med_ratio "$t" direct 4)")" "$(fmt "$(med_ratio "$t" direct 5)")" "$(fmt "$(med_ratio "$t" direct 6)")"
done
for base in nginx haproxy bare; do
    printf '| **joinshield ÷ %s** | %s | %s | %s | %s | | | |\n' "$base" \
        "$(fmt "$(med_ratio joinshield "$base" 4)")" "$(fmt "$(med_ratio joinshield "$base" 5)")" \
        "$(fmt "$(med_ratio joinshield "$base" 6)")" "$(fmt "$(med_ratio joinshield "$base" 9)")"
done
printf '| bare ÷ nginx | %s | %s | %s | %s | | | |\n' "$(fmt "$(med_ratio bare nginx 4)")" \
    "$(fmt "$(med_ratio bare nginx 5)")" "$(fmt "$(med_ratio bare nginx 6)")" "$(fmt "$(med_ratio bare nginx 9)")"
echo
echo "Goals of the performance issue measured here (median of the per-round ratios; the rounds in order):"
echo
echo "| goal | median | per round | target | |"
echo "|---|---|---|---|---|"
goal() { # LABEL A B FIELD OP TARGET
    local m
    m=$(med_ratio "$2" "$3" "$4")
    printf '| %s | %s | %s | %s %s | %s |\n' "$1" "$(fmt "$m")" "$(list_ratio "$2" "$3" "$4")" "$(sed -e "s/>=/≥/" -e "s/<=/≤/" <<<"$5")" "$6" "$(verdict "$m" "$5" "$6")"
}
goal "1. pass-through req/s, joinshield ÷ nginx" joinshield nginx 4 ">=" 1.2
goal "1. proxy CPU per request, joinshield ÷ nginx" joinshield nginx 9 "<=" 0.85
goal "1. p99, joinshield ÷ nginx" joinshield nginx 6 "<=" 1.0
goal "1. pass-through req/s, joinshield ÷ HAProxy" joinshield haproxy 4 ">=" 1.2
goal "1. proxy CPU per request, joinshield ÷ HAProxy" joinshield haproxy 9 "<=" 0.85
goal "1. p99, joinshield ÷ HAProxy" joinshield haproxy 6 "<=" 1.0
printf '| 4. idle RSS after a warm-up, joinshield | %s | | < 20 MiB | %s |\n' "$(mib "$SHIELD_RSS_IDLE")" \
    "$(verdict "$(awk -v k="$SHIELD_RSS_IDLE" 'BEGIN {printf "%.3f", k / 1024}')" "<" 20)"
printf '| floor: joinshield ÷ bare hyper proxy, req/s and CPU per request | %s and %s | %s and %s | – | |\n' \
    "$(fmt "$(med_ratio joinshield bare 4)")" "$(fmt "$(med_ratio joinshield bare 9)")" \
    "$(list_ratio joinshield bare 4)" "$(list_ratio joinshield bare 9)"
printf '| 5. the above with the access log on | %s | | as above | |\n' \
    "$([[ -n $SHIELD_TOML && ${BASELINE_ACCESS_LOG:-0} == 1 ]] && echo "this run" || echo "not this run (SHIELD_TOML with the access log and BASELINE_ACCESS_LOG=1)")"
echo
echo "Log lines per request during the rounds (median): joinshield $(fmt "$(col joinshield 11 | median)"), nginx $(fmt "$(col nginx 11 | median)"), HAProxy $(fmt "$(col haproxy 11 | median)")"
echo
echo "Memory (VmRSS):"
echo
echo "| | joinshield | bare | nginx (master + worker) | haproxy |"
echo "|---|---|---|---|---|"
echo "| right after startup | $(mib "$SHIELD_RSS_START") | | | |"
echo "| idle after a warm-up | $(mib "$SHIELD_RSS_IDLE") | $(mib "$BARE_RSS_IDLE") | $(mib "$NGINX_RSS_IDLE") | $(mib "$HAPROXY_RSS_IDLE") |"
if [[ $UPLOAD == 1 ]]; then
    echo "| 64 MiB upload: status, time | $SU_STATUS, $(fmt "$SU_SECS") s | $BU_STATUS, $(fmt "$BU_SECS") s | $NU_STATUS, $(fmt "$NU_SECS") s | $HU_STATUS, $(fmt "$HU_SECS") s |"
    echo "| 64 MiB upload: before → max (samples every 50 ms) | $(mib "$SU_BEFORE") → $(mib "$SU_MAX") ($SU_SAMPLES) | $(mib "$BU_BEFORE") → $(mib "$BU_MAX") ($BU_SAMPLES) | $(mib "$NU_BEFORE") → $(mib "$NU_MAX") ($NU_SAMPLES) | $(mib "$HU_BEFORE") → $(mib "$HU_MAX") ($HU_SAMPLES) |"
    echo "| **64 MiB upload: growth (max − before)** | **$(mib $((SU_MAX - SU_BEFORE)))** | $(mib $((BU_MAX - BU_BEFORE))) | **$(mib $((NU_MAX - NU_BEFORE)))** | **$(mib $((HU_MAX - HU_BEFORE)))** |"
    echo "| after the upload | $(mib "$SU_AFTER") | $(mib "$BU_AFTER") | $(mib "$NU_AFTER") | $(mib "$HU_AFTER") |"
fi
bad=$(awk '$7 ~ /^[0-9]+$/ && $7 > 0 || $8 ~ /^[0-9]+$/ && $8 > 0 || $3 == "NA"' "$RESULTS" | wc -l)
((bad > 0)) && echo && echo "NOTE: $bad run(s) had non-2xx answers, socket errors or no result; read those rows with care."
if [[ $UPLOAD == 1 ]]; then
    [[ $SU_STATUS == 201 && $NU_STATUS == 201 && $HU_STATUS == 201 && $BU_STATUS == 201 ]] ||
        echo "NOTE: an upload did not answer 201 (joinshield $SU_STATUS, bare $BU_STATUS, nginx $NU_STATUS, haproxy $HU_STATUS)."
fi
exit 0
