#include "cli/runner_factory.h"

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "engine/cpu_model_runner.h"
#if TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_model_runner.h"
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

Runner make_runner(const ModelFile& model, ThreadPool& pool, const RunnerRequest& request) {
  std::string device = request.device;
  if (device == "auto") device = gpu_engine_available() ? "cuda" : "cpu";
  Runner out;
  if (device == "cpu") {
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
  o.quantize = request.quantize == "int8" ? GpuQuantization::Int8
               : request.quantize == "fp8" ? GpuQuantization::Fp8
                                           : GpuQuantization::None;
  o.on_load_progress = request.on_load_progress;
  auto runner = std::make_unique<CudaModelRunner>(model, o);
  out.memory_plan = runner->plan().describe();
  out.runner = std::move(runner);
  out.device = "cuda:" + std::to_string(index);
  const auto devices = describe_cuda_devices();
  out.description = index < static_cast<int>(devices.size()) ? devices[static_cast<size_t>(index)] : out.device;
  return out;
#else
  (void)index;
  throw Error("--device cuda: this build has no CUDA engine (configure with the cuda preset)");
#endif
}

}  // namespace tandem::cli
