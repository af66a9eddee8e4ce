// `tandem-server convert` and `synth`: write GGUF models.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "common/error.h"
#include "models/gguf_export.h"
#include "models/model_file.h"

namespace tandem::cli {
namespace {

// A one-line progress bar on a terminal; nothing when stderr is redirected.
std::function<void(int64_t, int64_t)> progress_bar(const char* what) {
  if (!isatty(STDERR_FILENO)) return {};
  return [what](int64_t done, int64_t total) {
    const int width = 30;
    const int filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld tensors", what, filled, "##############################",
                 width - filled, "", static_cast<long long>(done), static_cast<long long>(total));
    if (done == total) std::fprintf(stderr, "\n");
  };
}

struct ConvertOptions {
  std::string model, out, dtype = "f16";
};

struct SynthOptions {
  std::string preset, dtype = "f16", tokenizer, out;
  uint64_t seed = 42;
};

}  // namespace

Action add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a Hugging Face folder to GGUF");
  cmd->add_option("-m,--model", o->model, "Hugging Face model folder")->required();
  cmd->add_option("-o,--out", o->out, "Output .gguf path")->required();
  cmd->add_option("--dtype", o->dtype, "Weight type: f32, f16, bf16, q8_0");
  return [o] {
    const DType dtype = parse_dtype(o->dtype);
    std::unique_ptr<ModelFile> model = ModelFile::open(o->model);
    const auto t0 = std::chrono::steady_clock::now();
    convert_to_gguf(*model, dtype, o->out, progress_bar("converting"));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "wrote %s (%s) in %.1f s\n", o->out.c_str(), o->dtype.c_str(), s);
    return 0;
  };
}

Action add_synth_command(CLI::App& app) {
  auto o = std::make_shared<SynthOptions>();
  CLI::App* cmd = app.add_subcommand("synth", "Write a random-weight model with a real shape and tokenizer");
  std::string names;
  for (const SynthPreset& p : synth_presets()) names += (names.empty() ? "" : "|") + p.name;
  cmd->add_option("--preset", o->preset, "Model shape: " + names)->required();
  cmd->add_option("--dtype", o->dtype, "Weight type: f32, f16, bf16, q8_0");
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer: a folder with tokenizer.json, or a GGUF file")->required();
  cmd->add_option("-o,--out", o->out, "Output .gguf path")->required();
  cmd->add_option("--seed", o->seed, "Random seed");
  return [o] {
    const DType dtype = parse_dtype(o->dtype);
    const SynthPreset& preset = find_synth_preset(o->preset);
    const auto t0 = std::chrono::steady_clock::now();
    write_synth_model(preset, dtype, o->tokenizer, o->out, o->seed, progress_bar("generating"));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "wrote %s (%s, %s) in %.1f s\n", o->out.c_str(), preset.name.c_str(), o->dtype.c_str(), s);
    return 0;
  };
}

}  // namespace tandem::cli
