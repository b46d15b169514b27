#!/usr/bin/env bash
# Question: how many user-space instructions does joinshield spend on one forwarded request and
# on one denial, and in which phase of the request path (hyper's read and parse, classification,
# decision, header rewriting, the upstream pool and client, writing, logging, metrics,
# allocation, ...)? And how many system calls does each cost? Instruction counts do not depend
# on what else the machine is doing, so they compare builds where wall-clock figures on a shared
# machine cannot.
# Baselines: the bare hyper proxy (benches/bare_proxy.rs) forwarding the same traffic, the
# floor: what hyper, tokio and the allocator cost with no feature at all; for system calls also
# nginx (pass-through and its limit_req 429s). The figure of the commit before is in
# BENCHMARKS.md.
#
# Usage, from the repository root:   benches/load/profile.sh
# Knobs (environment):  PROFILE_DURATION  seconds of measured load per callgrind run   (default 10)
#                       PROFILE_RUNS      callgrind runs, of "forward" (joinshield, guests.lua
#                                         traffic: every request forwarded), "deny" (joinshield,
#                                         one client, X-Forwarded-For 198.51.100.9, far over a
#                                         10/min limit: every request answered 429), "deny-many"
#                                         (joinshield, a flood over a 1/min limit from
#                                         PROFILE_FLOOD_ADDRESSES addresses: flood.lua) and "bare"
#                                         (the bare proxy, guests.lua traffic)
#                                         (default "forward deny deny-many bare")
#                       PROFILE_FLOOD_ADDRESSES  addresses of deny-many (default 1000: under
#                                         callgrind a few thousand requests a second are served,
#                                         so 1,000 addresses see about as many denials per log
#                                         fold window each as 10,000 do at full speed)
#                       PROFILE_TOP       functions listed by inclusive and by own cost (default 15)
#                       PROFILE_STRACE    1: also count system calls with strace -c -f  (default 1)
#                       PROFILE_STRACE_REQUESTS  requests per system-call count         (default 20000)
#                       PROFILE_OUT       a folder: the callgrind profiles are copied there (for
#                                         callgrind_annotate --inclusive=yes, kcachegrind)
#                       PROFILE_FROM      a work folder kept by an earlier run (BENCH_KEEP=1):
#                                         only the report, from its profiles and counts (after
#                                         editing benches/load/phases.txt, say)
#                       SHIELD_TOML       a TOML fragment merged into joinshield's config
#                                         (lib.sh toml_merge), e.g. the access log to see its cost
#
# The phases come from benches/load/callgrind-phases.sh, which sums each function's own cost into
# the first phase whose pattern (benches/load/phases.txt) its name matches. For the names to
# tell the server side of hyper from the client side (hyper's connection code is generic over
# its role), the profiled binaries are built with v0 symbol mangling, which keeps the type
# parameters in the names, into a target folder of their own (target/profile): the code is the
# same as the release build's (same profile: fat LTO, one codegen unit), only the symbol names
# differ.
#
# Each profiled process runs under callgrind with instrumentation off until a one-second warm-up
# is over, so start-up and connection set-up are not counted; wrk then sends the traffic over 32
# connections for PROFILE_DURATION seconds, and the instructions counted are divided by the
# requests wrk completed. Kernel time (the socket reads and writes) is not in the count: that is
# what the system-call count is for (native processes, strace attached after a warm-up, a fixed
# number of requests; strace slows them down but does not change what they call).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
HERE=benches/load
DURATION=${PROFILE_DURATION:-10}
RUNS=${PROFILE_RUNS:-forward deny deny-many bare}
FLOOD_ADDRESSES=${PROFILE_FLOOD_ADDRESSES:-1000}
TOP=${PROFILE_TOP:-15}
STRACE=${PROFILE_STRACE:-1}
STRACE_REQUESTS=${PROFILE_STRACE_REQUESTS:-20000}
SHIELD_TOML=${SHIELD_TOML:-}

