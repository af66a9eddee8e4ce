#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace tandem {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Generator::Generator(ModelRunner& runner, const Tokenizer* tokenizer) : runner_(runner), tokenizer_(tokenizer) {}

GenerationResult Generator::generate(const std::vector<int32_t>& prompt, const GenerateOptions& options) {
  const SamplingParams& sp = options.sampling;
  validate(sp);
  check(!prompt.empty(), "the prompt is empty");
  const ModelConfig& config = runner_.config();
  const int64_t vocab = config.vocab_size;
  for (int32_t id : prompt)
    check(id >= 0 && id < vocab, "prompt token id " + std::to_string(id) + " is outside the vocabulary");

  BlockAllocator& allocator = runner_.block_allocator();
  const int64_t bs = runner_.block_size();
  const int64_t capacity = allocator.n_free() * bs;
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  check(n_prompt < capacity, "prompt has " + std::to_string(n_prompt) + " tokens, the context window is " +
                                 std::to_string(capacity) + " tokens");
  // Generation stops early with "length" when the context fills up.
  const int64_t max_new = std::min<int64_t>(sp.max_tokens, capacity - n_prompt);

  SequenceKv kv;
  struct Release {
    SequenceKv& kv;
    BlockAllocator& allocator;
    ~Release() { kv.release(allocator); }
  } release{kv, allocator};

  GenerationResult result;
  result.prompt_tokens = n_prompt;
  result.finish_reason = "length";
  if (max_new <= 0) return result;

  std::vector<int32_t> stop_ids;
  if (tokenizer_ != nullptr && !sp.ignore_eos) stop_ids = tokenizer_->stop_ids();
  Sampler sampler(sp);
  StopMatcher stops(sp.stop);
  std::unique_ptr<IncrementalDecoder> decoder;
  if (tokenizer_ != nullptr) decoder = std::make_unique<IncrementalDecoder>(*tokenizer_, true);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return false;
    StopMatcher::Result r = stops.push(piece);
    result.text += r.text;
    if (options.on_text && !r.text.empty()) options.on_text(r.text);
    return r.stopped;
  };

  const auto t0 = std::chrono::steady_clock::now();
  // Prefill in chunks; logits only for the last prompt token.
  const std::vector<float>* logits = nullptr;
  for (int64_t begin = 0; begin < n_prompt; begin += options.prefill_chunk) {
    const int64_t n = std::min(options.prefill_chunk, n_prompt - begin);
    check(kv.reserve(kv.n_tokens + n, bs, allocator), "out of KV cache blocks during prefill");
    SequenceChunk chunk{std::span<const int32_t>(prompt.data() + begin, static_cast<size_t>(n)), &kv, false, n_prompt};
    logits = &runner_.forward(std::span<const SequenceChunk>(&chunk, 1));
  }

  std::chrono::steady_clock::time_point t_first;
  bool stopped = false;
  for (int64_t step = 0; step < max_new && !stopped; ++step) {
    std::vector<float> row(logits->begin(), logits->begin() + vocab);
    const int32_t next = sampler.sample(row, prompt, result.token_ids);
    result.token_ids.push_back(next);
    if (step == 0) {
      result.prompt_ms = ms_since(t0);
      t_first = std::chrono::steady_clock::now();
    }
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    if (decoder && emit(decoder->push(next))) {
      result.finish_reason = "stop";
      stopped = true;
      break;
    }
    if (step + 1 == max_new) break;
    check(kv.reserve(kv.n_tokens + 1, bs, allocator), "out of KV cache blocks during decode");
    SequenceChunk chunk{std::span<const int32_t>(&result.token_ids.back(), 1), &kv, false, n_prompt};
    logits = &runner_.forward(std::span<const SequenceChunk>(&chunk, 1));
  }
  if (!stopped) {
    if (decoder) stopped = emit(decoder->flush());
    if (stopped) {
      result.finish_reason = "stop";
    } else {
      const std::string rest = stops.flush();
      result.text += rest;
      if (options.on_text && !rest.empty()) options.on_text(rest);
    }
  }
  result.generated_tokens = static_cast<int64_t>(result.token_ids.size());
  result.decode_ms = result.token_ids.empty() ? 0.0 : ms_since(t_first);
  return result;
}

}  // namespace tandem
