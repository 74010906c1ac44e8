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

echo "== cargo test"
cargo test --all-targets --locked

echo "== wardgate check-config on every config in the repo"
git ls-files -z -- '*.yaml' '*.yml' | while IFS= read -r -d '' config; do
    "$CARGO_TARGET_DIR/debug/wardgate" check-config --config "$config"
done