die() {
    echo "profile.sh: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }
for v in DURATION TOP STRACE_REQUESTS FLOOD_ADDRESSES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for r in $RUNS; do
    [[ " forward deny deny-many bare " == *" $r "* ]] || die "unknown run '$r' in PROFILE_RUNS (forward, deny, deny-many, bare)"
done
for tool in cargo wrk curl valgrind callgrind_control callgrind_annotate awk nginx; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y valgrind wrk curl nginx-light)"
done
[[ $STRACE == 1 ]] && { command -v strace >/dev/null || die "'strace' is not installed (Debian: apt-get install -y strace)"; }

WORK=$(mktemp -d -t joinshield-profile.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # BENCH_KEEP=1 keeps the work folder (configs, every wrk output, the logs) to look into.
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "$0")/lib.sh"
stop_pid() {
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

FROM=${PROFILE_FROM:-}
if [[ -z $FROM ]]; then
# ------------------------------------------------------------------------------------------ build
# The release binaries (for the system-call counts: the code as shipped), then the same code with
# v0 symbol names in target/profile for callgrind.
build_release bare_proxy
NATIVE_BIN=$BIN NATIVE_BARE=$BARE_BIN
note "building the same code with v0 symbol names (target/profile)"
(
    export CARGO_TARGET_DIR=target/profile RUSTFLAGS="${RUSTFLAGS:-} -C symbol-mangling-version=v0"
    timeout 3600 cargo build --release --bin joinshield --message-format=json >"$WORK/v0-bin.json" 2>"$WORK/v0-build.log" &&
        timeout 3600 cargo build --release --bench bare_proxy --message-format=json >"$WORK/v0-bare.json" 2>>"$WORK/v0-build.log"
) || die "the v0 build failed: $(tail -n 20 "$WORK/v0-build.log")"
PROFILE_BIN=$(grep -o '"executable":"[^"]*/joinshield"' "$WORK/v0-bin.json" | tail -n 1 | cut -d'"' -f4)
PROFILE_BARE=$(grep -o '"executable":"[^"]*/deps/bare_proxy-[0-9a-f]*"' "$WORK/v0-bare.json" | tail -n 1 | cut -d'"' -f4)
[[ -x $PROFILE_BIN && -x $PROFILE_BARE ]] || die "cannot find the v0 binaries"

# --------------------------------------------------------------------------------------- configs
UPSTREAM_PORT=$(free_port) || die "no free port"
"${LOAD_PIN[@]}" "$NATIVE_BIN" standin --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" "$WORK/upstream.log" 15

# shield_config NAME forward|deny: $WORK/NAME/joinshield.toml with its own ports (SPORT_NAME):
# run.sh's (the shipped guest limits; guests.lua stays under them), plus for deny a 10/min limit
# on every route that one client is far over, for deny-many a 1/min one (burst 1: two requests
# put an address over it); SHIELD_TOML merged in.
declare -A SPORT
shield_config() {
    local dir="$WORK/$1" admin
    mkdir -p "$dir"
    SPORT[$1]=$(free_port) || die "no free port"
    admin=$(free_port) || die "no free port"
    sed -e "s/@SHIELD_PORT@/${SPORT[$1]}/g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" \
        -e "s/@ADMIN_PORT@/$admin/g" -e "s#@IP_RATE@#300/min#g" -e "s/@IP_BURST@/100/g" \
        -e "s#@TOKEN_RATE@#3000/min#g" -e "s/@TOKEN_BURST@/600/g" \
        "$HERE/joinshield.toml.in" >"$dir/template.toml"
    if [[ $2 == deny ]]; then
        cat >>"$dir/template.toml" <<'LIMIT'

[[limit]]
name = "flood-ip"
routes = ["*"]
key = "ip"
rate = "10/min"
burst = 10
LIMIT
    elif [[ $2 == deny-many ]]; then
        cat >>"$dir/template.toml" <<'LIMIT'

[[limit]]
name = "flood-ip"
routes = ["*"]
key = "ip"
rate = "1/min"
burst = 1
LIMIT
    fi
    toml_merge "$dir/template.toml" "$SHIELD_TOML" >"$dir/joinshield.toml" || die "could not merge SHIELD_TOML"
    "$NATIVE_BIN" check -c "$dir/joinshield.toml" >"$dir/check.log" 2>&1 ||
        die "joinshield refuses the $1 config$([[ -n $SHIELD_TOML ]] && echo " with SHIELD_TOML merged in"): $(cat "$dir/check.log")"
}
shield_config forward forward
shield_config deny deny
shield_config deny-many deny-many
BARE_PORT=$(free_port) || die "no free port"

# The traffic of each run: wrk's URL and options.
DENY_XFF=198.51.100.9
declare -A RUN_URL=([forward]="http://127.0.0.1:${SPORT[forward]}/api/v1/events/load-000001"
    [deny]="http://127.0.0.1:${SPORT[deny]}/api/v1/events/load-000001"
    [deny-many]="http://127.0.0.1:${SPORT[deny-many]}/api/v1/events/load-000001"
    [bare]="http://127.0.0.1:$BARE_PORT/api/v1/events/load-000001")
wrk_args() {
    case $1 in
        deny) echo "-H X-Forwarded-For:$DENY_XFF" ;;
        deny-many) echo "-s $HERE/flood.lua" ;;
        *) echo "-s $HERE/guests.lua" ;;
    esac
}
# wrk_script_args RUN: what goes after "--" on wrk's command line.
wrk_script_args() { [[ $1 == deny-many ]] && echo "-- $FLOOD_ADDRESSES"; }

