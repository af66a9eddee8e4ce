// `tandem-server perf`: prefill and decode speed without HTTP, and the
// achieved weight-read bandwidth of decode.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "engine/sampler.h"
#include "cli/runner_factory.h"
#include "models/gguf_export.h"
#include "models/model_file.h"
#include "server/server_config.h"
#if TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_model_runner.h"
#include "backends/cuda/offload_runner.h"
#endif
#if TANDEM_HAVE_NCCL
#include "backends/cuda/parallel_cuda_runner.h"
#endif

namespace tandem::cli {
namespace {

struct PerfOptions {
  std::string model;
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 128;
  int64_t batch = 1;  // sequences decoded together (each with its own prompt copy)
  // Prompt tokens of one more sequence carried by every decode step, as the
  // server mixes prompt chunks into decode steps (0 = decode steps only).
  int64_t step_prompt_tokens = 0;
  int repetitions = 3;
  int threads = 0;
  std::string device = "auto";
  std::string quantize = "none";
  std::string kv_cache = "f16";  // --kv-cache-dtype
  int64_t gpu_layers = kGpuLayersAuto;
  std::string max_memory_gpu;  // e.g. "8GB": the GPU budget (layers past it run on the CPU)
  double peak_gb_s = 0;
  bool json = false;
  parallel::ParallelConfig parallel;
  std::string synthetic;  // a synth preset held in memory instead of -m
  std::string dtype = "bf16";
  // Decode sampling: greedy (temperature 0) by default, as before.
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  bool fused_all_reduce = true;  // --fused-all-reduce / --no-fused-all-reduce
  bool cuda_graphs = true;       // --cuda-graphs / --no-cuda-graphs
  bool tune_gemm = true;         // --tune-gemm / --no-tune-gemm
  bool host_sampling = false;  // sample on the host even where the backend can
  bool gpu_gaps = false;       // time each decode step's GPU side with events
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int perf(const PerfOptions& o) {
  check(o.prompt_tokens > 0 && o.gen_tokens >= 0, "-p must be positive and -n non-negative");
  check(o.batch >= 1, "--batch must be at least 1");
  check(o.step_prompt_tokens >= 0 && o.step_prompt_tokens <= o.prompt_tokens,
        "--step-prompt-tokens must be between 0 and -p (the chunks are cut from a prompt of -p tokens)");
  std::unique_ptr<ModelFile> model;
  if (!o.synthetic.empty()) {
    check(o.model.empty(), "-m and --synthetic name two models; give one");
    model = make_synth_model_in_memory(find_synth_preset(o.synthetic), parse_dtype(o.dtype), 1);
  } else {
    model = ModelFile::open(resolve_model_path(o.model));
  }
  const std::string path = model->path();
  const ModelConfig& c = model->config();
  ThreadPool pool(o.threads);
  RunnerRequest rq;
  rq.device = o.device;
  rq.quantize = o.quantize;
  rq.kv_cache = o.kv_cache;
  rq.gpu_layers = o.gpu_layers;
  if (!o.max_memory_gpu.empty()) rq.gpu_memory_bytes = server::parse_memory_size(o.max_memory_gpu, "--max-memory-gpu");
  rq.parallel = o.parallel;
  rq.fused_all_reduce = o.fused_all_reduce;
  rq.cuda_graphs = o.cuda_graphs;
  rq.tune_gemm = o.tune_gemm;
  rq.capture_decode_graphs = o.batch;
  rq.max_context = o.prompt_tokens + o.gen_tokens + 1;
  const bool mixed = o.step_prompt_tokens > 0;
  if (o.batch > 1 || mixed)
    rq.kv_blocks = (o.batch + (mixed ? 1 : 0)) * ((rq.max_context + rq.block_size - 1) / rq.block_size);
  Runner backend = make_runner(*model, pool, rq);
  ModelRunner& runner = *backend.runner;
  std::string offload_split;  // where an offloaded model's decode time goes
#if TANDEM_HAVE_CUDA
  auto* offload = dynamic_cast<OffloadRunner*>(&runner);
  auto* cuda_runner = dynamic_cast<CudaModelRunner*>(&runner);
  std::string host_split;  // where the host's time in a decode step went
  std::vector<std::string> rank_split;  // the same for each GPU of a parallel plan
  std::string gpu_split;   // --gpu-gaps: the GPU's side of a decode step
  if (o.gpu_gaps) {
    check(cuda_runner != nullptr && o.parallel.tensor_parallel * o.parallel.pipeline_stages == 1,
          "--gpu-gaps times the steps of one GPU (--device cuda, no parallel plan)");
    cuda_runner->time_gpu_steps(true);
  }
#else
  check(!o.gpu_gaps, "--gpu-gaps needs a build with CUDA");
#endif

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(std::min<int64_t>(c.vocab_size, 32000) - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt_tokens));
  for (int32_t& t : prompt) t = dist(rng);

