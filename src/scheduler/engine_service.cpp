#include "scheduler/engine_service.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <iomanip>
#include <mutex>
#include <ostream>
#include <thread>
#include <unordered_set>

#include "scheduler/event_delivery.h"
#include "tokenizer/tokenizer.h"

namespace tandem {

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  for (size_t j = i; j < counts.size(); ++j) ++counts[j];  // cumulative
  sum += v;
  ++total;
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::vector<double> latency_bounds() {
  return {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0};
}

// One request in flight. tokens = prompt + generated; the KV cache holds the
// first kv.n_tokens of them, and the rest are pending: many while the prompt
// is prefilled (or recomputed after preemption), one while decoding.
struct Sequence {
  RequestId id = 0;
  GenerationRequest request;
  std::shared_ptr<EventCallback> on_event;  // shared with the events queued for delivery
  std::vector<int32_t> tokens;
  int64_t n_prompt = 0;
  SequenceKv kv;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StopMatcher> stops;
  std::unique_ptr<IncrementalDecoder> decoder;
  Clock::time_point submitted, scheduled, first_token, last_token;
  bool was_scheduled = false;
  bool has_token = false;
  std::vector<float> row;  // this sequence's logits row, which its sampler modifies (penalties)
  RowSampling row_sampling;  // when the backend samples this sequence's row (samples_rows)

  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - kv.n_tokens; }
  int64_t generated() const { return static_cast<int64_t>(tokens.size()) - n_prompt; }
};

}  // namespace

struct EngineService::Impl {
  Impl(ModelRunner& r, const Tokenizer& t, const EngineOptions& o) : runner(r), tokenizer(t), options(o) {
    stats.batch_size = o.batch_size;
    stats.context_window = o.context_window;
    stats.block_size = r.block_size();
    stats.kv_blocks_total = r.block_allocator().n_blocks();
    stats.ttft_seconds = Histogram(latency_bounds());
    stats.inter_token_seconds = Histogram(latency_bounds());
    stats.e2e_seconds = Histogram(latency_bounds());
    stop_ids = tokenizer.stop_ids();
    if (o.step_trace != nullptr)  // times in ms to the microsecond, however long the server runs
      *o.step_trace << std::fixed << std::setprecision(3)
                    << "start_ms,plan_ms,forward_ms,after_ms,sequences,decodes,prefill_tokens,waiting" << std::endl;
  }

  void loop();
  // One engine step; false when it ran no forward().
  bool step();
  // ModelRunner::idle(), whose failures are the runner's to report: one
  // that cannot reach its peers fails its next step too.
  void tick_idle() {
    try {
      runner.idle();
    } catch (...) {
    }
  }
  void finish(std::unique_ptr<Sequence> seq, const std::string& reason, const std::string& code = {},
              const std::string& message = {});
  // One event per sampled token: its id, the text that became final, logprobs.
  void emit_token(Sequence& seq, int32_t id, std::string text);
  void preempt(std::unique_ptr<Sequence> seq);

  ModelRunner& runner;
  const Tokenizer& tokenizer;
  EngineOptions options;
  std::vector<int32_t> stop_ids;

  // Shared with submitting threads, under `mutex`.
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Sequence>> incoming;
  std::unordered_set<RequestId> cancels;
  RequestId next_id = 1;
  bool stopping = false;
  bool draining = false;
  int64_t n_waiting = 0, n_running = 0;  // mirrors of the engine's lists
  EngineStats stats;

  // Engine thread only.
  const Clock::time_point started = Clock::now();  // the step trace's zero
  // Events are queued here and handed over at the end of each pass of the
  // loop; their callbacks run on the delivery's thread.
  EventDelivery delivery;
  std::deque<std::unique_ptr<Sequence>> waiting;
  std::vector<std::unique_ptr<Sequence>> running;  // in admission order
  std::thread thread;
};

