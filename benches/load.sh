#!/usr/bin/env bash
# Load benchmark: Wardgate against nginx as a TLS-terminating reverse proxy, on one core each.
#
#   benches/load.sh [--out FILE] [--wardgate-config FILE]...
#
# Layout (for a 2-core machine; more cores are left idle):
#   CPU 0: the proxy under test, alone: Wardgate (one tokio worker, since tokio sizes its runtime
#          by the CPU affinity) or nginx (master plus exactly one worker).
#   CPU 1: the load generator (wrk, one thread) and the back end (nginx returning fixed JSON).
# Both proxies listen on 127.0.0.1 with the same certificate and key, log no requests, and keep
# connections to the back end alive.
#
# Per run it reports requests/s, p50 and p99 latency, the proxy's CPU share and its CPU time
# per request: utime+stime from /proc/<pid>/stat (all threads of the process; nginx's worker)
# before and after the wrk run, divided by the requests wrk completed. It also reports how busy
# the load core was: when that is near 100% and the proxy's is not, wrk and the back end set
# the req/s, and CPU per request is the number to compare.
#
# Environment:
#   DURATION=10          seconds per measured wrk run (a short warm-up run precedes each)
#   CONNECTIONS="64 256" wrk connection counts
#   WARDGATE_BIN=path    use this binary instead of building with `cargo build --release`
#   CARGO_TARGET_DIR     where cargo builds (default: $HOME/.cache/wardgate/target)
# Options:
#   --out FILE              also write the report (markdown) to FILE
#   --wardgate-config FILE  measure Wardgate with FILE instead of benches/load/wardgate-bench.yaml;
#                           repeat it to get one set of rows per config. FILE must serve
#                           https://127.0.0.1:18443/api/** to the back end on 127.0.0.1:18081.
#
# A config whose route has `auth: session` (benches/load/wardgate-bench-session.yaml) gets a
# user: created with `wardgate user add`, enrolled through the JSON API (a password, and oathtool
# standing in for the authenticator app), logged in; every wrk request then carries
# `Authorization: Bearer <token>`, so the session check runs on each one. A config with a
# `policy:` (benches/load/wardgate-bench-policy.yaml) gets that user as a `physician` on patient
# 1's care team, so every request is also decided by the access policy.
#
# A config with `shared_state:` (benches/load/wardgate-bench-redis.yaml) gets a private
# redis-server on the load core, port 16379, in the work directory, without persistence; it is
# started before that Wardgate and stopped after it.
#
# Needs nginx, wrk, oathtool, jq, curl, openssl and taskset (and redis-server for a
# `shared_state:` config); the first four are installed with apt-get when missing. All traffic stays on 127.0.0.1; every process started is stopped on exit
# and Ctrl-C. benches/login-flood.sh sources this file for its functions.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_DIR
readonly LOAD_DIR="${SCRIPT_DIR}/load"
readonly DEFAULT_WARDGATE_CONFIG="${LOAD_DIR}/wardgate-bench.yaml"

# Fixed ports: `wardgate run` cannot report an OS-chosen port. They match wardgate-bench.yaml.
readonly WARDGATE_PORT=18443
readonly NGINX_PORT=18444
readonly BACKEND_PORT=18081
readonly WARDGATE_ADMIN_PORT=19443
readonly REDIS_PORT=16379
readonly REQUEST_PATH=/api/patients/1
readonly EXPECTED_BODY='"name":"Ada Demo"'

readonly PROXY_CPU=0 # the proxy under test, alone on its core
readonly LOAD_CPU=1  # wrk and the back end share the other one

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64 256}"
readonly WARMUP_SECONDS=2

# The same files for both proxies, so both do the same TLS work (ECDSA P-256, as Wardgate's
# development certificate). Git-ignored; created by ensure_certificate if missing.
readonly CERT="${REPO_DIR}/certs/gateway.crt"
readonly KEY="${REPO_DIR}/certs/gateway.key"

