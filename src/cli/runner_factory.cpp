#include "cli/runner_factory.h"

#include <chrono>
#include <cstdio>

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "engine/cpu_model_runner.h"
#if TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_model_runner.h"
#include "backends/cuda/offload_runner.h"
#endif
#if TANDEM_HAVE_NCCL
#include "backends/cuda/parallel_cuda_runner.h"
#endif

namespace tandem::cli {

bool gpu_engine_available() {
#if TANDEM_HAVE_CUDA
  return cuda_available();
#else
  return false;
#endif
}

void add_quantize_option(CLI::App& cmd, std::string& quantize) {
  cmd.add_option("--quantize", quantize,
                 "GPU: quantize the weights at load time to int8 or fp8 (E4M3), one scale per output row")
      ->check(CLI::IsMember({"none", "int8", "fp8"}));
}

void add_kv_cache_option(CLI::App& cmd, std::string& kv_cache) {
  cmd.add_option("--kv-cache-dtype", kv_cache,
                 "GPU: the KV cache's element type: f16, or fp8 (E4M3 of each value, no scales: half the memory, "
                 "twice the tokens in flight, half the bytes a decoded token's attention reads)")
      ->check(CLI::IsMember({"f16", "fp8"}));
}

void add_gpu_layers_option(CLI::App& cmd, int64_t& gpu_layers) {
  cmd.add_option("--gpu-layers", gpu_layers,
                 "GPU: run the first N layers on the GPU and the rest on the CPU (default: all when they fit the "
                 "GPU budget, else as many as fit)");
}

Runner make_runner(const ModelFile& model, ThreadPool& pool, const RunnerRequest& request) {
  std::string device = request.device;
  if (device == "auto") device = gpu_engine_available() ? "cuda" : "cpu";
  Runner out;
  const bool multi_gpu = !request.parallel.is_single_device();
  check(!request.nodes.is_multi_node() || multi_gpu,
        "--nnodes " + std::to_string(request.nodes.nnodes) + " needs a plan of several GPUs (--tensor-parallel, "
        "--pipeline-parallel)");
  check(request.gpu_layers == kGpuLayersAuto || request.gpu_layers >= 1,
        "--gpu-layers must be at least 1, got " + std::to_string(request.gpu_layers) +
            " (--device cpu runs every layer on the CPU)");
  const bool explicit_split = request.gpu_layers != kGpuLayersAuto && request.gpu_layers != kGpuLayersAll;
  if (device == "cpu") {
    check(!explicit_split, std::to_string(request.gpu_layers) +
                               " layers on the GPU were asked for (--gpu-layers or a device_map list), but this "
                               "run is on the CPU (--device cpu, or no CUDA GPU or CUDA build)");
    check(!multi_gpu, describe(request.parallel) + " runs on GPUs; the CPU engine runs on one device (use --device cuda)");
    check(request.kv_cache == "f16" || request.kv_cache.empty(),
          "--kv-cache-dtype " + request.kv_cache + " is for the GPU engine; the CPU engine keeps its KV cache in f32");
    check(request.quantize == "none" || request.quantize.empty(),
          "--quantize " + request.quantize + " is for the GPU engine; the CPU engine runs the file's weights as they are");
    CpuRunnerOptions o;
    o.max_context = request.max_context;
    o.block_size = request.block_size;
    o.kv_blocks = request.kv_blocks;
    out.runner = std::make_unique<CpuModelRunner>(model, pool, o);
    out.device = "cpu";
    out.description = "cpu: " + std::to_string(pool.size()) + " threads, " + cpu::detect_cpu_features().describe();
    return out;
  }
  int index = 0;
  if (device.rfind("cuda:", 0) == 0) {
    try {
      index = std::stoi(device.substr(5));
    } catch (const std::exception&) {
      throw Error("--device " + device + ": expected cuda:N with N a GPU index");
    }
    device = "cuda";
  }
  check(device == "cuda", "--device must be auto, cpu, cuda or cuda:N, not '" + request.device + "'");
#if TANDEM_HAVE_CUDA
  check(cuda_available(), "--device cuda: no CUDA GPU is visible (use --device cpu)");
  CudaRunnerOptions o;
  o.device = index;
  o.max_context = request.max_context;
  o.block_size = request.block_size;
  o.kv_blocks = request.kv_blocks;
  o.gpu_memory_bytes = request.gpu_memory_bytes;
  o.batch_invariant = request.batch_invariant;
  o.fused_all_reduce = request.fused_all_reduce;
  o.cuda_graphs = request.cuda_graphs;
  o.tune_gemm = request.tune_gemm;
  o.max_step_tokens = request.max_step_tokens;
  o.max_logit_rows = request.max_logit_rows;
  o.quantize = request.quantize == "int8" ? GpuQuantization::Int8
               : request.quantize == "fp8" ? GpuQuantization::Fp8
                                           : GpuQuantization::None;
  o.kv_cache = request.kv_cache == "fp8" ? GpuKvCache::Fp8 : GpuKvCache::F16;
  o.on_load_progress = request.on_load_progress;
  const auto devices = describe_cuda_devices();
  check(!multi_gpu || request.gpu_layers == kGpuLayersAuto || request.gpu_layers == kGpuLayersAll,
        describe(request.parallel) + " keeps every layer on GPUs; --gpu-layers (offload to the CPU) is for one GPU");
  if (multi_gpu) {
#if TANDEM_HAVE_NCCL
    ParallelRunnerOptions po;
    po.parallel = request.parallel;
    po.gpu = o;
    po.step_limit = std::chrono::seconds(request.step_timeout_s);
    const int64_t world = request.parallel.world_size();
    const int nnodes = request.nodes.nnodes;
    check(world % nnodes == 0, describe(request.parallel) + " cannot split evenly over " + std::to_string(nnodes) +
                                   " nodes (--nnodes)");
    const int64_t local = world / nnodes;
    for (int64_t r = 0; r < local; ++r) po.devices.push_back(index + static_cast<int>(r));
    check(index + local <= static_cast<int64_t>(devices.size()),
          describe(request.parallel) + (nnodes > 1 ? " over " + std::to_string(nnodes) + " nodes" : std::string()) +
              " needs GPUs " + std::to_string(index) + ".." + std::to_string(index + local - 1) +
              (nnodes > 1 ? " on each node" : "") + ", but " + std::to_string(devices.size()) + " GPU(s) are visible");
    if (request.nodes.is_multi_node()) po.link = parallel::NodeLink::open(request.nodes);
    auto runner = std::make_unique<ParallelCudaRunner>(model, po);
    for (const std::string& line : runner->describe_ranks())
      out.memory_plan += (out.memory_plan.empty() ? "" : "\n") + line;
    out.runner = std::move(runner);
    out.device = "cuda:" + std::to_string(index) + "-" + std::to_string(index + local - 1);
    out.description = std::to_string(local) + " x " + devices[static_cast<size_t>(index)] + " (" +
                      describe(request.parallel) +
                      (nnodes > 1 ? ", node " + std::to_string(request.nodes.node_rank) + " of " +
                                        std::to_string(nnodes)
                                  : std::string()) +
                      ")";
    return out;
#else
    throw Error(describe(request.parallel) + ": this build has no NCCL, which multi-GPU runs need (a CUDA build "
                "finds it next to the CUDA toolkit)");
#endif
  }
  out.description = index < static_cast<int>(devices.size()) ? devices[static_cast<size_t>(index)] : "cuda:" + std::to_string(index);
  int64_t gpu_layers = request.gpu_layers;
  if (gpu_layers >= model.config().n_layers) gpu_layers = kGpuLayersAll;
  std::string whole_model_error;  // why the whole model does not fit, when offloading
  if (gpu_layers == kGpuLayersAuto) {
    // Everything on the GPU when the plan fits; otherwise offload.
    try {
      plan_cuda_memory(model, o, cuda_device_memory_bytes(index));
      gpu_layers = kGpuLayersAll;
    } catch (const Error& e) {
      whole_model_error = e.what();
      gpu_layers = 0;  // as many as fit
    }
  }
  if (gpu_layers == kGpuLayersAll) {
    auto runner = std::make_unique<CudaModelRunner>(model, o);
    out.memory_plan = runner->plan().describe();
    out.gemm_tuning = runner->gemm_tuning();
    const auto t0 = std::chrono::steady_clock::now();
    if (const int64_t n = request.capture_decode_graphs > 0 ? runner->capture_decode_graphs(request.capture_decode_graphs) : 0;
        n > 0) {
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      char line[128];
      std::snprintf(line, sizeof line, "decode graphs of 1-%lld sequences captured in %.0f ms",
                    static_cast<long long>(n), ms);
      out.decode_graphs = line;
    }
    out.runner = std::move(runner);
    out.device = "cuda:" + std::to_string(index);
    return out;
  }
  OffloadOptions oo;
  oo.gpu = o;
  oo.gpu_layers = gpu_layers;
  oo.cpu_memory_bytes = request.cpu_memory_bytes;
  std::unique_ptr<OffloadRunner> runner;
  try {
    runner = std::make_unique<OffloadRunner>(model, pool, oo);
  } catch (const Error& e) {
    if (whole_model_error.empty()) throw;
    throw Error(whole_model_error + "; nor does offloading layers to the CPU work: " + e.what());
  }
  out.memory_plan = runner->plan().describe();
  out.device = "cuda:" + std::to_string(index) + "+cpu";
  out.description += " + cpu (" + std::to_string(runner->plan().n_layers - runner->plan().gpu_layers) + " of " +
                     std::to_string(runner->plan().n_layers) + " layers): " + std::to_string(pool.size()) +
                     " threads, " + cpu::detect_cpu_features().describe();
  out.runner = std::move(runner);
  return out;
#else
  (void)index;
  throw Error("--device cuda: this build has no CUDA engine (configure with the cuda preset)");
#endif
}

void follow_node(const ModelFile& model, ThreadPool& pool, const RunnerRequest& request) {
  check(request.nodes.is_multi_node() && request.nodes.node_rank > 0, "internal: follow_node on node 0");
#if TANDEM_HAVE_NCCL
  Runner runner = make_runner(model, pool, request);
  auto* parallel_runner = dynamic_cast<ParallelCudaRunner*>(runner.runner.get());
  check(parallel_runner != nullptr, "internal: a multi-node plan made a single-GPU runner");
  try {
    parallel_runner->follow();
  } catch (...) {
    // Node 0 is gone, stopped or broken: tearing the ranks down now would
    // wait in NCCL for peers that no longer answer (ncclCommDestroy), so the
    // runner is left in place for the caller, which exits the process.
    static_cast<void>(runner.runner.release());
    throw;
  }
#else
  (void)model;
  (void)pool;
  throw Error("--nnodes: this build has no NCCL, which multi-GPU runs need");
#endif
}

}  // namespace tandem::cli
