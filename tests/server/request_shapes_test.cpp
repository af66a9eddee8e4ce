// Request parsing and response shaping without a network: OpenAI bodies to
// prompt ids and sampling, errors naming fields, response and chunk shapes,
// and the Prometheus text.
#include <gtest/gtest.h>

#include <memory>

#include "server/json_input.h"
#include "server/api_error.h"
#include "server/generation_params.h"
#include "server/metrics_text.h"
#include "server/openai_format.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::server {
namespace {

using nlohmann::json;

class RequestShapes : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = std::string(TANDEM_SOURCE_DIR) + "/models/demo/demo-q8_0.gguf";
    tokenizer_ = Tokenizer::load(path).release();
    // A minimal template of the usual shape (the demo's own is tested elsewhere).
    chat_ = new ChatTemplate(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
        tokenizer_->bos_text(), tokenizer_->eos_text());
  }
  static void TearDownTestSuite() {
    delete chat_;
    delete tokenizer_;
  }
  ServedModel model() const {
    ServedModel m;
    m.id = "demo";
    m.tokenizer = tokenizer_;
    m.chat_template = chat_;
    m.context_window = 64;
    return m;
  }
  // The ApiError a parse throws (status 0 when none).
  static ApiError error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const ApiError& e) {
      return e;
    }
    return ApiError(0, "", "");
  }

  static inline Tokenizer* tokenizer_ = nullptr;
  static inline ChatTemplate* chat_ = nullptr;
};

TEST_F(RequestShapes, ChatRendersTemplateWithoutAddingSpecials) {
  const ServedModel m = model();
  const json body = {{"model", "demo"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 5},
                     {"temperature", 0}, {"stop", "x"}, {"n", 2}, {"stream", true},
                     {"stream_options", {{"include_usage", true}}}, {"logprobs", true}, {"top_logprobs", 3}};
  const ParsedGeneration g = parse_chat_request(body, m);
  EXPECT_EQ(g.prompt, tokenizer_->encode("<|user|>hi\n<|assistant|>", false));
  EXPECT_EQ(g.sampling.max_tokens, 5);
  EXPECT_EQ(g.sampling.temperature, 0.0f);
  EXPECT_EQ(g.sampling.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(g.n, 2);
  EXPECT_TRUE(g.stream);
  EXPECT_TRUE(g.include_usage);
  EXPECT_EQ(g.top_logprobs, 3);
}

TEST_F(RequestShapes, MaxTokensDefaultsToTheRestOfTheContext) {
  const ServedModel m = model();
  const ParsedGeneration g = parse_completion_request({{"prompt", "In the beginning"}}, m);
  EXPECT_EQ(g.prompt, tokenizer_->encode("In the beginning", true));
  EXPECT_EQ(g.sampling.max_tokens, 64 - static_cast<int>(g.prompt.size()));
  EXPECT_EQ(g.top_logprobs, -1);
  const ParsedGeneration c = parse_completion_request({{"prompt", "x"}, {"max_completion_tokens", 7}, {"logprobs", 2}}, m);
  EXPECT_EQ(c.sampling.max_tokens, 7);
  EXPECT_EQ(c.top_logprobs, 2);
}

TEST_F(RequestShapes, TokenIdPrompts) {
  const ServedModel m = model();
  EXPECT_EQ(parse_completion_request({{"prompt", {5, 6, 7}}}, m).prompt, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(error_of([&] { parse_completion_request({{"prompt", {5, 1 << 30}}}, m); }).param(), "prompt");
  EXPECT_EQ(error_of([&] { parse_completion_request({{"prompt", {-1}}}, m); }).param(), "prompt");
}

TEST_F(RequestShapes, ErrorsNameTheField) {
  const ServedModel m = model();
  const json msgs = {{{"role", "user"}, {"content", "hi"}}};
  const std::pair<json, std::string> cases[] = {
      {{{"messages", msgs}, {"max_tokens", "5"}}, "max_tokens"},
      {{{"messages", msgs}, {"max_tokens", -1}}, "max_tokens"},
      {{{"messages", msgs}, {"temperature", "hot"}}, "temperature"},
      {{{"messages", msgs}, {"top_k", 1.5}}, "top_k"},
      {{{"messages", msgs}, {"n", 0}}, "n"},
      {{{"messages", msgs}, {"n", 17}}, "n"},
      {{{"messages", msgs}, {"stop", {"a", 3}}}, "stop"},
      {{{"messages", msgs}, {"stop", ""}}, "stop"},
      {{{"messages", msgs}, {"seed", "1"}}, "seed"},
      {{{"messages", msgs}, {"stream", 1}}, "stream"},
      {{{"messages", msgs}, {"stream_options", {{"include_usage", "yes"}}}}, "stream_options.include_usage"},
      {{{"messages", msgs}, {"top_logprobs", 2}}, "top_logprobs"},
      {{{"messages", msgs}, {"logprobs", "true"}}, "logprobs"},
      {{{"messages", "hi"}}, "messages"},
      {{{"messages", json::array()}}, "messages"},
      {{{"messages", {{{"content", "x"}}}}}, "messages[0].role"},
      {{{"messages", {{{"role", "user"}, {"content", 5}}}}}, "messages[0].content"},
      {json::object(), "messages"},
      {{{"messages", msgs}, {"model", 3}}, "model"},
  };
  for (const auto& [body, field] : cases) {
    const ApiError e = error_of([&] { parse_chat_request(body, m); });
    EXPECT_EQ(e.status(), 400) << body.dump();
    EXPECT_EQ(e.param(), field) << body.dump() << " -> " << e.what();
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
  // Out-of-range sampling values are refused by the sampler's validation.
  EXPECT_EQ(error_of([&] { parse_chat_request({{"messages", msgs}, {"top_p", 0}}, m); }).status(), 400);
  EXPECT_EQ(error_of([&] { parse_chat_request({{"messages", msgs}, {"temperature", -1}}, m); }).status(), 400);
}

TEST_F(RequestShapes, UnknownModelIs404AndMissingTemplateIs400) {
  ServedModel m = model();
  const ApiError e = error_of([&] { parse_completion_request({{"model", "gpt-9"}, {"prompt", "x"}}, m); });
  EXPECT_EQ(e.status(), 404);
  EXPECT_EQ(e.code(), "model_not_found");
  EXPECT_EQ(e.to_json()["error"]["type"], "invalid_request_error");
  m.chat_template = nullptr;
  EXPECT_EQ(error_of([&] { parse_chat_request({{"messages", {{{"role", "user"}, {"content", "x"}}}}}, m); }).status(),
            400);
}

TEST_F(RequestShapes, ResponseAndChunkShapes) {
  const ServedModel m = model();
  const std::vector<int32_t> ids = tokenizer_->encode(" the earth", false);
  ASSERT_GE(ids.size(), 2u);
  StreamEvent a;
  a.text = tokenizer_->decode(std::span<const int32_t>(ids.data(), 1));
  a.token_ids = {ids[0]};
  a.logprobs = {-0.5f};
  a.top = {{{ids[0], -0.5f}, {ids[1], -1.5f}}};
  StreamEvent done;
  done.done = true;
  done.finish_reason = "length";
  done.prompt_tokens = 3;
  done.completion_tokens = 1;

  const OpenAiFormat chat(true, m, 2);
  const json first = chat.token_chunk(0, a, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], a.text);
  EXPECT_EQ(first["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  EXPECT_FALSE(chat.token_chunk(0, a, false)["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(chat.finish_chunk(1, "stop")["choices"][0]["finish_reason"], "stop");
  const json usage = chat.usage_chunk(3, 4)["usage"];
  EXPECT_EQ(usage["total_tokens"], 7);

  std::vector<ChoiceOutput> choices(1);
  chat.accumulate(choices[0], a);
  chat.accumulate(choices[0], done);
  const json r = chat.response(choices);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["content"], a.text);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 1);
  EXPECT_FLOAT_EQ(r["choices"][0]["logprobs"]["content"][0]["logprob"].get<float>(), -0.5f);

  const OpenAiFormat text(false, m, 1);
  std::vector<ChoiceOutput> c2(1);
  text.accumulate(c2[0], a);
  text.accumulate(c2[0], done);
  const json t = text.response(c2);
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], a.text);
  EXPECT_EQ(t["choices"][0]["logprobs"]["text_offset"][0], 0);
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  // Bytes of a split character never make JSON output throw.
  EXPECT_NO_THROW(dump_json(json{{"t", std::string("\xe2\x82")}}));
}

