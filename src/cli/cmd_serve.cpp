// `tandem-server serve`: load a model and serve it over HTTP and WebSocket
// (docs/SERVER.md). Settings come from --config FILE, then flags override.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/load_progress_bar.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "cli/runner_factory.h"
#include "engine/kv_cache.h"
#include "engine/paced_runner.h"
#include "models/model_file.h"
#include "models/weight_prefetch.h"
#include "parallel/node_link.h"
#include "parallel/parallel_plan.h"
#include "scheduler/engine_service.h"
#include "server/server.h"
#include "server/server_config.h"
#include "telemetry/gpu_telemetry.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

// The engine step on the GPU when the config gives none: a GPU step reads
// every weight once whatever it holds, so larger steps let prompt chunks
// share those reads (a 512-token prompt in one step).
constexpr int64_t kGpuStepTokens = 1024;

// The GPU memory plan reserves scratch for the engine's largest step: its
// tokens, and a row of logits for each sequence in it.
void plan_steps(const server::ServerConfig& config, RunnerRequest& rq) {
  rq.max_step_tokens = config.step_tokens > 0 ? config.step_tokens : kGpuStepTokens;
  rq.max_logit_rows = std::min<int64_t>(rq.max_step_tokens, std::max<int64_t>(config.batch_size, 1));
  rq.capture_decode_graphs = std::max<int64_t>(config.batch_size, 1);
}

struct ServeFlags {
  std::string config_file;
  server::ServerConfig flags;  // only the fields whose option was given are used
  std::string max_memory_cpu, max_memory_gpu;
  std::string device = "auto";
  bool batch_invariant = false;
  bool fused_all_reduce = true;  // --fused-all-reduce / --no-fused-all-reduce
  int step_timeout_s = 600;       // --step-timeout-s
  std::string step_trace;  // CSV file, one line per engine step
  std::string quantize = "none";
  std::string kv_cache = "f16";  // --kv-cache-dtype
  int64_t gpu_layers = kGpuLayersAuto;
  int header_timeout_s = 10;
  std::string log_level = "info";
  parallel::NodeConfig nodes;
  int node_timeout_s = 120;
  int node_silence_s = 120;
};

// TANDEM_TEST_LOAD_BYTES_PER_S: tests slow the weight load down to this rate
// so that the loading state can be observed with a small model. 0 when unset.
double test_load_rate() {
  const char* env = std::getenv("TANDEM_TEST_LOAD_BYTES_PER_S");
  if (env == nullptr || env[0] == '\0') return 0;
  char* end = nullptr;
  const double rate = std::strtod(env, &end);
  check(end != env && *end == '\0' && rate > 0,
        std::string("TANDEM_TEST_LOAD_BYTES_PER_S='") + env + "' is not a positive number of bytes per second");
  return rate;
}

// TANDEM_TEST_STEP_DELAY_MS: tests make every engine step wait this long
// (PacedRunner), so that a reply of the demo model lasts long enough to stop,
// cancel or cut mid-stream. 0 when unset.
double test_step_delay_ms() {
  const char* env = std::getenv("TANDEM_TEST_STEP_DELAY_MS");
  if (env == nullptr || env[0] == '\0') return 0;
  char* end = nullptr;
  const double ms = std::strtod(env, &end);
  check(end != env && *end == '\0' && ms >= 0 && ms <= 10000,
        std::string("TANDEM_TEST_STEP_DELAY_MS='") + env + "' is not a number of milliseconds from 0 to 10000");
  return ms;
}

