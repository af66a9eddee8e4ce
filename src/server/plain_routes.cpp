#include "server/plain_routes.h"

#include "server/api_error.h"
#include "server/json_input.h"
#include "server/generation_params.h"
#include "server/metrics_text.h"
#include "server/openai_format.h"
#include "server/status_json.h"
#include "tokenizer/tokenizer.h"

namespace tandem::server {
namespace {

using nlohmann::json;

PlainResponse json_response(const json& j, int status = 200) { return {status, "application/json", dump_json(j)}; }

json parse_body(const std::string& body) {
  json j = parse_network_json(body);
  if (j.is_discarded()) throw ApiError(400, "invalid_json", "the request body is not valid JSON (or not valid UTF-8)");
  if (!j.is_object()) throw ApiError(400, "invalid_request", "the request body must be a JSON object");
  return j;
}

PlainResponse tokenize(ServerContext& ctx, const json& body) {
  check_model_name(body, ctx.model);
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    ids = tokenize_messages(body.at("messages"), ctx.model);
  } else if (body.contains("prompt")) {
    const json& p = body.at("prompt");
    if (!p.is_string()) throw bad_field("prompt", std::string("must be a string, got ") + p.type_name());
    bool add_special = true;
    if (body.contains("add_special")) {
      if (!body.at("add_special").is_boolean()) throw bad_field("add_special", "must be a boolean");
      add_special = body.at("add_special").get<bool>();
    }
    ids = ctx.model.tokenizer->encode(p.get<std::string>(), add_special);
  } else {
    throw bad_field("prompt", "is required (or 'messages')");
  }
  return json_response({{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx.model.context_window}});
}

PlainResponse detokenize(ServerContext& ctx, const json& body) {
  if (!body.contains("tokens")) throw bad_field("tokens", "is required");
  const json& t = body.at("tokens");
  if (!t.is_array()) throw bad_field("tokens", std::string("must be an array of token ids, got ") + t.type_name());
  std::vector<int32_t> ids;
  const int64_t vocab = static_cast<int64_t>(ctx.model.tokenizer->vocab_size());
  for (const json& e : t) {
    if (!e.is_number_integer()) throw bad_field("tokens", "must be an array of token ids");
    const int64_t id = e.get<int64_t>();
    if (id < 0 || id >= vocab) throw bad_field("tokens", "holds id " + std::to_string(id) + " outside the vocabulary");
    ids.push_back(static_cast<int32_t>(id));
  }
  bool skip_special = false;
  if (body.contains("skip_special_tokens")) {
    if (!body.at("skip_special_tokens").is_boolean()) throw bad_field("skip_special_tokens", "must be a boolean");
    skip_special = body.at("skip_special_tokens").get<bool>();
  }
  return json_response({{"prompt", ctx.model.tokenizer->decode(ids, skip_special)}});
}

PlainResponse apply_template(ServerContext& ctx, const json& body) {
  if (!body.contains("messages")) throw bad_field("messages", "is required");
  const std::string text = render_messages(body.at("messages"), ctx.model);
  return json_response({{"prompt", text}});
}

}  // namespace

PlainResponse error_response(int status, const std::string& code, const std::string& message,
                             const std::string& param) {
  return json_response(ApiError(status, code, message, param).to_json(), status);
}

std::optional<PlainResponse> handle_plain_route(ServerContext& ctx, const std::string& method, const std::string& path,
                                                const std::string& body) {
  try {
    if (path == "/health") {
      if (method != "GET" && method != "HEAD") return error_response(405, "method_not_allowed", "use GET /health");
      if (ctx.draining) return json_response({{"status", "draining"}}, 503);
      if (!ctx.ready.load(std::memory_order_acquire))
        return json_response({{"status", "loading"}, {"progress", load_progress_json(ctx.loading)}}, 503);
      return json_response({{"status", "ok"}});
    }
    if (!ctx.ready.load(std::memory_order_acquire)) {
      // Status and metrics answer while loading (they need no model);
      // everything else waits for it.
      if (path == "/v1/status" && method == "GET") return json_response(loading_status_json(ctx));
      if (path == "/metrics" && method == "GET")
        return PlainResponse{200, "text/plain; version=0.0.4; charset=utf-8", render_loading_metrics(ctx)};
      return error_response(503, "loading", "the model is still loading; retry when GET /health answers 200");
    }
    if (path == "/metrics" && method == "GET")
      return PlainResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                           render_metrics(ctx.model.engine->stats(), ctx)};
    if (path == "/v1/status" && method == "GET") return json_response(status_json(ctx.model.engine->stats(), ctx));
    if ((path == "/v1/models" || path == "/models") && method == "GET") return json_response(models_json(ctx.model));
    if (path.rfind("/v1/models/", 0) == 0 && method == "GET") {
      if (path.substr(11) != ctx.model.id)
        return error_response(404, "model_not_found", "The model '" + path.substr(11) + "' does not exist", "model");
      return json_response(models_json(ctx.model)["data"][0]);
    }
    if (method == "POST" && path == "/tokenize") return tokenize(ctx, parse_body(body));
    if (method == "POST" && path == "/detokenize") return detokenize(ctx, parse_body(body));
    if (method == "POST" && path == "/apply-template") return apply_template(ctx, parse_body(body));
  } catch (const ApiError& e) {
    return json_response(e.to_json(), e.status());
  } catch (const Error& e) {
    return error_response(400, "invalid_request", e.what());
  }
  return std::nullopt;
}

}  // namespace tandem::server
