// `tandem-server perplexity`: held-out loss of a model on a text file.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "engine/cpu_model_runner.h"
#include "engine/perplexity.h"
#include "models/model_file.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct PerplexityOptions {
  std::string model, file;
  int64_t ctx = 512;
  int threads = 0;
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
  CpuRunnerOptions ro;
  ro.max_context = o.ctx;
  CpuModelRunner runner(*model, pool, ro);
  const LossResult r = evaluate_loss(runner, ids, o.ctx);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"tokens", ids.size()},
                                        {"predicted_tokens", r.predicted_tokens},
                                        {"windows", r.windows},
                                        {"mean_nll", r.mean_nll},
                                        {"perplexity", r.perplexity}})
                            .dump()
                            .c_str());
  } else {
    std::printf("tokens: %zu, windows of %lld: %lld, predicted: %lld\nmean NLL: %.5f nats/token, perplexity: %.3f\n",
                ids.size(), static_cast<long long>(o.ctx), static_cast<long long>(r.windows),
                static_cast<long long>(r.predicted_tokens), r.mean_nll, r.perplexity);
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
  cmd->add_flag("--json", o->json, "Print JSON");
  return [o] { return perplexity(*o); };
}

}  // namespace tandem::cli