void EngineService::Impl::finish(std::unique_ptr<Sequence> seq, const std::string& reason, const std::string& code,
                                 const std::string& message) {
  const Clock::time_point now = Clock::now();
  // Text held back (a possible stop-string prefix, an incomplete character)
  // is released when the stream ends for any reason but a stop string.
  if (reason == "stop" || reason == "length") {
    std::string tail;
    if (!seq->stops->stopped()) tail = seq->stops->push(seq->decoder->flush()).text;
    if (!seq->stops->stopped()) tail += seq->stops->flush();
    if (!tail.empty()) {
      StreamEvent e;
      e.text = std::move(tail);
      delivery.queue(seq->on_event, std::move(e));
    }
  }
  seq->kv.release(runner.block_allocator());
  StreamEvent done;
  done.done = true;
  done.finish_reason = reason;
  done.error_code = code;
  done.error_message = message;
  done.prompt_tokens = seq->n_prompt;
  done.completion_tokens = seq->generated();
  done.queue_ms = seq->was_scheduled ? ms_between(seq->submitted, seq->scheduled) : ms_between(seq->submitted, now);
  done.ttft_ms = seq->has_token ? ms_between(seq->submitted, seq->first_token) : 0.0;
  done.total_ms = ms_between(seq->submitted, now);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (reason == "stop") ++stats.requests_finished_stop;
    else if (reason == "length") ++stats.requests_finished_length;
    else if (reason == "cancelled") ++stats.requests_cancelled;
    else if (reason == "timeout") ++stats.requests_timeout;
    else ++stats.requests_error;
    stats.e2e_seconds.observe(done.total_ms / 1000.0);
  }
  delivery.queue(seq->on_event, std::move(done));
}

void EngineService::Impl::emit_token(Sequence& seq, int32_t id, std::string text) {
  const Clock::time_point now = Clock::now();
  StreamEvent e;
  e.text = std::move(text);
  e.token_ids.push_back(id);
  if (seq.request.top_logprobs >= 0) {
    const std::vector<float>& lp = seq.sampler->last_logprobs();
    e.logprobs.push_back(lp.empty() ? 0.0f : lp[static_cast<size_t>(id)]);
    std::vector<TopLogprob> top;
    const int k = std::min<int>(seq.request.top_logprobs, static_cast<int>(lp.size()));
    if (k > 0) {
      std::vector<int32_t> idx(lp.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        return lp[static_cast<size_t>(a)] > lp[static_cast<size_t>(b)] || (lp[static_cast<size_t>(a)] == lp[static_cast<size_t>(b)] && a < b);
      });
      for (int i = 0; i < k; ++i) top.push_back({idx[static_cast<size_t>(i)], lp[static_cast<size_t>(idx[static_cast<size_t>(i)])]});
    }
    e.top.push_back(std::move(top));
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++stats.generation_tokens_total;
    if (!seq.has_token) stats.ttft_seconds.observe(ms_between(seq.submitted, now) / 1000.0);
    else stats.inter_token_seconds.observe(ms_between(seq.last_token, now) / 1000.0);
  }
  if (!seq.has_token) seq.first_token = now;
  seq.has_token = true;
  seq.last_token = now;
  delivery.queue(seq.on_event, std::move(e));
}

void EngineService::Impl::preempt(std::unique_ptr<Sequence> seq) {
  // Recompute: the blocks go back to the pool and the sequence re-enters the
  // queue at the front; its prompt and generated tokens are prefilled again.
  seq->kv.release(runner.block_allocator());
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++stats.preemptions_total;
  }
  waiting.push_front(std::move(seq));
}