  double best_prefill = 0, best_decode = 0;
  std::vector<double> prefill_runs, decode_runs;
  int64_t mixed_prompt_tokens = 0;  // prompt tokens the last run's decode steps carried
  const size_t n_seq = static_cast<size_t>(o.batch);
  auto argmax_row = [&](const std::vector<float>& logits, size_t row) {
    const auto begin = logits.begin() + static_cast<std::ptrdiff_t>(row * static_cast<size_t>(c.vocab_size));
    return static_cast<int32_t>(std::max_element(begin, begin + c.vocab_size) - begin);
  };
  // Decode with temperature: one seeded sampler a sequence; rows are drawn
  // where the backend can (the GPU), else copied back and drawn on the host.
  SamplingParams sampling;
  sampling.temperature = o.temperature;
  sampling.top_k = o.top_k;
  sampling.top_p = o.top_p;
  validate(sampling);
  const bool sample = o.temperature > 0.0f;
  const bool device_sampling = sample && runner.samples_rows() && !o.host_sampling;
  for (int rep = 0; rep < o.repetitions; ++rep) {
    std::vector<SequenceKv> kv(n_seq);
    for (SequenceKv& s : kv)
      check(s.reserve(o.prompt_tokens + o.gen_tokens, runner.block_size(), runner.block_allocator()),
            "KV cache too small for " + std::to_string(o.batch) + " sequences");
    // Prefill is timed for the first sequence; the others (--batch) follow untimed.
    std::vector<int32_t> next(n_seq);
    double prefill_ms = 0;
    // Prefill greedy: the argmax where the backend computes it (the GPU), as
    // the server does for greedy requests, else on the host.
    for (size_t i = 0; i < n_seq; ++i) {
      const double t0 = now_ms();
      SequenceChunk chunk{prompt, &kv[i], false};
      chunk.argmax_only = true;
      const std::vector<float>& logits = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
      next[i] = runner.row_tokens().empty() ? argmax_row(logits, 0) : runner.row_tokens()[0];
      if (i == 0) prefill_ms = now_ms() - t0;
      check(next[i] >= 0, "the prefill's logits are all NaN or -inf (the model's activations overflowed)");
    }
#if TANDEM_HAVE_CUDA
    if (offload) offload->reset_timing();
    if (cuda_runner) cuda_runner->reset_host_timing();
#endif
#if TANDEM_HAVE_NCCL
    if (auto* parallel = dynamic_cast<ParallelCudaRunner*>(&runner)) parallel->reset_rank_timing();
#endif
    std::vector<std::unique_ptr<Sampler>> samplers(n_seq);
    std::vector<RowSampling> row_sampling(n_seq);
    std::vector<std::vector<float>> rows(n_seq);
    for (size_t i = 0; i < n_seq && sample; ++i) {
      sampling.seed = 1000 + i;
      samplers[i] = std::make_unique<Sampler>(sampling);
    }
    std::vector<std::vector<int32_t>> generated(n_seq);
    // --step-prompt-tokens: one more sequence whose prompt arrives in chunks,
    // one chunk a decode step (last in the step); it starts over when the
    // next chunk would pass -p tokens.
    SequenceKv filler;
    mixed_prompt_tokens = 0;
    const double t0 = now_ms();
    std::vector<SequenceChunk> steps(n_seq + (mixed ? 1 : 0));
    for (int64_t g = 0; g < o.gen_tokens; ++g) {
      if (mixed) {
        if (filler.n_tokens + o.step_prompt_tokens > o.prompt_tokens) filler.release(runner.block_allocator());
        check(filler.reserve(filler.n_tokens + o.step_prompt_tokens, runner.block_size(), runner.block_allocator()),
              "KV cache too small for the prompt chunks of --step-prompt-tokens");
        steps[n_seq] = SequenceChunk{
            std::span<const int32_t>(prompt.data() + filler.n_tokens, static_cast<size_t>(o.step_prompt_tokens)),
            &filler, false};
        steps[n_seq].argmax_only = true;
        mixed_prompt_tokens += o.step_prompt_tokens;
      }
      for (size_t i = 0; i < n_seq; ++i) {
        generated[i].push_back(next[i]);
        steps[i] = SequenceChunk{std::span<const int32_t>(&next[i], 1), &kv[i], false, o.prompt_tokens};
        steps[i].argmax_only = !sample;
        if (device_sampling) {
          samplers[i]->plan_row(prompt, generated[i], static_cast<size_t>(c.vocab_size), row_sampling[i]);
          steps[i].sampling = &row_sampling[i];
        }
      }
      const std::vector<float>& logits = runner.forward(steps);
      if (sample && !device_sampling) {
        pool.parallel_for(o.batch, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            const size_t k = static_cast<size_t>(i);
            rows[k].assign(logits.begin() + i * c.vocab_size, logits.begin() + (i + 1) * c.vocab_size);
            next[k] = samplers[k]->sample(rows[k], prompt, generated[k]);
          }
        });
        continue;
      }
      const std::span<const int32_t> row_tokens = runner.row_tokens();
      check(row_tokens.empty() || row_tokens.size() == steps.size(),
            "internal: the runner picked " + std::to_string(row_tokens.size()) + " tokens for a step of " +
                std::to_string(steps.size()) + " rows");
      const std::span<const int32_t> ids = row_tokens.first(row_tokens.empty() ? 0 : n_seq);
      if (!ids.empty()) {
        std::copy(ids.begin(), ids.end(), next.begin());
        for (int32_t id : ids)
          check(id >= 0, "decode step " + std::to_string(g + 1) +
                             ": logits all NaN or -inf (the model's activations overflowed)");
      } else {
        // Rows in parallel, as the engine samples them.
        pool.parallel_for(o.batch, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i)
            next[static_cast<size_t>(i)] = argmax_row(logits, static_cast<size_t>(i));
        });
      }
    }
    const double decode_ms = now_ms() - t0;
