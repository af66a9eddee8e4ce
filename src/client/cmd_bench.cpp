// `tandem bench`: TTFT, inter-token latency and throughput of a backend over
// a concurrency sweep, through the Tandem WebSocket protocol or any
// OpenAI-compatible HTTP server (docs/CLIENT.md).
#include <cstdio>
#include <memory>
#include <stdexcept>

#include "client/bench/bench_runner.h"
#include "client/commands.h"

namespace tandem::client {

Action add_bench_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("bench", "Measure TTFT, inter-token latency and throughput over a concurrency sweep");
  struct Flags {
    bench::BenchOptions options;
    std::string api = "tandem";
    std::string concurrency = "1,4,16,64";
    std::string prompt_tokens = "128";
    std::string max_tokens = "128";
  };
  auto f = std::make_shared<Flags>();
  bench::BenchOptions& o = f->options;
  cmd->add_option("--backend", o.backend, "Backend URL (http://host:port; ws:// also works for --api tandem)")
      ->capture_default_str();
  cmd->add_option("--api", f->api, "tandem: the WebSocket protocol at /ws; openai: POST /v1/completions with SSE")
      ->check(CLI::IsMember({"tandem", "openai"}))
      ->capture_default_str();
  cmd->add_option("--model", o.model, "Model name (default: the server's; openai: the first of /v1/models)");
  cmd->add_option("--api-key", o.api_key, "API key (Bearer for HTTP, init api_key for the WebSocket)")
      ->envname("TANDEM_API_KEY");
  cmd->add_option("--requests", o.requests, "Requests at each concurrency level")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}))
      ->capture_default_str();
  cmd->add_option("--concurrency", f->concurrency, "Concurrency levels, comma-separated")->capture_default_str();
  cmd->add_option("--prompt-tokens", f->prompt_tokens, "Prompt length in tokens: N, or MIN:MAX for uniform random")
      ->capture_default_str();
  cmd->add_option("--max-tokens", f->max_tokens, "Output length in tokens: N, or MIN:MAX for uniform random")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the random lengths and prompt words (and sampling when temperature > 0)")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos,!--no-ignore-eos", o.ignore_eos,
                "Generate max tokens even past end-of-sequence (default on; servers without the extension may "
                "refuse it)");
  cmd->add_option("--temperature", o.temperature, "Sampling temperature")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Requests sent one at a time before measuring")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}))
      ->capture_default_str();
  cmd->add_flag("--zstd", o.zstd, "Ask for zstd-compressed server messages (--api tandem)");
  cmd->add_option("--timeout-s", o.timeout_s, "Seconds a request may take before it counts as failed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--json-out", o.json_out, "Write config, per-level statistics and every request's timings as JSON");
  cmd->add_option("--plot", o.plot, "Write an SVG chart of throughput and TTFT against concurrency");
  cmd->add_flag("--quiet,-q", o.quiet, "No progress on stderr");
  return [f] {
    bench::BenchOptions options = f->options;
    try {
      options.api = f->api == "openai" ? bench::Api::kOpenAi : bench::Api::kTandem;
      options.concurrency = bench::parse_concurrency_list(f->concurrency);
      options.prompt_tokens = bench::parse_length_range(f->prompt_tokens, "--prompt-tokens", 1);
      options.max_tokens = bench::parse_length_range(f->max_tokens, "--max-tokens", 1);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
    if (options.zstd && options.api != bench::Api::kTandem) {
      std::fprintf(stderr, "error: --zstd applies to --api tandem only\n");
      return 1;
    }
    return bench::run_bench(options);
  };
}

}  // namespace tandem::client
