#!/usr/bin/env bash
# One call on the GPU machine: batch-1 decode of two source trees on the same
# card, so that a kernel change is judged against a baseline measured in the
# same call. The base tree is a `git archive` unpacked under .deps (carried);
# the working tree is the candidate. Both build with every core; the
# candidate's gpu tests run first.
# Usage (from the repo root, through the device tool):
#   git archive main | (mkdir -p .deps/ab-base && tar -x -C .deps/ab-base)
#   [FORMATS="f16 int8 q8_0"] [ROUNDS=2] [TESTS=1] bash tools/device/ab_decode.sh
# FORMATS: f16, bf16 and q8_0 are synth dtypes; int8 and fp8 are f16 with
# --quantize. Logs go to $OUT (ab.txt holds one line per perf run).
set -uo pipefail
src=$(pwd)
base=$src/${BASE:-.deps/ab-base}
out=${OUT:-/tmp/out}; mkdir -p "$out"
pcre=$src/.deps/pcre2
sed -i "s#^prefix=.*#prefix=$pcre/usr#" "$pcre/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
export PKG_CONFIG_PATH=$pcre/usr/lib/x86_64-linux-gnu/pkgconfig
[ -d "$base/src" ] || { echo "no base tree at $base"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

build_tree() {  # build_tree SRC BUILD TARGETS...
  local tree=$1 dir=$2; shift 2
  local t0; t0=$(date +%s)
  cmake -S "$tree" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DTANDEM_BENCH=ON >> "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; return 1; }
  cmake --build "$dir" -j"$(nproc)" --target "$@" >> "$out/build.log" 2>&1 \
    || { grep -E "error|Error" -A3 "$out/build.log" | head -60; return 1; }
  echo "build $(basename "$dir"): $(( $(date +%s) - t0 )) s"
}
build_tree "$src" /tmp/ab-new tandem-server cuda_kernels_test cuda_runner_test cuda_gemv_bench || exit 1
build_tree "$base" /tmp/ab-base tandem-server || exit 1

if [ "${TESTS:-1}" = 1 ]; then
  /tmp/ab-new/tests/cuda_kernels_test > "$out/cuda_kernels_test.log" 2>&1; echo "kernels rc=$?"
  /tmp/ab-new/tests/cuda_runner_test > "$out/cuda_runner_test.log" 2>&1; echo "runner rc=$?"
  grep -E "FAILED|PASSED" "$out"/cuda_*_test.log | head -40
fi
[ -n "${GEMV_ARGS:-}" ] && /tmp/ab-new/bin/cuda_gemv_bench --peak-gb-s 3350 $GEMV_ARGS | tee "$out/gemv_bench.txt"

perf_line() {  # perf_line LABEL BUILD FORMAT
  local args
  case $3 in
    int8|fp8) args="--dtype f16 --quantize $3" ;;
    *) args="--dtype $3" ;;
  esac
  local log="$out/perf-$1-$3.txt"
  "$2/bin/tandem-server" perf --synthetic llama3-8b $args --device cuda -p 512 -n 128 -r 3 \
    --peak-gb-s "${PEAK_GB_S:-3350}" >> "$log" 2>&1
  echo "$1 $3: $(grep -E "^decode [0-9]+ tokens" "$log" | tail -1)" | tee -a "$out/ab.txt"
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  for f in ${FORMATS:-f16 int8 q8_0}; do
    # Alternate the order between rounds so that neither tree always runs warm.
    if [ $((round % 2)) = 1 ]; then perf_line base /tmp/ab-base "$f"; perf_line new /tmp/ab-new "$f"
    else perf_line new /tmp/ab-new "$f"; perf_line base /tmp/ab-base "$f"; fi
  done
done
