#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: install what is missing,
# build the CPU preset, run every test except those labelled `gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/tandem-ccache}"
cmake --preset cpu
cmake --build --preset cpu -j"$(nproc)"
ctest --preset cpu -j"$(nproc)" --timeout 900
