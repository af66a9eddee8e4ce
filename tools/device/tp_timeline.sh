#!/usr/bin/env bash
# One call on a machine of two GPUs: batch-1 decode at TP 1 and TP 2, plain
# and under the kernel timeline (bench/kernel_timeline.cpp), with each
# GPU's step summed by tools/device/timeline.py; then the fused reduction
# alone (nccl_reduce_bench). TESTS=1 first runs nccl_tensor_reduce_test and
# parallel_runner_test. Logs go to $OUT.
# Usage (from the repo root, through the device tool):
#   [DTYPE=f16] [ROUNDS=1] [TESTS=1] [TRACE=0] bash tools/device/tp_timeline.sh
set -uo pipefail
src=$(pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
build=${BUILD_DIR:-/tmp/tp-build}
pcre=$src/.deps/pcre2
sed -i "s#^prefix=.*#prefix=$pcre/usr#" "$pcre/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
export PKG_CONFIG_PATH=$pcre/usr/lib/x86_64-linux-gnu/pkgconfig
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/gpu.txt"
t0=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DTANDEM_BENCH=ON > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
tests=""
[ "${TESTS:-0}" = 1 ] && tests="nccl_tensor_reduce_test parallel_runner_test"
cmake --build "$build" -j"$(nproc)" --target tandem-server tandem_kernel_timeline nccl_reduce_bench $tests \
  >> "$out/build.log" 2>&1 || { grep -E "error|Error" -A3 "$out/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ -n "$tests" ]; then
  timeout 120 "$build/tests/nccl_tensor_reduce_test" > "$out/tests.log" 2>&1; echo "reduce test rc=$?"
  timeout 300 "$build/tests/parallel_runner_test" >> "$out/tests.log" 2>&1; echo "runner test rc=$?"
  grep -E "FAILED|PASSED" "$out/tests.log"
fi
dtype=${DTYPE:-f16}
perf() {  # perf TP [extra args]
  local tp=$1; shift
  "$build/bin/tandem-server" perf --synthetic llama3-8b --dtype "$dtype" --device cuda --tensor-parallel "$tp" \
    -p 512 -n 128 -r 3 "$@" 2>&1 | grep -E "^decode [0-9]+ tokens|^prefill|error" | sed "s/^/TP $tp $*: /"
}
for round in $(seq 1 "${ROUNDS:-1}"); do
  perf 1 ${PERF_ARGS:-}; perf 2 ${PERF_ARGS:-}
done | tee "$out/perf.txt"
[ "${TRACE:-1}" = 1 ] && for tp in 1 2; do
  TANDEM_TIMELINE_OUT=/tmp/tp$tp.csv CUDA_INJECTION64_PATH=$build/bench/libtandem_kernel_timeline.so \
    "$build/bin/tandem-server" perf --synthetic llama3-8b --dtype "$dtype" --device cuda --tensor-parallel "$tp" \
    -p 512 -n 64 -r 1 ${PERF_ARGS:-} > "$out/traced-tp$tp.txt" 2>&1
  for d in $(seq 0 $((tp - 1))); do
    echo "=== TP $tp, GPU $d"
    python3 "$src/tools/device/timeline.py" /tmp/tp$tp.csv --last 24 --device "$d" --top 30
  done
done | tee "$out/timeline.txt"
"$build/bin/nccl_reduce_bench" --ranks 2 --tokens 1,8 --width 4096 2>&1 | tee "$out/reduce_bench.txt"
