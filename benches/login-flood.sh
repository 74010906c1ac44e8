#!/usr/bin/env bash
# Login-flood benchmark: proxied requests/s on a route without login while a flood of wrong
# passwords keeps Wardgate's argon2id hashing pool full (target: at least 80% of the req/s
# without the flood).
#
#   benches/login-flood.sh [--out FILE] [--wardgate-config FILE]...
#
# Layout, as in benches/load.sh (whose functions this script uses; no nginx proxy here):
#   CPU 0: Wardgate alone: one tokio worker and one hashing thread (tokio and the hashing pool
#          both size themselves by the CPU affinity: one thread per core they may use).
#   CPU 1: the back end (nginx, fixed JSON), wrk on /api/patients/1, and a second wrk with its
#          own connections posting logins (benches/load/login-flood.lua).
# For each config and connection count the proxied load runs twice on the same gateway: alone,
# then under the flood, which starts before the warm-up and ends after the measured run. Each
# flood connection sends a login, waits for the answer, pauses FLOOD_DELAY_MS and sends the
# next: about FLOOD_CONNECTIONS * 1000 / FLOOD_DELAY_MS attempts a second, far above what one
# core hashes (about 57 a second at the default parameters), so the pool's queue stays full and
# the rest are refused at once (503 WG-AUTH-003).
#
# The login rate limit must not stop the flood first: wardgate-bench.yaml raises
# `auth.login_rate_limit`; the lockouts (`auth.lockout`) keep their defaults, since a locked
# address is still answered after one dummy hash (the same work as a wrong password).
#
# Reported: req/s, latency and Wardgate's CPU of both runs, the ratio of their req/s, and the
# flood's answers by status: 401 (hashed and refused: the pool's throughput), 503 (pool full),
# 429 (login rate limit).
#
# Environment:
#   DURATION=10           seconds of each measured proxied run (after a 2s warm-up)
#   CONNECTIONS=64        wrk connection counts of the proxied load
#   FLOOD_CONNECTIONS=128 connections of the login flood
#   FLOOD_DELAY_MS=100    pause of each flood connection after an answer
#   WARDGATE_BIN, CARGO_TARGET_DIR: as for benches/load.sh
# Options:
#   --out FILE              also write the report (markdown) to FILE
#   --wardgate-config FILE  the config to measure (default benches/load/wardgate-bench.yaml);
#                           repeatable, as for benches/load.sh

set -euo pipefail

CONNECTIONS="${CONNECTIONS:-64}"
FLOOD_CONNECTIONS="${FLOOD_CONNECTIONS:-128}"
FLOOD_DELAY_MS="${FLOOD_DELAY_MS:-100}"
export FLOOD_DELAY_MS # read by login-flood.lua

# shellcheck source=benches/load.sh
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

