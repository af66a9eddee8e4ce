// `tandem-server perplexity`: held-out loss of a model on a text file.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "cli/runner_factory.h"
#include "engine/perplexity.h"
#include "models/model_file.h"
#include "parallel/parallel_config.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct PerplexityOptions {
  std::string model, file;
  int64_t ctx = 512;
  int threads = 0;
  std::string device = "auto", quantize = "none";
  std::string kv_cache = "f16";  // --kv-cache-dtype
  parallel::ParallelConfig parallel;  // the main run's GPUs
  // Set: also run the model under this quantization and/or on this many GPUs
  // (0: as the main run) and compare the two.
  std::string compare_quantize;
  std::string compare_kv_cache;  // --compare-kv-cache-dtype
  int64_t compare_tensor_parallel = 0, compare_pipeline_parallel = 0;
  int64_t compare_windows = 0;
  bool json = false;
};

int perplexity(const PerplexityOptions& o) {
  const std::string path = resolve_model_path(o.model);
  std::ifstream in(o.file, std::ios::binary);
  check(in.good(), "cannot read '" + o.file + "'");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::unique_ptr<ModelFile> model = ModelFile::open(path);
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(path);
  const std::vector<int32_t> ids = tokenizer->encode(text, false);
  check(o.ctx >= 1 && o.ctx <= model->config().context_length,
        "--ctx must be between 1 and the model's context length " + std::to_string(model->config().context_length));
  ThreadPool pool(o.threads);
  RunnerRequest rq;
  rq.device = o.device;
  rq.quantize = o.quantize;
  rq.kv_cache = o.kv_cache;
  rq.max_context = o.ctx;
  rq.kv_blocks = (o.ctx + rq.block_size - 1) / rq.block_size + 1;
  rq.parallel = o.parallel;
  Runner backend = make_runner(*model, pool, rq);
  const LossResult r = evaluate_loss(*backend.runner, ids, o.ctx);
  nlohmann::json j = {{"device", backend.device},
                      {"quantize", o.quantize},
                      {"kv_cache", backend.device == "cpu" ? std::string("f32") : o.kv_cache},
                      {"tokens", ids.size()},
                      {"predicted_tokens", r.predicted_tokens},
                      {"windows", r.windows},
                      {"mean_nll", r.mean_nll},
                      {"perplexity", r.perplexity}};
  const bool compare = !o.compare_quantize.empty() || !o.compare_kv_cache.empty() || o.compare_tensor_parallel > 0 ||
                       o.compare_pipeline_parallel > 0;
  RunnerRequest other = rq;
  if (!o.compare_quantize.empty()) other.quantize = o.compare_quantize;
  if (!o.compare_kv_cache.empty()) other.kv_cache = o.compare_kv_cache;
  if (o.compare_tensor_parallel > 0) other.parallel.tensor_parallel = o.compare_tensor_parallel;
  if (o.compare_pipeline_parallel > 0) other.parallel.pipeline_stages = o.compare_pipeline_parallel;
  if (compare) {
    Runner reference = make_runner(*model, pool, other);
    const LossResult ref_loss = evaluate_loss(*reference.runner, ids, o.ctx);
    const AgreementResult a = compare_runners(*backend.runner, *reference.runner, ids, o.ctx, o.compare_windows);
    j["compare"] = {{"quantize", other.quantize},
                    {"kv_cache", reference.device == "cpu" ? std::string("f32") : other.kv_cache},
                    {"tensor_parallel", other.parallel.tensor_parallel},
                    {"pipeline_stages", other.parallel.pipeline_stages},
                    {"device", reference.device},
                    {"mean_nll", ref_loss.mean_nll},
                    {"top1_agreement", a.top1_agreement},
                    {"max_abs_logit_diff", a.max_abs_logit_diff},
                    {"positions", a.positions}};
  }
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("device: %s (%s)%s%s\n", backend.description.c_str(), backend.device.c_str(),
              o.quantize == "none" ? "" : (", weights quantized to " + o.quantize).c_str(),
              o.kv_cache == "f16" ? "" : (", KV cache " + o.kv_cache).c_str());
  std::printf("tokens: %zu, windows of %lld: %lld, predicted: %lld\nmean NLL: %.5f nats/token, perplexity: %.3f\n",
              ids.size(), static_cast<long long>(o.ctx), static_cast<long long>(r.windows),
              static_cast<long long>(r.predicted_tokens), r.mean_nll, r.perplexity);
  if (j.contains("compare")) {
    const auto& cmp = j["compare"];
    std::printf(
        "against --quantize %s --kv-cache-dtype %s on %s (tensor parallel %lld, pipeline stages %lld): mean NLL "
        "%.5f, top-1 agreement %.4f over %lld positions, max |dlogit| %.4g\n",
        other.quantize.c_str(), other.kv_cache.c_str(), cmp["device"].get<std::string>().c_str(),
        static_cast<long long>(other.parallel.tensor_parallel), static_cast<long long>(other.parallel.pipeline_stages),
        cmp["mean_nll"].get<double>(), cmp["top1_agreement"].get<double>(),
        static_cast<long long>(cmp["positions"].get<int64_t>()), cmp["max_abs_logit_diff"].get<double>());
  }
  return 0;
}

}  // namespace

Action add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Held-out loss and perplexity of a model on a text file");
  cmd->add_option("-m,--model", o->model, "GGUF file or Hugging Face folder (default: the demo model)");
  cmd->add_option("-f,--file", o->file, "Text file")->required();
  cmd->add_option("-c,--ctx", o->ctx, "Window length in tokens");
  cmd->add_option("-t,--threads", o->threads, "CPU threads; 0 = all cores");
  cmd->add_option("--device", o->device, "auto, cpu, cuda or cuda:N (auto: the GPU when there is one)");
  add_quantize_option(*cmd, o->quantize);
  add_kv_cache_option(*cmd, o->kv_cache);
  cmd->add_option("--compare-quantize", o->compare_quantize,
                  "Also run the model with this --quantize (none, int8, fp8) and report its loss, top-1 agreement "
                  "and largest logit difference against the main run")
      ->check(CLI::IsMember({"none", "int8", "fp8"}));
  cmd->add_option("--compare-kv-cache-dtype", o->compare_kv_cache,
                  "Also run the model with this --kv-cache-dtype (f16, fp8) and compare, as --compare-quantize does")
      ->check(CLI::IsMember({"f16", "fp8"}));
  cmd->add_option("--tensor-parallel", o->parallel.tensor_parallel, "GPUs sharing each layer (NCCL)")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxTensorParallel));
  cmd->add_option("--pipeline-parallel", o->parallel.pipeline_stages, "Pipeline stages, one GPU group each")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxPipelineStages));
  cmd->add_option("--compare-tensor-parallel", o->compare_tensor_parallel,
                  "Also run the model with this --tensor-parallel and compare (e.g. 1: against one GPU)")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxTensorParallel));
  cmd->add_option("--compare-pipeline-parallel", o->compare_pipeline_parallel,
                  "Also run the model with this --pipeline-parallel and compare")
      ->check(CLI::Range(int64_t{1}, parallel::kMaxPipelineStages));
  cmd->add_option("--compare-windows", o->compare_windows, "Windows to compare at most (0: all)");
  cmd->add_flag("--json", o->json, "Print JSON");
  return [o] { return perplexity(*o); };
}

}  // namespace tandem::cli
