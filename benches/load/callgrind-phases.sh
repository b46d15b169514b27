#!/usr/bin/env bash
# Groups a callgrind profile of the shield (or of the bare proxy) into the phases of the request
# path, per request: each function's own instructions (summed over the source files inlined into
# it) go to the first phase of benches/load/phases.txt whose pattern matches the function's name.
# Code inlined into a function counts where it was inlined: a HeaderMap insert inlined into the
# shield's header rewriting is header rewriting, one that stayed a call is wherever its own name
# puts it. So read the phases as "the functions of this part of the code", not as exact
# inclusive costs (those are the "top" lists).
#
# Usage:  benches/load/callgrind-phases.sh phases    PROFILE REQUESTS     "phase<TAB>instructions
#                                                                          per request", phases.txt's order
#         benches/load/callgrind-phases.sh top       PROFILE REQUESTS N   the N costliest functions by
#                                                                          inclusive and by own cost (Markdown)
#         benches/load/callgrind-phases.sh members   PROFILE REQUESTS PHASE what PHASE holds: its own
#                                                                          functions and what shared ones charged to it
#         benches/load/callgrind-phases.sh calls     PROFILE REQUESTS     allocator and memcpy calls per
#                                                                          request, and the instructions in them
#         benches/load/callgrind-phases.sh unmatched PROFILE REQUESTS N   the N costliest functions no
#                                                                          pattern but the last took (to keep
#                                                                          phases.txt up to date)
# PHASES=FILE uses other patterns. Names are best read from a build with v0 symbol mangling
# (profile.sh makes one): they keep type parameters, which tell hyper's server side from its
# client side.
set -uo pipefail