# start_run RUN WRAPPER...: starts the process of RUN (the shield of its config, or the bare proxy)
# on core 1 under WRAPPER (valgrind ..., or nothing) with the binaries BIN/BARE_BIN; sets RUN_PID.
start_run() {
    local run=$1
    shift
    if [[ $run == bare ]]; then
        "${SERVE_PIN[@]}" "$@" "$BARE_BIN" --listen "127.0.0.1:$BARE_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
            >"$WORK/$run.log" 2>"$WORK/$run.err" &
    else
        "${SERVE_PIN[@]}" "$@" "$BIN" run -c "$WORK/$run/joinshield.toml" >"$WORK/$run.log" 2>"$WORK/$run.err" &
    fi
    RUN_PID=$!
    PIDS+=("$RUN_PID")
    local deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${RUN_URL[$run]}") =~ ^(200|429)$ ]] && return 0
        kill -0 "$RUN_PID" 2>/dev/null || die "the $run process exited: $(tail -n 5 "$WORK/$run.err" "$WORK/$run.log")"
        sleep 0.2
    done
    die "the $run process did not answer within 90 s"
}

# ------------------------------------------------------------------------------------ callgrind
declare -A REQUESTS NON2XX
for run in $RUNS; do
    note "callgrind: $run, ${DURATION}s of wrk -c32"
    BIN=$PROFILE_BIN BARE_BIN=$PROFILE_BARE
    start_run "$run" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.$run.%p"
    # The warm-up: one second, or for deny-many until every address is over its limit (two
    # requests each, at the few thousand a second callgrind serves).
    warm=1
    [[ $run == deny-many ]] && warm=$((2 + FLOOD_ADDRESSES / 1000))
    # shellcheck disable=SC2046 # wrk_args is a list of words
    timeout -k 5 $((warm + 70)) "${LOAD_PIN[@]}" wrk -t1 -c32 -d"${warm}s" --timeout 10s $(wrk_args "$run") "${RUN_URL[$run]}" \
        $(wrk_script_args "$run") >/dev/null 2>&1
    callgrind_control -i on "$RUN_PID" >/dev/null 2>&1 || die "callgrind_control could not reach the $run process"
    # shellcheck disable=SC2046
    timeout -k 5 $((DURATION + 60)) "${LOAD_PIN[@]}" wrk -t1 -c32 -d"${DURATION}s" --timeout 10s $(wrk_args "$run") \
        "${RUN_URL[$run]}" $(wrk_script_args "$run") >"$WORK/wrk-$run.txt" 2>&1
    callgrind_control -d "$RUN_PID" >/dev/null 2>&1
    read -r req _ _ _ bad _ <<<"$(wrk_summary "$WORK/wrk-$run.txt")"
    [[ $req =~ ^[1-9][0-9]*$ ]] || die "wrk completed no request in the $run run: $(cat "$WORK/wrk-$run.txt")"
    REQUESTS[$run]=$req NON2XX[$run]=$bad
    stop_pid "$RUN_PID"
    profile=$(ls "$WORK"/callgrind."$run".*.1 2>/dev/null | head -n 1)
    [[ -n $profile ]] || die "callgrind wrote no profile for $run"
    mv "$profile" "$WORK/callgrind.$run"
    [[ -n ${PROFILE_OUT:-} ]] && mkdir -p "$PROFILE_OUT" && cp "$WORK/callgrind.$run" "$PROFILE_OUT/"