OUT_FILE=""
WARDGATE_CONFIGS=()
WORK_DIR=""
STARTED_PIDS=() # every process this script started, stopped by cleanup
RESULTS=()      # "label|connections|rps|p50|p99|cpu_pct|us_per_req|errors|load_pct", in run order
FAILED_RUNS=0

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

usage() { sed -n '2,37s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args() {
    while (($# > 0)); do
        case "$1" in
        --out)
            (($# >= 2)) || die "--out needs a file"
            OUT_FILE="$2"
            shift 2
            ;;
        --wardgate-config)
            (($# >= 2)) || die "--wardgate-config needs a file"
            [[ -f "$2" ]] || die "$2: no such file"
            WARDGATE_CONFIGS+=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
        esac
    done
    if ((${#WARDGATE_CONFIGS[@]} == 0)); then
        WARDGATE_CONFIGS=("$DEFAULT_WARDGATE_CONFIG")
    fi
    [[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a whole number of seconds"
    local n
    for n in $CONNECTIONS; do
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be numbers, got '$n'"
    done
}

# --- processes ----------------------------------------------------------------------------

# Stops what we started: SIGTERM, a bounded wait, then SIGKILL. Background jobs of a
# non-interactive shell ignore the terminal's SIGINT, so without this Ctrl-C would leave the
# proxies running.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[i]}"
    done
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        if ((status == 0)); then
            rm -rf "$WORK_DIR"
        else
            printf 'logs and wrk output kept in %s\n' "$WORK_DIR" >&2
        fi
    fi
    exit "$status"
}

# Fails if something already listens on the port: measuring a leftover process from an earlier
# run (or someone else's) would be silently wrong.
require_free_port() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "127.0.0.1:$1 is already in use; stop whatever listens there first"
    fi
}

# Waits until `url` answers at all, while `pid` is alive; sets HTTP_CODE (000: no answer) and
# leaves the body in $WORK_DIR/body. Arguments after the fourth go to curl (headers).
# curl -k: the certificate is self-signed.
HTTP_CODE=""
wait_answering() {
    local name="$1" url="$2" pid="$3" logfile="$4" i
    shift 4
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || {
            cat "$logfile" >&2 || true
            die "$name exited during start (log above: $logfile)"
        }
        HTTP_CODE="$(curl -k -sS -o "${WORK_DIR}/body" -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)" || HTTP_CODE="000"
        [[ "$HTTP_CODE" == 000 ]] || return 0
        sleep 0.1
    done
}

# Waits until `url` answers 200 with the expected body, while `pid` is alive; fails loudly with
# the status and body otherwise. Arguments after the fourth go to curl.
require_ok() {
    local name="$1" url="$2" code
    wait_answering "$@"
    code="$HTTP_CODE"
    if [[ "$code" != 200 ]] || ! grep -qF "$EXPECTED_BODY" "${WORK_DIR}/body"; then
        printf '%s answered HTTP %s to GET %s:\n' "$name" "$code" "$url" >&2
        cat "${WORK_DIR}/body" >&2 || true
        printf '\n' >&2
        die "$name does not proxy correctly (expected 200 with $EXPECTED_BODY)"
    fi
    log "$name answers 200 at $url"
}

# --- setup --------------------------------------------------------------------------------

# Installs the Debian packages (named as their commands) that are missing, with apt-get.
install_missing() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]} > 0)); then
        local sudo=()
        ((EUID == 0)) || sudo=(sudo)
        log "installing ${missing[*]} with apt-get"
        # Only refresh the package index when the install fails on a stale one.
        "${sudo[@]}" apt-get install -y "${missing[@]}" ||
            { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y "${missing[@]}"; }
    fi
}

ensure_tools() {
    local tool
    install_missing nginx wrk oathtool jq
    for tool in nginx wrk oathtool jq curl openssl taskset getconf; do
        command -v "$tool" >/dev/null || die "$tool is needed"
    done
    (($(nproc) >= 2)) || die "needs 2 CPUs: one for the proxy, one for wrk and the back end"
}

build_wardgate() {
    if [[ -n "${WARDGATE_BIN:-}" ]]; then
        [[ -x "$WARDGATE_BIN" ]] || die "WARDGATE_BIN=$WARDGATE_BIN is not an executable"
        return
    fi
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wardgate/target}"
    log "cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$REPO_DIR" && cargo build --release)
    WARDGATE_BIN="${CARGO_TARGET_DIR}/release/wardgate"
}

