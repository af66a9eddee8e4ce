#include "client/bench/request_bodies.h"

namespace tandem::client::bench {

using nlohmann::json;

json openai_completion_body(const PreparedRequest& request, const BenchOptions& options, const std::string& model) {
  json body = {{"model", model},
               {"prompt", request.prompt},
               {"max_tokens", request.spec.max_tokens},
               {"temperature", options.temperature},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  // ignore_eos is an extension (tandem-server, vLLM, SGLang); servers that do
  // not know it may refuse it, hence --no-ignore-eos.
  if (options.ignore_eos) body["ignore_eos"] = true;
  if (options.temperature > 0) body["seed"] = options.seed + request.spec.index;
  return body;
}

json tandem_generate_command(const std::string& id, const PreparedRequest& request, const BenchOptions& options) {
  json params = {{"max_tokens", request.spec.max_tokens}, {"temperature", options.temperature}};
  if (options.ignore_eos) params["ignore_eos"] = true;
  if (options.temperature > 0) params["seed"] = options.seed + request.spec.index;
  return {{"command", "generate"}, {"id", id}, {"prompt", request.prompt}, {"params", std::move(params)}};
}

json tandem_init_command(const BenchOptions& options) {
  json init = {{"command", "init"}, {"compression", options.zstd ? "zstd" : "none"}};
  if (!options.model.empty()) init["model"] = options.model;
  if (!options.api_key.empty()) init["api_key"] = options.api_key;
  return init;
}

}  // namespace tandem::client::bench