done

# --------------------------------------------------------------------------------- system calls
# strace_run RUN PID URL [XFF]: counts the system calls of every thread of PID over
# STRACE_REQUESTS requests (benches/load/counted.lua: guests.lua's traffic, or one client with
# XFF); writes $WORK/strace-RUN.txt and sets SYSCALL_REQUESTS[RUN] to the requests wrk counted.
declare -A SYSCALL_REQUESTS
strace_run() {
    local run=$1 pid=$2 url=$3 xff=${4:-} spid t req
    local threads=()
    for t in /proc/"$pid"/task/*; do threads+=(-p "${t##*/}"); done
    strace -c -f -qq -o "$WORK/strace-$run.txt" "${threads[@]}" 2>"$WORK/strace-$run.err" &
    spid=$!
    # strace says nothing once attached; give it a moment (the count is per request anyway).
    sleep 1
    # shellcheck disable=SC2086 # xff is one word or none
    "${LOAD_PIN[@]}" wrk -t1 -c32 -d300s --timeout 10s -s "$HERE/counted.lua" "$url" -- \
        "$STRACE_REQUESTS" $xff >"$WORK/wrk-strace-$run.txt" 2>&1 &
    local wpid=$! deadline=$((SECONDS + 290))
    while ((SECONDS < deadline)) && kill -0 "$wpid" 2>/dev/null && ! grep -qs '^stopped' "$WORK/wrk-strace-$run.txt"; do
        sleep 0.2
    done
    kill -INT "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    # wrk prints its figures on SIGINT.
    kill -INT "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    read -r req _ <<<"$(wrk_summary "$WORK/wrk-strace-$run.txt")"
    SYSCALL_REQUESTS[$run]=$req
}
STRACE_RUNS=()
if [[ $STRACE == 1 ]]; then
    BIN=$NATIVE_BIN BARE_BIN=$NATIVE_BARE
    for run in forward deny bare; do
        note "system calls: $run, $STRACE_REQUESTS requests"
        start_run "$run"
        xff=""
        [[ $run == deny ]] && xff=$DENY_XFF
        # shellcheck disable=SC2046
        timeout -k 5 70 "${LOAD_PIN[@]}" wrk -t1 -c32 -d1s $(wrk_args "$run") "${RUN_URL[$run]}" >/dev/null 2>&1
        strace_run "$run" "$RUN_PID" "${RUN_URL[$run]}" "$xff"
        stop_pid "$RUN_PID"
        STRACE_RUNS+=("$run")
    done
    # nginx as run.sh runs it (the shipped limits; its worker traced), and one whose per-IP limit
    # is the deny run's 10/min, for its 429 path.
    for kind in forward deny; do
        note "system calls: nginx-$kind, $STRACE_REQUESTS requests"
        dir="$WORK/nginx-$kind"
        mkdir -p "$dir" && chmod 755 "$dir"
        port=$(free_port) || die "no free port"
        if [[ $kind == forward ]]; then rates=(300r/m 100); else rates=(10r/m 10); fi
        sed -e "s#@DIR@#$dir#g" -e "s/@UPSTREAM_PORT@/$UPSTREAM_PORT/g" -e "s/@NGINX_PORT@/$port/g" \
            -e "s#@IP_RATE@#${rates[0]}#g" -e "s/@IP_BURST@/${rates[1]}/g" -e "s#@TOKEN_RATE@#3000r/m#g" \
            -e "s/@TOKEN_BURST@/600/g" "$HERE/nginx.conf.in" >"$dir/nginx.conf"
        nginx -t -p "$dir" -c "$dir/nginx.conf" >"$dir/check.log" 2>&1 || die "nginx refused its config: $(cat "$dir/check.log")"
        "${SERVE_PIN[@]}" nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
        npid=$!
        PIDS+=("$npid")
        wait_http "$port" "$npid" "$dir/stdout.log" 15
        worker=$(pgrep -P "$npid" | head -n 1)
        [[ -n $worker ]] || die "nginx has no worker process"
        url="http://127.0.0.1:$port/api/v1/events/load-000001"
        xff=""
        [[ $kind == deny ]] && xff=$DENY_XFF
        if [[ $kind == deny ]]; then args=(-H "X-Forwarded-For: $DENY_XFF"); else args=(-s "$HERE/guests.lua"); fi
        timeout -k 5 70 "${LOAD_PIN[@]}" wrk -t1 -c32 -d1s "${args[@]}" "$url" >/dev/null 2>&1
        strace_run "nginx-$kind" "$worker" "$url" "$xff"
        stop_pid "$npid"
        STRACE_RUNS+=("nginx-$kind")
    done