# Generates the shared self-signed certificate if missing, like Wardgate's dev_self_signed
# would (ECDSA P-256, for localhost and the loopback addresses); nginx needs it before Wardgate
# ever ran.
ensure_certificate() {
    if [[ -f "$CERT" && -f "$KEY" ]]; then return; fi
    [[ ! -e "$CERT" && ! -e "$KEY" ]] || die "only one of $CERT and $KEY exists; remove it"
    log "generating a self-signed development certificate in ${CERT%/*}"
    mkdir -p "${CERT%/*}"
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 3650 -subj /CN=localhost \
        -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' \
        -keyout "$KEY" -out "$CERT" 2>/dev/null)
    chmod 0644 "$CERT"
}

nginx_version() { nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p'; }

# "a.b.c" >= "x.y.z"
version_at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# HTTP/2 on the TLS listener, as Wardgate offers it by ALPN: `http2 on;` from nginx 1.25.1,
# the `http2` listen parameter before, nothing without the module. wrk itself speaks HTTP/1.1.
NGINX_HTTP2="off (nginx built without http_v2_module)"
render_nginx_configs() {
    local listen_http2="" http2_directive="# http2: not available in this nginx build"
    if nginx -V 2>&1 | grep -q -- --with-http_v2_module; then
        if version_at_least "$(nginx_version)" 1.25.1; then
            http2_directive="http2 on;"
            NGINX_HTTP2="on (http2 on;)"
        else
            listen_http2=" http2"
            http2_directive="# http2: enabled by the listen parameter (nginx < 1.25.1)"
            NGINX_HTTP2="on (listen ... ssl http2)"
        fi
    fi
    sed -e "s|@NGINX_PORT@|${NGINX_PORT}|g" -e "s|@BACKEND_PORT@|${BACKEND_PORT}|g" \
        -e "s|@LISTEN_HTTP2@|${listen_http2}|g" -e "s|@HTTP2_DIRECTIVE@|${http2_directive}|g" \
        -e "s|@CERT@|${CERT}|g" -e "s|@KEY@|${KEY}|g" \
        "${LOAD_DIR}/nginx-proxy.conf.in" >"${WORK_DIR}/nginx-proxy.conf"
    sed -e "s|@BACKEND_PORT@|${BACKEND_PORT}|g" \
        "${LOAD_DIR}/nginx-backend.conf.in" >"${WORK_DIR}/nginx-backend.conf"
    nginx -t -q -p "${WORK_DIR}/" -e "${WORK_DIR}/error.log" -c "${WORK_DIR}/nginx-proxy.conf" ||
        die "generated nginx proxy config is invalid"
}

# Starts an nginx master (foreground, our child) pinned to a CPU; sets NGINX_MASTER_PID and
# NGINX_WORKER_PID (its only worker, which serves the connections and is what we measure).
start_nginx() {
    local cpu="$1" conf="$2" logfile="$3" i
    taskset -c "$cpu" nginx -p "${WORK_DIR}/" -e "${WORK_DIR}/error.log" -c "$conf" \
        >"$logfile" 2>&1 &
    NGINX_MASTER_PID=$! # taskset execs nginx: same pid
    STARTED_PIDS+=("$NGINX_MASTER_PID")
    NGINX_WORKER_PID=""
    for ((i = 0; i < 100; i++)); do
        NGINX_WORKER_PID="$(pgrep -P "$NGINX_MASTER_PID" | head -n1 || true)"
        [[ -n "$NGINX_WORKER_PID" ]] && break
        kill -0 "$NGINX_MASTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$NGINX_WORKER_PID" ]] || {
        cat "$logfile" "${WORK_DIR}/error.log" >&2 2>/dev/null || true
        die "nginx ($conf) did not start a worker"
    }
}

