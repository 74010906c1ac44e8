#!/usr/bin/env bash
# Instructions per request: Wardgate under valgrind's callgrind, one config after another, the
# same requests to each. Instruction counts do not depend on what else the machine runs, so
# this is the number to judge a change by where the load script's CPU times are too noisy
# (a shared VM): the policy row's target (at most 1.05x the session row) is judged here.
#
#   benches/instructions.sh [--out FILE] [--wardgate-config FILE]...
#
# Default configs: benches/load/wardgate-bench-session.yaml, then wardgate-bench-policy.yaml.
# Each config runs under `valgrind --tool=callgrind` (all threads counted together), gets its
# user as benches/load.sh does (logged in; a physician on patient 1's care team under a
# policy), then one curl connection (HTTP/2 over TLS) sends WARMUP requests for
# https://127.0.0.1:18443/api/patients/1, callgrind's counters are zeroed, the same
# connection sends REQUESTS more, and the counters are dumped: instructions per request are
# the dump's total over REQUESTS. Every one of them must answer 200. Rows after the first say
# their ratio to the first.
#
# Environment:
#   REQUESTS=300    measured requests per config
#   WARMUP=30       requests before the counters are zeroed (caches filled, connections open)
#   PROFILE_DIR=dir keep each config's callgrind dump there (callgrind.<config>), for
#                   `callgrind_annotate`
#   WARDGATE_BIN, CARGO_TARGET_DIR: as for benches/load.sh
# Needs valgrind (installed with apt-get when missing) and what benches/load.sh needs.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

REQUESTS="${REQUESTS:-300}"
WARMUP="${WARMUP:-30}"
COUNTS=() # "label|instructions per request"

# Sends `count` requests on one connection; prints how many answered each status.
send() {
    local count="$1" url="https://127.0.0.1:${WARDGATE_PORT}${REQUEST_PATH}" urls=() i
    for ((i = 0; i < count; i++)); do urls+=(-o /dev/null "$url"); done
    curl -k -sS -w '%{http_code}\n' "${REQUEST_HEADERS[@]}" "${urls[@]}" | sort | uniq -c
}

# The instructions per request of Wardgate with `config`.
count_instructions() {
    local config="$1" name logfile out answers dump i
    name="$(basename "$config" .yaml)"
    logfile="${WORK_DIR}/${name}.log"
    out="${WORK_DIR}/callgrind.${name}"
    require_free_port "$WARDGATE_PORT"
    valgrind --tool=callgrind --callgrind-out-file="${out}.%p" \
        "$WARDGATE_BIN" run --config "$config" >"$logfile" 2>&1 &
    PROXY_PID=$!
    STARTED_PIDS+=("$PROXY_PID")
    REQUEST_HEADERS=()
    wait_answering "$name" "https://127.0.0.1:${WARDGATE_PORT}${REQUEST_PATH}" "$PROXY_PID" "$logfile"
    # Under valgrind the admin listener (which `user add` calls) may open seconds later.
    for ((i = 0; i < 300; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/${WARDGATE_ADMIN_PORT}") 2>/dev/null && break
        sleep 0.2
    done
    needs_session "$config" && log_in "$config"
    send "$WARMUP" >/dev/null
    callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
    answers="$(send "$REQUESTS")"
    callgrind_control -d "$PROXY_PID" >/dev/null 2>&1
    [[ "$(awk '{ print $1, $2 }' <<<"$answers")" == "$REQUESTS 200" ]] ||
        die "$name: not every request answered 200: $answers"
    dump="$(ls "${out}.${PROXY_PID}".* | head -n1)"
    [[ -z "${PROFILE_DIR:-}" ]] || { mkdir -p "$PROFILE_DIR" && cp "$dump" "${PROFILE_DIR}/callgrind.${name}"; }
    COUNTS+=("$(wardgate_label "$config")|$(awk -v n="$REQUESTS" '/^summary:/ { printf "%d", $2 / n }' "$dump")")
    stop_pid "$PROXY_PID"
    log "$name: ${COUNTS[-1]#*|} instructions per request"
}

report_instructions() {
    local row label count first=""
    echo "Instructions per request (valgrind --tool=callgrind; $REQUESTS requests after $WARMUP, one HTTP/2 connection)"
    echo "on $(uname -m), $(nproc) CPUs; command: $INVOCATION"
    echo
    echo "| config | instructions/request | ratio to the first row |"
    echo "|---|---:|---:|"
    for row in "${COUNTS[@]}"; do
        label="${row%%|*}"
        count="${row#*|}"
        first="${first:-$count}"
        echo "| $label | $count | $(awk -v a="$count" -v b="$first" 'BEGIN { printf "%.3f", a / b }') |"
    done
}

main_instructions() {
    local args=("$@") config
    [[ " $* " == *" --wardgate-config "* ]] || args+=(
        --wardgate-config "${LOAD_DIR}/wardgate-bench-session.yaml"
        --wardgate-config "${LOAD_DIR}/wardgate-bench-policy.yaml")
    install_missing valgrind
    prepare "${args[@]}"
    INVOCATION="REQUESTS=${REQUESTS} WARMUP=${WARMUP} $0${*:+$(printf ' %q' "$@")}"
    for config in "${WARDGATE_CONFIGS[@]}"; do
        count_instructions "$config"
    done
    publish report_instructions
}

main_instructions "$@"