#if TANDEM_HAVE_CUDA
    if (offload && o.gen_tokens > 0) {
      const OffloadRunner::Timing& tm = offload->timing();
      const OffloadPlan& p = offload->plan();
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "decode per %s: GPU part %.2f ms (%lld layers), CPU part %.2f ms (%lld layers, LM head)",
                    mixed ? "step (its prompt chunk included)" : o.batch > 1 ? "step" : "token",
                    tm.gpu_ms / static_cast<double>(tm.steps), static_cast<long long>(p.gpu_layers),
                    tm.cpu_ms / static_cast<double>(tm.steps), static_cast<long long>(p.n_layers - p.gpu_layers));
      offload_split = buf;
    }
    if (cuda_runner && o.gen_tokens > 0) {
      const CudaModelRunner::HostTiming& h = cuda_runner->host_timing();
      const double n = static_cast<double>(std::max<int64_t>(h.steps, 1));
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "host time a decode step: %.3f ms building it, %.3f ms queueing its kernels (%lld of %lld steps "
                    "from a CUDA graph), %.3f ms waiting for the GPU",
                    h.prepare_ms / n, h.enqueue_ms / n, static_cast<long long>(h.graph_steps),
                    static_cast<long long>(h.steps), h.finish_ms / n);
      host_split = buf;
      if (h.timed_steps > 0) {
        const double t = static_cast<double>(h.timed_steps);
        std::snprintf(buf, sizeof buf,
                      "GPU time a decode step: %.3f ms idle before it, %.3f ms copying its metadata in, %.3f ms from "
                      "then to its results on the host (%lld steps)",
                      h.gpu_idle_ms / t, h.gpu_upload_ms / t, h.gpu_run_ms / t, static_cast<long long>(h.timed_steps));
        gpu_split = buf;
      }
    }
#endif
#if TANDEM_HAVE_NCCL
    if (auto* parallel = dynamic_cast<ParallelCudaRunner*>(&runner); parallel && o.gen_tokens > 0)
      rank_split = parallel->describe_rank_timing();
