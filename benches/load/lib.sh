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

CLK_TCK=$(getconf CLK_TCK)

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

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
# median: of the numbers on stdin, one a line ("NA" when there are none).
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# fmt X [DECIMALS]: X rounded (default 2 decimals), NA left alone.
fmt() { [[ $1 == NA || -z $1 ]] && echo NA || awk -v x="$1" -v d="${2:-2}" 'BEGIN {printf "%.*f", d, x}'; }
# verdict VALUE OP TARGET: "met" or "missed" (OP is <= >= < >), "–" when VALUE is not a number.
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v !~ /^[0-9.]+$/) { print "–"; exit }
        ok = (op == "<=") ? v <= t : (op == ">=") ? v >= t : (op == "<") ? v < t : v > t
        print ok ? "met" : "**missed**"
    }'
}

# build_release [BENCH_PROGRAMS]: builds the release joinshield binary (BIN) and, when asked
# ("bare_proxy conn_flood"), those bench targets (BARE_BIN, FLOOD_BIN). Two cargo runs: a bench
# target pulls in the dev-dependencies, whose features (tokio's test-util) must not leak into
# the joinshield binary under test.
build_release() {
    local json exe program
    note "building the release binary"
    json=$(timeout 3600 cargo build --release --bin joinshield --message-format=json 2>"$WORK/build.log") ||
        die "cargo build --release failed: $(tail -n 20 "$WORK/build.log")"
    BIN=$(grep -o '"executable":"[^"]*/joinshield"' <<<"$json" | tail -n 1 | cut -d'"' -f4)
    [[ -x $BIN ]] || die "cannot find the built joinshield binary"
    (($# == 0)) && return 0
    local targets=()
    for program in "$@"; do targets+=(--bench "$program"); done
    note "building the bench programs: $*"
    json=$(timeout 3600 cargo build --release "${targets[@]}" --message-format=json 2>"$WORK/build-benches.log") ||
        die "cargo build --release ${targets[*]} failed: $(tail -n 20 "$WORK/build-benches.log")"
    for program in "$@"; do
        exe=$(grep -o "\"executable\":\"[^\"]*/deps/$program-[0-9a-f]*\"" <<<"$json" | tail -n 1 | cut -d'"' -f4)
        [[ -x $exe ]] || die "cannot find the built $program bench binary"
        case $program in
            bare_proxy) BARE_BIN=$exe ;;
            conn_flood) FLOOD_BIN=$exe ;;
        esac
    done
}

# toml_merge BASE_FILE FRAGMENT: BASE_FILE with the TOML FRAGMENT merged in, on stdout. The keys
# under a `[table]` header of the fragment go right under the same header of the base (or into a
# new table at the end when the base has none); `[[array]]` entries are appended. This is how
# every load script takes the operator's SHIELD_TOML: e.g. an access log section, or a key of
# `[server]` the script does not set. A key both set is a duplicate, which `joinshield check`
# refuses with its line (the scripts stop there and say so).
toml_merge() {
    awk -v frag="$2" '
        function table_name(line,   t) {
            t = line
            sub(/^[ \t]*\[[ \t]*/, "", t)
            sub(/[ \t]*\].*$/, "", t)
            return t
        }
        BEGIN {
            n = split(frag, lines, "\n")
            cur = ""
            for (i = 1; i <= n; i++) {
                line = lines[i]
                if (line ~ /^[ \t]*\[\[/) {
                    cur = "[[" ++arrays; order[++count] = cur; head[cur] = line; continue
                }
                if (line ~ /^[ \t]*\[/) {
                    cur = table_name(line)
                    if (!(cur in head)) { order[++count] = cur; head[cur] = line }
                    continue
                }
                if (cur == "" && line !~ /^[ \t]*(#.*)?$/) {
                    print "toml_merge: a key outside any [table] in the fragment: " line > "/dev/stderr"
                    bad = 1
                    exit 1
                }
                if (cur != "") body[cur] = body[cur] line "\n"
            }
        }
        /^[ \t]*\[[^\[]/ {
            print
            t = table_name($0)
            if ((t in body) && !(t in done)) { printf "%s", body[t]; done[t] = 1 }
            next
        }
        { print }
        END {
            if (bad) exit 1
            for (i = 1; i <= count; i++) {
                c = order[i]
                if (c in done) continue
                print ""
                print head[c]
                printf "%s", body[c]
            }
        }' "$1"
}

# log_lines DIR: lines in the files of DIR (its logs: the shield's stdout, its log and access log
# files, nginx's or HAProxy's), configuration and state files left out.
log_lines() {
    find "$1" -maxdepth 1 -type f ! -name '*.toml' ! -name '*.conf' ! -name '*.cfg' ! -name '*state*' \
        ! -name '*.pem' ! -name '*.pid' -exec cat {} + 2>/dev/null | wc -l
}

# make_cert DIR: a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1 in
# DIR/fullchain.pem and DIR/privkey.pem.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$1/privkey.pem" -out "$1/fullchain.pem" >"$1/openssl.log" 2>&1 ||
        die "openssl could not make the certificate: $(cat "$1/openssl.log")"
}

# wait_https PORT PID LOG: until PORT answers HTTPS (any status), while PID lives, at most 15 s.
wait_https() {
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        kill -0 "$2" 2>/dev/null || die "process on port $1 exited during startup$(tail -n 20 "$3" 2>/dev/null | sed 's/^/\n  /')"
        curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    die "nothing answered HTTPS on 127.0.0.1:$1 within 15 s"
}

# baseline_access_log FILE KIND DIR: when BASELINE_ACCESS_LOG=1, turns the access log of the
# nginx config (KIND nginx: one "combined" line per request to DIR/access.log, written as each
# request ends, nginx's default) or of the HAProxy config (KIND haproxy: one httplog line per
# request to its stdout) in FILE on, in place.
baseline_access_log() {
    [[ ${BASELINE_ACCESS_LOG:-0} == 1 ]] || return 0
    case $2 in
        nginx) sed -i "s#^\( *\)access_log off;#\1access_log $3/access.log combined;#" "$1" ;;
        haproxy) sed -i -e '/^global/a\    log stdout format raw local0' \
            -e '/^defaults/a\    log global\n    option httplog' "$1" ;;
    esac
}