TEST(MetricsText, CountersGaugesAndCumulativeHistograms) {
  EngineStats s;
  s.queued = 2;
  s.running = 3;
  s.kv_blocks_total = 10;
  s.kv_blocks_used = 5;
  s.requests_cancelled = 4;
  s.ttft_seconds = Histogram({0.1, 1.0});
  s.ttft_seconds.observe(0.05);
  s.ttft_seconds.observe(0.5);
  s.ttft_seconds.observe(5.0);
  ServerContext ctx;
  ctx.counters.count_response(429);
  const std::string text = render_metrics(s, ctx);
  for (const char* line : {"tandem_queue_depth 2\n", "tandem_running_sequences 3\n", "tandem_kv_usage_ratio 0.5\n",
                           "tandem_requests_total{status=\"cancelled\"} 4\n",
                           "tandem_http_responses_total{code=\"429\"} 1\n",
                           "tandem_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n",
                           "tandem_time_to_first_token_seconds_bucket{le=\"1\"} 2\n",
                           "tandem_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n",
                           "tandem_time_to_first_token_seconds_count 3\n",
                           "# TYPE tandem_time_to_first_token_seconds histogram\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

}  // namespace
}  // namespace tandem::server

namespace tandem::server {
namespace {

TEST(NetworkJson, RefusesDeepNestingBeforeParsing) {
  EXPECT_EQ(json_nesting_depth(R"({"a":[1,{"b":"[[[["}]})"), 3);  // brackets in strings do not count
  EXPECT_EQ(json_nesting_depth(R"(["\"[[["])"), 1);                 // nor after an escaped quote
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  try {
    parse_network_json(deep);
    FAIL() << "expected an error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("nests deeper"), std::string::npos);
  }
  const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_FALSE(parse_network_json(ok).is_discarded());
  EXPECT_TRUE(parse_network_json("{not json").is_discarded());
}

}  // namespace
}  // namespace tandem::server
