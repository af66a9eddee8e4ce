#!/usr/bin/env bash
# One call on the GPU machine: configure and build the cuda preset in /tmp
# with every core, run the `gpu` tests, then the decode/prefill benchmarks.
# Usage (from the repo root, through the device tool):
#   bash tools/device/gpu_suite.sh [tests|bench|all|profile|prefill|ncu|quant|parallel|tp_speed|fused|parallel_build|nodes|gemv|attention|offload|tp_check|sampling|load|mixed|server_only (build tandem-server only)] [presets...]
# Needs .deps/pcre2 (Debian's libpcre2-dev and libpcre2-8-0 unpacked with
# dpkg -x) and .deps/tok-llama3 (tokenizer.json + tokenizer_config.json)
# carried along; logs go to $OUT.
set -uo pipefail
what=${1:-all}; shift || true
presets=("$@"); [ ${#presets[@]} -eq 0 ] && presets=(llama3-8b)
src=$(pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
build=${BUILD_DIR:-/tmp/tandem-cuda-build}  # BUILD_DIR=/tmp/ab-new: ab_decode.sh's build (reconfigured with TANDEM_BENCH as this mode wants)
pcre=$src/.deps/pcre2
sed -i "s#^prefix=.*#prefix=$pcre/usr#" "$pcre/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
export PKG_CONFIG_PATH=$pcre/usr/lib/x86_64-linux-gnu/pkgconfig
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv > "$out/gpu.txt" 2>&1
t0=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DTANDEM_BENCH=$([ "$what" = gemv ] || [ "$what" = attention ] || [ "$what" = load ] || [ "$what" = fused ] || [ "$what" = mixed ] && echo ON || echo OFF) > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
targets="tandem-server tandem cuda_kernels_test cuda_runner_test"
[ "$what" = parallel ] || [ "$what" = nodes ] || [ "$what" = profile ] && targets="$targets nccl_communicator_test parallel_runner_test"
[ "$what" = gemv ] && targets="$targets cuda_gemv_bench"
[ "$what" = tp_speed ] && targets="tandem-server nccl_communicator_test nccl_tensor_reduce_test parallel_runner_test"
[ "$what" = fused ] && targets="tandem-server nccl_communicator_test nccl_tensor_reduce_test parallel_runner_test nccl_reduce_bench"
[ "$what" = parallel_build ] && targets="parallel_runner_test"
[ "$what" = tp_speed_build ] && targets="tandem-server nccl_communicator_test parallel_runner_test"
[ "$what" = attention ] && targets="$targets cuda_attention_bench"
[ "$what" = tp_check ] || [ "$what" = server_only ] && targets="tandem-server"
[ "$what" = mixed ] && targets="tandem-server cuda_gemm_bench"
[ "$what" = load ] && targets="tandem-server tandem cuda_gemm_bench cuda_kernels_test cuda_runner_test"
export PATH=$PATH:/usr/local/cuda/bin  # nsys, ncu
# nsys may live in an Nsight Systems folder of its own
for d in /usr/local/cuda/nsight-systems-*/bin /opt/nvidia/nsight-systems/*/bin /usr/local/nsight-systems*/bin; do
  [ -x "$d/nsys" ] && export PATH=$PATH:$d && break
done
cmake --build "$build" -j"$(nproc)" --target $targets >> "$out/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$out/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "$what" = tests ] || [ "$what" = all ] || [ "$what" = gemv ] || [ "$what" = attention ] || [ "$what" = offload ] \
  || [ "$what" = sampling ]; then
  "$build/tests/cuda_kernels_test" > "$out/cuda_kernels_test.log" 2>&1; echo "kernels rc=$?"
  "$build/tests/cuda_runner_test" > "$out/cuda_runner_test.log" 2>&1; echo "runner rc=$?"
  grep -E "FAILED|max\|dlogit\||PASSED" "$out"/cuda_*_test.log | head -40
fi
if [ "$what" = all ]; then
  # serve on the GPU: the demo model answers over HTTP, /v1/status reports the GPU
  "$build/bin/tandem-server" serve --device cuda --port 18765 > "$out/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 1 60); do curl -sf localhost:18765/health > /dev/null && break; sleep 0.5; done
  curl -s localhost:18765/v1/completions -H 'content-type: application/json' \
    -d '{"prompt":"And it came to pass","max_tokens":24,"temperature":0}' | tee "$out/serve-completion.json"; echo
  curl -s localhost:18765/v1/status | head -c 1500; echo
  kill -TERM $pid; wait $pid; echo "serve exit=$?"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  for preset in "${presets[@]}"; do
    for dtype in ${DTYPES:-f16 q8_0}; do
      m=/tmp/synth-$preset-$dtype.gguf
      t1=$(date +%s)
      [ -f "$m" ] || "$build/bin/tandem-server" synth --preset "$preset" --dtype "$dtype" \
        --tokenizer "$src/.deps/tok-llama3" --out "$m" > /dev/null || exit 1
      echo "synth $preset $dtype: $(( $(date +%s) - t1 )) s"
      "$build/bin/tandem-server" perf -m "$m" --device cuda -p 512 -n 128 -r 3 --peak-gb-s ${PEAK_GB_S:-3350} \
        | tee "$out/perf-$preset-$dtype.txt"
      if [ "$dtype" = f16 ] && [ "${THROUGHPUT:-1}" = 1 ]; then
        # Throughput under load: tandem bench against serve on the GPU.
        "$build/bin/tandem-server" serve -m "$m" --device cuda --port 18766 --ctx 1024 --batch-size ${BATCH:-64} \
          --max-queued-requests 512 --log-level warn ${SERVE_ARGS:-} > "$out/serve-$preset.log" 2>&1 &
        spid=$!
        for i in $(seq 1 240); do curl -sf localhost:18766/health > /dev/null && break; sleep 0.5; done
        "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency 1 --requests 4 \
          --prompt-tokens 512 --max-tokens 128 -q --json-out "$out/bench-c1.json" 2>&1 | tail -8
        "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency ${LEVELS:-8,32,64} --requests ${REQUESTS:-64} \
          --prompt-tokens 512 --max-tokens 128 -q --json-out "$out/bench.json" --plot "$out/bench.svg" 2>&1 | tail -12
        kill -TERM $spid; wait $spid
      fi
      rm -f "$m"
    done
  done
fi
if [ "$what" = mixed ]; then
  # Decode steps of 32 sequences that also carry N prompt tokens of another
  # sequence, as the server's steps under load do: cuda_gemm_bench at those
  # token counts (MIXED_GEMM=0: not), ms a step for each N of MIXED_N, then
  # every kernel of steps of 5 decodes + MIXED_PROFILE_N prompt tokens, and of
  # 5 decodes alone, under ncu (GEMM tuning off, so that few kernels run
  # before them; ncu-mixed-N.csv, the last step's kernels are the last rows).
  # MIXED_N="" (set but empty) times no steps. MIXED_GEMM_ARGS go to
  # cuda_gemm_bench (--fp8: the FP8 products), MIXED_PERF_ARGS to perf
  # (--quantize fp8), MIXED_PROFILE=0 skips ncu.
  [ "${MIXED_GEMM:-1}" = 1 ] && "$build/bin/cuda_gemm_bench" --tokens ${MIXED_GEMM_TOKENS:-32,64,96,160,288} \
    --peak-gb-s 3350 --algos ${MIXED_GEMM_ALGOS:-4} ${MIXED_GEMM_ARGS:-} > "$out/gemm_bench.txt" 2>&1
  for n in ${MIXED_N-0 64 128 256 512}; do
    echo "step prompt tokens $n: $("$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda \
      -b 32 -p 512 -n 128 -r 2 --step-prompt-tokens $n ${MIXED_PERF_ARGS:-} 2>&1 | tee "$out/perf-mixed-$n.txt" \
      | grep -E "ms a step|error")"
  done
  if [ "${MIXED_PROFILE:-1}" = 1 ] && command -v ncu > /dev/null; then
    for n in 0 ${MIXED_PROFILE_N:-59}; do
      timeout 250 ncu --cache-control none --clock-control none --csv --metrics gpu__time_duration.sum \
        "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda -b 5 -p 64 -n 2 -r 1 \
        --no-tune-gemm --step-prompt-tokens $n > "$out/ncu-mixed-$n.csv" 2> "$out/ncu-mixed-$n.log"
      echo "ncu $n rc=$? lines=$(wc -l < "$out/ncu-mixed-$n.csv")"
    done
  fi
fi
if [ "$what" = profile ]; then
  # Per-kernel time of decode graph replays (nsys traces each graph node):
  # the in-memory synth model, one GPU, then TP 2 where there are two GPUs.
  # PROFILE_TP="1 2" picks the plans.
  for tp in ${PROFILE_TP:-1}; do
    "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda --tensor-parallel $tp \
      -p 512 -n 128 -r 2 --peak-gb-s $((3350 * tp)) 2>&1 | tee "$out/perf-tp$tp.txt" | grep -E "prefill|decode|error"
    if command -v nsys > /dev/null; then
      nsys profile --cuda-graph-trace=node -o /tmp/prof-tp$tp --force-overwrite true "$build/bin/tandem-server" perf \
        --synthetic "${presets[0]}" --dtype f16 --device cuda --tensor-parallel $tp -p 512 -n 64 -r 1 > /dev/null 2>&1
      nsys stats --report cuda_gpu_kern_sum /tmp/prof-tp$tp.nsys-rep > "$out/nsys-tp$tp.txt" 2>&1
      head -40 "$out/nsys-tp$tp.txt" | cut -c1-220
    else
      echo "no nsys"; ls /usr/local/cuda/bin | head -50
    fi
  done
fi
if [ "$what" = gemv ]; then
  # The decode GEMV alone on the 8B shapes, then batch-1 decode end to end
  # (the shape held in memory) in f16, bf16 and q8_0.
  peak=${PEAK_GB_S:-3350}
  "$build/bin/cuda_gemv_bench" --peak-gb-s "$peak" ${GEMV_ARGS:-} | tee "$out/gemv_bench.txt"
  for dtype in ${DTYPES:-f16 q8_0}; do
    echo "perf $dtype:"
    "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype $dtype --device cuda -p 512 -n 128 -r 3 \
      --peak-gb-s "$peak" 2>&1 | tee "$out/perf-$dtype.txt" | grep -E "prefill|decode|error"
  done
fi
if [ "$what" = attention ]; then
  # Decode attention alone (the 8B attention shape), then batch-1 decode end
  # to end (the shape held in memory) in f16 and int8.
  peak=${PEAK_GB_S:-3350}
  "$build/bin/cuda_attention_bench" --peak-gb-s "$peak" ${ATTENTION_ARGS:-} | tee "$out/attention_bench.txt"
  for q in ${QUANTIZE:-none int8}; do
    echo "perf f16 --quantize $q:"
    "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --quantize $q --device cuda -p 512 -n 128 \
      -r 3 --peak-gb-s "$peak" 2>&1 | tee "$out/perf-$q.txt" | grep -E "prefill|decode|error"
  done
fi
if [ "$what" = offload ]; then
  # serve with one of the fixture's two layers on the CPU: a greedy completion
  # over HTTP, beside the one-GPU completion (they may differ at a near tie:
  # the CPU part computes in f32).
  fixture=$src/tests/models/fixtures/llama3
  for flags in "" "--gpu-layers 1"; do
    "$build/bin/tandem-server" serve -m "$fixture" --device cuda --port 18772 $flags --log-level warn \
      > "$out/serve-offload.log" 2>&1 &
    spid=$!
    for i in $(seq 1 120); do curl -sf localhost:18772/health > /dev/null && break; sleep 0.5; done
    echo "serve ${flags:-(all layers on the GPU)}: $(curl -s localhost:18772/v1/completions -H 'content-type: application/json' \
      -d '{"prompt":"And it came to pass","max_tokens":24,"temperature":0}' | head -c 400)"
    kill -TERM $spid; wait $spid; echo "serve exit=$?"
  done
  # A model past the GPU budget: the 8B shape (15 GB in f16) with the GPU
  # held to 8 GB, so that about half the layers run on the CPU engine.
  "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda --max-memory-gpu 8GB \
    -p 128 -n 32 -r 2 2>&1 | tee "$out/perf-offload.txt" | grep -vE "^model"
fi
if [ "$what" = prefill ]; then
  # Where prefill time goes: the gpu tests, then prefill and decode speed and
  # the per-kernel time of a 512-token prefill (Nsight Compute) for each dtype.
  "$build/tests/cuda_kernels_test" > "$out/cuda_kernels_test.log" 2>&1; echo "kernels rc=$?"
  "$build/tests/cuda_runner_test" > "$out/cuda_runner_test.log" 2>&1; echo "runner rc=$?"
  grep -E "FAILED|PASSED" "$out"/cuda_*_test.log | head -20
  for dtype in ${DTYPES:-f16 q8_0}; do
    "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype $dtype --device cuda -p 512 -n 128 -r 3 \
      --peak-gb-s ${PEAK_GB_S:-3350} 2>&1 | tee "$out/perf-$dtype.txt" | grep -E "prefill|decode|error"
    # One CSV row per kernel of a 512-token prefill and one decode step
    # (tools/device/kernel_times.py sums them by kernel).
    ncu --cache-control none --clock-control none --csv --page raw --metrics gpu__time_duration.sum \
      "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype $dtype --device cuda -p 512 -n 1 -r 1 \
      > "$out/ncu-prefill-$dtype.csv" 2> /dev/null
    python3 "$src/tools/device/kernel_times.py" "$out/ncu-prefill-$dtype.csv" | head -24
  done
fi
if [ "$what" = ncu ]; then
  # Every kernel's time in a short run (prefill 16 tokens, then decode graph
  # replays traced node by node), caches and clocks left as they run:
  # one CSV row per kernel launch, in order.
  /usr/local/cuda/bin/ncu --graph-profiling node --cache-control none --clock-control none --csv --page raw \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum "$build/bin/tandem-server" perf --synthetic "${presets[0]}" \
    --dtype ${DTYPES:-f16} --device cuda -p ${NCU_PROMPT:-16} -n 8 -r 1 > "$out/ncu.csv" 2> "$out/ncu.err"
  echo "ncu rc=$? rows=$(wc -l < "$out/ncu.csv")"; tail -3 "$out/ncu.err"
fi
if [ "$what" = quant ]; then
  # Load-time int8/fp8: gpu tests, held-out loss on the demo model, decode
  # speed and top-1 agreement with f16 on a synth model.
  "$build/tests/cuda_kernels_test" > "$out/cuda_kernels_test.log" 2>&1; echo "kernels rc=$?"
  "$build/tests/cuda_runner_test" > "$out/cuda_runner_test.log" 2>&1; echo "runner rc=$?"
  grep -E "FAILED|int8\]|fp8\]|PASSED" "$out"/cuda_*_test.log | head -30
  for q in none int8 fp8; do
    "$build/bin/tandem-server" perplexity --device cuda --quantize $q -f "$src/models/demo/heldout.txt" --ctx 512 --json
  done | tee "$out/demo-loss.jsonl"
  m=/tmp/synth-${presets[0]}-f16.gguf
  "$build/bin/tandem-server" synth --preset "${presets[0]}" --dtype f16 --tokenizer "$src/.deps/tok-llama3" --out "$m" > /dev/null
  for q in int8 fp8; do
    "$build/bin/tandem-server" perf -m "$m" --device cuda --quantize $q -p 512 -n 128 -r 2 --peak-gb-s 3350 | tail -3
    "$build/bin/tandem-server" perplexity -m "$m" --device cuda --quantize $q --compare-quantize none \
      -f "$src/models/demo/heldout.txt" --ctx 512 --compare-windows 4 | tail -2
  done 2>&1 | tee "$out/quant-8b.txt"
fi
if [ "$what" = tp_check ]; then
  # Tensor parallel against one GPU on a synth model in bf16: every logit of
  # the held-out windows (teacher-forced), top-1 agreement and the largest
  # difference. TP_PLANS="2" picks the plans.
  m=/tmp/synth-${presets[0]}-bf16.gguf
  "$build/bin/tandem-server" synth --preset "${presets[0]}" --dtype bf16 --tokenizer "$src/.deps/tok-llama3" \
    --out "$m" > /dev/null || exit 1
  for tp in ${TP_PLANS:-2}; do
    "$build/bin/tandem-server" perplexity -m "$m" --device cuda --tensor-parallel $tp --compare-tensor-parallel 1 \
      -f "$src/models/demo/heldout.txt" --ctx 512 2>&1 | tee "$out/tp$tp-vs-tp1.txt"
  done
fi
# dump_stacks PID FILE: every thread's stack of PID (cuda-gdb attached) into FILE.
dump_stacks() {
  timeout 150 /usr/local/cuda/bin/cuda-gdb -p "$1" -batch -ex "set pagination off" -ex "thread apply all bt 40" \
    > "$2" 2>&1
}
# run_watched LOG LIMIT_S CMD...: runs CMD with its output in LOG. If LOG
# stops growing for STALL_S seconds (90 by default: past the tests' 30 s
# step limit and the 10 s NCCL aborts after it; a hang), or CMD runs past
# LIMIT_S, every thread's stack goes to $out/stacks.txt (cuda-gdb attached)
# and CMD is killed: status 124. Otherwise CMD's own status.
run_watched() {
  local log=$1 limit=$2; shift 2
  # In a session of its own, so that its child processes (a test's
  # death-test children) are stopped with it.
  setsid "$@" > "$log" 2>&1 &
  local pid=$! last=-1 size still=0 ran=0 child
  while kill -0 $pid 2> /dev/null; do
    sleep 5; ran=$((ran + 5))
    size=$(stat -c %s "$log" 2> /dev/null || echo 0)
    if [ "$size" = "$last" ]; then still=$((still + 5)); else still=0; last=$size; fi
    if [ $still -ge ${STALL_S:-90} ] || [ $ran -ge $limit ]; then
      echo "after $ran s (limit $limit s), no output for $still s: stacks in stacks.txt (children: stacks-PID.txt)"
      dump_stacks $pid "$out/stacks.txt"
      for child in $(pgrep -P $pid); do dump_stacks $child "$out/stacks-$child.txt"; done
      kill -KILL -- -$pid 2> /dev/null; wait $pid 2> /dev/null; return 124
    fi
  done
  wait $pid
}
if [ "$what" = parallel ]; then
  # Several GPUs: NCCL, the multi-GPU runner's equality with one GPU, then
  # batch-1 decode and throughput under load for TP 1 against TP 2 (and PP 2).
  nvidia-smi topo -m 2>&1 | head -4
  timeout 120 "$build/tests/nccl_communicator_test" > "$out/nccl_communicator_test.log" 2>&1; echo "nccl rc=$?"
  # PARALLEL_FILTER: a gtest filter for the runner tests (all by default);
  # PARALLEL_REPEAT: runs of them (a hang shows in some runs only).
  # A hang leaves its threads' stacks in stacks.txt (run_watched).
  TANDEM_TEST_TRACE=1 run_watched "$out/parallel_runner_test.log" ${PARALLEL_TIMEOUT:-400} \
    "$build/tests/parallel_runner_test" --gtest_filter="${PARALLEL_FILTER:-*}" --gtest_repeat="${PARALLEL_REPEAT:-1}"
  echo "parallel rc=$?"
  grep -E "FAILED|OK \]|greedy tokens|PASSED|SKIPPED" "$out/nccl_communicator_test.log" "$out/parallel_runner_test.log" | head -60
  preset=${presets[0]}
  m=/tmp/synth-$preset-f16.gguf
  # The shape held in memory (same bytes per token as the file).
  # PERF_PLANS: the batch-1 plans, "TP,PP" each ("" for none).
  for plan in ${PERF_PLANS-1,1 2,1 1,2}; do
    set -- ${plan/,/ }
    echo "TP $1 x PP $2:"
    "$build/bin/tandem-server" perf --synthetic "$preset" --dtype f16 --device cuda --tensor-parallel $1 \
      --pipeline-parallel $2 -p 512 -n 128 -r 3 --peak-gb-s $((${PEAK_GB_S:-3350} * $1 * $2)) 2>&1 \
      | tee "$out/perf-tp$1-pp$2.txt" | grep -E "prefill|decode|error"
  done
  # The 70B shape in bf16 (141 GB: too large to write out) held in memory
  # (SKIP_70B=1 leaves it out).
  if [ "${SKIP_70B:-0}" != 1 ]; then
    echo "llama3-70b bf16, TP 2:"
    "$build/bin/tandem-server" perf --synthetic llama3-70b --dtype bf16 --device cuda --tensor-parallel 2 -p 128 -n 64 -r 2 \
      --peak-gb-s $((${PEAK_GB_S:-3350} * 2)) 2>&1 | tee "$out/perf-70b-tp2.txt" | grep -E "memory|rank|prefill|decode|error"
  fi
  if [ "${THROUGHPUT:-1}" = 1 ]; then
    "$build/bin/tandem-server" synth --preset "$preset" --dtype f16 --tokenizer "$src/.deps/tok-llama3" --out "$m" > /dev/null || exit 1
    for tp in 1 2; do
      "$build/bin/tandem-server" serve -m "$m" --device cuda --tensor-parallel $tp --port 18766 --ctx 1024 \
        --batch-size 128 --max-queued-requests 1024 --log-level warn > "$out/serve-tp$tp.log" 2>&1 &
      spid=$!
      for i in $(seq 1 240); do curl -sf localhost:18766/health > /dev/null && break; sleep 0.5; done
      echo "TP $tp:"
      "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency 1 --requests 4 \
        --prompt-tokens 512 --max-tokens 128 -q 2>&1 | tail -3
      "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency 128 --requests 256 \
        --prompt-tokens 512 --max-tokens 128 -q --json-out "$out/bench-tp$tp.json" 2>&1 | tail -8
      kill -TERM $spid; wait $spid
    done
  fi
fi
if [ "$what" = tp_speed ]; then
  # Tensor-parallel batch-1 decode on every GPU of the host: the NCCL,
  # fused-reduction and parallel-runner tests (the last watched for stalls:
  # stacks*.txt), then one GPU against TP over all of them, with
  # the all-reduces in NCCL's symmetric window and (NCCL_WIN_ENABLE=0)
  # without it; the 8B shape, and the 70B where there are four GPUs.
  n=$(nvidia-smi -L | wc -l); peak=${PEAK_GB_S:-3350}
  nvidia-smi topo -m 2>&1 | head -$((n + 1))
  timeout 120 "$build/tests/nccl_communicator_test" > "$out/nccl_communicator_test.log" 2>&1; echo "nccl rc=$?"
  timeout 200 "$build/tests/nccl_tensor_reduce_test" > "$out/nccl_tensor_reduce_test.log" 2>&1; echo "reduce rc=$?"
  run_watched "$out/parallel_runner_test.log" 400 "$build/tests/parallel_runner_test"; echo "parallel rc=$?"
  grep -E "FAILED|PASSED|SKIPPED|symmetric" "$out"/nccl_*_test.log "$out/parallel_runner_test.log" | head -20
  for run in "1" "2" "2 NCCL_WIN_ENABLE=0"; do
    set -- $run
    echo "8B f16, TP $1 ${2:-}:"
    env ${2:-TANDEM_NOTHING=1} "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda \
      --tensor-parallel $1 -p 512 -n 128 -r 3 --peak-gb-s $((peak * $1)) 2>&1 | tee "$out/perf-tp$1${2:+-nowin}.txt" \
      | grep -E "rank 0|prefill|decode|error"
  done
  if [ "$n" -ge 4 ]; then
    for env in TANDEM_NOTHING=1 NCCL_WIN_ENABLE=0; do
      echo "70B bf16, TP 4 ($env):"
      env $env "$build/bin/tandem-server" perf --synthetic llama3-70b --dtype bf16 --device cuda --tensor-parallel 4 \
        -p 128 -n 64 -r 2 --peak-gb-s $((peak * 4)) 2>&1 | grep -E "rank 0|prefill|decode|error"
    done
  fi
fi
if [ "$what" = nodes ]; then
  # Two processes, one GPU each, bootstrapped over TCP on this host, stand in
  # for two nodes: node 0 serves, node 1 follows. Greedy completions must
  # equal one GPU's, for TP 2 and for PP 2 (whose logits come back from node 1).
  nvidia-smi topo -m 2>&1 | head -3
  if [ "${NODES_TESTS:-1}" = 1 ]; then
    timeout 300 "$build/tests/parallel_runner_test" > "$out/parallel_runner_test.log" 2>&1; echo "parallel rc=$?"
    grep -E "FAILED|PASSED" "$out/parallel_runner_test.log" | head
  fi
  fixture=$src/tests/models/fixtures/llama3
  ask() {  # port -> completion text
    for i in $(seq 1 120); do curl -sf localhost:$1/health > /dev/null && break; sleep 0.5; done
    curl -s -m 60 localhost:$1/v1/completions -H 'content-type: application/json' \
      -d '{"prompt":"And it came to pass","max_tokens":40,"temperature":0}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])'
  }
  plans=("--tensor-parallel 2" "--pipeline-parallel 2")
  [ "${NODES_SILENCE_ONLY:-0}" = 1 ] && plans=()
  if [ ${#plans[@]} -gt 0 ]; then
    "$build/bin/tandem-server" serve -m "$fixture" --device cuda:0 --port 18770 --log-level warn > "$out/one-gpu.log" 2>&1 &
    pid=$!; want=$(ask 18770); kill -TERM $pid; wait $pid
    echo "one GPU: $want"
  fi
  for plan in "${plans[@]}"; do
    CUDA_VISIBLE_DEVICES=1 "$build/bin/tandem-server" serve -m "$fixture" $plan --nnodes 2 --node-rank 1 \
      --master-port 18790 > "$out/node1.log" 2>&1 &
    n1=$!
    CUDA_VISIBLE_DEVICES=0 "$build/bin/tandem-server" serve -m "$fixture" $plan --nnodes 2 --node-rank 0 \
      --master-port 18790 --port 18771 > "$out/node0.log" 2>&1 &
    n0=$!
    got=$(ask 18771)
    kill -TERM $n0; timeout 30 tail --pid=$n0 -f /dev/null; echo "node 0 gone: $(kill -0 $n0 2> /dev/null && echo no || echo yes)"
    timeout 30 tail --pid=$n1 -f /dev/null; echo "node 1 gone: $(kill -0 $n1 2> /dev/null && echo no || echo yes)"
    kill -KILL $n0 $n1 2> /dev/null
    echo "two nodes ($plan): $got"
    [ "$got" = "$want" ] && echo "EQUAL" || { echo "DIFFERENT"; tail -5 "$out/node0.log" "$out/node1.log"; }
  done
  # Node 0 stopped (SIGSTOP) while its host still answers: idle heartbeats
  # keep node 1 following until then, and node 1 gives up after
  # --node-silence-s without them (NODES_MIDSTEP_ONLY=1 skips it).
  [ "${NODES_MIDSTEP_ONLY:-0}" != 1 ] && {
  CUDA_VISIBLE_DEVICES=1 "$build/bin/tandem-server" serve -m "$fixture" --tensor-parallel 2 --nnodes 2 --node-rank 1 \
    --master-port 18791 --node-silence-s 8 > "$out/node1-silence.log" 2>&1 &
  n1=$!
  CUDA_VISIBLE_DEVICES=0 "$build/bin/tandem-server" serve -m "$fixture" --tensor-parallel 2 --nnodes 2 --node-rank 0 \
    --master-port 18791 --node-silence-s 8 --port 18772 > "$out/node0-silence.log" 2>&1 &
  n0=$!
  echo "silence test, first answer: $(ask 18772)"
  sleep 15
  kill -0 $n1 2> /dev/null && echo "node 1 still follows after 15 s of idle node 0" || echo "node 1 LEFT while node 0 was idle"
  kill -STOP $n0
  t=$(date +%s)
  timeout 40 tail --pid=$n1 -f /dev/null
  echo "node 1 gone: $(kill -0 $n1 2> /dev/null && echo no || echo yes), $(( $(date +%s) - t )) s after node 0 stopped"
  tail -2 "$out/node1-silence.log"
  kill -KILL $n0 $n1 2> /dev/null
  }
  # A node that dies (SIGKILL) or is stopped (SIGSTOP) mid-step (StepWatch): node 1
  # gets the signal while node 0 is generating a long answer. Killed, node 0
  # hears the link close; stopped, the link stays open and node 0 gives the
  # step up when it has run for the larger of --node-silence-s and 30 s.
  # Either way the answer is an error naming node 1, and node 0 keeps
  # answering /health. NODES_MIDSTEP_SIGNALS picks them (default KILL).
  port=18773
  for sig in ${NODES_MIDSTEP_SIGNALS:-KILL}; do
    tag=$([ "$sig" = KILL ] && echo midstep || echo midstep-$sig)
    CUDA_VISIBLE_DEVICES=1 "$build/bin/tandem-server" serve -m "$fixture" --tensor-parallel 2 --nnodes 2 --node-rank 1 \
      --master-port $((port + 19)) --node-silence-s 8 > "$out/node1-$tag.log" 2>&1 &
    n1=$!
    CUDA_VISIBLE_DEVICES=0 "$build/bin/tandem-server" serve -m "$fixture" --tensor-parallel 2 --nnodes 2 --node-rank 0 \
      --master-port $((port + 19)) --node-silence-s 8 --port $port > "$out/node0-$tag.log" 2>&1 &
    n0=$!
    echo "mid-step test ($sig), first answer: $(ask $port)"
    t=$(date +%s.%N)
    curl -s -m 90 localhost:$port/v1/completions -H 'content-type: application/json' \
      -d '{"prompt":"And it came to pass","temperature":0,"ignore_eos":true,"max_tokens":4000}' > "$out/$tag-answer.json" &
    c=$!
    sleep 0.5
    kill -$sig $n1
    # No answer well past the limit: node 0's threads' stacks go to stacks-node0-$tag.txt.
    timeout $([ "$sig" = KILL ] && echo 20 || echo 60) tail --pid=$c -f /dev/null || dump_stacks $n0 "$out/stacks-node0-$tag.txt"
    wait $c
    echo "answer after node 1 got SIG$sig ($(python3 -c "import time; print(round(time.time() - $t, 1))") s): $(head -c 400 "$out/$tag-answer.json")"
    echo "node 0 health: $(curl -s -m 5 localhost:$port/health | head -c 200)"
    if [ "$sig" = STOP ]; then
      # Let node 1 run again: it finds the link shut down and leaves.
      kill -CONT $n1; timeout 30 tail --pid=$n1 -f /dev/null
      echo "node 1 leaves once continued: $(kill -0 $n1 2> /dev/null && echo no || echo yes)"
      tail -2 "$out/node1-$tag.log"
    fi
    # Stopped, node 0 exits though an abort of NCCL may still wait for node 1.
    kill -TERM $n0; timeout 30 tail --pid=$n0 -f /dev/null
    echo "node 0 exits on SIGTERM: $(kill -0 $n0 2> /dev/null && echo no || echo yes)"
    tail -4 "$out/node0-$tag.log"
    kill -KILL $n0 $n1 2> /dev/null
    port=$((port + 1))
  done
fi
if [ "$what" = sampling ]; then
  # Decode with temperature sampling: on the GPU (cuda::sample_rows) against
  # logits copied back and drawn on the host, and greedy, in the same call.
  for b in 1 ${SAMPLING_BATCH:-32}; do
    if [ "$b" = 1 ]; then args="-p 512 -n 128 -r 3"; else args="-b $b -p 128 -n 64 -r 2"; fi
    for mode in greedy device host; do
      extra=""
      [ $mode != greedy ] && extra="--temperature 0.8 --top-p 0.95"
      [ $mode = host ] && extra="$extra --host-sampling"
      echo "== batch $b, $mode"
      "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda $args $extra \
        | grep -E "decode|sampling" | tee -a "$out/sampling-perf.txt"
    done
  done
  if [ "${SAMPLING_SERVE:-1}" = 1 ]; then
    # Under load: tandem bench against serve, greedy and with temperature.
    m=/tmp/synth-${presets[0]}-f16.gguf
    "$build/bin/tandem-server" synth --preset "${presets[0]}" --dtype f16 --tokenizer "$src/.deps/tok-llama3" \
      --out "$m" > /dev/null || exit 1
    "$build/bin/tandem-server" serve -m "$m" --device cuda --port 18766 --ctx 1024 --batch-size 64 \
      --max-queued-requests 512 --log-level warn > "$out/serve-sampling.log" 2>&1 &
    spid=$!
    for i in $(seq 1 240); do curl -sf localhost:18766/health > /dev/null && break; sleep 0.5; done
    for temp in 0 0.8; do
      echo "== serve, temperature $temp"
      "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency 32 --requests 96 --temperature $temp \
        --prompt-tokens 512 --max-tokens 128 -q --json-out "$out/bench-sampling-$temp.json" 2>&1 | tail -6
    done
    kill -TERM $spid; wait $spid
    rm -f "$m"
  fi
fi
if [ "$what" = load ]; then
  # Where a step's time goes under load: cuBLAS's GEMM choice against
  # cuBLASLt's algorithms (GEMM_BENCH=1, GEMM_ARGS), `perf` at PERF_BATCHES
  # sequences, then serve with a step trace under `tandem bench` at LEVELS
  # streams, summarised by tools/device/step_trace.py. LOAD_TESTS=1 runs the
  # kernel and runner tests first. Few files go to $OUT (the device tool
  # brings back 8 at most): logs stay in /tmp.
  if [ "${LOAD_TESTS:-0}" = 1 ]; then
    "$build/tests/cuda_kernels_test" > /tmp/cuda_kernels_test.log 2>&1; echo "kernels rc=$?"
    "$build/tests/cuda_runner_test" > /tmp/cuda_runner_test.log 2>&1; echo "runner rc=$?"
    grep -hE "FAILED|PASSED|Tuned" /tmp/cuda_*_test.log | head -20
  fi
  [ "${GEMM_BENCH:-0}" = 1 ] && "$build/bin/cuda_gemm_bench" --peak-gb-s ${PEAK_GB_S:-3350} ${GEMM_ARGS:-}
  for b in ${PERF_BATCHES:-}; do
    echo "perf -b $b:"
    if [ "$b" = 1 ]; then n=128; p=512; else n=64; p=512; fi
    "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype f16 --device cuda -p $p -n $n -b $b -r 2 \
      --peak-gb-s ${PEAK_GB_S:-3350} ${PERF_ARGS:-} 2>&1 | grep -E "tuning|prefill|decode|error"
  done
  levels=$(echo ${LEVELS-32})  # LEVELS="" or " ": no serve runs
  [ -z "$levels" ] && exit 0
  m=/tmp/synth-${presets[0]}-f16.gguf
  t1=$(date +%s)
  "$build/bin/tandem-server" synth --preset "${presets[0]}" --dtype f16 --tokenizer "$src/.deps/tok-llama3" --out "$m" > /dev/null || exit 1
  echo "synth: $(( $(date +%s) - t1 )) s"
  for level in $levels; do
    "$build/bin/tandem-server" serve -m "$m" --device cuda --port 18766 --ctx 1024 --batch-size ${BATCH:-128} \
      --max-queued-requests 512 --log-level warn --step-trace "$out/trace-$level.csv" ${SERVE_ARGS:-} > /tmp/serve-$level.log 2>&1 &
    spid=$!
    for i in $(seq 1 240); do curl -sf localhost:18766/health > /dev/null && break; sleep 0.5; done
    timeout 200 "$build/bin/tandem" bench --backend http://127.0.0.1:18766 --concurrency $level --requests ${REQUESTS:-96} \
      --prompt-tokens 512 --max-tokens 128 -q 2>&1 | tail -6
    kill -TERM $spid; wait $spid
    python3 "$src/tools/device/step_trace.py" "$out/trace-$level.csv" --skip-s 1
  done
  rm -f "$m"
fi
if [ "$what" = fused ]; then
  # The fused tensor-parallel all-reduce + norm (NcclTensorReduce): its
  # kernel test, the multi-GPU runner's equality with one GPU
  # (PARALLEL_FILTER, all by default), then batch-1 decode on one GPU against
  # TP over FUSED_TP GPUs (default: all) with and without the fused kernel
  # (FUSED_DTYPES: f16 by default; "int8" means f16 quantized at load).
  n=$(nvidia-smi -L | wc -l); tp=${FUSED_TP:-$n}; peak=${PEAK_GB_S:-3350}
  nvidia-smi topo -m 2>&1 | head -$((n + 1))
  timeout 120 "$build/tests/nccl_tensor_reduce_test" > /tmp/nccl_tensor_reduce_test.log 2>&1; echo "reduce rc=$?"
  grep -E "FAILED|OK \]|PASSED|SKIPPED|refused|Failure|Expected|actual" /tmp/nccl_tensor_reduce_test.log | head -20
  if [ "${FUSED_TESTS:-1}" = 1 ]; then
    timeout 120 "$build/tests/nccl_communicator_test" > /tmp/nccl_communicator_test.log 2>&1; echo "nccl rc=$?"
    timeout ${PARALLEL_TIMEOUT:-400} "$build/tests/parallel_runner_test" --gtest_filter="${PARALLEL_FILTER:-*}" \
      > "$out/parallel_runner_test.log" 2>&1; echo "parallel rc=$?"
    grep -E "FAILED|greedy tokens|PASSED|SKIPPED|Failure" "$out/parallel_runner_test.log" | head -40
  fi
  for r in ${FUSED_BENCH_RANKS:-$n}; do "$build/bin/nccl_reduce_bench" --ranks $r --tokens 1,8,32,64,128 --width 4096; done
  [ -n "${FUSED_70B:-}" ] && "$build/bin/nccl_reduce_bench" --tokens 1,8,32 --width 8192
  for dtype in ${FUSED_DTYPES:-f16}; do
    q=""; d=$dtype; [ "$dtype" = int8 ] && { q="--quantize int8"; d=f16; }
    runs=("1"); for t in $tp; do runs+=("$t" "$t --no-fused-all-reduce"); done
    for run in "${runs[@]}"; do
      set -- $run
      echo "${presets[0]} $dtype, TP $run:"
      "$build/bin/tandem-server" perf --synthetic "${presets[0]}" --dtype $d $q --device cuda --tensor-parallel $1 ${2:-} \
        -p 512 -n 128 -r 3 --peak-gb-s $((peak * $1)) 2>&1 | grep -E "prefill|decode|error|all-reduce" | cut -c1-300
    done
  done
  if [ -n "${FUSED_70B:-}" ]; then
    for flag in "" "--no-fused-all-reduce"; do
      echo "llama3-70b bf16, TP $FUSED_70B $flag:"
      "$build/bin/tandem-server" perf --synthetic llama3-70b --dtype bf16 --device cuda --tensor-parallel $FUSED_70B $flag \
        -p 128 -n 64 -r 2 --peak-gb-s $((peak * FUSED_70B)) 2>&1 | grep -E "prefill|decode|error" | cut -c1-300
    done
  fi
fi
