#!/usr/bin/env bash
# One device call: build, the GEMM kernel tests, cuda_runner_test, the GEMM
# bench and perf A/B of small_gemm.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
pcre=$PWD/.deps/pcre2
sed -i "s#^prefix=.*#prefix=$pcre/usr#" "$pcre/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
export PKG_CONFIG_PATH=$pcre/usr/lib/x86_64-linux-gnu/pkgconfig
B=/tmp/b
t0=$(date +%s)
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DTANDEM_BENCH=ON > "$out/build.log" 2>&1 \
  && cmake --build $B -j16 --target tandem-server cuda_kernels_test cuda_runner_test cuda_gemm_bench >> "$out/build.log" 2>&1 \
  || { grep -E 'error' -A3 "$out/build.log" | head -40; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=name --format=csv,noheader
$B/tests/cuda_kernels_test --gtest_filter='*Gemm*' > "$out/kernels.log" 2>&1; echo "kernels rc=$?"
grep -E 'OK \]|FAILED|PASSED|Failure' -A2 "$out/kernels.log" | head -40
$B/tests/cuda_runner_test > "$out/runner.log" 2>&1; echo "runner rc=$?"; grep -E 'FAILED|PASSED' "$out/runner.log" | head
timeout 200 $B/bin/cuda_gemm_bench --tokens ${TOKENS:-8,16,32,48,64} --algos 4 --peak-gb-s ${PEAK:-3350} | tee "$out/gemm_bench.txt"
for b in ${BATCHES:-32 16 64 32}; do for f in --small-gemm --no-small-gemm; do
  echo "== -b $b $f"
  $B/bin/tandem-server perf --synthetic llama3-8b --dtype f16 --device cuda -b $b -p 512 -n 64 -r 2 $f 2>&1 | grep -E 'GEMM|decode|error'
done; done
