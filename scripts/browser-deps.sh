#!/usr/bin/env bash
# Installs what the browser tests (tests/browser, tests/integration/browser.rs) and the TOTP
# tests need, on a fresh Debian machine: Chromium from Debian, oathtool, and playwright-core
# from npm (pinned by tests/browser/package-lock.json). It never downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }
}

if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium"
    apt_install chromium
fi
# The TOTP tests check Wardgate's codes against an independent generator, oathtool.
if ! command -v oathtool >/dev/null 2>&1; then
    echo "== installing oathtool"
    apt_install oathtool
fi

# The binary tests start the gateway under prlimit (util-linux) and stop it with kill (procps).
if ! command -v prlimit >/dev/null 2>&1 || [ ! -x /bin/kill ]; then
    echo "== installing util-linux and procps"
    apt_install util-linux procps
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "== installing node and npm"
    apt_install nodejs npm
fi

echo "== npm packages for tests/browser"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
cd tests/browser
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