start_backend() {
    require_free_port "$BACKEND_PORT"
    start_nginx "$LOAD_CPU" "${WORK_DIR}/nginx-backend.conf" "${WORK_DIR}/backend.log"
    require_ok "back end" "http://127.0.0.1:${BACKEND_PORT}${REQUEST_PATH}" \
        "$NGINX_MASTER_PID" "${WORK_DIR}/backend.log"
}

start_nginx_proxy() {
    require_free_port "$NGINX_PORT"
    start_nginx "$PROXY_CPU" "${WORK_DIR}/nginx-proxy.conf" "${WORK_DIR}/nginx.log"
    PROXY_PID="$NGINX_WORKER_PID"
    require_ok "nginx" "https://127.0.0.1:${NGINX_PORT}${REQUEST_PATH}" \
        "$NGINX_MASTER_PID" "${WORK_DIR}/nginx.log"
}

# One call of the enrollment and login API (README, "Login and sessions"): POSTs the JSON `body`
# to https://127.0.0.1:$WARDGATE_PORT/.wardgate/api/`path`; prints the answer, fails on a refusal.
post_json() {
    local path="$1" body="$2" answer
    answer="$(curl -k -sS --max-time 10 -H 'content-type: application/json' -d "$body" \
        -w '\n%{http_code}' "https://127.0.0.1:${WARDGATE_PORT}/.wardgate/api/${path}")"
    [[ "${answer##*$'\n'}" == 200 ]] || die "POST /.wardgate/api/${path} was refused: ${answer%$'\n'*}"
    printf '%s\n' "${answer%$'\n'*}"
}

# Whether the config's routes ask for a logged-in user.
needs_session() { grep -Eq '^[[:space:]]*auth:[[:space:]]*session' "$1"; }

# Whether the config has an access policy.
has_policy() { grep -Eq '^policy:' "$1"; }

# A new user of the running Wardgate, enrolled and logged in; sets REQUEST_HEADERS to carry its
# session token. The store under benches/load/data/ outlives runs, so each run adds a new name.
log_in() {
    local config="$1" name answer secret enrollment challenge token
    local -r password="Violet lanterns hum 7 quiet tunes!"
    name="bench-$(date +%s)-$$"
    local roles=()
    has_policy "$config" && roles=(--role physician)
    answer="$("$WARDGATE_BIN" user add "$name" "${roles[@]}" --config "$config")"
    answer="$(post_json enroll/password "$(jq -nc --arg token "$(jq -r .enrollment.token <<<"$answer")" \
        --arg password "$password" '{$token, $password}')")"
    secret="$(jq -r .totp.secret <<<"$answer")"
    enrollment="$(jq -r .enrollment <<<"$answer")"
    post_json enroll/totp "$(jq -nc --arg enrollment "$enrollment" \
        --arg code "$(oathtool --totp -b "$secret")" '{$enrollment, $code}')" >/dev/null
    answer="$(post_json login "$(jq -nc --arg user "$name" --arg password "$password" \
        '{$user, $password}')")"
    challenge="$(jq -r .challenge <<<"$answer")"
    # Each code works once and the current one went to the enrollment: the next time step's
    # code, within the one step of drift the gateway allows.
    answer="$(post_json login/totp "$(jq -nc --arg challenge "$challenge" \
        --arg code "$(oathtool --totp -b "$secret" -N "@$(($(date +%s) + 30))")" \
        '{$challenge, $code}')")"
    token="$(jq -r .token <<<"$answer")"
    [[ "$token" == wgs_* ]] || die "the login answered no session token: $answer"
    if has_policy "$config"; then
        "$WARDGATE_BIN" care-team --config "$config" add "$name" 1 >/dev/null
    fi
    REQUEST_HEADERS=(-H "Authorization: Bearer ${token}")
    log "logged in as $name"
}

# The report's name for Wardgate with `config`.
wardgate_label() {
    if [[ "$1" == "$DEFAULT_WARDGATE_CONFIG" ]]; then
        echo wardgate
    else
        echo "wardgate ($(basename "$1"))"
    fi
}

