#!/usr/bin/env bash
# Scans the gateway's TLS listener with testssl.sh (Debian's package) and fails on any finding of
# severity LOW or above other than the certificate's own (a self-signed development certificate
# is expected here: its trust, chain and revocation findings are about the certificate, not the
# server's TLS settings). Not part of the CI test run: a full scan takes a few minutes.
#
#   scripts/testssl.sh            # builds the debug binary if needed, scans, prints the findings
#
# The JSON report is kept in $CARGO_TARGET_DIR/testssl/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wardgate/target}"
if ! command -v testssl >/dev/null 2>&1; then
    echo "== installing testssl.sh (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh jq >/dev/null
fi
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null

cargo build --locked --bin wardgate
out="$CARGO_TARGET_DIR/testssl"
rm -rf "$out" && mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill "${gateway:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/gateway.yaml" <<'YAML'
version: 1
listen: { https: "127.0.0.1:0", admin: null }
tls: { cert: gateway.crt, key: gateway.key, dev_self_signed: true }
log: { requests: false, format: json }
store: { dev_generate_key: true }
upstreams:
  backend: { url: "http://127.0.0.1:9" }
routes:
  - { path: /**, upstream: backend, auth: none }
YAML
"$CARGO_TARGET_DIR/debug/wardgate" run --config "$work/gateway.yaml" >"$work/log" 2>&1 &
gateway=$!
port=""
for _ in $(seq 1 100); do
    port="$(grep -o '"https":"127.0.0.1:[0-9]*"' "$work/log" | grep -o '[0-9]*"$' | tr -d '"' || true)"
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/log"; echo "the gateway did not start"; exit 1; }

echo "== testssl.sh against 127.0.0.1:$port ($(testssl --version 2>/dev/null | grep -m1 -o 'testssl.sh [^ ]* *[0-9.a-z+-]*' || echo testssl))"
testssl --quiet --color 0 --warnings off --severity LOW --ip one \
    --jsonfile "$out/report.json" "127.0.0.1:$port" >"$out/report.txt" 2>&1 || true

# Certificate findings (trust, chain of trust, OCSP/CRL, CAA, lifetime) describe the dev
# certificate; everything else is the gateway's TLS configuration.
findings="$(jq -r '.[] | select(.severity=="LOW" or .severity=="MEDIUM" or .severity=="HIGH" or .severity=="CRITICAL")
    | select(.id | test("^(cert_|intermediate_|chain_of_trust|OCSP|CAA|DNS_CAArecord|trust)") | not)
    | "\(.severity)\t\(.id)\t\(.finding)"' "$out/report.json")"
echo "== findings of severity LOW or above, certificate findings excepted:"
if [ -n "$findings" ]; then
    echo "$findings"
    exit 1
fi
echo "none"
jq -r '.[] | select(.id=="cipher_order" or .id=="protocol_negotiated" or .id=="cipher_negotiated" or .id=="TLS1_3" or .id=="TLS1_2" or .id=="TLS1_1" or .id=="TLS1" or .id=="SSLv3") | "\(.id)\t\(.finding)"' "$out/report.json"
