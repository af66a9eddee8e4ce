#!/usr/bin/env bash
# parallel_runner_test with the all-reduces in NCCL's symmetric window and
# without (TANDEM_TEST_NO_WINDOW=1), alternated; a summary of failures each.
set -u
src=$(pwd); out=${OUT:-/tmp/out}; build=/tmp/tandem-cuda-build
bash "$src/tools/device/gpu_suite.sh" parallel_build | grep build
for round in $(seq 1 ${ROUNDS:-2}); do
  for mode in ${MODES:-window nowin}; do
    if [ $mode = nowin ]; then export TANDEM_TEST_NO_WINDOW=1; else unset TANDEM_TEST_NO_WINDOW; fi
    timeout 200 "$build/tests/parallel_runner_test" > "$out/pr-$mode-$round.log" 2>&1
    echo "$mode round $round: rc=$? $(grep -c '^\[       OK' "$out/pr-$mode-$round.log") ok; $(grep -E 'TP .* x PP .*: ' "$out/pr-$mode-$round.log" | grep -v '120/120' | tr '\n' ';')"
  done
done
