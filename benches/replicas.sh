#!/usr/bin/env bash
# Two Wardgate replicas behind a load balancer: requests/s with a session on every request,
# nginx sending requests round robin to both, their state shared in one Redis and one
# PostgreSQL (README, "Several replicas"). Beside it, one replica alone on the same state.
#
#   benches/replicas.sh [--out FILE]
#
# Started for the run, in a temporary directory, on 127.0.0.1 only, and stopped after it: a
# private redis-server (port 16379), a private PostgreSQL (port 15432; run as the `postgres`
# user under root, since initdb refuses root), the back end (nginx, fixed JSON), replica A
# (https 18443, admin 19443, pinned to CPU 0), replica B (https 18445, admin 19445, pinned to
# CPU 1), and nginx as the load balancer (https 18446, `proxy_pass https://` to both, round
# robin per request, keep-alive to each). A user is created through A (`wardgate user add`),
# enrolled and logged in on A; wrk sends its token on every request through the balancer, so
# about half the requests check on B a session made on A.
#
# On a machine with few cores everything shares them (on 2: A on one, B with wrk, the balancer,
# the back end and the stores on the other), so the figure says the replicas serve one session
# together at that rate, not how they scale; run it on a larger machine for that.
#
# Environment: DURATION, CONNECTIONS, WARDGATE_BIN, CARGO_TARGET_DIR as for benches/load.sh.
# Needs what benches/load.sh needs, and redis-server and PostgreSQL (scripts/server-deps.sh).

set -euo pipefail

# shellcheck source=benches/load.sh
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

usage() { sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

readonly REPLICA_B_PORT=18445
readonly REPLICA_B_ADMIN_PORT=19445
readonly BALANCER_PORT=18446
readonly POSTGRES_PORT=15432
readonly POSTGRES_USER=wardgate
readonly POSTGRES_PASSWORD=bench-only-password

PG_BIN=""
# The private PostgreSQL, with a database `wardgate` its user owns.
start_postgres() {
    PG_BIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n1)"
    [[ -x "${PG_BIN}/initdb" ]] || die "PostgreSQL is needed: run scripts/server-deps.sh"
    require_free_port "$POSTGRES_PORT"
    local dir="${WORK_DIR}/postgres" as=()
    mkdir -p "$dir"
    ((EUID == 0)) && { chown postgres: "$dir"; as=(runuser -u postgres --); }
    printf '%s' "$POSTGRES_PASSWORD" >"${dir}/password"
    ((EUID == 0)) && chown postgres: "${dir}/password"
    "${as[@]}" "${PG_BIN}/initdb" --pgdata "${dir}/data" --username "$POSTGRES_USER" \
        --pwfile "${dir}/password" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --no-instructions >"${WORK_DIR}/initdb.log" 2>&1 ||
        { cat "${WORK_DIR}/initdb.log" >&2; die "initdb failed"; }
    "${as[@]}" "${PG_BIN}/pg_ctl" --pgdata "${dir}/data" --log "${dir}/server.log" --wait \
        -o "-c listen_addresses=127.0.0.1 -p ${POSTGRES_PORT} -c unix_socket_directories=${dir}" \
        start >/dev/null || { cat "${dir}/server.log" >&2; die "PostgreSQL did not start"; }
    # Stopped by cleanup with the rest, after the replicas (a smart shutdown: no clients left).
    STARTED_PIDS+=("$(head -n1 "${dir}/data/postmaster.pid")")
    "${as[@]}" "${PG_BIN}/createdb" --host "$dir" --port "$POSTGRES_PORT" \
        --username "$POSTGRES_USER" wardgate
    printf '%s' "$POSTGRES_PASSWORD" >"${WORK_DIR}/postgres.password"
    chmod 0600 "${WORK_DIR}/postgres.password"
}

# A replica's config: the session route of wardgate-bench-redis.yaml, its store in PostgreSQL,
# one master key for both (made by the first start), a data directory of its own.
render_replica() {
    local name="$1" https="$2" admin="$3" file="${WORK_DIR}/replica-$1.yaml"
    cat >"$file" <<EOF
version: 1
listen: { https: "127.0.0.1:${https}", admin: "127.0.0.1:${admin}" }
tls: { cert: "${CERT}", key: "${KEY}", min_version: "1.2", dev_self_signed: true }
server: { shutdown_grace: 2s, max_upstream_requests_per_client: 1024 }
log: { requests: false }
store:
  kind: postgres
  url: "postgres://${POSTGRES_USER}@127.0.0.1:${POSTGRES_PORT}/wardgate"
  password_file: "${WORK_DIR}/postgres.password"
  path: "${WORK_DIR}/data-${name}"
  key_file: "${WORK_DIR}/master.key"
  dev_generate_key: true
shared_state: { kind: redis, url: "redis://127.0.0.1:${REDIS_PORT}", prefix: wardgate-bench }
sanitize: { server_names: [127.0.0.1, localhost] }
rate_limits:
  per_client: { requests: 1000000, per: 1s }
  per_route: { requests: 1000000, per: 1s }
session: { idle_timeout: 1h, absolute_timeout: 1h }
upstreams:
  backend: { url: "http://127.0.0.1:${BACKEND_PORT}" }
routes:
  - { name: bench, path: "/api/patients/{patient}", upstream: backend, auth: session, patient_data: true }
EOF
    echo "$file"
}