# Whether the config keeps its state in Redis.
needs_redis() { grep -Eq '^shared_state:' "$1"; }

# A private redis-server for a `shared_state:` config, on the load core; its pid in REDIS_PID.
REDIS_PID=""
start_redis() {
    install_missing redis-server
    require_free_port "$REDIS_PORT"
    mkdir -p "${WORK_DIR}/redis"
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --dir "${WORK_DIR}/redis" --save "" --appendonly no >"${WORK_DIR}/redis.log" 2>&1 &
    REDIS_PID=$!
    STARTED_PIDS+=("$REDIS_PID")
    local i
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    die "redis-server did not answer on port ${REDIS_PORT}: see ${WORK_DIR}/redis.log"
}

# Wardgate runs one at a time (all configs share the port); returns its pid in PROXY_PID. Sets
# REQUEST_HEADERS, the headers every request to it needs (a session token, or none).
REQUEST_HEADERS=()
start_wardgate() {
    local config="$1" logfile name url
    name="wardgate ($(basename "$config"))"
    url="https://127.0.0.1:${WARDGATE_PORT}${REQUEST_PATH}"
    logfile="${WORK_DIR}/wardgate-$(basename "$1" .yaml).log"
    require_free_port "$WARDGATE_PORT"
    if needs_redis "$config"; then
        start_redis
    fi
    "$WARDGATE_BIN" check-config --config "$config" >/dev/null 2>&1 ||
        { "$WARDGATE_BIN" check-config --config "$config" || true; die "$config is not a valid config"; }
    taskset -c "$PROXY_CPU" "$WARDGATE_BIN" run --config "$config" >"$logfile" 2>&1 &
    PROXY_PID=$!
    STARTED_PIDS+=("$PROXY_PID")
    REQUEST_HEADERS=()
    if needs_session "$config"; then
        wait_answering "$name" "$url" "$PROXY_PID" "$logfile"
        log_in "$config"
    fi
    require_ok "$name" "$url" "$PROXY_PID" "$logfile" "${REQUEST_HEADERS[@]}"
}

# --- measuring ----------------------------------------------------------------------------

# utime+stime of a process, all threads, in clock ticks. The command name (field 2) may hold
# spaces, so count fields after its closing parenthesis: utime and stime are fields 14 and 15,
# i.e. the 12th and 13th after it.
cpu_ticks() {
    local stat
    stat="$(<"/proc/$1/stat")"
    stat="${stat##*") "}"
    awk '{ print $12 + $13 }' <<<"$stat"
}

# "busy total" jiffies of one CPU from /proc/stat; busy is everything but idle and iowait
# (steal included: that time the core was not ours either; guest is already inside user).
cpu_core_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat
}

# Other work on the machine (a parallel build, say) shifts every number; sample all CPUs for a
# second before starting and say so in the report rather than silently measuring noise.
BUSY_BEFORE=""
check_idle() {
    local before after
    before="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    sleep 1
    after="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    BUSY_BEFORE="$(awk -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        printf "%.0f", (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0 }')"
    if ((BUSY_BEFORE > 10)); then
        log "WARNING: the machine is ${BUSY_BEFORE}% busy before the benchmark; results will be noisy"
    fi
}

# wrk prints latencies as 123.45us, 1.23ms or 1.02s; normalize to milliseconds (nothing when
# unreadable: the caller fails on that).
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    }'
}

wrk_cmd() { # connections seconds port
    echo "taskset -c ${LOAD_CPU} wrk -t1 -c$1 -d$2s --latency https://127.0.0.1:$3${REQUEST_PATH}"
}

# Runs wrk in the background and waits for it. Run in the foreground, a Ctrl-C would be lost:
# wrk handles SIGINT and exits 0, and bash then skips its own INT trap ("wait and cooperative
# exit"); `wait` instead returns at once and the trap stops everything.
run_wrk() {
    local out="$1"
    shift
    "$@" >"$out" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait "$pid" || { cat "$out" >&2; die "wrk failed: $*"; }
    unset 'STARTED_PIDS[-1]'
}

