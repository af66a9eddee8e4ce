// `tandem-server run`: generate text from a prompt on the CPU engine.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "cli/runner_factory.h"
#include "engine/generator.h"
#include "models/model_file.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct RunOptions {
  std::string model;
  std::string prompt;
  bool chat = false;
  std::string system;
  int max_tokens = 64;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int64_t seed = -1;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int threads = 0;
  std::string device = "auto";
  std::string quantize = "none";
  std::string kv_cache = "f16";  // --kv-cache-dtype
  int64_t gpu_layers = kGpuLayersAuto;
  int64_t ctx = 4096;
  bool json = false;
};

int run(const RunOptions& o) {
  const std::string path = resolve_model_path(o.model);
  std::unique_ptr<ModelFile> model = ModelFile::open(path);
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(path);
  std::string prompt = o.prompt;
  bool add_special = true;
  if (o.chat) {
    nlohmann::json messages = nlohmann::json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    messages.push_back({{"role", "user"}, {"content", o.prompt}});
    prompt = load_chat_template(path, *tokenizer)->render(messages, nullptr, true);
    add_special = false;  // the template writes its own special tokens
  }
  const std::vector<int32_t> ids = tokenizer->encode(prompt, add_special);

  ThreadPool pool(o.threads);
  RunnerRequest rq;
  rq.device = o.device;
  rq.quantize = o.quantize;
  rq.kv_cache = o.kv_cache;
  rq.gpu_layers = o.gpu_layers;
  rq.max_context = std::min<int64_t>(o.ctx, model->config().context_length);
  check(rq.max_context > 0, "--ctx must be positive");
  Runner backend = make_runner(*model, pool, rq);
  Generator generator(*backend.runner, tokenizer.get());

  GenerateOptions go;
  go.sampling.temperature = o.temperature;
  go.sampling.top_k = o.top_k;
  go.sampling.top_p = o.top_p;
  go.sampling.min_p = o.min_p;
  go.sampling.repetition_penalty = o.repeat_penalty;
  go.sampling.presence_penalty = o.presence_penalty;
  go.sampling.frequency_penalty = o.frequency_penalty;
  if (o.seed >= 0) go.sampling.seed = static_cast<uint64_t>(o.seed);
  go.sampling.max_tokens = o.max_tokens;
  go.sampling.stop = o.stop;
  go.sampling.ignore_eos = o.ignore_eos;
  // The continuation reads on from the prompt, which is echoed once the
  // request has been accepted (so that an error prints nothing on stdout).
  bool echoed = o.chat || o.json;
  auto echo_prompt = [&] {
    if (echoed) return;
    echoed = true;
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
  };
  if (!o.json) {
    go.on_text = [&](const std::string& piece) {
      echo_prompt();
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
  }
  const GenerationResult r = generator.generate(ids, go);

  const double prompt_tps = r.prompt_ms > 0 ? 1000.0 * static_cast<double>(r.prompt_tokens) / r.prompt_ms : 0.0;
  const double gen_tps =
      r.decode_ms > 0 ? 1000.0 * static_cast<double>(r.generated_tokens - 1) / r.decode_ms : 0.0;
  if (o.json) {
    nlohmann::json j = {{"text", r.text},
                        {"token_ids", r.token_ids},
                        {"finish_reason", r.finish_reason},
                        {"timings",
                         {{"prompt_ms", r.prompt_ms},
                          {"prompt_tokens", r.prompt_tokens},
                          {"decode_ms", r.decode_ms},
                          {"generated_tokens", r.generated_tokens}}}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    echo_prompt();
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr,
                 "prompt: %lld tokens, %.1f ms, %.1f tok/s | generated: %lld tokens, %.1f tok/s | finish: %s\n",
                 static_cast<long long>(r.prompt_tokens), r.prompt_ms, prompt_tps,
                 static_cast<long long>(r.generated_tokens), gen_tps, r.finish_reason.c_str());
  }
  return 0;
}

}  // namespace

Action add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt");
  cmd->add_option("-m,--model", o->model, "GGUF file or Hugging Face folder (default: the built-in demo model)");
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", o->chat, "Wrap the prompt as a user message with the model's chat template");
  cmd->add_option("--system", o->system, "System message (with --chat)");
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Maximum tokens to generate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", o->temperature, "Sampling temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens; 0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling threshold; 1 = off");
  cmd->add_option("--min-p", o->min_p, "Drop tokens below min_p * p(max); 0 = off");
  cmd->add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty; 1 = off");
  cmd->add_option("--presence-penalty", o->presence_penalty, "Presence penalty");
  cmd->add_option("--frequency-penalty", o->frequency_penalty, "Frequency penalty");
  cmd->add_option("--seed", o->seed, "Random seed (reproducible sampling); -1 = random");
  cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_option("-t,--threads", o->threads, "CPU threads; 0 = all cores");
  cmd->add_option("--device", o->device, "auto, cpu, cuda or cuda:N (auto: the GPU when there is one)");
  add_quantize_option(*cmd, o->quantize);
  add_kv_cache_option(*cmd, o->kv_cache);
  add_gpu_layers_option(*cmd, o->gpu_layers);
  cmd->add_option("-c,--ctx", o->ctx, "Context window in tokens (capped at the model's)");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of streaming text");
  return [o] { return run(*o); };
}

}  // namespace tandem::cli
