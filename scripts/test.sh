#!/usr/bin/env bash
# The project's one test command (README, .ci/run): formatting, lints, every test, config checks.
# It installs whatever system packages the tests need, so it runs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Outside the checkout, so that reruns (and CI on the same machine) reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wardgate/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

# Chromium, oathtool and playwright-core for the browser and TOTP tests: one place installs them.
scripts/browser-deps.sh
# Redis and PostgreSQL, for the private servers the tests of several replicas start.
scripts/server-deps.sh

echo "== cargo test"
cargo test --all-targets --locked

# The optional backends (Redis, PostgreSQL) sit behind default features: the build without
# them must stay whole too.
echo "== cargo check without the optional backends"
cargo check --locked --no-default-features

# The fuzz targets (fuzz/, their own workspace) are only built here, not run: an API change in
# the crate must not leave them broken until the next fuzzing run. libFuzzer is C++.
echo "== cargo check of the fuzz targets"
if ! command -v c++ >/dev/null 2>&1; then
    apt-get install -y g++ || { apt-get update && apt-get install -y g++; }
fi
(cd fuzz && cargo check --bins --locked)

echo "== wardgate check-config on every config in the repo"
git ls-files -z -- '*.yaml' '*.yml' | while IFS= read -r -d '' config; do
    "$CARGO_TARGET_DIR/debug/wardgate" check-config --config "$config"
done
