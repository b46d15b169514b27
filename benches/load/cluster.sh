#!/usr/bin/env bash
# Question: what does enforcing the limits across replicas (shared = true, through Redis) cost one
# replica's throughput and latency, and what happens to latency when Redis stops under load?
# Baseline: the same replica with the same limits kept per replica (no shared limit); and, for
# the outage, the same shared replica under the same load with Redis running.
#
# Usage, from the repository root:   benches/load/cluster.sh
# Knobs (environment):  BENCH_DURATION  seconds per wrk run          (default 5)
#                       BENCH_ROUNDS    interleaved local/shared rounds (default 3)
#                       BENCH_CONNECTIONS  wrk connections           (default 32)
#                       BENCH_OUTAGE    seconds of each outage run   (default 10; Redis stops at 1/3)
#
# Three replicas share one redis-server: LOCAL (in the cluster, limits per replica), SHARED-A
# (measured) and SHARED-B (idle, but in the cluster). Two workloads: "spread" (10,000 client
# addresses and tokens, guests.lua: most keys are cold, so most requests need a lease) and "hot"
# (16 addresses and tokens: leases are reused). The limits are sized so that nothing is denied:
# the figures are the cost of asking, not of refusing. Everything listens on 127.0.0.1 only and
# every run is bounded in time; the script fails only when it cannot set the benchmark up.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=benches/load

DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
OUTAGE=${BENCH_OUTAGE:-10}
THREADS=1
GUEST_PATH=/api/v1/events/load-000001
TOKEN=bench-admin

die() {
    echo "cluster.sh: setup failed: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }

for v in DURATION ROUNDS CONNECTIONS OUTAGE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for tool in cargo wrk redis-server curl ss taskset timeout awk sort; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y wrk redis-server)"
done

WORK=$(mktemp -d -t joinshield-cluster.XXXXXX) || die "mktemp failed"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"

note "building the release binary"
BUILD_JSON=$(timeout 2400 cargo build --release --message-format=json 2>"$WORK/build.log") ||
    die "cargo build --release failed: $(tail -n 20 "$WORK/build.log")"
BIN=$(grep -o '"executable":"[^"]*/joinshield"' <<<"$BUILD_JSON" | tail -n 1 | cut -d'"' -f4)
[[ -x $BIN ]] || die "cannot find the built joinshield binary"

