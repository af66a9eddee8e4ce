#include "client/bench/bench_runner.h"

#include <algorithm>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <functional>

#include "client/bench/prompt_sizing.h"
#include "client/bench/report_json.h"
#include "client/bench/report_table.h"
#include "client/bench/svg_chart.h"

namespace tandem::client::bench {
namespace {

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

asio::awaitable<void> sweep(Backend& backend, BenchRun& run, Progress& progress, const bool& stop) {
  const BenchOptions& o = run.options;
  const ServerInfo info = co_await backend.open();
  run.model = info.model;
  run.server_version = info.server_version;
  run.context_size = info.context_size;
  if (run.context_size > 0 && o.prompt_tokens.max + o.max_tokens.max > run.context_size)
    progress.note("note: prompt + output can reach " + std::to_string(o.prompt_tokens.max + o.max_tokens.max) +
                  " tokens, over the context of " + std::to_string(run.context_size) +
                  "; such requests fail with context_length_exceeded");

  const std::vector<RequestSpec> specs = make_workload(o.requests, o.prompt_tokens, o.max_tokens, o.seed);
  progress.note("sizing " + std::to_string(specs.size()) + " prompts on " + run.model + " ...");
  SizedPrompts sized = co_await size_prompts(backend, specs);
  run.prompt_sizing = sized.method;
  run.token_model = sized.model;

  if (o.warmup > 0) {
    progress.note("warming up with " + std::to_string(o.warmup) + " request(s) ...");
    size_t failed = 0;
    RequestResult last;
    for (int64_t i = 0; i < o.warmup && !stop; ++i) {
      last = co_await backend.run(sized.requests[static_cast<size_t>(i) % sized.requests.size()], Clock::now());
      if (!last.ok) failed++;
    }
    if (failed == static_cast<size_t>(o.warmup))
      progress.note("warning: every warm-up request failed (" + last.error_code + ": " + last.error_message + ")");
  }
  for (int c : o.concurrency) {
    if (stop) break;
    run.levels.push_back(co_await run_level(backend, sized.requests, c, &progress, &stop));
  }
}

}  // namespace

asio::awaitable<LevelReport> run_level(Backend& backend, const std::vector<PreparedRequest>& requests,
                                       int concurrency, Progress* progress, const bool* stop) {
  const auto executor = co_await asio::this_coro::executor;
  std::vector<RequestResult> results(requests.size());
  size_t next = 0, done = 0, failed = 0;
  int64_t tokens = 0;
  int workers_left = static_cast<int>(std::min<size_t>(static_cast<size_t>(concurrency), requests.size()));
  asio::steady_timer all_done(executor, Clock::time_point::max());
  if (progress) progress->start_level(concurrency, requests.size());
  const Clock::time_point level_start = Clock::now();
  Clock::time_point level_end = level_start;

  auto worker = [&]() -> asio::awaitable<void> {
    while (next < requests.size() && !(stop && *stop)) {
      const size_t i = next++;
      try {
        results[i] = co_await backend.run(requests[i], level_start);
      } catch (const std::exception& e) {  // a backend bug, not the server's: count it, keep going
        results[i].index = i;
        results[i].error_code = "client_error";
        results[i].error_message = e.what();
      }
      level_end = Clock::now();
      done++;
      if (!results[i].ok) failed++;
      else tokens += results[i].output_tokens();
      if (progress) progress->update(done, failed, tokens);
    }
    if (--workers_left == 0) all_done.cancel();
  };
  const int workers = workers_left;
  for (int w = 0; w < workers; ++w) asio::co_spawn(executor, worker(), asio::detached);
  while (workers_left > 0) {
    beast::error_code ec;
    co_await all_done.async_wait(use_ec(ec));
  }
  if (progress) progress->finish_level(done, failed, tokens);
  const bool interrupted = next < requests.size();
  results.resize(next);  // requests are taken in order: the first `next` ran
  LevelReport report = make_level_report(
      concurrency, std::chrono::duration<double>(level_end - level_start).count(), std::move(results));
  report.interrupted = interrupted;
  co_return report;
}

int run_bench(const BenchOptions& options) {
  BenchRun run;
  run.options = options;
  try {
    run.url = parse_backend_url(options.backend);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (options.api == Api::kOpenAi && run.url.scheme != "http") {
    std::fprintf(stderr, "error: --api openai needs an http:// backend URL, not %s\n", options.backend.c_str());
    return 1;
  }
  run.started_at = utc_now_iso();

  asio::io_context io(1);
  std::unique_ptr<Backend> backend = options.api == Api::kTandem
                                         ? make_tandem_ws_backend(io.get_executor(), options, run.url)
                                         : make_openai_backend(io.get_executor(), options, run.url);
  Progress progress(options.quiet, stderr);
  std::exception_ptr failure;
  // The first SIGINT/SIGTERM lets the requests in flight end and reports what
  // ran; a second one exits at once.
  bool stop = false;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::function<void(const beast::error_code&, int)> on_signal = [&](const beast::error_code& ec, int) {
    if (ec) return;
    if (stop) std::_Exit(130);
    stop = true;
    progress.note("\nstopping: letting the requests in flight finish (a second Ctrl-C quits at once)");
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  auto flow = [&]() -> asio::awaitable<void> {
    try {
      co_await sweep(*backend, run, progress, stop);
    } catch (...) {
      failure = std::current_exception();
    }
    co_await backend->close();
    beast::error_code ignored;
    signals.cancel(ignored);
  };
  asio::co_spawn(io, flow(), [&](std::exception_ptr e) {
    if (e && !failure) failure = e;
  });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
    return 1;
  }

  std::printf("%s\n%s", format_run_header(run).c_str(), format_level_table(run).c_str());
  std::fflush(stdout);
  try {
    if (!options.json_out.empty()) {
      write_text_file(options.json_out, bench_run_json(run).dump(1) + "\n");
      progress.note("wrote " + options.json_out);
    }
    if (!options.plot.empty()) {
      write_text_file(options.plot, render_bench_chart(run));
      progress.note("wrote " + options.plot);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (stop) return 130;
  for (const LevelReport& l : run.levels)
    if (l.failed > 0) return 2;
  return 0;
}

}  // namespace tandem::client::bench