usage() { sed -n '2,37s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

FLOODS=()       # "label|connections|seconds|401|503|429|other|socket errors", one per flooded run
HASH_THREADS="" # of the Wardgate under test, for the report

# Thread ids of the hashing pool of the Wardgate process `pid`, one a line.
hash_tids() {
    local comm
    for comm in /proc/"$1"/task/*/comm; do
        if [[ "$(<"$comm")" =~ ^wardgate-hash-[0-9]+$ ]]; then
            basename "${comm%/comm}"
        fi
    done
}

# The proxied load of `measure`, under a login flood that spans its warm-up and measured run.
measure_flooded() {
    # Outlasts the warm-up and the measured run, with a margin for starting wrk twice.
    local label="$1" conns="$2" seconds=$((WARMUP_SECONDS + DURATION + 2))
    local out="${WORK_DIR}/flood-${label//[^a-zA-Z0-9._-]/_}-c${conns}.txt"
    log "login flood: ${FLOOD_CONNECTIONS} connections, ${FLOOD_DELAY_MS} ms pauses, ${seconds}s"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${seconds}s" --timeout 10s \
        -s "${LOAD_DIR}/login-flood.lua" "https://127.0.0.1:${WARDGATE_PORT}" >"$out" 2>&1 &
    local flood_pid=$!
    STARTED_PIDS+=("$flood_pid")
    measure "$label, login flood" "$WARDGATE_PORT" "$PROXY_PID" "$conns"
    wait "$flood_pid" || { cat "$out" >&2; die "the flood's wrk failed"; }
    unset 'STARTED_PIDS[-1]'

    local status count s401=0 s503=0 s429=0 other=0 socket_errors
    while read -r status count; do
        case "$status" in
        401) s401=$count ;;
        503) s503=$count ;;
        429) s429=$count ;;
        *) other=$((other + count)) ;;
        esac
    done < <(awk '$1 == "status" { print $2, $3 }' "$out")
    # wrk's own words, "connect 0, read 0, write 0, timeout 12", or nothing when there were none.
    socket_errors="$(sed -n 's/.*Socket errors: //p' "$out")"
    FLOODS+=("${label}|${conns}|${seconds}|${s401}|${s503}|${s429}|${other}|${socket_errors:-none}")
}

report_flood() {
    local i row label conns rps p50 p99 cpu_pct us_per_req errors load_pct ratio
    local seconds s401 s503 s429 other socket_errors rate hashed_rate
    echo "## Wardgate under a login flood"
    echo
    report_setup
    echo "- Wardgate pinned to CPU ${PROXY_CPU} (hashing threads: ${HASH_THREADS}); the back end," \
        "wrk on the route and the flood's wrk on CPU ${LOAD_CPU}"
    echo "- Each run: \`$(wrk_cmd N "$DURATION" "$WARDGATE_PORT")\` after a ${WARMUP_SECONDS}s" \
        "warm-up; flood: \`wrk -t1 -c${FLOOD_CONNECTIONS} --timeout 10s -s" \
        "benches/load/login-flood.lua\` with FLOOD_DELAY_MS=${FLOOD_DELAY_MS}"
    echo
    echo "| run | connections | req/s | p50 ms | p99 ms | Wardgate CPU % | CPU us/req | load core % | errors | req/s vs no flood |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    # RESULTS holds pairs: the run without the flood, then the one under it.
    for ((i = 0; i < ${#RESULTS[@]}; i++)); do
        ratio=""
        IFS='|' read -r label conns rps p50 p99 cpu_pct us_per_req errors load_pct <<<"${RESULTS[i]}"
        if ((i % 2 == 1)); then
            ratio="$(awk -v a="$rps" -v b="$(cut -d'|' -f3 <<<"${RESULTS[i - 1]}")" \
                'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b }')"
        fi
        printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %s |\n' "$label" "$conns" \
            "$rps" "$p50" "$p99" "$cpu_pct" "$us_per_req" "$load_pct" "$errors" "$ratio"
    done
    echo
    echo "| flood during | connections | seconds | logins/s | 401 (hashed) | 401/s | 503 (pool full) | 429 | other | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${FLOODS[@]}"; do
        IFS='|' read -r label conns seconds s401 s503 s429 other socket_errors <<<"$row"
        read -r rate hashed_rate < <(awk -v n=$((s401 + s503 + s429 + other)) -v h="$s401" \
            -v s="$seconds" 'BEGIN { printf "%.0f %.1f\n", n / s, h / s }')
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$conns" \
            "$seconds" "$rate" "$s401" "$hashed_rate" "$s503" "$s429" "$other" "$socket_errors"
    done
}

main() {
    [[ "$FLOOD_CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "FLOOD_CONNECTIONS must be a number"
    [[ "$FLOOD_DELAY_MS" =~ ^[0-9]+$ ]] || die "FLOOD_DELAY_MS must be a number of milliseconds"
    prepare "$@"
    INVOCATION="FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS} FLOOD_DELAY_MS=${FLOOD_DELAY_MS} ${INVOCATION}"
    local config conns label tids
    for config in "${WARDGATE_CONFIGS[@]}"; do
        label="$(wardgate_label "$config")"
        start_wardgate "$config"
        mapfile -t tids < <(hash_tids "$PROXY_PID")
        # Field 19 of a thread's stat is its nice value (auth.password.hashing.nice).
        HASH_THREADS="${#tids[@]} at nice $(awk '{ print $19 }' "/proc/${PROXY_PID}/task/${tids[0]}/stat")"
        for conns in $CONNECTIONS; do
            measure "$label" "$WARDGATE_PORT" "$PROXY_PID" "$conns"
            measure_flooded "$label" "$conns"
        done
        stop_pid "$PROXY_PID"
    done
    publish report_flood
}

main "$@"
