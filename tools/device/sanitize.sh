#!/usr/bin/env bash
# One call on the GPU machine: build cuda_kernels_test and run it under
# compute-sanitizer's memcheck, racecheck, synccheck and initcheck (out-of-
# bounds and misaligned accesses, shared-memory hazards, barrier misuse,
# reads of uninitialized device memory). Each tool has its own time limit;
# logs go to $OUT/sanitize-TOOL.log. initcheck also reports reads of what
# cuBLAS/cuBLASLt kernels wrote, which it does not see (docs/CUDA.md).
# Usage (from the repo root, through the device tool):
#   [FILTER='CudaKernels.*Attention*'] [TOOLS="memcheck racecheck"] [LIMIT_S=150] [PRINT_LIMIT=100] \
#     bash tools/device/sanitize.sh
set -uo pipefail
src=$(pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
build=${BUILD_DIR:-/tmp/tandem-sanitize-build}
pcre=$src/.deps/pcre2
sed -i "s#^prefix=.*#prefix=$pcre/usr#" "$pcre/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
export PKG_CONFIG_PATH=$pcre/usr/lib/x86_64-linux-gnu/pkgconfig
t0=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target cuda_kernels_test >> "$out/build.log" 2>&1 \
  || { grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
sanitizer=/usr/local/cuda/bin/compute-sanitizer
filter=${FILTER:-'CudaKernels.*'}
for tool in ${TOOLS:-memcheck racecheck synccheck initcheck}; do
  t=$(date +%s)
  timeout "${LIMIT_S:-150}" "$sanitizer" --tool "$tool" --error-exitcode 9 --print-limit "${PRINT_LIMIT:-100}" \
    "$build/tests/cuda_kernels_test" --gtest_filter="$filter" > "$out/sanitize-$tool.log" 2>&1
  rc=$?
  echo "$tool: rc=$rc ($(( $(date +%s) - t )) s; 9: errors found, 124: time limit)"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|\[  PASSED  \]|\[  FAILED  \]" "$out/sanitize-$tool.log" | head -5
  # What was reported, and from which tests (counts of the printed reports).
  grep -E "^========= +(Invalid|Uninitialized|Race|Barrier|Misaligned|Out of bounds)|TestBody" \
    "$out/sanitize-$tool.log" | sed -E 's/0x[0-9a-f]+/ADDR/g; s/\[ADDR\] in .*//' | sort | uniq -c | sort -rn | head -12
done