void EngineService::Impl::loop() {
  for (;;) {
    std::unordered_set<RequestId> to_cancel;
    {
      std::unique_lock<std::mutex> lock(mutex);
      const auto has_work = [&] {
        return stopping || !incoming.empty() || !cancels.empty() || !waiting.empty() || !running.empty();
      };
      if (!wake.wait_for(lock, options.idle_tick, has_work)) {
        lock.unlock();
        tick_idle();
        continue;
      }
      if (stopping) break;
      while (!incoming.empty()) {
        waiting.push_back(std::move(incoming.front()));
        incoming.pop_front();
      }
      n_waiting = static_cast<int64_t>(waiting.size());
      to_cancel.swap(cancels);
    }
    // Cancellations and timeouts, before anything is scheduled.
    const Clock::time_point now = Clock::now();
    auto expired = [&](const Sequence& s) {
      return s.request.timeout.count() > 0 && now - s.submitted > s.request.timeout;
    };
    for (auto* list : {&waiting}) {
      for (auto it = list->begin(); it != list->end();) {
        if (to_cancel.count((*it)->id) || expired(**it)) {
          const char* reason = to_cancel.count((*it)->id) ? "cancelled" : "timeout";
          std::unique_ptr<Sequence> s = std::move(*it);
          it = list->erase(it);
          finish(std::move(s), reason);
        } else {
          ++it;
        }
      }
    }
    for (auto it = running.begin(); it != running.end();) {
      if (to_cancel.count((*it)->id) || expired(**it)) {
        std::unique_ptr<Sequence> s = std::move(*it);
        it = running.erase(it);
        const bool cancelled = to_cancel.count(s->id) > 0;
        finish(std::move(s), cancelled ? "cancelled" : "timeout");
      } else {
        ++it;
      }
    }
    // A pass that ran no step (cancels, refusals) is idle time too: the
    // runner's idle() keeps its own pace.
    if ((waiting.empty() && running.empty()) || !step()) tick_idle();
    // Before the gauges: idle() must not see an empty engine whose last
    // events are still to be handed over.
    delivery.hand_over();
    std::lock_guard<std::mutex> lock(mutex);
    n_waiting = static_cast<int64_t>(waiting.size());
    n_running = static_cast<int64_t>(running.size());
    stats.kv_blocks_used = runner.block_allocator().n_blocks() - runner.block_allocator().n_free();
  }
  // Shutting down: every stream still open ends as cancelled.
  for (auto& s : running) finish(std::move(s), "cancelled");
  running.clear();
  for (auto& s : waiting) finish(std::move(s), "cancelled");
  waiting.clear();
  delivery.hand_over();
}