fi
else
    # PROFILE_FROM: the report again from a kept work folder (BENCH_KEEP=1), e.g. after editing
    # phases.txt; nothing is built or run.
    declare -A REQUESTS NON2XX SYSCALL_REQUESTS
    STRACE_RUNS=()
    RUNS=""
    for run in forward deny deny-many bare; do
        [[ -r $FROM/callgrind.$run && -r $FROM/wrk-$run.txt ]] || continue
        RUNS+="$run "
        read -r REQUESTS[$run] _ _ _ NON2XX[$run] _ <<<"$(wrk_summary "$FROM/wrk-$run.txt")"
    done
    for run in forward deny bare nginx-forward nginx-deny; do
        [[ -r $FROM/strace-$run.txt ]] || continue
        STRACE_RUNS+=("$run")
        read -r SYSCALL_REQUESTS[$run] _ <<<"$(wrk_summary "$FROM/wrk-strace-$run.txt")"
    done
    [[ -n $RUNS ]] || die "no callgrind profile in $FROM"
    cp "$FROM"/callgrind.* "$FROM"/strace-*.txt "$WORK"/ 2>/dev/null
    NATIVE_BIN=target/release/joinshield
fi

# ------------------------------------------------------------------------------------------ report
PHASES=$HERE/callgrind-phases.sh
total_of() { callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1; exit}'; }

echo
echo "joinshield instruction profile: $("$NATIVE_BIN" --version 2>/dev/null), $(valgrind --version), $(uname -sr); $PINNING"
echo "callgrind runs: wrk -t1 -c32 -d${DURATION}s after a 1 s warm-up; user space only; v0 symbol names (target/profile), code as the release build"
echo "joinshield config fragment (SHIELD_TOML): $([[ -n $SHIELD_TOML ]] && tr '\n' ' ' <<<"$SHIELD_TOML" || echo none)"
echo
echo "| run | what | requests | non-2xx | instructions | per request |"
echo "|---|---|---|---|---|---|"
declare -A TOTAL
for run in $RUNS; do
    TOTAL[$run]=$(total_of "$WORK/callgrind.$run")
    case $run in
        forward) what="joinshield forwarding guests.lua traffic (shipped guest limits)" ;;
        deny) what="joinshield denying one client over a 10/min limit (429)" ;;
        deny-many) what="joinshield denying a flood from $FLOOD_ADDRESSES addresses over a 1/min limit (429)" ;;
        bare) what="the bare hyper proxy forwarding guests.lua traffic (the floor)" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s |\n' "$run" "$what" "${REQUESTS[$run]}" "${NON2XX[$run]}" "${TOTAL[$run]}" \
        "$(awk -v t="${TOTAL[$run]}" -v r="${REQUESTS[$run]}" 'BEGIN {printf "%.0f", t / r}')"
