#!/usr/bin/env bash
# Question: how many user-space instructions does joinshield spend on one forwarded request, and
# where? Instruction counts do not depend on what else the machine is doing, so they compare
# builds where wall-clock figures on a shared machine cannot.
# Baseline: the figure of the commit before (BENCHMARKS.md keeps the history).
#
# Usage, from the repository root:   benches/load/profile.sh
# Knobs (environment):  PROFILE_DURATION  seconds of measured load      (default 10)
#                       PROFILE_TOP       functions listed              (default 25)
#                       PROFILE_SCENARIO  "forward": guests.lua traffic, every request forwarded;
#                                         "flood": one client (X-Forwarded-For 198.51.100.9) far
#                                         over a 10/min limit, every request denied 429
#                                         (default forward)
#                       PROFILE_OUT       if set, the callgrind profile is copied to this file
#                                         (for callgrind_annotate --inclusive=yes)
#
# The stand-in upstream runs natively; the shield runs under callgrind with instrumentation off
# until a one-second warm-up is over, so start-up and connection set-up are not counted. wrk then
# sends benches/load/guests.lua traffic over 32 connections; the instructions counted are
# divided by the requests wrk completed. Kernel time (the socket reads and writes) is not in the
# count. Prints the total, the figure per request and the top functions by their own cost.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=benches/load
DURATION=${PROFILE_DURATION:-10}
TOP=${PROFILE_TOP:-25}
SCENARIO=${PROFILE_SCENARIO:-forward}

die() {
    echo "profile.sh: $*" >&2
    exit 1
}
for tool in cargo wrk curl valgrind callgrind_control callgrind_annotate awk; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y valgrind wrk curl)"
done

WORK=$(mktemp -d -t joinshield-profile.XXXXXX) || die "mktemp failed"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ $(nproc) -ge 2 ]]; then
    LOAD_PIN=(taskset -c 0)
    SERVE_PIN=(taskset -c 1) # one core: the shield's runtime gets one worker, as in run.sh
else
    LOAD_PIN=()
    SERVE_PIN=()
fi

BUILD_JSON=$(cargo build --release --message-format=json 2>"$WORK/build.log") ||
    die "cargo build --release failed: $(tail -n 20 "$WORK/build.log")"
BIN=$(grep -o '"executable":"[^"]*/joinshield"' <<<"$BUILD_JSON" | tail -n 1 | cut -d'"' -f4)
[[ -x $BIN ]] || die "cannot find the built joinshield binary"

port() { echo $((20000 + RANDOM % 30000)); }
UPSTREAM_PORT=$(port) SHIELD_PORT=$(port) ADMIN_PORT=$(port)
# The guest limits of run.sh (the shipped quotas; guests.lua stays under them).
sed -e "s/@SHIELD_PORT@/$SHIELD_PORT/g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" \
    -e "s/@ADMIN_PORT@/$ADMIN_PORT/g" -e "s#@IP_RATE@#300/min#g" -e "s/@IP_BURST@/100/g" \
    -e "s#@TOKEN_RATE@#3000/min#g" -e "s/@TOKEN_BURST@/600/g" \
    "$HERE/joinshield.toml.in" >"$WORK/joinshield.toml"
case $SCENARIO in
    forward) WRK_ARGS=(-s "$HERE/guests.lua") ;;
    flood)
        WRK_ARGS=(-H "X-Forwarded-For: 198.51.100.9")
        cat >>"$WORK/joinshield.toml" <<'LIMIT'

[[limit]]
name = "flood-ip"
routes = ["*"]
key = "ip"
rate = "10/min"
burst = 10
LIMIT
        ;;
    *) die "PROFILE_SCENARIO must be forward or flood, got '$SCENARIO'" ;;
esac

"${LOAD_PIN[@]}" "$BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"${SERVE_PIN[@]}" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$BIN" run -c "$WORK/joinshield.toml" >"$WORK/shield.log" 2>"$WORK/valgrind.log" &
SHIELD=$!
PIDS+=("$SHIELD")

URL="http://127.0.0.1:$SHIELD_PORT/api/v1/events/load-000001"
for _ in $(seq 150); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL") =~ ^(200|429)$ ]] && break
    kill -0 "$SHIELD" 2>/dev/null || die "the shield exited: $(tail -n 5 "$WORK/shield.log")"
    sleep 0.2
done
wrk_run() {
    timeout -k 5 $(($1 + 60)) "${LOAD_PIN[@]}" wrk -t1 -c32 -d"$1s" --timeout 10s \
        "${WRK_ARGS[@]}" "$URL"
}
wrk_run 1 >/dev/null 2>&1
callgrind_control -i on "$SHIELD" >/dev/null 2>&1 || die "callgrind_control could not reach the shield"
wrk_run "$DURATION" >"$WORK/wrk.txt" 2>&1
callgrind_control -d "$SHIELD" >/dev/null 2>&1
REQUESTS=$(awk '/ requests in /{print $1}' "$WORK/wrk.txt")
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "wrk completed no request: $(cat "$WORK/wrk.txt")"
grep -E 'Non-2xx|Socket errors' "$WORK/wrk.txt" >&2

PROFILE=$(ls "$WORK"/callgrind.out.*.1 2>/dev/null | head -n 1)
[[ -n $PROFILE ]] || die "callgrind wrote no profile"
callgrind_annotate --auto=no --threshold=100 "$PROFILE" >"$WORK/annotate.txt" 2>/dev/null
[[ -n ${PROFILE_OUT:-} ]] && cp "$PROFILE" "$PROFILE_OUT"
TOTAL=$(awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1}' "$WORK/annotate.txt")
echo "requests $REQUESTS, instructions $TOTAL, per request $((TOTAL / REQUESTS))"
echo
echo "top functions by own instructions per request:"
# Own cost per function, summed over the source files inlined into it.
awk -v req="$REQUESTS" '
    /^ *[0-9,]+ +\([ 0-9.]+%\) +/ {
        c = $1; gsub(/,/, "", c); line = $0; sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", line)
        if (line ~ /PROGRAM TOTALS/) next
        f = substr(line, index(line, ":") + 1); sub(/ \[.*\]$/, "", f); own[f] += c
    }
    END { for (f in own) printf "%8.0f  %s\n", own[f] / req, f }' "$WORK/annotate.txt" |
    sort -rn | head -n "$TOP"