int serve(const ServeFlags& f, const CLI::App& cmd) {
  server::ServerConfig config;
  if (!f.config_file.empty()) server::apply_config_file(f.config_file, config);
  auto given = [&](const char* name) { return cmd.get_option(name)->count() > 0; };
  if (given("--model")) config.model_path = f.flags.model_path;
  if (given("--device-map")) config.device_map = f.flags.device_map;
  if (given("--ctx")) config.context_window = f.flags.context_window;
  if (given("--batch-size")) config.batch_size = f.flags.batch_size;
  if (given("--step-tokens")) config.step_tokens = f.flags.step_tokens;
  if (given("--host")) config.host = f.flags.host;
  if (given("--port")) config.port = f.flags.port;
  if (given("--max-queued-requests")) config.max_queued_requests = f.flags.max_queued_requests;
  // A key flag replaces whichever key the file named.
  if (given("--api-key")) {
    config.api_key = f.flags.api_key;
    config.api_key_file.clear();
  }
  if (given("--api-key-file")) {
    config.api_key_file = f.flags.api_key_file;
    config.api_key.clear();
  }
  if (given("--request-timeout-s")) config.request_timeout_s = f.flags.request_timeout_s;
  if (given("--threads")) config.threads = f.flags.threads;
  if (given("--http-threads")) config.http_threads = f.flags.http_threads;
  if (given("--tensor-parallel")) config.parallel.tensor_parallel = f.flags.parallel.tensor_parallel;
  if (given("--pipeline-parallel")) config.parallel.pipeline_stages = f.flags.parallel.pipeline_stages;
  if (given("--max-memory-cpu")) config.max_memory.cpu_bytes = server::parse_memory_size(f.max_memory_cpu, "max_memory.cpu");
  if (given("--max-memory-gpu")) config.max_memory.gpu_bytes = server::parse_memory_size(f.max_memory_gpu, "max_memory.gpu");
  server::validate_config(config);
  check(f.header_timeout_s >= 1 && f.header_timeout_s <= 3600, "--header-timeout-s must be in [1, 3600]");
  const double load_rate = test_load_rate();
  const double step_delay_ms = test_step_delay_ms();
  config.model_path = resolve_model_path(config.model_path);

  auto log = std::make_shared<spdlog::logger>("tandem-server", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  const spdlog::level::level_enum level = spdlog::level::from_str(f.log_level);
  check(level != spdlog::level::off || f.log_level == "off",
        "--log-level '" + f.log_level + "' is not one of trace, debug, info, warn, error, critical, off");
  log->set_level(level);
  log->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");

  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::is_regular_file(config.model_path, ec)
                                  ? std::filesystem::file_size(config.model_path, ec)
                                  : 0;

  // Several hosts: node 0 serves; every other node loads its ranks and runs
  // node 0's steps, with no API of its own.
  parallel::NodeConfig nodes = f.nodes;
  nodes.timeout = std::chrono::seconds(f.node_timeout_s);
  nodes.node0_silence = std::chrono::seconds(f.node_silence_s);
  if (parallel::apply_mpi_environment(nodes))
    log->info("mpirun: node {} of {}", nodes.node_rank, nodes.nnodes);
  parallel::validate_node_config(nodes);
  if (nodes.node_rank > 0) {
    std::unique_ptr<ModelFile> model = ModelFile::open(config.model_path);
    const parallel::ParallelPlan plan = parallel::plan_parallel(model->config(), model->tensors(), config.parallel);
    log->info("node {} of {}: following node 0 at {}:{}; plan: {}", nodes.node_rank, nodes.nnodes,
              nodes.master_addr, nodes.master_port, plan.describe());
    RunnerRequest rq;
    rq.device = f.device == "auto" ? "cuda" : f.device;
    rq.max_context = std::min<int64_t>(config.context_window, model->config().context_length);
    rq.block_size = 16;
    rq.quantize = f.quantize;
    rq.kv_cache = f.kv_cache;
    rq.gpu_memory_bytes = config.max_memory.gpu_bytes;
    rq.batch_invariant = f.batch_invariant;
    rq.fused_all_reduce = f.fused_all_reduce;
    plan_steps(config, rq);
    rq.parallel = config.parallel;
    rq.nodes = nodes;
    ThreadPool pool(1);
    try {
      follow_node(*model, pool, rq);
    } catch (const std::exception& e) {
      // Node 0 is gone, stopped or broken: leave at once. Tearing the ranks
      // down would wait on NCCL communicators whose peers no longer answer.
      log->error("node {}: {}", nodes.node_rank, e.what());
      log->flush();
      std::fflush(nullptr);
      std::_Exit(1);
    }
    log->info("node 0 stopped; node {} exits", nodes.node_rank);
    return 0;
  }

  // The step trace's file is opened before anything loads, so that a bad
  // path fails at once. It outlives the engine, its only writer.
  std::ofstream step_trace;
  if (!f.step_trace.empty()) {
    step_trace.open(f.step_trace, std::ios::trunc);
    check(step_trace.good(), "cannot write the step trace '" + f.step_trace + "'");
  }

  auto ctx = std::make_shared<server::ServerContext>();
  ctx->config = config;
  ctx->log = log;
  ctx->version = TANDEM_VERSION;
  ctx->header_timeout = std::chrono::seconds(f.header_timeout_s);
  // GPU telemetry is optional: without NVML the server runs as before and
  // says why once.
  ctx->gpus = std::make_unique<telemetry::GpuTelemetry>();
  if (ctx->gpus->available())
    log->info("GPU telemetry: {} GPU(s) through NVML", ctx->gpus->device_count());
  else
    log->info("GPU telemetry unavailable: {}", ctx->gpus->unavailable_reason());

  // Listen first: while the model loads, /health answers 503 "loading".
  // The server (and its io_context) outlives the engine, whose callbacks post into it.
  server::Server server(ctx);
  server.listen();
  server.start();
  log->info("listening on {}:{}; loading {}", config.host, server.port(), config.model_path);

  // A signal while loading stops the server at once; loading stops at the
  // next stage and the process exits with 130 (interrupted).
  auto interrupted = [&] { return ctx->draining.load(); };
  std::unique_ptr<ModelFile> model = ModelFile::open(config.model_path);
  // A multi-GPU plan is checked against the model before anything loads.
  std::optional<parallel::ParallelPlan> parallel_plan;
  if (!config.parallel.is_single_device())
    parallel_plan = parallel::plan_parallel(model->config(), model->tensors(), config.parallel);
  ctx->loading.bytes_total.store(weight_bytes(*model));
  if (interrupted()) return 130;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(config.model_path);
  if (interrupted()) return 130;
  std::unique_ptr<ChatTemplate> chat_template;
  const std::string template_source = chat_template_source(config.model_path);
  if (!template_source.empty()) {
    try {
      chat_template = std::make_unique<ChatTemplate>(template_source, tokenizer->bos_text(), tokenizer->eos_text());
    } catch (const Error& e) {
      log->warn("the model's chat template cannot be used ({}); /v1/chat/completions will refuse requests", e.what());
    }
  }
  const int64_t context = std::min<int64_t>(config.context_window, model->config().context_length);

  // The GPU when this build has the CUDA engine and one is visible (or
  // --device says so); device_map "cpu" keeps everything on the CPU.
  std::string device = f.device;
  if (config.device_map == "cpu") device = "cpu";
  if (device == "auto") device = gpu_engine_available() ? "cuda" : "cpu";
  if (parallel_plan) {
    check(device != "cpu", parallel::describe(config.parallel) + " runs on GPUs, but this run is on the CPU (" +
                               (gpu_engine_available() ? "--device cpu or device_map \"cpu\"" : "no CUDA GPU or CUDA build") +
                               "); computed plan: " + parallel_plan->describe() +
                               "\nserve with tensor_parallel 1 and pipeline_stages 1 on the CPU (see docs/PARALLEL.md)");
    log->info("parallel plan: {}", parallel_plan->describe());
  }
  RunnerRequest rq;
  rq.device = device;
  rq.parallel = config.parallel;
  rq.nodes = nodes;
  rq.max_context = context;
  rq.block_size = 16;
  rq.quantize = f.quantize;
  rq.kv_cache = f.kv_cache;
  // Layers on the GPU: --gpu-layers, else device_map ("gpu": all; a list:
  // its GPU entries; "auto": all that fit, the rest on the CPU).
  if (config.device_map == "gpu") rq.gpu_layers = kGpuLayersAll;
  if (config.device_map == "layers") {
    const int64_t listed = config.device_map_gpu_layers + config.device_map_cpu_layers;
    check(listed == model->config().n_layers,
          "config key 'device_map' lists " + std::to_string(listed) + " layers; the model has " +
              std::to_string(model->config().n_layers));
    rq.gpu_layers = config.device_map_cpu_layers == 0 ? kGpuLayersAll : config.device_map_gpu_layers;
  }
  if (given("--gpu-layers")) rq.gpu_layers = f.gpu_layers;
  rq.cpu_memory_bytes = config.max_memory.cpu_bytes;
  if (device == "cpu") {
    rq.kv_blocks = config.batch_size * ((context + rq.block_size - 1) / rq.block_size);
    // The KV cache must fit beside the weights: in max_memory.cpu when it is
    // set, and in the machine's memory in any case. Checked before allocating.
    {
      const double kv_bytes = static_cast<double>(rq.kv_blocks) * static_cast<double>(rq.block_size) *
                              static_cast<double>(KvCache::bytes_per_token(model->config()));
      const double gib = 1024.0 * 1024.0 * 1024.0;
      auto plan = [&] {
        char buf[256];
        std::snprintf(buf, sizeof buf, "weights %.2f GiB + KV cache %.2f GiB (batch_size %lld x context %lld)",
                      static_cast<double>(file_bytes) / gib, kv_bytes / gib, static_cast<long long>(config.batch_size),
                      static_cast<long long>(context));
        return std::string(buf);
      };
      const double need = static_cast<double>(file_bytes) + kv_bytes;
      if (config.max_memory.cpu_bytes > 0 && need > static_cast<double>(config.max_memory.cpu_bytes))
        throw Error("the model needs " + plan() + "; max_memory.cpu is " +
                    std::to_string(static_cast<double>(config.max_memory.cpu_bytes) / gib) +
                    " GiB: lower batch_size or context_window");
      const double ram = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
      if (ram > 0 && need > ram)
        throw Error("the model needs " + plan() + ", more than this machine's " + std::to_string(ram / gib) +
                    " GiB of memory: lower batch_size or context_window");
      log->info("memory plan: {}", plan());
    }
    // Bring the mapped weights into memory now (reading through every page),
    // so that the first requests do not fault them in; /health reports the
    // bytes done meanwhile.
    {
      PrefetchOptions po;
      po.max_bytes_per_s = load_rate;
      if (load_rate > 0) po.chunk_bytes = std::max<uint64_t>(uint64_t{64} << 10, static_cast<uint64_t>(load_rate / 20));
      const auto t0 = std::chrono::steady_clock::now();
      LoadProgressBar bar(ctx->loading, stderr, isatty(STDERR_FILENO) != 0 && level <= spdlog::level::info);
      if (!prefetch_weights(*model, ctx->loading, interrupted, po)) return 130;
      bar.finish();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double bytes = static_cast<double>(ctx->loading.bytes_total.load());
      log->info("weights in memory: {} in {:.2f} s ({}/s)", bytes_text(bytes), s, bytes_text(s > 0 ? bytes / s : 0.0));
    }
  } else {
    // Weights go to the GPU; the KV cache takes what max_memory.gpu (or 90%
    // of the card) leaves. The plan is checked before any allocation.
    rq.gpu_memory_bytes = config.max_memory.gpu_bytes;
    rq.batch_invariant = f.batch_invariant;
    rq.fused_all_reduce = f.fused_all_reduce;
    rq.step_timeout_s = f.step_timeout_s;
    plan_steps(config, rq);
    rq.on_load_progress = [&](uint64_t done, uint64_t total) {
      ctx->loading.bytes_total.store(total);
      ctx->loading.bytes_done.store(done);
    };
  }
  ThreadPool pool(config.threads);
  std::unique_ptr<Runner> backend;
  {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<LoadProgressBar> bar;
    if (device != "cpu")
      bar = std::make_unique<LoadProgressBar>(ctx->loading, stderr,
                                              isatty(STDERR_FILENO) != 0 && level <= spdlog::level::info);
    backend = std::make_unique<Runner>(make_runner(*model, pool, rq));
    if (bar) {
      bar->finish();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      log->info("weights on {}: {:.2f} s; memory plan: {}", backend->description, s, backend->memory_plan);
      for (const std::string& line : backend->gemm_tuning) log->info("{}", line);
      if (!backend->decode_graphs.empty()) log->info("{}", backend->decode_graphs);
    }
  }
  std::unique_ptr<PacedRunner> paced;
  if (step_delay_ms > 0) {
    paced = std::make_unique<PacedRunner>(
        *backend->runner, std::chrono::microseconds(static_cast<int64_t>(step_delay_ms * 1000)));
    log->warn("TANDEM_TEST_STEP_DELAY_MS: every engine step waits {} ms first (for tests)", step_delay_ms);
  }
  ModelRunner& runner = paced ? static_cast<ModelRunner&>(*paced) : *backend->runner;
  EngineOptions eo;
  eo.batch_size = config.batch_size;
  eo.step_tokens = config.step_tokens > 0 ? config.step_tokens : backend->device == "cpu" ? 256 : kGpuStepTokens;
  eo.max_queued = config.max_queued_requests;
  eo.context_window = context;
  eo.sampling_pool = &pool;
  if (step_trace.is_open()) eo.step_trace = &step_trace;
  eo.on_step_error = [](const std::string& why) { spdlog::error("engine step failed: {}", why); };
  EngineService engine(runner, *tokenizer, eo);
  if (interrupted()) return 130;

  ctx->model.id = std::filesystem::path(config.model_path).stem().string();
  ctx->model.path = config.model_path;
  ctx->model.tokenizer = tokenizer.get();
  ctx->model.chat_template = chat_template.get();
  ctx->model.context_window = context;
  ctx->model.created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  ctx->model.engine = &engine;
  ctx->ready.store(true, std::memory_order_release);

  // One line on stdout that scripts can wait for: the server is ready (the
  // port may have been 0).
  std::printf("tandem-server listening on http://%s:%u model=%s context=%lld batch=%lld\n", config.host.c_str(),
              static_cast<unsigned>(server.port()), ctx->model.id.c_str(), static_cast<long long>(context),
              static_cast<long long>(config.batch_size));
  std::fflush(stdout);
  log->info("serving {} on {}:{} (context {}, batch {}, queue {}{})", ctx->model.id, config.host, server.port(),
            context, config.batch_size, config.max_queued_requests, config.api_key.empty() ? "" : ", API key on");
  return server.wait() ? 130 : 0;
}

}  // namespace

