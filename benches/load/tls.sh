#!/usr/bin/env bash
# Question: what does terminating TLS in joinshield cost, against nginx terminating TLS for the
# same upstream with the same certificate? Three figures per proxy, in one run:
#   - new TLS 1.3 connections per second under concurrency: wrk with "Connection: close", so
#     every request is a new connection and a full handshake (wrk does not resume sessions);
#   - sequential full TLS 1.3 handshakes per second: `openssl s_time -new` (one client, one
#     handshake after the other, no request: the latency of a handshake, not a capacity);
#   - keep-alive HTTPS requests per second: wrk over persistent connections (the cost of the
#     record layer on a forwarded request once the handshake is paid).
# Baseline: nginx, one worker, TLS 1.2/1.3 with the same certificate (ECDSA P-256) and the same
# key-exchange groups as rustls/ring (X25519, P-256, P-384), as a keep-alive reverse proxy of
# the same stand-in upstream. Both proxies on one core, the load generator on another. The
# keep-alive figure is goal 5 of the performance issue (HTTPS pass-through >= 1.0x nginx ssl).
#
# Usage, from the repository root:   benches/load/tls.sh
# Knobs (environment):  BENCH_DURATION  seconds per run           (default 5)
#                       BENCH_ROUNDS    interleaved rounds         (default 5)
#                       BENCH_CONNECTIONS  wrk connections         (default 32)
#                       SHIELD_TOML     a TOML fragment merged into joinshield's config (lib.sh
#                                       toml_merge), e.g. the access log once it exists
#                       BASELINE_ACCESS_LOG  1: nginx writes an access log line per request
#
# Everything listens on 127.0.0.1 only. Every run is bounded in time. The script exits non-zero
# only when it cannot set the benchmark up; performance figures never fail it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1

DURATION=${BENCH_DURATION:-5}
DURATION=${DURATION%s}
ROUNDS=${BENCH_ROUNDS:-5}
SHIELD_TOML=${SHIELD_TOML:-}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
GUEST_PATH=/api/v1/events/load-000001

die() {
    echo "tls.sh: setup failed: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }

for v in DURATION ROUNDS CONNECTIONS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for tool in cargo wrk nginx curl openssl ss taskset timeout awk sort; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nginx-light wrk openssl)"
done
nginx -V 2>&1 | grep -q -- --with-http_ssl_module || die "this nginx has no ssl module"

# ------------------------------------------------------------------------------ processes, cleanup
WORK=$(mktemp -d -t joinshield-tls.XXXXXX) || die "mktemp failed"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
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
build_release

# ------------------------------------------------------------------------------ one certificate
make_cert "$WORK"

# ------------------------------------------------------------------------------------------ start
UPSTREAM_PORT=$(free_port) || die "no free port"
SHIELD_PORT=$(free_port) || die "no free port"
SHIELD_TLS_PORT=$(free_port) || die "no free port"
ADMIN_PORT=$(free_port) || die "no free port"
NGINX_TLS_PORT=$(free_port) || die "no free port"

"${SERVE_PIN[@]}" "$BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" "$WORK/upstream.log" 15

cat >"$WORK/template.toml" <<EOF
[server]
listen = "127.0.0.1:$SHIELD_PORT"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
tls_listen = "127.0.0.1:$SHIELD_TLS_PORT"
tls_cert = "fullchain.pem"
tls_key = "privkey.pem"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[client]
trusted_proxies = ["127.0.0.1/32"]
EOF
toml_merge "$WORK/template.toml" "$SHIELD_TOML" >"$WORK/joinshield.toml" || die "SHIELD_TOML could not be merged: $SHIELD_TOML"
"$BIN" check -c "$WORK/joinshield.toml" >"$WORK/check.log" 2>&1 ||
    die "the joinshield config was refused$([[ -n $SHIELD_TOML ]] && echo " (with SHIELD_TOML merged in: a key this binary does not know yet?)"): $(cat "$WORK/check.log")"
"${SERVE_PIN[@]}" "$BIN" run -c "$WORK/joinshield.toml" >"$WORK/joinshield.log" 2>&1 &
SHIELD_PID=$!
PIDS+=("$SHIELD_PID")
wait_https "$SHIELD_TLS_PORT" "$SHIELD_PID" "$WORK/joinshield.log"

mkdir -p "$WORK/nginx" && chmod 755 "$WORK" "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        keepalive_requests 1000000;
        ssl_certificate $WORK/fullchain.pem;
        ssl_certificate_key $WORK/privkey.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;   # rustls/ring's groups, in its order
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
baseline_access_log "$WORK/nginx/nginx.conf" nginx "$WORK/nginx"
nginx -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx-check.log" 2>&1 ||
    die "nginx refused its config: $(cat "$WORK/nginx-check.log")"
