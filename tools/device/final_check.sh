#!/usr/bin/env bash
# The NCCL tests and the multi-GPU runner's equality with one GPU, then TP 2
# batch-1 decode, in one short call.
set -u
src=$(pwd); out=${OUT:-/tmp/out}; build=/tmp/tandem-cuda-build
bash "$src/tools/device/gpu_suite.sh" tp_speed_build | grep build
timeout 60 "$build/tests/nccl_communicator_test" > "$out/nccl.log" 2>&1; echo "nccl rc=$?"; grep -E "OK|FAILED|SKIPPED" "$out/nccl.log" | head -5
timeout 100 "$build/tests/parallel_runner_test" > "$out/pr.log" 2>&1; echo "parallel rc=$? $(grep -c '^\[       OK' "$out/pr.log") ok"; grep -E "FAILED|symmetric" "$out/pr.log" | head -5
timeout 40 "$build/bin/tandem-server" perf --synthetic llama3-8b --dtype f16 --device cuda --tensor-parallel 2 -p 512 -n 64 -r 2 2>&1 | grep -E "rank 0|prefill|decode"