HERE=$(dirname "${BASH_SOURCE[0]}")
PATTERNS=${PHASES:-$HERE/phases.txt}
die() {
    echo "callgrind-phases.sh: $*" >&2
    exit 1
}
(($# >= 3)) || die "usage: $0 phases|top|unmatched PROFILE REQUESTS [N]"
MODE=$1 PROFILE=$2 REQUESTS=$3 N=${4:-15}
[[ -r $PROFILE ]] || die "cannot read $PROFILE"
[[ -r $PATTERNS ]] || die "cannot read $PATTERNS"
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "REQUESTS must be a positive number, got '$REQUESTS'"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate is not installed (Debian: valgrind)"

# per_function [--inclusive=yes]: "cost<TAB>function" for every function, its cost summed over
# the source files callgrind_annotate lists it under.
per_function() {
    callgrind_annotate --auto=no --threshold=100 "$@" "$PROFILE" 2>/dev/null | awk '
        /^ *[0-9,]+ +\([ 0-9.]+%\) +/ {
            c = $1; gsub(/,/, "", c)
            line = $0; sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", line)
            if (line ~ /PROGRAM TOTALS/) next
            # "file:function [object]": the file never holds a colon, a function name may.
            f = substr(line, index(line, ":") + 1); sub(/ \[[^]]*\]$/, "", f)
            cost[f] += c
        }
        END { for (f in cost) printf "%d\t%s\n", cost[f], f }'
}

# The phase patterns: "phase<TAB>extended regular expression", first match wins.
load_patterns='
    BEGIN { FS = "\t" }
    FNR == NR {
        if ($0 ~ /^#/ || $0 ~ /^[ \t]*$/) next
        if (NF < 2) { print "phases.txt line " FNR ": no tab between phase and pattern" > "/dev/stderr"; exit 1 }
        n++; phase[n] = $1; re[n] = $2
        if (!($1 in seen)) { seen[$1] = 1; order[++phases] = $1 }
        next
    }
    function phase_of(f,   i) { for (i = 1; i <= n; i++) if (f ~ re[i]) return i; return 0 }
'

# short NAME: a long generic name made readable: the type parameters keep their last path
# segment, and what is nested deeper than that becomes "…".
short_names='
    function short(s,   out, i, c, depth, seg) {
        out = ""; depth = 0; seg = 1
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (c == "<") { depth++; if (depth <= 2) out = out c; else if (depth == 3) out = out "…"; seg = length(out) + 1; continue }
            if (c == ">") { if (depth <= 2) out = out c; depth--; seg = length(out) + 1; continue }
            if (depth >= 3) continue
            if (depth == 2 && c == ":" && substr(s, i + 1, 1) == ":") { out = substr(out, 1, seg - 1); i++; continue }
            out = out c
            if (c == "," || c == " " || c == "(" || c == "&" || c == "[" || c == "*") seg = length(out) + 1
        }
        return out
    }
'

# source_index PROFILE: "file<TAB>line<TAB>source function" for the first line of every fn in the
# Rust source files the profile names that are readable here (the shield's, and the crates' in
# cargo's registry; the standard library's only with rust-src installed): "Type::name" inside an
# impl or trait block (the type's last path segment, no type parameters), else "name". Made for
# rustfmt-formatted code, which all of them are.
source_index() {
    grep -ao '^\(fl\|fi\|fe\|cfi\|cfl\)=([0-9]*) .*' "$PROFILE" | sed 's/^[a-z]*=([0-9]*) //' | sort -u |
        while IFS= read -r f; do [[ $f == *.rs && -r $f ]] && printf '%s\n' "$f"; done |
        tr '\n' '\0' | xargs -0 -r awk '
            FNR == 1 { block = ""; block_indent = -1 }
            {
                match($0, /^ */); indent = RLENGTH
                if (block != "" && indent <= block_indent && $0 ~ /^ *}/) { block = ""; block_indent = -1 }
                if ($0 ~ /^ *(pub(\([a-z ]*\))? )?(unsafe )?(impl|trait)[ <]/) {
                    t = $0
                    sub(/^ *(pub(\([a-z ]*\))? )?(unsafe )?(impl|trait)/, "", t)
                    # Leading type parameters of the impl, balanced.
                    if (t ~ /^</) {
                        depth = 0
                        for (i = 1; i <= length(t); i++) {
                            c = substr(t, i, 1)
                            if (c == "<") depth++
                            else if (c == ">" && substr(t, i - 1, 1) != "-") { depth--; if (depth == 0) break }
                        }
                        t = substr(t, i + 1)
                    }
                    if (t ~ / for /) t = substr(t, index(t, " for ") + 5)
                    sub(/^ +/, "", t); sub(/^(dyn |&(mut )?)/, "", t); sub(/[<{ (].*$/, "", t)
                    n = split(t, seg, "::"); block = seg[n]; block_indent = indent
                    next
                }
                if ($0 ~ /^ *(pub(\([a-z ]*\))? )?(const )?(async )?(unsafe )?(extern "[A-Za-z]*" )?fn [A-Za-z_0-9]+/) {
                    name = $0; sub(/^[^f]*fn /, "", name); sub(/[^A-Za-z_0-9].*$/, "", name)
                    printf "%s\t%d\t%s\n", FILENAME, FNR, (block != "" && indent > block_indent) ? block "::" name : name
                }
            }'
}

# Source files of utility crates and of the standard library: their code inlined into a function
# is counted where the function's own code around it is (see "context" below).
ALLOC_FILES='/mimalloc-[0-9.]+/|library/alloc/src/(alloc|raw_vec[^:]*)\.rs$'
UTILITY_FILES='/(http|bytes|http-body|http-body-util|hashbrown|itoa|smallvec|pin-project-lite|futures-util|futures-core)-[0-9.]+/|library/(core|alloc|std)/'

case $MODE in
    phases | members)
        # members: "cost<TAB>function @ file:source function" of what one phase (argument 4)
        # holds, costliest first.
        members=""
        [[ $MODE == members ]] && members=${4:?members needs a phase name}
        index_file="${TMPDIR:-/tmp}/phases-index.$$"
        source_index >"$index_file"
        # Read the profile itself (callgrind's format: fn= and cfn= name functions; fl=, fi= and
        # fe= the source file the next cost lines belong to; each cost line starts with its
        # source line, absolute or relative to the one before; "calls=" announces that the next
        # cost line is a call's inclusive cost): each function's own cost per source file and
        # source function, and each call's cost by caller (with the file and source function of
        # the call site) and callee.
        awk -v req="$REQUESTS" -v members="$members" -v costs="${COSTS:-}" -v utility_files="$UTILITY_FILES" -v alloc_files="$ALLOC_FILES" "$load_patterns"'
            FILENAME == index_file { n_fns[$1]++; fn_line[$1, n_fns[$1]] = $2; fn_name[$1, n_fns[$1]] = $3; next }
            function named(line, kind,   id, rest) {
                # "kind=(id) name" defines id, "kind=(id)" refers to it (ids are per kind group).
                rest = substr(line, index(line, "=") + 1)
                if (rest !~ /^\(/) return rest
                id = substr(rest, 2, index(rest, ")") - 2)
                rest = substr(rest, index(rest, ")") + 2)
                if (rest != "") names[kind, id] = rest
                return names[kind, id]
            }
            # The source function holding line L of file F (binary search), "" when unknown.
            function source_fn(f, l,   lo, hi, mid) {
                if (!(f in n_fns) || l < fn_line[f, 1]) return ""
                lo = 1; hi = n_fns[f]
                while (lo < hi) { mid = int((lo + hi + 1) / 2); if (fn_line[f, mid] + 0 <= l) lo = mid; else hi = mid - 1 }
                return fn_name[f, lo]
            }
            /^fn=/ { fn = named($0, "fn"); file = fl; in_call = 0; context = ""; next }
            /^fl=/ { fl = named($0, "fl"); file = fl; next }
            /^(fi|fe)=/ { file = named($0, "fl"); next }
            /^(cfi|cfl)=/ { named($0, "fl"); next }
            /^cfn=/ { callee = named($0, "fn"); next }
            /^calls=/ { in_call = 1; next }
            /^[0-9+*-]/ {
                split($0, t, " ")
                pos = t[1]
                if (pos ~ /^\+/) line += substr(pos, 2); else if (pos ~ /^-/) line -= substr(pos, 2); else if (pos != "*") line = pos + 0
                at = file ":" source_fn(file, line)
                # Code of a utility crate or of the standard library inlined into a function
                # belongs where it was inlined: the last code of the function from elsewhere
                # (callgrind lists the costs of a function in address order, and inlined code sits
                # within the code of its caller).
                # (The allocator wrappers stay allocation, and are no context for what follows.)
                if (file ~ alloc_files) {}
                else if (file ~ utility_files) { if (context != "") at = context }
                else context = at
                if (in_call) {
                    key = fn SUBSEP at SUBSEP callee
                    if (!(key in edge)) calls[callee, ++ncalls[callee]] = key
                    edge[key] += t[2]; calls_total[callee] += t[2]; in_call = 0
                }
                else own[fn SUBSEP at] += t[2]
                next
            }
            # The phase of a function, or of the code of one source file and function inlined
            # into it ("at" is "file:source function").
            function phase_at(f, at,   i) {
                if ((f, at) in memo) return memo[f, at]
                i = phase_of(f " @ " at)
                return memo[f, at] = (i ? phase[i] : "other")
            }
            # give: COST of function F to the phases of its callers, in proportion to what each
            # call cost; a caller that is itself shared passes its part on, up to 8 levels.
            function give(f, cost, depth, origin,   parts, total, key, i, p) {
                total = calls_total[f]
                if (total == 0 || depth > 8) { sum["other"] += cost; via[origin, "other"] += cost; return }
                for (i = 1; i <= ncalls[f]; i++) {
                    key = calls[f, i]
                    split(key, parts, SUBSEP)
                    p = phase_at(parts[1], parts[2])
                    if (p == "@callers") give(parts[1], cost * edge[key] / total, depth + 1, origin)
                    else { sum[p] += cost * edge[key] / total; via[origin, p] += cost * edge[key] / total }
                }
            }
            END {
                if (costs) {
                    # "own<TAB>inclusive<TAB>function": inclusive is the own cost plus what every
                    # call made from the function cost (calls of itself left out).
                    for (key in own) { split(key, parts, SUBSEP); self[parts[1]] += own[key] }
                    for (key in edge) { split(key, parts, SUBSEP); if (parts[3] != parts[1]) out[parts[1]] += edge[key] }
                    for (f in self) printf "%d\t%d\t%s\n", self[f], self[f] + out[f], f
                    exit
                }
                for (key in own) {
                    split(key, parts, SUBSEP)
                    p = phase_at(parts[1], parts[2])
                    if (p == "@callers") shared[parts[1]] += own[key]
                    else {
                        sum[p] += own[key]
                        if (p == members) printf "%.1f\t%s @ %s\n", own[key] / req, parts[1], parts[2]
                    }
                }
                for (f in shared) give(f, shared[f], 0, f)
                if (members != "") {
                    # What shared functions charged to the phase through their callers.
                    for (key in via) {
                        split(key, parts, SUBSEP)
                        if (parts[2] == members) printf "%.1f\tshared, via callers: %s\n", via[key] / req, parts[1]
                    }
                    exit
                }
                for (k = 1; k <= phases; k++) if (order[k] != "@callers") printf "%s\t%.1f\n", order[k], sum[order[k]] / req
                if (!("other" in seen)) printf "other\t%.1f\n", sum["other"] / req
            }' index_file="$index_file" "$PATTERNS" "$index_file" "$PROFILE" |
            { [[ -n $members ]] && sort -t$'\t' -k1,1nr | head -n "${MEMBERS_TOP:-40}" || cat; }
        rm -f "$index_file"
        ;;
    top)
        # Own and inclusive cost of every function, from the profile itself (costs mode of the
        # phases reader below).
        COSTS=1 "$0" phases "$PROFILE" "$REQUESTS" >"${TMPDIR:-/tmp}/phases-costs.$$" || exit 1
        # Frames that hold the whole request (the worker loop, the connection tasks, the
        # handler at the top of it) tell nothing: those over 90 % of all are left out.
        total=$(awk -F'\t' '{s += $1} END {print s}' "${TMPDIR:-/tmp}/phases-costs.$$")
        awk -F'\t' -v total="$total" '$2 < 0.9 * total {print $2 "\t" $3}' "${TMPDIR:-/tmp}/phases-costs.$$" |
            sort -t$'\t' -k1,1nr | head -n "$N" >"${TMPDIR:-/tmp}/phases-incl.$$"
        awk -F'\t' '{print $1 "\t" $3}' "${TMPDIR:-/tmp}/phases-costs.$$" | sort -t$'\t' -k1,1nr | head -n "$N" >"${TMPDIR:-/tmp}/phases-own.$$"
        for kind in inclusive own; do
            echo
            echo "| # | $kind instructions per request | phase | function |"
            echo "|---|---|---|---|"
            awk -v req="$REQUESTS" "$load_patterns$short_names"'
                { split($0, a, "\t"); i = phase_of(a[2]); k++
                  p = i ? phase[i] : "other"; if (p == "@callers") p = "shared (charged to its callers)"
                  printf "| %d | %.0f | %s | `%s` |\n", k, a[1] / req, p, short(a[2]) }' \
                "$PATTERNS" - <"${TMPDIR:-/tmp}/phases-${kind/inclusive/incl}.$$"
        done
        rm -f "${TMPDIR:-/tmp}/phases-incl.$$" "${TMPDIR:-/tmp}/phases-own.$$" "${TMPDIR:-/tmp}/phases-costs.$$"
        ;;
    calls)
        # Calls per request into the allocator and into memcpy/memmove, from outside them, with
        # the instructions spent inside: "what<TAB>calls per request<TAB>instructions per request".
        awk -v req="$REQUESTS" '
            function named(line, kind,   id, rest) {
                rest = substr(line, index(line, "=") + 1)
                if (rest !~ /^\(/) return rest
                id = substr(rest, 2, index(rest, ")") - 2)
                rest = substr(rest, index(rest, ")") + 2)
                if (rest != "") names[kind, id] = rest
                return names[kind, id]
            }
            function group(f) {
                if (f ~ /^(mi_(malloc|zalloc|calloc|realloc|new|heap_malloc)[a-z_]*|malloc|calloc|realloc|__rust_alloc|__rust_alloc_zeroed|__rust_realloc)$/) return "allocations (malloc, realloc)"
                if (f ~ /^(mi_free[a-z_]*|free|__rust_dealloc)$/) return "frees"
                if (f ~ /^(__memcpy|__memmove|memcpy|memmove)[a-z_0-9]*$/) return "memcpy and memmove"
                return ""
            }
            /^fn=/ { fn = named($0, "fn"); next }
            /^(fl|fi|fe|cfi|cfl)=/ { named($0, "fl"); next }
            /^cfn=/ { callee = named($0, "fn"); next }
            /^calls=/ { split($0, a, /[= ]/); count = a[2]; in_call = 1; next }
            /^[0-9+*-]/ {
                if (in_call) {
                    g = group(callee)
                    # Calls from inside the allocator (or from one alloc entry point into
                    # another) are the callee s own business.
                    if (g != "" && fn !~ /^(_?mi_|__rust_|__rdl_|__rg_|malloc|free|calloc|realloc)/) {
                        split($0, t, " "); n[g] += count; c[g] += t[2]
                    }
                }
                in_call = 0
            }
            END {
                split("allocations (malloc, realloc)|frees|memcpy and memmove", order, "|")
                for (i = 1; i <= 3; i++) printf "%s\t%.1f\t%.0f\n", order[i], n[order[i]] / req, c[order[i]] / req
            }' "$PROFILE"
        ;;
    unmatched)
        last=$(awk -F'\t' '$0 !~ /^#/ && NF >= 2 {p = $1} END {print p}' "$PATTERNS")
        per_function | sort -t$'\t' -k1,1nr | awk -v req="$REQUESTS" -v top="$N" -v last="$last" "$load_patterns"'
            { split($0, a, "\t"); i = phase_of(a[2]); if (!i || phase[i] == last) { if (++k > top) exit; printf "%8.1f  %s\n", a[1] / req, a[2] } }' \
            "$PATTERNS" -
        ;;
    *) die "unknown mode '$MODE' (phases, top, unmatched)" ;;
esac
