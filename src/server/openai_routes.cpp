// POST /v1/chat/completions and /v1/completions: submit n engine requests,
// then either stream SSE chunks as events arrive or answer once all are done.
// A client that goes away (its socket turns readable and a peek finds EOF or
// an error) gets its requests cancelled at once.
#include <sys/socket.h>

#include <cerrno>
#include <spdlog/spdlog.h>

#include "server/api_error.h"
#include "server/json_input.h"
#include "server/generation_params.h"
#include "server/net.h"
#include "server/openai_format.h"
#include "server/plain_routes.h"

namespace tandem::server {
namespace {

using nlohmann::json;

constexpr auto use_ec = [](beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); };

asio::awaitable<bool> write_json(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& req, int status,
                                 const std::string& body) {
  http::response<http::string_body> res{static_cast<http::status>(status), req.version()};
  set_common_headers(res);
  res.set(http::field::content_type, "application/json");
  res.body() = body;
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  ctx.counters.count_response(status);
  beast::error_code ec;
  stream.expires_after(ctx.write_timeout);
  co_await http::async_write(stream, res, use_ec(ec));
  co_return !ec && req.keep_alive();
}

asio::awaitable<bool> write_error(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& req,
                                  const ApiError& e) {
  co_return co_await write_json(ctx, stream, req, e.status(), dump_json(e.to_json()));
}

// Watches the socket for the peer closing while the response is produced.
struct DisconnectWatch {
  bool gone = false;
  bool stopped = false;
  int stale_wakeups = 0;  // readiness that turned out to be nothing
};

void watch_for_disconnect(const std::shared_ptr<DisconnectWatch>& watch, const std::shared_ptr<EventInbox>& inbox,
                          tcp::socket& socket) {
  socket.async_wait(tcp::socket::wait_read, [watch, inbox, &socket](beast::error_code ec) {
    if (watch->stopped) return;  // the request finished; the socket may be gone
    if (!ec) {
      // A wait can complete on readiness left over from reading the request
      // (the reactor remembers it until a read would block), so look before
      // deciding: bytes waiting are a pipelined request (stop watching);
      // would-block means the client is still there (watch again); only a
      // zero-byte peek (EOF) or an error means it left.
      char byte = 0;
      const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        // Never spin: after many empty wake-ups, stop watching; a client that
        // leaves is then noticed when a write fails.
        if (++watch->stale_wakeups < 1000) watch_for_disconnect(watch, inbox, socket);
        return;
      }
    }
    watch->gone = true;
    inbox->wake();
  });
}

}  // namespace