# Starts a replica pinned to `cpu`; its pid in REPLICA_PID.
start_replica() {
    local config="$1" cpu="$2" port="$3" log="${WORK_DIR}/$(basename "$1" .yaml).log"
    "$WARDGATE_BIN" check-config --config "$config" >/dev/null 2>&1 ||
        { "$WARDGATE_BIN" check-config --config "$config" || true; die "$config is not valid"; }
    taskset -c "$cpu" "$WARDGATE_BIN" run --config "$config" >"$log" 2>&1 &
    REPLICA_PID=$!
    STARTED_PIDS+=("$REPLICA_PID")
    wait_answering "replica on ${port}" "https://127.0.0.1:${port}${REQUEST_PATH}" \
        "$REPLICA_PID" "$log"
}

start_balancer() {
    require_free_port "$BALANCER_PORT"
    cat >"${WORK_DIR}/balancer.conf" <<EOF
worker_processes 1;
daemon off;
pid balancer.pid;
error_log error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    keepalive_requests 1000000;
    upstream replicas {
        server 127.0.0.1:${WARDGATE_PORT};
        server 127.0.0.1:${REPLICA_B_PORT};
        keepalive 256;
    }
    server {
        listen 127.0.0.1:${BALANCER_PORT} ssl;
        ssl_certificate ${CERT};
        ssl_certificate_key ${KEY};
        location / {
            proxy_pass https://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_ssl_server_name off;
            proxy_ssl_session_reuse on;
        }
    }
}
EOF
    start_nginx "$LOAD_CPU" "${WORK_DIR}/balancer.conf" "${WORK_DIR}/balancer.log"
    BALANCER_PID="$NGINX_MASTER_PID"
}

report_replicas() {
    local row
    echo "## Two Wardgate replicas behind nginx, one Redis, one PostgreSQL"
    echo
    report_setup
    echo "- Replica A on CPU ${PROXY_CPU}, replica B on CPU ${LOAD_CPU}; wrk (1 thread) on" \
        "CPU ${LOAD_CPU}; the balancer (nginx, 1 worker), the back end, Redis and PostgreSQL" \
        "unpinned; a session token on every request"
    echo "- Each run: \`$(wrk_cmd N "$DURATION" PORT) -H 'Authorization: Bearer <token>'\`" \
        "after a ${WARMUP_SECONDS}s warm-up"
    echo
    echo "| target | connections | req/s | p50 ms | p99 ms | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r label conns rps p50 p99 _ _ errors _ <<<"$row"
        printf '| %s | %s | %.0f | %.2f | %.2f | %s |\n' "$label" "$conns" "$rps" "$p50" "$p99" \
            "$errors"
    done
}

main_replicas() {
    WARDGATE_CONFIGS=("${SCRIPT_DIR}/load/wardgate-bench-redis.yaml")
    prepare "$@"
    WARDGATE_CONFIGS=("replica-a.yaml, replica-b.yaml (written by benches/replicas.sh)")
    install_missing redis-server
    start_redis
    start_postgres
    local a b conns
    a="$(render_replica a "$WARDGATE_PORT" "$WARDGATE_ADMIN_PORT")"
    b="$(render_replica b "$REPLICA_B_PORT" "$REPLICA_B_ADMIN_PORT")"
    start_replica "$a" "$PROXY_CPU" "$WARDGATE_PORT"
    local pid_a="$REPLICA_PID"
    start_replica "$b" "$LOAD_CPU" "$REPLICA_B_PORT"
    log_in "$a"
    require_ok "replica B with A's session" "https://127.0.0.1:${REPLICA_B_PORT}${REQUEST_PATH}" \
        "$REPLICA_PID" "${WORK_DIR}/replica-b.log" "${REQUEST_HEADERS[@]}"
    for conns in $CONNECTIONS; do
        measure "replica A alone" "$WARDGATE_PORT" "$pid_a" "$conns"
    done
    # After A alone: the balancer's idle connections to A count against A's connections per
    # client address, all from 127.0.0.1 here.
    start_balancer
    require_ok "the balancer" "https://127.0.0.1:${BALANCER_PORT}${REQUEST_PATH}" \
        "$BALANCER_PID" "${WORK_DIR}/balancer.log" "${REQUEST_HEADERS[@]}"
    for conns in $CONNECTIONS; do
        measure "A and B behind nginx" "$BALANCER_PORT" "$pid_a" "$conns"
    done
    publish report_replicas
}

main_replicas "$@"