Action add_serve_command(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over HTTP (OpenAI API) and WebSocket on one port");
  cmd->add_option("--config", f->config_file, "JSON config file (keys: see docs/SERVER.md); flags override it");
  cmd->add_option("-m,--model", f->flags.model_path, "GGUF file or Hugging Face folder (default: the demo model)");
  cmd->add_option("--device-map", f->flags.device_map,
                  "auto (the GPU, offloading to the CPU what does not fit), cpu, or gpu (every layer on the GPU)");
  cmd->add_option("--max-memory-cpu", f->max_memory_cpu, "Host memory budget, e.g. 16GB");
  cmd->add_option("--max-memory-gpu", f->max_memory_gpu, "GPU memory budget, e.g. 48GB");
  cmd->add_option("--device", f->device, "auto, cpu, cuda or cuda:N (auto: the GPU when there is one)");
  add_quantize_option(*cmd, f->quantize);
  add_kv_cache_option(*cmd, f->kv_cache);
  add_gpu_layers_option(*cmd, f->gpu_layers);
  cmd->add_flag("--batch-invariant", f->batch_invariant,
                "GPU: decode every batch with the batch-invariant GEMV, so that an answer never depends on its "
                "batch (slower under load; the CPU engine always is)");
  cmd->add_option("--step-timeout-s", f->step_timeout_s,
                  "Several GPUs of one host: a step not done in this many seconds is given up, naming the GPUs "
                  "still running, and later requests fail (default 600; 0 waits forever; several hosts use "
                  "--node-silence-s)")
      ->check(CLI::Range(0, 7 * 24 * 3600));
  cmd->add_flag("--fused-all-reduce,!--no-fused-all-reduce", f->fused_all_reduce,
                "Two tensor-parallel GPUs in one process: end each block with one kernel that sums both GPUs' "
                "parts over NVLink and applies the next norm (the default), or (--no-fused-all-reduce) NCCL's "
                "all-reduce and a norm kernel");
  cmd->add_option("-c,--ctx", f->flags.context_window, "Context window per sequence in tokens");
  cmd->add_option("--batch-size", f->flags.batch_size, "Running sequences at most");
  cmd->add_option("--step-tokens", f->flags.step_tokens,
                  "Tokens per engine step, decodes and prompt chunks together (default 1024 on the GPU, 256 on the CPU)");
  cmd->add_option("--step-trace", f->step_trace,
                  "Write one CSV line per engine step to this file: start, planning, forward and after-forward "
                  "times in ms, sequences, decodes, prompt tokens, waiting requests");
  cmd->add_option("--host", f->flags.host, "Address to bind (default 127.0.0.1)");
  cmd->add_option("--port", f->flags.port, "Port (default 8765; 0 = any free port)");
  cmd->add_option("--max-queued-requests", f->flags.max_queued_requests, "Waiting requests at most; more get 429");
  cmd->add_option("--api-key", f->flags.api_key, "Require this key (Bearer on HTTP, api_key at WebSocket init)");
  cmd->add_option("--api-key-file", f->flags.api_key_file, "Read the key from the first line of this file");
  cmd->add_option("--request-timeout-s", f->flags.request_timeout_s, "Per-request time limit in seconds; 0 = none");
  cmd->add_option("-t,--threads", f->flags.threads, "Engine CPU threads; 0 = all cores");
  cmd->add_option("--http-threads", f->flags.http_threads, "Network threads (default 2)");
  cmd->add_option("--tensor-parallel", f->flags.parallel.tensor_parallel,
                  "GPUs sharing each layer (attention heads and FFN columns split; NCCL all-reduce)");
  cmd->add_option("--pipeline-parallel", f->flags.parallel.pipeline_stages,
                  "Pipeline stages: contiguous layer ranges, one GPU group each");
  cmd->add_option("--nnodes", f->nodes.nnodes, "Hosts the plan spans (each runs this command; default 1)");
  cmd->add_option("--node-rank", f->nodes.node_rank, "This host's index; 0 serves the API, the others follow it");
  cmd->add_option("--master-addr", f->nodes.master_addr, "Node 0's address, for the other nodes (default 127.0.0.1)");
  cmd->add_option("--master-port", f->nodes.master_port, "Node 0's TCP port for the nodes' links (default 8770)");
  cmd->add_option("--node-timeout-s", f->node_timeout_s, "Seconds for every node to join (default 120)");
  cmd->add_option("--node-silence-s", f->node_silence_s,
                  "Seconds a node other than 0 waits without a step or heartbeat from node 0 before it stops, "
                  "and a step may run on any node (at least 30) before it is given up (default 120; 0 waits forever)");
  cmd->add_option("--header-timeout-s", f->header_timeout_s, "Seconds a client has to send a request header");
  cmd->add_option("--log-level", f->log_level, "trace, debug, info, warn, error");
  return [f, cmd] { return serve(*f, *cmd); };
}

}  // namespace tandem::cli