# One warm-up and one measured wrk run against `port`; the proxy's CPU is read around the
# measured run only. Appends a RESULTS row.
measure() {
    local label="$1" port="$2" pid="$3" conns="$4"
    local out="${WORK_DIR}/wrk-${label//[^a-zA-Z0-9._-]/_}-c${conns}.txt"
    local -a cmd
    read -r -a cmd <<<"$(wrk_cmd "$conns" "$WARMUP_SECONDS" "$port")"
    log "$label, $conns connections: warm-up ${WARMUP_SECONDS}s"
    run_wrk "${out}.warmup" "${cmd[@]}" "${REQUEST_HEADERS[@]}"

    read -r -a cmd <<<"$(wrk_cmd "$conns" "$DURATION" "$port")"
    log "$label, $conns connections: ${DURATION}s"
    local ticks_before ticks_after load_before load_after
    ticks_before="$(cpu_ticks "$pid")"
    load_before="$(cpu_core_jiffies "$LOAD_CPU")"
    run_wrk "$out" "${cmd[@]}" "${REQUEST_HEADERS[@]}"
    ticks_after="$(cpu_ticks "$pid")"
    load_after="$(cpu_core_jiffies "$LOAD_CPU")"

    local requests rps p50 p99 non2xx socket_errors errors
    requests="$(awk '/requests in/ { print $1; exit }' "$out")"
    rps="$(awk '/^Requests\/sec:/ { print $2; exit }' "$out")"
    p50="$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")"
    [[ -n "$requests" && -n "$rps" && -n "$p50" && -n "$p99" ]] ||
        { cat "$out" >&2; die "cannot read wrk's output ($out)"; }
    ((requests > 0)) || { cat "$out" >&2; die "$label completed no requests"; }
    # Only printed when non-zero: a proxy answering errors or dropping connections is broken,
    # and its numbers mean nothing.
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF; exit }' "$out")"
    # "Socket errors: connect 0, read 3, write 0, timeout 12": sum the numbers.
    socket_errors="$(awk '/Socket errors:/ { for (i = 3; i <= NF; i++) s += $i; print s; exit }' "$out")"
    errors=$((${non2xx:-0} + ${socket_errors:-0}))
    if ((errors > 0)); then
        FAILED_RUNS=$((FAILED_RUNS + 1))
        log "WARNING: $label at $conns connections: $errors errors:"
        grep -E 'Non-2xx|Socket errors' "$out" >&2
    fi

    local clk_tck cpu_pct us_per_req load_pct
    clk_tck="$(getconf CLK_TCK)"
    read -r cpu_pct us_per_req < <(awk -v t="$((ticks_after - ticks_before))" -v hz="$clk_tck" \
        -v d="$DURATION" -v n="$requests" \
        'BEGIN { s = t / hz; printf "%.0f %.1f\n", 100 * s / d, s * 1e6 / n }')
    # How busy wrk's core was: near 100% means the load side, not the proxy, set req/s.
    load_pct="$(awk -v b="$load_before" -v a="$load_after" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        if (y[2] > x[2]) printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')"
    RESULTS+=("${label}|${conns}|${rps}|${p50}|${p99}|${cpu_pct}|${us_per_req}|${errors}|${load_pct}")
}

# --- report -------------------------------------------------------------------------------

# The nginx row's field for the same connection count.
nginx_field() {
    local conns="$1" field="$2" row
    local -a f
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        if [[ "${f[0]}" == nginx && "${f[1]}" == "$conns" ]]; then
            echo "${f[field]}"
            return
        fi
    done
}

# The report's lines on the machine, the programs and the command.
report_setup() {
    local cpu_model
    cpu_model="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- Machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr);" \
        "${BUSY_BEFORE}% busy in the second before the start (should be ~0)"
    echo "- $("$WARDGATE_BIN" --version 2>/dev/null || echo wardgate); nginx $(nginx_version);" \
        "$(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }')"
    echo "- Wardgate binary: ${WARDGATE_BIN}; config(s): ${WARDGATE_CONFIGS[*]#"${REPO_DIR}/"}"
    echo "- Command: \`${INVOCATION}\`"
}

