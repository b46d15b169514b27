# Shared by the load scripts (sourced, not run): core pinning, free loopback ports, and waiting
# for a server to answer. The sourcing script defines `die` and `WORK` first.

if [[ $(nproc) -ge 2 ]]; then
    LOAD_PIN=(taskset -c 0)   # wrk
    SERVE_PIN=(taskset -c 1)  # proxies and upstream
    PINNING="wrk on core 0; upstream and proxy on core 1"
else
    LOAD_PIN=()
    SERVE_PIN=()
    PINNING="one core: no pinning"
fi

USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        # Below the kernel's ephemeral range (32768 up by default): wrk's and the proxies' own
        # outgoing connections take their local ports from there, and one of those can hold a port
        # that was free a moment ago.
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_http PORT PID LOG [SECONDS]: until PORT answers HTTP (any status), while PID lives, at most
# SECONDS (default 60: a shield loading a million-line list takes a while).
wait_http() {
    local deadline=$((SECONDS + ${4:-60}))
    while ((SECONDS < deadline)); do
        kill -0 "$2" 2>/dev/null || die "process on port $1 exited during startup$(tail -n 20 "$3" 2>/dev/null | sed 's/^/\n  /')"
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    die "nothing answered on 127.0.0.1:$1 within ${4:-60} s"
}

# wrk_summary FILE: wrk's --latency output in FILE as one line,
# "requests rps p50_ms p99_ms non2xx socket_errors" ("NA ..." when wrk completed nothing).
wrk_summary() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return "NA"
        }
        / requests in /         { req = $1 }
        /^Requests\/sec:/       { rps = $2 }
        /^ +50%/                { p50 = ms($2) }
        /^ +99%/                { p99 = ms($2) }
        /Non-2xx or 3xx/        { bad = $NF }
        /Socket errors:/        { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
        END {
            if (req == "" || rps == "") { print "NA NA NA NA NA NA"; exit }
            printf "%d %.0f %.3f %.3f %d %d\n", req, rps, p50, p99, bad + 0, err + 0
        }' "$1"
}