done
echo
echo "Instructions per request by phase (benches/load/callgrind-phases.sh: the own cost of each function, by the source function of its code, into the first phase of benches/load/phases.txt that matches; shared utilities charged to their callers):"
echo
header="| phase |" rule="|---|"
for run in $RUNS; do header+=" $run |"; rule+="---|"; done
has_fb=0
[[ " $RUNS " == *" forward "* && " $RUNS " == *" bare "* ]] && has_fb=1 && header+=" forward − bare |" && rule+="---|"
echo "$header"
echo "$rule"
for run in $RUNS; do "$PHASES" phases "$WORK/callgrind.$run" "${REQUESTS[$run]}" >"$WORK/phases.$run"; done
first=$(set -- $RUNS; echo "$1")
cut -f1 "$WORK/phases.$first" | while IFS= read -r phase; do
    line="| $phase |"
    for run in $RUNS; do line+=" $(awk -F'\t' -v p="$phase" '$1 == p {printf "%.0f", $2}' "$WORK/phases.$run") |"; done
    if ((has_fb)); then
        line+=" $(awk -F'\t' -v p="$phase" 'FILENAME ~ /forward$/ && $1 == p {f = $2} FILENAME ~ /bare$/ && $1 == p {b = $2} END {printf "%+.0f", f - b}' "$WORK/phases.forward" "$WORK/phases.bare") |"
    fi
    echo "$line"
done
line="| **total** |"
for run in $RUNS; do line+=" **$(awk -F'\t' '{s += $2} END {printf "%.0f", s}' "$WORK/phases.$run")** |"; done
((has_fb)) && line+=" **$(awk -F'\t' 'FILENAME ~ /forward$/ {f += $2} FILENAME ~ /bare$/ {b += $2} END {printf "%+.0f", f - b}' "$WORK/phases.forward" "$WORK/phases.bare")** |"
echo "$line"
echo
echo "Calls per request into the allocator (mimalloc) and into memcpy/memmove, and the instructions spent in them:"
echo
header="| |" rule="|---|"
for run in $RUNS; do header+=" $run |"; rule+="---|"; done
echo "$header"
echo "$rule"
for run in $RUNS; do "$PHASES" calls "$WORK/callgrind.$run" "${REQUESTS[$run]}" >"$WORK/calls.$run"; done
cut -f1 "$WORK/calls.$first" | while IFS= read -r what; do
    line="| $what: calls (instructions) |"
    for run in $RUNS; do line+=" $(awk -F'\t' -v w="$what" '$1 == w {printf "%s (%s)", $2, $3}' "$WORK/calls.$run") |"; done
    echo "$line"
done
for run in $RUNS; do
    echo
    echo "### $run: top $TOP functions per request (by inclusive cost, frames holding over 90 % of all left out; by own cost)"
    echo
    "$PHASES" top "$WORK/callgrind.$run" "${REQUESTS[$run]}" "$TOP"
done
if ((${#STRACE_RUNS[@]})); then
    echo
    echo "System calls per request (strace -c -f on every thread, attached after a warm-up; wrk -c32, $STRACE_REQUESTS requests each through benches/load/counted.lua; for nginx its worker):"
    echo
    header="| system call |" rule="|---|"
    for run in "${STRACE_RUNS[@]}"; do header+=" $run |"; rule+="---|"; done
    echo "$header"
    echo "$rule"
    # calls NAME FILE: calls of that system call in strace -c's table (0 when absent).
    for f in "${STRACE_RUNS[@]}"; do
        awk '$NF != "syscall" && $NF != "total" && $1 ~ /^[0-9.]+$/ && NF >= 5 {print $NF, $4}' "$WORK/strace-$f.txt"
    done | awk '{print $1}' | sort -u >"$WORK/syscalls"
    while IFS= read -r sc; do
        line="| $sc |"
        for run in "${STRACE_RUNS[@]}"; do
            line+=" $(awk -v s="$sc" -v r="${SYSCALL_REQUESTS[$run]}" '$NF == s && $1 ~ /^[0-9.]+$/ {c = $4} END {printf "%.3f", (r > 0 ? c / r : 0)}' "$WORK/strace-$run.txt") |"
        done
        echo "$line"
    done <"$WORK/syscalls"
    line="| **all** |"
    for run in "${STRACE_RUNS[@]}"; do
        line+=" **$(awk -v r="${SYSCALL_REQUESTS[$run]}" '$NF == "total" {c = $4} END {printf "%.3f", (r > 0 ? c / r : 0)}' "$WORK/strace-$run.txt")** |"
    done
    echo "$line"
    line="| requests counted |"
    for run in "${STRACE_RUNS[@]}"; do line+=" ${SYSCALL_REQUESTS[$run]} |"; done
    echo "$line"
fi
exit 0