#endif
    for (SequenceKv& s : kv) s.release(runner.block_allocator());
    filler.release(runner.block_allocator());
    const double prefill_tps = 1000.0 * static_cast<double>(o.prompt_tokens) / prefill_ms;
    // Decode: tokens of all sequences per second.
    const double decode_tps =
        o.gen_tokens > 0 ? 1000.0 * static_cast<double>(o.gen_tokens * o.batch) / decode_ms : 0.0;
    prefill_runs.push_back(prefill_tps);
    decode_runs.push_back(decode_tps);
    best_prefill = std::max(best_prefill, prefill_tps);
    best_decode = std::max(best_decode, decode_tps);
  }
  const double bytes = static_cast<double>(runner.weight_bytes_per_step());
  const double gbps = bytes * best_decode / static_cast<double>(o.batch) / 1e9;  // weights are read once a step
  if (o.json) {
    nlohmann::json j = {{"model", path},
                        {"device", backend.device},
                        {"device_description", backend.description},
                        {"threads", pool.size()},
                        {"cpu_features", cpu::detect_cpu_features().describe()},
                        {"prompt_tokens", o.prompt_tokens},
                        {"gen_tokens", o.gen_tokens},
                        {"batch", o.batch},
                        {"step_prompt_tokens", o.step_prompt_tokens},
                        {"tensor_parallel", o.parallel.tensor_parallel},
                        {"pipeline_stages", o.parallel.pipeline_stages},
                        {"fused_all_reduce", o.fused_all_reduce},
                        {"cuda_graphs", o.cuda_graphs},
                        {"tune_gemm", o.tune_gemm},
                        {"mixed_prompt_tokens", mixed_prompt_tokens},
                        {"prefill_tok_s", prefill_runs},
                        {"decode_tok_s", decode_runs},
                        {"decode_sampling", !sample ? "greedy" : device_sampling ? "device" : "host"},
                        {"weight_bytes_per_token", runner.weight_bytes_per_step()},
                        {"decode_weight_gb_s", gbps}};
    if (o.peak_gb_s > 0) j["decode_bandwidth_fraction"] = gbps / o.peak_gb_s;
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("model: %s (%s, %lld layers, hidden %lld)\n", path.c_str(), architecture_name(c.arch),
              static_cast<long long>(c.n_layers), static_cast<long long>(c.hidden_size));
  std::printf("device: %s\n", backend.description.c_str());
  if (sample) {
    std::printf("decode sampling: temperature %g, top-k %d, top-p %g, on the %s\n", o.temperature, o.top_k, o.top_p,
                device_sampling ? "device" : "host");
  }
  if (!backend.memory_plan.empty()) std::printf("memory: %s\n", backend.memory_plan.c_str());
  for (const std::string& line : backend.gemm_tuning) std::printf("tuning: %s\n", line.c_str());
  if (!backend.decode_graphs.empty()) std::printf("graphs: %s\n", backend.decode_graphs.c_str());
  std::printf("prefill %lld tokens: %.1f tok/s (best of %d)\n", static_cast<long long>(o.prompt_tokens), best_prefill,
              o.repetitions);
  if (o.batch == 1 && !mixed) {
    std::printf("decode %lld tokens: %.2f tok/s (best of %d)\n", static_cast<long long>(o.gen_tokens), best_decode,
                o.repetitions);
  } else {
    std::printf("decode %lld tokens x %lld sequences: %.1f tok/s in all, %.2f ms a step (best of %d)\n",
                static_cast<long long>(o.gen_tokens), static_cast<long long>(o.batch), best_decode,
                1000.0 * static_cast<double>(o.batch) / best_decode, o.repetitions);
  }
  if (mixed) {
    std::printf("each decode step also computed %lld prompt tokens of another sequence (%lld in all a run); "
                "decode tok/s counts only the decoded tokens\n",
                static_cast<long long>(o.step_prompt_tokens), static_cast<long long>(mixed_prompt_tokens));
  }
  if (!offload_split.empty()) std::printf("%s (last run)\n", offload_split.c_str());
#if TANDEM_HAVE_CUDA
  if (!host_split.empty()) std::printf("%s (last run)\n", host_split.c_str());
  if (!gpu_split.empty()) std::printf("%s (last run)\n", gpu_split.c_str());
  for (const std::string& line : rank_split) std::printf("%s (last run)\n", line.c_str());
#endif
  if (o.peak_gb_s > 0) {
    std::printf("decode weight reads: %.1f MB/step, %.2f GB/s (%.1f%% of %.0f GB/s)\n", bytes / 1e6, gbps,
                100.0 * gbps / o.peak_gb_s, o.peak_gb_s);
  } else {
    std::printf("decode weight reads: %.1f MB/step, %.2f GB/s\n", bytes / 1e6, gbps);
  }
  return 0;
}

}  // namespace

