// The engine thread and its continuous-batching scheduler, behind a
// thread-safe front door for the server. Server threads submit requests and
// receive events through callbacks, which a delivery thread runs
// (event_delivery.h) while the engine runs its next step; they never block
// the engine, and the engine never blocks on them.
//
// Each engine step plans {sequence -> n tokens}: running sequences decode one
// token each, and waiting prompts are prefilled in chunks with the tokens left
// in the step's budget, so a long prompt never stalls running streams for
// more than one chunk. KV blocks are reserved per step; when they run out the
// newest running sequence is preempted (its blocks freed, recomputed later).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/thread_pool.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"

namespace tandem {

class Tokenizer;

// A request the engine refuses up front. code() is a stable machine name:
//   "overloaded"              the queue is full (HTTP 429)
//   "context_length_exceeded" prompt + max_tokens cannot fit (HTTP 400)
//   "invalid_request"         bad sampling parameters, empty prompt (HTTP 400)
//   "shutting_down"           draining on SIGTERM (HTTP 503)
class RequestError : public Error {
 public:
  RequestError(std::string code, const std::string& message) : Error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

struct TopLogprob {
  int32_t id = 0;
  float logprob = 0;
};

// One event of a request's stream. Every stream ends with exactly one event
// whose `done` is true.
struct StreamEvent {
  // Token events (done == false):
  std::string text;                            // text that became final (whole UTF-8; may be empty)
  std::vector<int32_t> token_ids;              // tokens sampled since the last event (usually one)
  std::vector<float> logprobs;                 // per token id, when requested
  std::vector<std::vector<TopLogprob>> top;    // per token id, the top_logprobs most likely, when requested

  // The final event (done == true):
  bool done = false;
  std::string finish_reason;  // "stop", "length", "cancelled", "timeout" or "error"
  std::string error_code;     // set when finish_reason is "error"
  std::string error_message;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double queue_ms = 0;  // submit -> first scheduled
  double ttft_ms = 0;   // submit -> first token
  double total_ms = 0;  // submit -> done
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int top_logprobs = -1;  // -1: no logprobs; 0: the sampled token's; k: also the k most likely
  std::chrono::milliseconds timeout{0};  // 0: none; else finish_reason "timeout" when exceeded
};

using RequestId = uint64_t;
using EventCallback = std::function<void(StreamEvent&&)>;

struct EngineOptions {
  int64_t batch_size = 4;          // running sequences at most
  int64_t max_queued = 64;         // waiting requests at most; more are "overloaded"
  int64_t context_window = 4096;   // tokens per sequence (prompt + generated)
  int64_t step_tokens = 256;       // tokens per engine step (decodes + prefill chunks)
  // Samples a step's rows in parallel when set (each sequence has its own
  // sampler). Not owned; must outlive the service. The engine thread is its
  // only caller between steps, so it may be the CPU runner's pool.
  ThreadPool* sampling_pool = nullptr;
  // With nothing to run, the engine thread calls ModelRunner::idle() this
  // often (a multi-host runner's heartbeat).
  std::chrono::milliseconds idle_tick{1000};
  // When set, one CSV line per engine step whose forward ran is written
  // here (header first; times in ms with 3 decimals, each line flushed):
  // when it started, how long planning, forward() and the sampling and
  // streaming after it took, and what it held. Not owned; the engine thread
  // is its only writer while the service lives.
  std::ostream* step_trace = nullptr;
  // Called on the engine thread with the error of a step whose forward()
  // threw (its sequences fail with it; the engine keeps serving): the
  // server logs it, since a client may be gone.
  std::function<void(const std::string&)> on_step_error;
};

// Counters and gauges for /metrics and /v1/status. Histograms hold counts per
// upper bound (seconds), cumulative as Prometheus expects.
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // counts[i]: observations <= bounds[i]; one more entry for +Inf
  double sum = 0;
  uint64_t total = 0;
  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v);
};

struct EngineStats {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t batch_size = 0;
  int64_t context_window = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t block_size = 0;
  uint64_t requests_finished_stop = 0, requests_finished_length = 0, requests_cancelled = 0, requests_timeout = 0,
           requests_error = 0, requests_rejected = 0;
  uint64_t prompt_tokens_total = 0, generation_tokens_total = 0, preemptions_total = 0, steps_total = 0;
  double step_seconds_total = 0;  // time inside ModelRunner::forward
  Histogram ttft_seconds, inter_token_seconds, e2e_seconds;
  bool draining = false;
};

class EngineService {
 public:
  // Starts the engine thread. `runner` and `tokenizer` must outlive the service.
  EngineService(ModelRunner& runner, const Tokenizer& tokenizer, const EngineOptions& options);
  // Cancels everything still running and joins the engine thread.
  ~EngineService();
  EngineService(const EngineService&) = delete;
  EngineService& operator=(const EngineService&) = delete;

  // Thread-safe. Validates and queues the request; throws RequestError when
  // it is refused. `on_event` runs on the service's delivery thread (never
  // the engine's, which hands each step's events over at once and goes on),
  // one event at a time and in order; it must not block (post the event to
  // your own executor).
  RequestId submit(GenerationRequest request, EventCallback on_event);
  // Thread-safe; unknown or finished ids are ignored. The request's stream
  // ends with finish_reason "cancelled" within one engine step, and its KV
  // blocks are free by then.
  void cancel(RequestId id);

  // A snapshot; gauges (running, KV blocks) are as of the end of the last
  // engine step, so after a stream ends wait for idle() before reading them.
  EngineStats stats() const;
  const EngineOptions& options() const { return options_; }

  // Refuses new requests ("shutting_down"); running and queued ones finish.
  void begin_drain();
  // True when nothing is queued or running and every event has been delivered.
  bool idle() const;

 private:
  struct Impl;
  EngineOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