bool EngineService::Impl::step() {
  const Clock::time_point t_plan = Clock::now();
  BlockAllocator& alloc = runner.block_allocator();
  const int64_t bs = runner.block_size();
  int64_t budget = options.step_tokens;
  std::vector<Sequence*> scheduled;
  std::vector<int64_t> counts;

  // 1. Running sequences, oldest first: decodes take one token; a sequence
  // still prefilling takes a chunk of what is left of the budget. When blocks
  // run out, the newest running sequence is preempted.
  for (size_t i = 0; i < running.size() && budget > 0; ++i) {
    Sequence& s = *running[i];
    const int64_t n = std::min(s.pending(), budget);
    bool ok = s.kv.reserve(s.kv.n_tokens + n, bs, alloc);
    while (!ok && running.size() > i + 1) {
      std::unique_ptr<Sequence> victim = std::move(running.back());
      running.pop_back();
      preempt(std::move(victim));
      ok = s.kv.reserve(s.kv.n_tokens + n, bs, alloc);
    }
    if (!ok) {  // the oldest sequence alone does not fit: preempt it too
      std::unique_ptr<Sequence> self = std::move(running[i]);
      running.erase(running.begin() + static_cast<long>(i));
      preempt(std::move(self));
      break;
    }
    scheduled.push_back(&s);
    counts.push_back(n);
    budget -= n;
  }
  // 2. Admit waiting sequences while there is room in the batch, the budget
  // and the cache. A sequence that can never fit the cache fails here.
  while (!waiting.empty() && budget > 0 && static_cast<int64_t>(running.size()) < options.batch_size) {
    Sequence& s = *waiting.front();
    const int64_t total_blocks = (static_cast<int64_t>(s.tokens.size()) + bs - 1) / bs;
    if (total_blocks > alloc.n_blocks()) {
      std::unique_ptr<Sequence> seq = std::move(waiting.front());
      waiting.pop_front();
      finish(std::move(seq), "error", "context_length_exceeded", "the KV cache cannot hold this sequence");
      continue;
    }
    const int64_t n = std::min(s.pending(), budget);
    if (!s.kv.reserve(s.kv.n_tokens + n, bs, alloc)) break;
    if (!s.was_scheduled) {
      s.was_scheduled = true;
      s.scheduled = Clock::now();
    }
    running.push_back(std::move(waiting.front()));
    waiting.pop_front();
    scheduled.push_back(running.back().get());
    counts.push_back(n);
    budget -= n;
  }
  if (scheduled.empty()) return false;
  // For the step trace: a decode feeds back the one token sampled last step;
  // anything else is prompt (or recomputed) tokens.
  int64_t n_decodes = 0, n_prefill = 0;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const bool decode = counts[i] == 1 && scheduled[i]->pending() == 1 && scheduled[i]->generated() > 0;
    n_decodes += decode ? 1 : 0;
    n_prefill += decode ? 0 : counts[i];
  }

  std::vector<SequenceChunk> chunks;
  chunks.reserve(scheduled.size());
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    chunks.push_back({std::span<const int32_t>(s.tokens.data() + s.kv.n_tokens, static_cast<size_t>(counts[i])),
                      &s.kv, false, s.n_prompt});
    // Only the argmax is wanted from a prompt chunk with more to come and
    // from a plain greedy sequence that reports no logprobs.
    chunks.back().argmax_only =
        counts[i] < s.pending() || (s.sampler->is_plain_greedy() && s.request.top_logprobs < 0);
    // A backend that samples where the logits are takes every other row
    // that reports no logprobs; its draw comes from the sequence's sampler.
    if (!chunks.back().argmax_only && s.request.top_logprobs < 0 && runner.samples_rows()) {
      try {
        s.sampler->plan_row(std::span<const int32_t>(s.tokens.data(), static_cast<size_t>(s.n_prompt)),
                            std::span<const int32_t>(s.tokens.data() + s.n_prompt, static_cast<size_t>(s.generated())),
                            static_cast<size_t>(runner.config().vocab_size), s.row_sampling);
        chunks.back().sampling = &s.row_sampling;
      } catch (const std::exception&) {
        // Left to the host sampler, which fails the sequence with the reason.
      }
    }
  }
  const Clock::time_point t0 = Clock::now();
  const std::vector<float>* logits = nullptr;
  try {
    logits = &runner.forward(chunks);
  } catch (const std::exception& e) {
    // A failed step fails the sequences in it; the engine keeps serving.
    if (options.on_step_error) {
      try {  // the report must not take the engine down
        options.on_step_error(e.what());
      } catch (...) {
      }
    }
    std::vector<std::unique_ptr<Sequence>> failed;
    for (Sequence* s : scheduled) {
      auto it = std::find_if(running.begin(), running.end(), [&](const auto& p) { return p.get() == s; });
      failed.push_back(std::move(*it));
      running.erase(it);
    }
    for (auto& s : failed) finish(std::move(s), "error", "internal_error", e.what());
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    stats.step_seconds_total += ms_between(t0, Clock::now()) / 1000.0;
    ++stats.steps_total;
  }
  const Clock::time_point t_forward_end = Clock::now();

  // 3. Sample for every sequence whose pending tokens are all in the cache:
  // the rows in parallel when there is a pool (each sequence's sampler is
  // its own), then the tokens in order. A row the sampler refuses (every
  // logit NaN) fails its sequence only.
  const int64_t vocab = runner.config().vocab_size;
  std::vector<int32_t> sampled(scheduled.size(), -1);
  std::vector<std::string> sample_errors(scheduled.size());
  // Plain greedy rows take the argmax the backend computed where the logits
  // are (the same token Sampler::sample would pick, and no RNG draw), and
  // rows the backend sampled take its token.
  const std::span<const int32_t> backend_tokens = runner.row_tokens();
  const bool backend_has_token = backend_tokens.size() == scheduled.size();
  // Rows the host samples from their logits (the rest take the backend's
  // token, or sample nothing): only those are worth the pool's wake-up.
  int64_t host_rows = 0;
  for (size_t i = 0; i < scheduled.size(); ++i)
    host_rows += scheduled[i]->pending() == 0 &&
                 !((chunks[i].argmax_only || chunks[i].sampling != nullptr) && backend_has_token);
  auto sample_row = [&](size_t i) {
    Sequence& s = *scheduled[i];
    if (s.pending() > 0) return;  // a prefill chunk with more to come
    if (chunks[i].sampling != nullptr && !backend_has_token) {
      // Its draw is spent and its row may be overwritten: not sampled twice.
      sample_errors[i] = "internal: the backend sampled no token for a row it was asked to sample";
      return;
    }
    if ((chunks[i].argmax_only || chunks[i].sampling != nullptr) && backend_has_token) {
      if (backend_tokens[i] >= 0) {
        sampled[i] = backend_tokens[i];
      } else {
        sample_errors[i] = "sampler: every logit is NaN or -inf; the model produced no usable distribution";
      }
      return;
    }
    std::span<const int32_t> prompt(s.tokens.data(), static_cast<size_t>(s.n_prompt));
    std::span<const int32_t> generated(s.tokens.data() + s.n_prompt, static_cast<size_t>(s.generated()));
    try {  // nothing may escape a pool worker
      s.row.assign(logits->begin() + static_cast<long>(i) * vocab, logits->begin() + static_cast<long>(i + 1) * vocab);
      sampled[i] = s.sampler->sample(s.row, prompt, generated);
    } catch (const std::exception& e) {
      sample_errors[i] = e.what();
    } catch (...) {
      sample_errors[i] = "sampling failed";
    }
  };
  if (options.sampling_pool != nullptr && host_rows > 1) {
    options.sampling_pool->parallel_for(static_cast<int64_t>(scheduled.size()), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sample_row(static_cast<size_t>(i));
    });
  } else {
    for (size_t i = 0; i < scheduled.size(); ++i) sample_row(i);
  }
  std::vector<Sequence*> done;
  std::vector<std::string> reasons;
  std::vector<Sequence*> failed;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    if (!sample_errors[i].empty()) {
      failed.push_back(&s);
      continue;
    }
    if (sampled[i] < 0) continue;  // a prefill chunk with more to come
    const int32_t id = sampled[i];
    s.tokens.push_back(id);
    std::string reason;
    const bool is_stop_id =
        !s.request.sampling.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end();
    if (is_stop_id) {
      reason = "stop";  // the end-of-sequence token counts as generated but has no text
    } else {
      StopMatcher::Result r = s.stops->push(s.decoder->push(id));
      emit_token(s, id, std::move(r.text));
      if (r.stopped) reason = "stop";
    }
    if (reason.empty() && (s.generated() >= s.request.sampling.max_tokens ||
                           static_cast<int64_t>(s.tokens.size()) >= options.context_window))
      reason = "length";
    if (!reason.empty()) {
      done.push_back(&s);
      reasons.push_back(reason);
    }
  }
  for (size_t i = 0; i < done.size(); ++i) {
    auto it = std::find_if(running.begin(), running.end(), [&](const auto& p) { return p.get() == done[i]; });
    std::unique_ptr<Sequence> s = std::move(*it);
    running.erase(it);
    finish(std::move(s), reasons[i]);
  }
  for (size_t i = 0, k = 0; i < scheduled.size(); ++i) {
    if (sample_errors[i].empty()) continue;
    auto it = std::find_if(running.begin(), running.end(), [&](const auto& p) { return p.get() == failed[k]; });
    ++k;
    std::unique_ptr<Sequence> s = std::move(*it);
    running.erase(it);
    finish(std::move(s), "error", "internal_error", sample_errors[i]);
  }
  if (options.step_trace != nullptr) {
    *options.step_trace << ms_between(started, t_plan) << ',' << ms_between(t_plan, t0) << ','
                        << ms_between(t0, t_forward_end) << ',' << ms_between(t_forward_end, Clock::now()) << ','
                        << scheduled.size() << ',' << n_decodes << ',' << n_prefill << ',' << waiting.size()
                        << std::endl;  // whole lines, should the process end abruptly
  }
  return true;
}