asio::awaitable<bool> serve_generation(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& req,
                                       bool chat) {
  ParsedGeneration g;
  std::optional<ApiError> refused;  // C++ forbids co_await inside a handler: answer after the try
  try {
    const json body = parse_network_json(req.body());
    if (body.is_discarded())
      throw ApiError(400, "invalid_json", "the request body is not valid JSON (or not valid UTF-8)");
    g = chat ? parse_chat_request(body, ctx.model) : parse_completion_request(body, ctx.model);
  } catch (const ApiError& e) {
    refused = e;
  } catch (const Error& e) {
    refused.emplace(400, "invalid_request", e.what());
  }
  if (refused) co_return co_await write_error(ctx, stream, req, *refused);

  const OpenAiFormat format(chat, ctx.model, g.top_logprobs);
  auto inbox = std::make_shared<EventInbox>(co_await asio::this_coro::executor);
  std::vector<RequestId> ids;
  EngineService& engine = *ctx.model.engine;
  try {
    for (int i = 0; i < g.n; ++i) {
      GenerationRequest r;
      r.prompt = g.prompt;
      r.sampling = g.sampling;
      // n choices with one seed would be n copies; each gets its own stream.
      if (r.sampling.seed && i > 0) r.sampling.seed = *r.sampling.seed + static_cast<uint64_t>(i);
      r.top_logprobs = g.top_logprobs;
      r.timeout = std::chrono::milliseconds(static_cast<int64_t>(ctx.config.request_timeout_s * 1000.0));
      ids.push_back(engine.submit(std::move(r), EventInbox::callback(inbox, i)));
    }
  } catch (const RequestError& e) {
    refused.emplace(status_for_engine_code(e.code()), e.code(), e.what());
  } catch (const Error& e) {
    refused.emplace(400, "invalid_request", e.what());
  }
  if (refused) {
    for (RequestId id : ids) engine.cancel(id);
    co_return co_await write_error(ctx, stream, req, *refused);
  }

  ctx.counters.active_generations++;
  struct Active {
    ServerContext& c;
    ~Active() { c.counters.active_generations--; }
  } active{ctx};
  auto watch = std::make_shared<DisconnectWatch>();
  watch_for_disconnect(watch, inbox, stream.socket());
  auto cancel_all = [&] {
    for (RequestId id : ids) engine.cancel(id);
  };

  std::vector<ChoiceOutput> choices(static_cast<size_t>(g.n));
  std::vector<bool> started(static_cast<size_t>(g.n), false);
  int remaining = g.n;
  bool client_gone = false;
  beast::error_code ec;
  std::optional<ApiError> failure;

  http::response<http::empty_body> head{http::status::ok, req.version()};
  http::response_serializer<http::empty_body> head_writer{head};
  if (g.stream) {
    set_common_headers(head);
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    head.keep_alive(req.keep_alive());
    head.chunked(true);
    stream.expires_after(ctx.write_timeout);
    co_await http::async_write_header(stream, head_writer, use_ec(ec));
    ctx.counters.count_response(200);
    if (ec) client_gone = true;
  }
  if (client_gone) cancel_all();

  while (remaining > 0) {
    co_await inbox->wait();
    if (watch->gone && !client_gone) {
      client_gone = true;
      ctx.log->info("client left during {}; cancelling {} request(s)", format.id(), ids.size());
      cancel_all();
    }
    // Every pending event goes out in one chunk (fewer writes under load).
    std::string out;
    while (!inbox->events.empty()) {
      auto [index, ev] = std::move(inbox->events.front());
      inbox->events.pop_front();
      ChoiceOutput& choice = choices[static_cast<size_t>(index)];
      if (ev.done) {
        --remaining;
        if (ev.finish_reason == "error" && !failure)
          failure.emplace(ev.error_code == "context_length_exceeded" ? 400 : 500,
                          ev.error_code.empty() ? "internal_error" : ev.error_code, ev.error_message);
      }
      format.accumulate(choice, ev);
      if (!g.stream || client_gone) continue;
      if (!ev.done) {
        out += sse_event(format.token_chunk(index, ev, !started[static_cast<size_t>(index)]));
        started[static_cast<size_t>(index)] = true;
      } else if (ev.finish_reason != "error") {
        out += sse_event(format.finish_chunk(index, ev.finish_reason));
      }
    }
    if (!out.empty() && !client_gone) {
      stream.expires_after(ctx.write_timeout);
      co_await asio::async_write(stream, http::make_chunk(asio::buffer(out)), use_ec(ec));
      if (ec) {
        client_gone = true;
        cancel_all();
      }
    }
  }
  watch->stopped = true;
  stream.socket().cancel(ec);
  if (client_gone) co_return false;

  if (!g.stream) {
    if (failure) co_return co_await write_error(ctx, stream, req, *failure);
    co_return co_await write_json(ctx, stream, req, 200, dump_json(format.response(choices)));
  }
  std::string tail;
  if (failure) tail += sse_event(failure->to_json());
  if (g.include_usage) {
    int64_t completion = 0;
    for (const ChoiceOutput& c : choices) completion += c.completion_tokens;
    tail += sse_event(format.usage_chunk(choices[0].prompt_tokens, completion));
  }
  tail += "data: [DONE]\n\n";
  stream.expires_after(ctx.write_timeout);
  co_await asio::async_write(stream, http::make_chunk(asio::buffer(tail)), use_ec(ec));
  if (!ec) co_await asio::async_write(stream, http::make_chunk_last(), use_ec(ec));
  co_return !ec && req.keep_alive();
}

}  // namespace tandem::server