Action add_perf_command(CLI::App& app) {
  auto o = std::make_shared<PerfOptions>();
  CLI::App* cmd = app.add_subcommand("perf", "Measure prefill and decode speed (no HTTP)");
  cmd->add_option("-m,--model", o->model, "GGUF file or Hugging Face folder");
  cmd->add_option("-p,--prompt-tokens", o->prompt_tokens, "Prompt length for the prefill measurement");
  cmd->add_option("-n,--gen-tokens", o->gen_tokens, "Tokens to decode");
  cmd->add_option("-b,--batch", o->batch,
                  "Sequences decoded together, each after its own prefill (decode tok/s counts all of them)");
  cmd->add_option("--step-prompt-tokens", o->step_prompt_tokens,
                  "Each decode step also computes this many prompt tokens of one more sequence, as the server "
                  "mixes prompt chunks into decode steps (0 = decode only); the step time is printed")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", o->repetitions, "Repetitions (the best is reported)")->check(CLI::PositiveNumber);
  cmd->add_option("-t,--threads", o->threads, "CPU threads; 0 = all cores");
  cmd->add_option("--device", o->device, "auto, cpu, cuda or cuda:N (auto: the GPU when there is one)");
  add_quantize_option(*cmd, o->quantize);
  add_kv_cache_option(*cmd, o->kv_cache);
  add_gpu_layers_option(*cmd, o->gpu_layers);
  cmd->add_option("--max-memory-gpu", o->max_memory_gpu,
                  "GPU budget, e.g. 8GB (default 90% of the GPU); layers that do not fit run on the CPU");
  std::string presets;
  for (const SynthPreset& p : synth_presets()) presets += (presets.empty() ? "" : "|") + p.name;
  cmd->add_option("--synthetic", o->synthetic,
                  "Measure a random-weight model of a real shape held in memory, not read from a file: " + presets);
  cmd->add_option("--dtype", o->dtype, "Weight type of --synthetic: f32, f16, bf16, q8_0")->capture_default_str();
  cmd->add_option("--tensor-parallel", o->parallel.tensor_parallel, "GPUs sharing each layer (NCCL)")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxTensorParallel));
  cmd->add_option("--pipeline-parallel", o->parallel.pipeline_stages, "Pipeline stages, one GPU group each")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxPipelineStages));
  cmd->add_flag("--fused-all-reduce,!--no-fused-all-reduce", o->fused_all_reduce,
                "Two tensor-parallel GPUs in one process: end each block with one kernel that sums both GPUs' "
                "parts and applies the next norm (the default), or (--no-fused-all-reduce) NCCL's all-reduce "
                "and a norm kernel");
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", o->cuda_graphs,
                "GPU: replay decode steps as captured CUDA graphs (the default), or (--no-cuda-graphs) launch "
                "every kernel of every step (to measure what the graphs save)");
  cmd->add_flag("--tune-gemm,!--no-tune-gemm", o->tune_gemm,
                "GPU: time cuBLAS's and cuBLASLt's GEMM algorithms at load and keep the fastest (the default), or "
                "(--no-tune-gemm) take cuBLAS's choice (a faster start, and fewer kernels under a profiler)");
  cmd->add_option("--peak-gb-s", o->peak_gb_s, "Memory bandwidth to compare decode against, GB/s (e.g. 3350 for an H100 SXM)");
  cmd->add_option("--temperature", o->temperature, "Decode with this sampling temperature (0 = greedy)");
  cmd->add_option("--top-k", o->top_k, "Decode sampling: top-k (0 = off)");
  cmd->add_option("--top-p", o->top_p, "Decode sampling: top-p (1 = off)");
  cmd->add_flag("--host-sampling", o->host_sampling,
                "Copy logits back and sample on the host even where the backend samples (for comparison)");
  cmd->add_flag("--gpu-gaps", o->gpu_gaps,
                "Time each decode step's GPU side with events (one GPU): idle before it, metadata copy, the rest");
  cmd->add_flag("--json", o->json, "Print JSON");
  return [o] { return perf(*o); };
}

}  // namespace tandem::cli
