#!/usr/bin/env bash
# Installs the Debian 12 packages Tandem builds with, and the npm packages its
# conformance tests use as references. Safe to run again: it only installs
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build ccache pkg-config git
  libboost-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libpcre2-dev libzstd-dev libgtest-dev libgmock-dev libbenchmark-dev
  nodejs npm chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A machine may carry node/npm from elsewhere; only install Debian's when absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
to_install=()
for p in "${missing[@]}"; do [ -n "$p" ] && to_install+=("$p"); done
if [ ${#to_install[@]} -gt 0 ]; then
  echo "installing: ${to_install[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${to_install[@]}"
fi

# Reference tokenizers and renderers (tests only).
if [ -f tests/reference/package.json ]; then
  (cd tests/reference && { [ -d node_modules ] && npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })
fi

# The web UI's build (Vite, TypeScript) and its browser tests (playwright-core
# driving Debian's chromium).
if [ -f web/package.json ]; then
  (cd web && { [ -d node_modules ] && npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })
fi