"${SERVE_PIN[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_https "$NGINX_TLS_PORT" "$NGINX_PID" "$WORK/nginx.log"
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
[[ -n $NGINX_WORKER ]] || die "nginx has no worker process"

# ------------------------------------------------------------- check both negotiate the same thing
declare -A NEGOTIATED KX
declare -A PORT=([joinshield]=$SHIELD_TLS_PORT [nginx]=$NGINX_TLS_PORT)
TARGETS=(joinshield nginx)
for t in "${TARGETS[@]}"; do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://127.0.0.1:${PORT[$t]}$GUEST_PATH")
    [[ $code == 200 ]] || die "$t answered $code to GET $GUEST_PATH over HTTPS"
    proto=$(curl -sk --max-time 5 "https://127.0.0.1:${PORT[$t]}/__standin/echo")
    grep -q '"x-forwarded-proto":"https"' <<<"$proto" || die "$t did not forward X-Forwarded-Proto https: $proto"
    openssl s_client -connect "127.0.0.1:${PORT[$t]}" -tls1_3 </dev/null >"$WORK/sclient-$t.txt" 2>&1
    NEGOTIATED[$t]=$(awk '/^New, / {sub(/^New, /, ""); sub(/Cipher is /, ""); print; exit}' "$WORK/sclient-$t.txt")
    KX[$t]=$(awk -F': ' '/^(Server Temp Key|Peer Temp Key)/ {print $2; exit}' "$WORK/sclient-$t.txt")
    [[ -n ${NEGOTIATED[$t]} ]] || die "$t: no TLS 1.3 handshake: $(tail -n 5 "$WORK/sclient-$t.txt")"
done

# ----------------------------------------------------------------------------------------- runs
# run_wrk NAME PORT SECONDS [HEADER]: one wrk run; prints "requests rps p50_ms p99_ms non2xx errors".
run_wrk() {
    local out="$WORK/wrk-$1.txt" extra=()
    [[ -n ${4:-} ]] && extra=(-H "$4")
    timeout -k 5 $(($3 + 30)) "${LOAD_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$3s" --timeout 5s --latency \
        "${extra[@]}" "https://127.0.0.1:$2$GUEST_PATH" >"$out" 2>&1
    wrk_summary "$out"
}

# run_stime NAME PORT SECONDS: sequential full TLS 1.3 handshakes; prints "handshakes per_second".
run_stime() {
    local out="$WORK/stime-$1.txt" t0 t1 n
    t0=$(date +%s.%N)
    timeout -k 5 $(($3 + 30)) "${LOAD_PIN[@]}" openssl s_time -connect "127.0.0.1:$2" -new -tls1_3 \
        -time "$3" >"$out" 2>&1
    t1=$(date +%s.%N)
    # "N connections in T real seconds": N over the measured wall time (s_time's own is whole seconds).
    n=$(awk '/connections in .* real seconds/ {print $1; exit}' "$out")
    [[ $n =~ ^[0-9]+$ ]] || { echo "NA NA"; return; }
    awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%d %.0f\n", n, n / (b - a)}'
}

proxy_pids() { [[ $1 == joinshield ]] && echo "$SHIELD_PID" || echo "$NGINX_PID $NGINX_WORKER"; }

note "warm-up: 1 s per target"
for t in "${TARGETS[@]}"; do run_wrk "warmup-$t" "${PORT[$t]}" 1 >/dev/null; done

RESULTS="$WORK/results.txt" # round mode target count rate p50 p99 non2xx errors proxy_cpu_us_per_unit
: >"$RESULTS"
note "$ROUNDS rounds of: keep-alive, new connections (wrk, Connection: close), s_time -new; ${DURATION}s each, joinshield then nginx"
for r in $(seq "$ROUNDS"); do
    for mode in keepalive close stime; do
        for t in "${TARGETS[@]}"; do
            pids=$(proxy_pids "$t")
            # shellcheck disable=SC2086 # pids is a list
            p0=$(cpu_ticks $pids)
            case $mode in
                keepalive) read -r n rate p50 p99 bad err <<<"$(run_wrk "$t-$mode-$r" "${PORT[$t]}" "$DURATION")" ;;
                close) read -r n rate p50 p99 bad err <<<"$(run_wrk "$t-$mode-$r" "${PORT[$t]}" "$DURATION" "Connection: close")" ;;
                stime) read -r n rate <<<"$(run_stime "$t-$r" "${PORT[$t]}" "$DURATION")"
                    p50=NA p99=NA bad=0 err=0 ;;
            esac
            # shellcheck disable=SC2086
            p1=$(cpu_ticks $pids)
            awk -v r="$r" -v m="$mode" -v t="$t" -v n="$n" -v rate="$rate" -v p50="$p50" -v p99="$p99" \
                -v bad="$bad" -v err="$err" -v pt=$((p1 - p0)) -v hz="$CLK_TCK" 'BEGIN {
                    pc = (n !~ /^[0-9]+$/ || n == 0) ? "NA" : sprintf("%.1f", pt * 1e6 / hz / n)
                    print r, m, t, n, rate, p50, p99, bad, err, pc
                }' >>"$RESULTS"
            note "round $r $mode $t: $(tail -n 1 "$RESULTS" | awk '{printf "%s/s, proxy CPU %s µs each", $5, $10}')"
        done
    done