EngineService::EngineService(ModelRunner& runner, const Tokenizer& tokenizer, const EngineOptions& options)
    : options_(options), impl_(std::make_unique<Impl>(runner, tokenizer, options)) {
  check(options.batch_size > 0, "batch_size must be positive");
  check(options.max_queued >= 0, "max_queued_requests must not be negative");
  check(options.context_window > 1, "context_window must be at least 2 tokens");
  check(options.step_tokens > 0, "step token budget must be positive");
  check(options.idle_tick.count() > 0, "internal: the engine's idle tick must be positive");
  check(options.context_window <= runner.max_context(),
        "context_window " + std::to_string(options.context_window) + " exceeds the " +
            std::to_string(runner.max_context()) + " tokens the model runner was built for");
  impl_->thread = std::thread([this] { impl_->loop(); });
}

EngineService::~EngineService() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

RequestId EngineService::submit(GenerationRequest request, EventCallback on_event) {
  try {
    validate(request.sampling);
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    ++impl_->stats.requests_rejected;
    throw RequestError("invalid_request", e.what());
  }
  auto reject = [&](const std::string& code, const std::string& message) {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    ++impl_->stats.requests_rejected;
    throw RequestError(code, message);
  };
  if (request.prompt.empty()) reject("invalid_request", "the prompt is empty");
  const int64_t vocab = impl_->runner.config().vocab_size;
  for (int32_t id : request.prompt)
    if (id < 0 || id >= vocab) reject("invalid_request", "prompt token id " + std::to_string(id) + " is outside the vocabulary");
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  if (n >= options_.context_window)
    reject("context_length_exceeded", "the prompt has " + std::to_string(n) + " tokens; the context window is " +
                                          std::to_string(options_.context_window) +
                                          " tokens, which must also hold at least one generated token");
  // As OpenAI-compatible servers do: a max_tokens that cannot fit is refused,
  // never cut short silently.
  if (n + request.sampling.max_tokens > options_.context_window)
    reject("context_length_exceeded", "the prompt has " + std::to_string(n) + " tokens and max_tokens is " +
                                          std::to_string(request.sampling.max_tokens) + "; together they exceed the " +
                                          "context window of " + std::to_string(options_.context_window) +
                                          " tokens (lower max_tokens, or leave it out to use the room left)");
  auto seq = std::make_unique<Sequence>();
  seq->request = std::move(request);
  seq->on_event = std::make_shared<EventCallback>(std::move(on_event));
  seq->tokens = seq->request.prompt;
  seq->n_prompt = n;
  seq->sampler = std::make_unique<Sampler>(seq->request.sampling);
  seq->stops = std::make_unique<StopMatcher>(seq->request.sampling.stop);
  seq->decoder = std::make_unique<IncrementalDecoder>(impl_->tokenizer, true);
  seq->submitted = Clock::now();
  RequestId id;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->draining || impl_->stopping) {
      ++impl_->stats.requests_rejected;
      throw RequestError("shutting_down", "the server is shutting down and takes no new requests");
    }
    const int64_t queued = impl_->n_waiting + static_cast<int64_t>(impl_->incoming.size());
    if (queued >= options_.max_queued) {
      ++impl_->stats.requests_rejected;
      throw RequestError("overloaded", "the request queue is full (" + std::to_string(options_.max_queued) +
                                           " waiting); retry later");
    }
    id = impl_->next_id++;
    seq->id = id;
    impl_->stats.prompt_tokens_total += static_cast<uint64_t>(n);
    impl_->incoming.push_back(std::move(seq));
  }
  impl_->wake.notify_one();
  return id;
}

void EngineService::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->cancels.insert(id);
  }
  impl_->wake.notify_one();
}

EngineStats EngineService::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  EngineStats s = impl_->stats;
  s.queued = impl_->n_waiting + static_cast<int64_t>(impl_->incoming.size());
  s.running = impl_->n_running;
  s.draining = impl_->draining;
  return s;
}

void EngineService::begin_drain() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->draining = true;
}

bool EngineService::idle() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->incoming.empty() && impl_->n_waiting == 0 && impl_->n_running == 0 && impl_->delivery.delivered();
}

}  // namespace tandem