# ------------------------------------------------------------------------------------------ start
REDIS_PORT=$(free_port) || die "no free port"
start_redis() {
    "${SERVE_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
        [[ $(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT; printf 'PING\r\n' >&3; head -c 5 <&3" 2>/dev/null) == "+PONG" ]] && return 0
        sleep 0.1
    done
    die "redis-server did not come up"
}
start_redis

UPSTREAM_PORT=$(free_port) || die "no free port"
"${SERVE_PIN[@]}" "$BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" "$WORK/upstream.log" 15

declare -A PORT ADMIN PID
# shield NAME SHARED: writes its config and starts it.
shield() {
    local name=$1 shared=$2
    PORT[$name]=$(free_port) || die "no free port"
    ADMIN[$name]=$(free_port) || die "no free port"
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name/joinshield.toml" <<TOML
[server]
listen = "127.0.0.1:${PORT[$name]}"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
state_file = "state.json"

[admin]
listen = "127.0.0.1:${ADMIN[$name]}"
token_env = "BENCH_ADMIN_TOKEN"

[client]
trusted_proxies = ["127.0.0.1/32"]

[[limit]]
name = "guest-ip"
routes = ["events", "gallery", "upload", "gallery_download"]
key = "ip"
rate = "6000/s"
burst = 1000
shared = $shared

[[limit]]
name = "guest-token"
routes = ["events", "gallery", "upload", "gallery_download"]
key = "token"
rate = "6000/s"
burst = 1000
shared = $shared

[enumeration]

[cluster]
redis = "redis://127.0.0.1:$REDIS_PORT/0"
name = "$name"
TOML
    "$BIN" check -c "$WORK/$name/joinshield.toml" >"$WORK/$name/check.log" 2>&1 ||
        die "the $name config was refused: $(cat "$WORK/$name/check.log")"
    BENCH_ADMIN_TOKEN=$TOKEN "${SERVE_PIN[@]}" "$BIN" run -c "$WORK/$name/joinshield.toml" \
        >"$WORK/$name/joinshield.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
    wait_http "${PORT[$name]}" "${PID[$name]}" "$WORK/$name/joinshield.log" 15
}
shield local false
shield shared-a true
shield shared-b true

# state NAME: the replica's cluster state ("connected" or "fallback").
state() {
    curl -s --max-time 2 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${ADMIN[$1]}/admin/status" |
        grep -o '"state":"[a-z]*"' | cut -d'"' -f4
}
wait_connected() {
    local deadline=$((SECONDS + 30)) n
    while ((SECONDS < deadline)); do
        local all=1
        for n in local shared-a shared-b; do [[ $(state "$n") == connected ]] || all=0; done
        ((all)) && return 0
        sleep 0.1
    done
    die "the replicas did not connect to Redis"
}
wait_connected

cat >"$WORK/hot.lua" <<'LUA'
-- 16 client addresses and 16 tokens: every key is hot, leases are reused.
local requests = {}
local n = 16
local i = 0
function init(args)
   i = math.random(0, n - 1)
   for k = 0, n - 1 do
      requests[k] = wrk.format("GET", string.format("/api/v1/events/load-%06d", k),
         { ["X-Forwarded-For"] = string.format("10.0.0.%d", k + 1) })
   end
end
function request()
   local r = requests[i]
   i = (i + 1) % n
   return r
end
LUA

# run_wrk NAME PORT SECONDS SCRIPT: prints "requests rps p50_ms p99_ms non2xx socket_errors".
run_wrk() {
    local out="$WORK/wrk-$1.txt"
    timeout -k 5 $(($3 + 30)) "${LOAD_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" \
        --timeout 5s --latency -s "$4" "http://127.0.0.1:$2$GUEST_PATH" >"$out" 2>&1
    wrk_summary "$out"
}

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:${PORT[shared-a]}$GUEST_PATH")
[[ $code == 200 ]] || die "shared-a answered $code to GET $GUEST_PATH"

note "warm-up: 1 s per replica and workload"
for w in spread hot; do
    script=$HERE/guests.lua
    [[ $w == hot ]] && script=$WORK/hot.lua
    for n in local shared-a; do run_wrk "warmup-$n-$w" "${PORT[$n]}" 1 "$script" >/dev/null; done
done

RESULTS="$WORK/results.txt" # round workload replica requests rps p50 p99 non2xx errors
: >"$RESULTS"
note "$ROUNDS rounds of: local, shared-a per workload; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s each; $PINNING"
for r in $(seq "$ROUNDS"); do
    for w in spread hot; do
        script=$HERE/guests.lua
        [[ $w == hot ]] && script=$WORK/hot.lua
        for n in local shared-a; do
            echo "$r $w $n $(run_wrk "$n-$w-$r" "${PORT[$n]}" "$DURATION" "$script")" >>"$RESULTS"
            note "round $r $w $n: $(tail -n 1 "$RESULTS" | awk '{printf "%s req/s, p50 %s ms, p99 %s ms, non-2xx %s", $5, $6, $7, $8}')"
        done
    done
done

# ------------------------------------------------------------------------------------- outages
# outage NAME SIGNAL: wrk for OUTAGE seconds on shared-a (spread workload); Redis gets SIGNAL a
# third of the way in ("none": no outage, the baseline). Prints the wrk line.
outage() {
    local name=$1 signal=$2
    run_wrk "outage-$name" "${PORT[shared-a]}" "$OUTAGE" "$HERE/guests.lua" >"$WORK/outage-$name.line" &
    local wrk_pid=$!
    if [[ $signal != none ]]; then
        sleep $((OUTAGE / 3))
        kill "-$signal" "$REDIS_PID"
    fi
    wait "$wrk_pid"
    cat "$WORK/outage-$name.line"
}
note "outage runs: ${OUTAGE}s of spread load on shared-a; Redis stopped (SIGSTOP) or killed after $((OUTAGE / 3))s"
read -r OB_REQ OB_RPS OB_P50 OB_P99 OB_BAD OB_ERR <<<"$(outage baseline none)"
note "no outage: $OB_RPS req/s, p99 $OB_P99 ms, non-2xx $OB_BAD"
read -r OS_REQ OS_RPS OS_P50 OS_P99 OS_BAD OS_ERR <<<"$(outage stopped STOP)"
OS_STATE=$(state shared-a)
note "Redis stopped: $OS_RPS req/s, p99 $OS_P99 ms, non-2xx $OS_BAD, shared-a $OS_STATE"
kill -CONT "$REDIS_PID"
wait_connected
read -r OK_REQ OK_RPS OK_P50 OK_P99 OK_BAD OK_ERR <<<"$(outage killed KILL)"
OK_STATE=$(state shared-a)
note "Redis killed: $OK_RPS req/s, p99 $OK_P99 ms, non-2xx $OK_BAD, shared-a $OK_STATE"
start_redis
wait_connected
WARNINGS=$(grep -c "Cluster link lost" "$WORK/shared-a/joinshield.log")
RESTORED=$(grep -c "Cluster link restored" "$WORK/shared-a/joinshield.log")

# ------------------------------------------------------------------------------------------ report
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -v w="$1" -v n="$2" -v f="$3" '$2 == w && $3 == n && $f ~ /^[0-9.]+$/ {print $f}' "$RESULTS"; }
ratio() {
    awk -v w="$1" -v f="$2" '
        $2 == w && $f ~ /^[0-9.]+$/ { v[$1, $3] = $f; rounds[$1] = 1 }
        END { for (r in rounds) if (((r, "local") in v) && ((r, "shared-a") in v) && v[r, "local"] > 0) print v[r, "shared-a"] / v[r, "local"] }' "$RESULTS"
}
echo "## Cluster: shared limits vs per-replica limits (medians of $ROUNDS rounds, ${DURATION}s each, $CONNECTIONS connections)"
echo
echo "| workload | replica | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|---|"
for w in spread hot; do
    for n in local shared-a; do
        echo "| $w | $n | $(col "$w" "$n" 5 | median) | $(col "$w" "$n" 6 | median) | $(col "$w" "$n" 7 | median) | $(col "$w" "$n" 8 | median) |"
    done
done
echo
for w in spread hot; do
    echo "- $w: shared/local throughput, median of per-round ratios: $(ratio "$w" 5 | median)"
done
echo
echo "## Redis stopping under load (${OUTAGE}s of spread load on shared-a, Redis stopped after $((OUTAGE / 3))s)"
echo
echo "| run | req/s | p50 ms | p99 ms | non-2xx | socket errors | state after |"
echo "|---|---|---|---|---|---|---|"
echo "| Redis up | $OB_RPS | $OB_P50 | $OB_P99 | $OB_BAD | $OB_ERR | connected |"
echo "| Redis SIGSTOP (hangs) | $OS_RPS | $OS_P50 | $OS_P99 | $OS_BAD | $OS_ERR | $OS_STATE |"
echo "| Redis SIGKILL (gone) | $OK_RPS | $OK_P50 | $OK_P99 | $OK_BAD | $OK_ERR | $OK_STATE |"
echo
echo "- 'Cluster link lost' WARNING lines on shared-a: $WARNINGS (one per outage); 'restored' NOTICEs: $RESTORED"
echo "- $PINNING; redis-server on the serving core too"
