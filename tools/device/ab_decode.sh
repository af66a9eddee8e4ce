#!/usr/bin/env bash
# One call on the GPU machine: batch-1 decode of two source trees on the same
# card, so that a kernel change is judged against a baseline measured in the
# same call. The base tree is a `git archive` unpacked under .deps (carried);
# the working tree is the candidate. Both build with every core; the
# candidate's gpu tests run first.
# Usage (from the repo root, through the device tool):
#   git archive main | (mkdir -p .deps/ab-base && tar -x -C .deps/ab-base)
#   [FORMATS="f16 int8 q8_0"] [MIXED="0 32 128" [MIXED_BATCH=32] [MIXED_ARGS=...]] [ROUNDS=2] [TESTS=1] [GEMV_ARGS=...] [ATTENTION_ARGS=...] \
#   [LOAD=32 [REQUESTS=96] [SERVE_ARGS="--quantize fp8"]] \
#     bash tools/device/ab_decode.sh
# GEMV_ARGS / ATTENTION_ARGS: run the candidate's cuda_gemv_bench /
# cuda_attention_bench with them first.
# FORMATS: f16, bf16 and q8_0 are synth dtypes; int8 and fp8 are f16 with
# --quantize; FORMATS="" (set but empty) runs no batch-1 decode at all.
# MIXED: f16 decode steps of MIXED_BATCH (32) sequences that also carry that
# many prompt tokens (perf --step-prompt-tokens), with MIXED_ARGS added (for
# example "--quantize fp8"). Each batch-1 run also reports its prefill of
# 512 tokens (prefill-ab.txt). BASE: the base tree, relative to the
# repo root or absolute. Logs go to $OUT, one file per tree and case with a
# header per round (ab.txt holds one line per perf run; FAILED where a run
# printed no result).
set -uo pipefail
src=$(pwd)
base=${BASE:-.deps/ab-base}
case $base in /*) ;; *) base=$src/$base ;; esac
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
build_tree "$src" /tmp/ab-new tandem-server tandem cuda_kernels_test cuda_runner_test cuda_gemv_bench \
  cuda_attention_bench || exit 1
build_tree "$base" /tmp/ab-base tandem-server || exit 1

if [ "${TESTS:-1}" = 1 ]; then
  /tmp/ab-new/tests/cuda_kernels_test > "$out/cuda_kernels_test.log" 2>&1; echo "kernels rc=$?"
  /tmp/ab-new/tests/cuda_runner_test > "$out/cuda_runner_test.log" 2>&1; echo "runner rc=$?"
  grep -E "FAILED|PASSED" "$out"/cuda_*_test.log | head -40
fi
[ -n "${GEMV_ARGS:-}" ] && /tmp/ab-new/bin/cuda_gemv_bench --peak-gb-s 3350 $GEMV_ARGS | tee "$out/gemv_bench.txt"
[ -n "${ATTENTION_ARGS:-}" ] && /tmp/ab-new/bin/cuda_attention_bench --peak-gb-s 3350 $ATTENTION_ARGS \
  | tee "$out/attention_bench.txt"

# result LOG PATTERN KEEP: the run's result line from LOG, or FAILED naming
# KEEP, the $OUT file that LOG is then appended to under a round header (the
# device tool brings back only a few files, so runs share one per tree and
# case).
result() {
  grep -E "$2" "$1" | tail -1 | grep . || echo "FAILED (see $(basename "$3"), round $round)"
  { echo "=== round $round"; cat "$1"; } >> "$3"
}
perf_line() {  # perf_line LABEL BUILD FORMAT (uses $round)
  local args
  case $3 in
    int8|fp8) args="--dtype f16 --quantize $3" ;;
    *) args="--dtype $3" ;;
  esac
  local log=/tmp/ab-run.txt
  "$2/bin/tandem-server" perf --synthetic llama3-8b $args --device cuda -p 512 -n 128 -r 3 \
    --peak-gb-s "${PEAK_GB_S:-3350}" > "$log" 2>&1
  echo "$1 $3: $(result "$log" "^decode [0-9]+ tokens" "$out/perf-$1-$3.txt")" | tee -a "$out/ab.txt"
  echo "$1 $3: $(grep -E "^prefill [0-9]+ tokens" "$log" | tail -1)" >> "$out/prefill-ab.txt"
}
mixed_line() {  # mixed_line LABEL BUILD PROMPT_TOKENS (uses $round)
  local log=/tmp/ab-run.txt
  local b=${MIXED_BATCH:-32}
  "$2/bin/tandem-server" perf --synthetic llama3-8b --dtype f16 ${MIXED_ARGS:-} --device cuda -b "$b" -p 512 -n 128 \
    -r 2 --step-prompt-tokens "$3" > "$log" 2>&1
  echo "$1 b$b+$3: $(result "$log" "ms a step" "$out/perf-$1-b$b-mixed$3.txt")" | tee -a "$out/ab.txt"
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  for n in ${MIXED:-}; do
    if [ $((round % 2)) = 1 ]; then mixed_line base /tmp/ab-base "$n"; mixed_line new /tmp/ab-new "$n"
    else mixed_line new /tmp/ab-new "$n"; mixed_line base /tmp/ab-base "$n"; fi
  done
  for f in ${FORMATS-f16 int8 q8_0}; do
    # Alternate the order between rounds so that neither tree always runs warm.
    if [ $((round % 2)) = 1 ]; then perf_line base /tmp/ab-base "$f"; perf_line new /tmp/ab-new "$f"
    else perf_line new /tmp/ab-new "$f"; perf_line base /tmp/ab-base "$f"; fi
  done
done
# LOAD=32: `tandem bench` against serve (with SERVE_ARGS) at that many streams (512-token
# prompts, 128 out, REQUESTS requests), each tree in turn.
if [ -n "${LOAD:-}" ]; then
  m=/tmp/synth-llama3-8b-f16.gguf
  /tmp/ab-new/bin/tandem-server synth --preset llama3-8b --dtype f16 --tokenizer "$src/.deps/tok-llama3" --out "$m" \
    > /dev/null || exit 1
  load_line() {  # load_line LABEL BUILD (uses $round)
    echo "=== round $round" >> "$out/serve-$1.log"
    "$2/bin/tandem-server" serve -m "$m" --device cuda --port 18766 --ctx 1024 --batch-size 128 \
      --max-queued-requests 512 --log-level warn ${SERVE_ARGS:-} >> "$out/serve-$1.log" 2>&1 &
    local spid=$! healthy=0 i
    for i in $(seq 1 240); do
      kill -0 $spid 2> /dev/null || break  # serve exited
      curl -sf localhost:18766/health > /dev/null && { healthy=1; break; }
      sleep 0.5
    done
    echo "$1 load $LOAD streams:" | tee -a "$out/ab.txt"
    if [ $healthy = 0 ]; then
      echo "FAILED: serve never answered /health (see serve-$1.log)" | tee -a "$out/ab.txt"
      kill -TERM $spid; wait $spid; return
    fi
    timeout 200 /tmp/ab-new/bin/tandem bench --backend http://127.0.0.1:18766 --concurrency "$LOAD" \
      --requests "${REQUESTS:-96}" --prompt-tokens 512 --max-tokens 128 -q 2>&1 | tail -4 | tee -a "$out/ab.txt"
    kill -TERM $spid; wait $spid
  }
  for round in $(seq 1 "${ROUNDS:-2}"); do
    if [ $((round % 2)) = 1 ]; then load_line base /tmp/ab-base; load_line new /tmp/ab-new
    else load_line new /tmp/ab-new; load_line base /tmp/ab-base; fi
  done
fi