done

# ------------------------------------------------------------------------------------------ report
# col MODE TARGET FIELD: that field of every round (numbers only).
col() { awk -v m="$1" -v t="$2" -v f="$3" '$2 == m && $3 == t && $f ~ /^[0-9.]+$/ {print $f}' "$RESULTS"; }
# ratio_col MODE FIELD: per-round joinshield/nginx of FIELD.
ratio_col() {
    awk -v m="$1" -v f="$2" '
        $2 == m && $f ~ /^[0-9.]+$/ { v[$1, $3] = $f; rounds[$1] = 1 }
        END { for (r in rounds) if (((r, "joinshield") in v) && ((r, "nginx") in v) && v[r, "nginx"] > 0) print r, v[r, "joinshield"] / v[r, "nginx"] }' "$RESULTS" |
        sort -n | awk '{print $2}'
}
# in_rounds MODE FIELD: the per-round ratios in round order.
in_rounds() { ratio_col "$1" "$2" | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $1} END {if (NR == 0) printf "–"}'; }

echo
echo "joinshield TLS benchmark: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(uname -sr)"
echo "$(nginx -v 2>&1 | sed 's/^nginx version: //') with $(openssl version | cut -d' ' -f1-2), $("$BIN" --version 2>/dev/null) with rustls/ring; $PINNING"
echo "certificate: ECDSA P-256, self-signed; negotiated: joinshield ${NEGOTIATED[joinshield]} (${KX[joinshield]:-?}), nginx ${NEGOTIATED[nginx]} (${KX[nginx]:-?})"
echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s; openssl s_time -new -tls1_3 -time $DURATION; $ROUNDS interleaved rounds"
echo "joinshield config fragment (SHIELD_TOML): $([[ -n $SHIELD_TOML ]] && tr '\n' ' ' <<<"$SHIELD_TOML" || echo none); nginx access log: $([[ ${BASELINE_ACCESS_LOG:-0} == 1 ]] && echo on || echo off)"
echo
echo "Per round (proxy CPU: the proxy's user+system time per request, per connection or per handshake):"
echo
echo "| round | mode | target | count | per second | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU µs each |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, ($6 == "NA" ? "–" : $6), ($7 == "NA" ? "–" : $7), $8, $9, $10}' "$RESULTS"
echo
echo "Medians over rounds; joinshield ÷ nginx is the median of the per-round ratios:"
echo
echo "| mode | joinshield /s | nginx /s | joinshield ÷ nginx (rate) | joinshield CPU µs | nginx CPU µs | joinshield ÷ nginx (CPU) | joinshield p99 ms | nginx p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in keepalive close stime; do
    case $mode in
        keepalive) label="keep-alive HTTPS requests" ;;
        close) label="new TLS 1.3 connections, one request each" ;;
        stime) label="sequential TLS 1.3 handshakes (s_time -new)" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" \
        "$(fmt "$(col $mode joinshield 5 | median)" 0)" "$(fmt "$(col $mode nginx 5 | median)" 0)" \
        "$(fmt "$(ratio_col $mode 5 | median)")" \
        "$(fmt "$(col $mode joinshield 10 | median)" 1)" "$(fmt "$(col $mode nginx 10 | median)" 1)" \
        "$(fmt "$(ratio_col $mode 10 | median)")" \
        "$(fmt "$(col $mode joinshield 7 | median)" 3)" "$(fmt "$(col $mode nginx 7 | median)" 3)"
done
echo
m=$(ratio_col keepalive 5 | median)
k=$(ratio_col keepalive 10 | median)
echo "Goal 5 of the performance issue, HTTPS pass-through (keep-alive) joinshield ÷ nginx ssl: **$(fmt "$m")** in req/s (rounds: $(in_rounds keepalive 5); target ≥ 1.0: $(verdict "$m" ">=" 1.0)), $(fmt "$k") in CPU per request (rounds: $(in_rounds keepalive 10))"
bad=$(awk '$8 ~ /^[0-9]+$/ && $8 > 0 || $9 ~ /^[0-9]+$/ && $9 > 0 || $4 == "NA"' "$RESULTS" | wc -l)
((bad > 0)) && echo && echo "NOTE: $bad run(s) had non-2xx answers, socket errors or no result; read those rows with care."
exit 0