report() {
    local row
    echo "## Wardgate vs nginx: TLS reverse proxy load benchmark"
    echo
    report_setup
    echo "- Proxy under test pinned to CPU ${PROXY_CPU}; wrk (1 thread) and the back end" \
        "(nginx, fixed JSON) on CPU ${LOAD_CPU}; nginx proxy: 1 worker, HTTP/2 ${NGINX_HTTP2}"
    echo "- Each run: \`$(wrk_cmd N "$DURATION" PORT)\` after a ${WARMUP_SECONDS}s warm-up" \
        "(plus \`-H 'Authorization: Bearer <token>'\` for a config with \`auth: session\`);" \
        "nginx on port ${NGINX_PORT}, Wardgate on ${WARDGATE_PORT}"
    echo "- CPU = utime+stime of the proxy process (nginx: its worker) during the measured run;" \
        "CPU % is of one core; load core % is CPU ${LOAD_CPU} (wrk + back end) over the same run"
    echo
    echo "| proxy | connections | req/s | p50 ms | p99 ms | proxy CPU % | CPU us/req | CPU/req vs nginx | p99 vs nginx | load core % | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r label conns rps p50 p99 cpu_pct us_per_req errors load_pct <<<"$row"
        local cpu_ratio="" p99_ratio=""
        if [[ "$label" != nginx ]]; then
            local nginx_us nginx_p99
            nginx_us="$(nginx_field "$conns" 6)"
            nginx_p99="$(nginx_field "$conns" 4)"
            cpu_ratio="$(awk -v a="$us_per_req" -v b="$nginx_us" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
            p99_ratio="$(awk -v a="$p99" -v b="$nginx_p99" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
        fi
        printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %s | %s |\n' "$label" "$conns" \
            "$rps" "$p50" "$p99" "$cpu_pct" "$us_per_req" "$cpu_ratio" "$p99_ratio" "$load_pct" \
            "$errors"
    done
}

# Everything before the first proxy starts: tools, binary, certificate, work directory, the idle
# check and the back end. INVOCATION is the command line, for the report.
prepare() {
    INVOCATION="DURATION=${DURATION} CONNECTIONS=\"${CONNECTIONS}\" $0${*:+$(printf ' %q' "$@")}"
    parse_args "$@"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_tools
    build_wardgate
    ensure_certificate
    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wardgate-load.XXXXXX")"
    # nginx as root drops its worker to `nobody`, which must reach the temp dirs in the prefix.
    chmod 0755 "$WORK_DIR"
    render_nginx_configs

    # Nothing else of ours may listen on the ports while measuring (the admin one included, so
    # a leftover Wardgate is caught).
    require_free_port "$WARDGATE_ADMIN_PORT"
    check_idle
    start_backend
}

main() {
    prepare "$@"
    local conns config
    start_nginx_proxy
    for conns in $CONNECTIONS; do
        measure nginx "$NGINX_PORT" "$PROXY_PID" "$conns"
    done
    stop_pid "$NGINX_MASTER_PID" # leave CPU 0 to the next proxy alone

    for config in "${WARDGATE_CONFIGS[@]}"; do
        start_wardgate "$config"
        for conns in $CONNECTIONS; do
            measure "$(wardgate_label "$config")" "$WARDGATE_PORT" "$PROXY_PID" "$conns"
        done
        stop_pid "$PROXY_PID"
        if [[ -n "$REDIS_PID" ]]; then
            stop_pid "$REDIS_PID"
            REDIS_PID=""
        fi
    done

    publish report
}

# Prints the report that the function `$1` writes (to OUT_FILE too, when asked); fails when a
# measured run had errors.
publish() {
    echo
    if [[ -n "$OUT_FILE" ]]; then
        "$1" | tee "$OUT_FILE"
    else
        "$1"
    fi
    if ((FAILED_RUNS > 0)); then
        die "$FAILED_RUNS run(s) had wrk errors (non-2xx answers or socket errors): the numbers above are not valid"
    fi
}

# Sourced by benches/login-flood.sh for its functions: run only when executed.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
