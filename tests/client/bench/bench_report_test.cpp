// The SSE reader, request bodies, progress line, JSON report and SVG chart of
// `tandem bench`.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "client/bench/progress.h"
#include "client/bench/report_json.h"
#include "client/bench/report_table.h"
#include "client/bench/request_bodies.h"
#include "client/bench/sse_stream.h"
#include "client/bench/svg_chart.h"

namespace tandem::client::bench {
namespace {

using nlohmann::json;

TEST(BenchSse, SplitsEventsWhereverTheBytesBreak) {
  const std::string stream =
      "data: {\"a\":1}\n\n"
      ": a comment\n"
      "event: x\r\ndata: line1\r\ndata:line2\r\n\r\n"
      "data: [DONE]\n\n";
  std::vector<std::string> whole;
  SseParser p1;
  p1.feed(stream, whole);
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[0], "{\"a\":1}");
  EXPECT_EQ(whole[1], "line1\nline2");
  EXPECT_EQ(whole[2], "[DONE]");
  for (size_t cut = 1; cut < stream.size(); ++cut) {  // every split point, CRLF included
    SseParser p;
    std::vector<std::string> events;
    p.feed(std::string_view(stream).substr(0, cut), events);
    p.feed(std::string_view(stream).substr(cut), events);
    EXPECT_EQ(events, whole) << "split at " << cut;
  }
  SseParser p;
  std::vector<std::string> events;
  p.feed("data: half", events);
  EXPECT_TRUE(events.empty()) << "no event before the blank line";
}

TEST(BenchSse, ReadsCompletionChunks) {
  CompletionChunk c = read_completion_chunk(R"({"choices":[{"index":0,"text":" the","finish_reason":null}]})");
  EXPECT_TRUE(c.has_token);
  EXPECT_TRUE(c.finish_reason.empty());
  c = read_completion_chunk(R"({"choices":[{"index":0,"text":"","finish_reason":null}]})");
  EXPECT_TRUE(c.has_token) << "an empty piece of a running choice is still a token";
  c = read_completion_chunk(R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})");
  EXPECT_FALSE(c.has_token);
  EXPECT_EQ(c.finish_reason, "length");
  c = read_completion_chunk(R"({"choices":[{"index":0,"text":"end","finish_reason":"stop"}]})");
  EXPECT_TRUE(c.has_token);
  c = read_completion_chunk(R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})");
  EXPECT_FALSE(c.has_token);
  EXPECT_EQ(c.prompt_tokens, 12);
  EXPECT_EQ(c.completion_tokens, 5);
  c = read_completion_chunk(R"({"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}})");
  EXPECT_EQ(c.error_code, "context_length_exceeded");
  EXPECT_EQ(c.error_message, "too long");
  c = read_completion_chunk(R"({"error":"boom"})");
  EXPECT_EQ(c.error_code, "stream_error");
  EXPECT_TRUE(read_completion_chunk("[DONE]").done_marker);
  EXPECT_TRUE(read_completion_chunk("{not json").invalid);
  EXPECT_TRUE(read_completion_chunk("[1,2]").invalid);
}

TEST(BenchBodies, OpenAiAndTandemRequests) {
  BenchOptions o;
  PreparedRequest r{{3, 16, 32, 99}, "the and of"};
  json b = openai_completion_body(r, o, "m");
  EXPECT_EQ(b.at("model"), "m");
  EXPECT_EQ(b.at("prompt"), "the and of");
  EXPECT_EQ(b.at("max_tokens"), 32);
  EXPECT_EQ(b.at("stream"), true);
  EXPECT_EQ(b.at("stream_options").at("include_usage"), true);
  EXPECT_EQ(b.at("ignore_eos"), true);
  EXPECT_FALSE(b.contains("seed")) << "greedy needs no seed";
  o.ignore_eos = false;
  o.temperature = 0.8;
  b = openai_completion_body(r, o, "m");
  EXPECT_FALSE(b.contains("ignore_eos"));
  EXPECT_EQ(b.at("seed"), o.seed + 3);
  json g = tandem_generate_command("bench-1", r, o);
  EXPECT_EQ(g.at("command"), "generate");
  EXPECT_EQ(g.at("id"), "bench-1");
  EXPECT_EQ(g.at("params").at("max_tokens"), 32);
  EXPECT_FALSE(g.at("params").contains("ignore_eos"));
  o.zstd = true;
  o.api_key = "k";
  json init = tandem_init_command(o);
  EXPECT_EQ(init.at("compression"), "zstd");
  EXPECT_EQ(init.at("api_key"), "k");
  EXPECT_FALSE(init.contains("model"));
}

TEST(BenchProgress, Line) {
  EXPECT_EQ(progress_line(16, 5, 10, 0, 2.0, 300, 10), "c=16 [#####-----] 5/10  2.0 s  150 tok/s");
  EXPECT_EQ(progress_line(1, 10, 10, 2, 0.0, 0, 4), "c=1 [####] 10/10  2 failed  0.0 s  0 tok/s");
}

BenchRun sample_run() {
  BenchRun run;
  run.options.requests = 2;
  run.options.concurrency = {1, 4};
  run.url = parse_backend_url("http://127.0.0.1:8765");
  run.model = "demo <q8_0> & \"friends\"";
  run.server_version = "0.1.0";
  run.context_size = 512;
  run.started_at = "2026-11-25T16:00:00Z";
  run.prompt_sizing = "tokenize";
  for (int c : {1, 4}) {
    std::vector<RequestResult> results;
    for (size_t i = 0; i < 2; ++i) {
      RequestResult r;
      r.index = i;
      r.ok = true;
      r.prompt_tokens_target = 128;
      r.max_tokens = 3;
      r.start_ms = 1.5 * static_cast<double>(i);
      r.arrival_ms = {10.0 * c, 10.0 * c + 2, 10.0 * c + 4};
      r.arrival_tokens = {1, 1, 1};
      r.e2e_ms = 10.0 * c + 4;
      r.prompt_tokens = 128;
      r.completion_tokens = 3;
      r.finish_reason = "length";
      results.push_back(r);
    }
    RequestResult bad;
    bad.index = 2;
    bad.error_code = "overloaded";
    bad.error_message = "queue full";
    if (c == 4) results.push_back(bad);
    run.levels.push_back(make_level_report(c, 0.1, results));
  }
  return run;
}

TEST(BenchJson, HoldsConfigLevelsAndRawTimings) {
  const BenchRun run = sample_run();
  const json j = json::parse(bench_run_json(run).dump());  // survives text form
  EXPECT_EQ(j.at("tool"), "tandem bench");
  EXPECT_EQ(j.at("config").at("api"), "tandem");
  EXPECT_EQ(j.at("config").at("concurrency"), json::array({1, 4}));
  EXPECT_EQ(j.at("config").at("ignore_eos"), true);
  EXPECT_EQ(j.at("server").at("context_size"), 512);
  EXPECT_EQ(j.at("prompt_sizing").at("method"), "tokenize");
  ASSERT_EQ(j.at("levels").size(), 2u);
  const json& l1 = j.at("levels").at(0);
  EXPECT_EQ(l1.at("concurrency"), 1);
  EXPECT_EQ(l1.at("succeeded"), 2);
  EXPECT_EQ(l1.at("failed"), 0);
  EXPECT_EQ(l1.at("interrupted"), false);
  EXPECT_EQ(l1.at("output_tokens"), 6);
  EXPECT_DOUBLE_EQ(l1.at("output_tokens_per_s").get<double>(), 60.0);
  EXPECT_DOUBLE_EQ(l1.at("total_tokens_per_s").get<double>(), 2620.0);  // (2 x 128 + 6) / 0.1 s
  EXPECT_DOUBLE_EQ(l1.at("ttft_ms").at("p50").get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(l1.at("itl_ms").at("mean").get<double>(), 2.0);
  ASSERT_EQ(l1.at("raw").size(), 2u);
  EXPECT_EQ(l1.at("raw").at(1).at("arrival_ms"), json::array({10.0, 12.0, 14.0}));
  EXPECT_DOUBLE_EQ(l1.at("raw").at(1).at("start_ms").get<double>(), 1.5);
  EXPECT_EQ(l1.at("raw").at(1).at("completion_tokens"), 3);
  const json& l4 = j.at("levels").at(1);
  EXPECT_EQ(l4.at("failed"), 1);
  EXPECT_EQ(l4.at("errors").at("overloaded"), 1);
  EXPECT_EQ(l4.at("raw").at(2).at("ok"), false);
  EXPECT_EQ(l4.at("raw").at(2).at("error").at("code"), "overloaded");
  EXPECT_TRUE(l4.at("raw").at(2).at("ttft_ms").is_null());
}

TEST(BenchTable, NamesLevelsAndFailures) {
  const BenchRun run = sample_run();
  const std::string t = format_level_table(run);
  EXPECT_NE(t.find("TTFT ms"), std::string::npos);
  // Level 1: 6 output tokens and 256 prompt tokens in 0.1 s.
  EXPECT_NE(t.find("     60.0     2620.0"), std::string::npos) << t;
  EXPECT_NE(t.find("    2/2"), std::string::npos);
  EXPECT_NE(t.find("    2/3"), std::string::npos);
  EXPECT_NE(t.find("concurrency 4: 1 of 3 requests failed: overloaded x1 (e.g. \"queue full\")"), std::string::npos);
  EXPECT_NE(format_run_header(run).find("2 requests per level, prompt 128 tokens"), std::string::npos);
}

// A small well-formedness check: balanced tags, quoted attributes, only
// known entities, no raw '<' or '&' in text.
bool well_formed_xml(const std::string& s, std::string& why) {
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      const std::string ent = semi == std::string::npos ? "" : s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&apos;") {
        why = "bad entity at " + std::to_string(i);
        return false;
      }
      i = semi + 1;
      continue;
    }
    if (s[i] != '<') {
      ++i;
      continue;
    }
    const size_t close = s.find('>', i);
    if (close == std::string::npos) {
      why = "unclosed tag";
      return false;
    }
    std::string tag = s.substr(i + 1, close - i - 1);
    i = close + 1;
    if (tag.front() == '?' || tag.front() == '!') continue;
    if (std::count(tag.begin(), tag.end(), '"') % 2 != 0 || tag.find('<') != std::string::npos) {
      why = "bad attributes in <" + tag + ">";
      return false;
    }
    if (tag.front() == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) {
        why = "mismatched </" + tag.substr(1) + ">";
        return false;
      }
      stack.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    const std::string name = tag.substr(0, tag.find_first_of(" /"));
    if (!self_closing) stack.push_back(name);
  }
  if (!stack.empty()) why = "unclosed <" + stack.back() + ">";
  return stack.empty();
}

TEST(BenchSvg, ChartIsWellFormedAndLabelled) {
  BenchRun run = sample_run();
  const std::string svg = render_bench_chart(run);
  std::string why;
  EXPECT_TRUE(well_formed_xml(svg, why)) << why;
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find("demo &lt;q8_0&gt; &amp; &quot;friends&quot;"), std::string::npos) << "the title is escaped";
  for (const char* label : {"Output throughput", "Time to first token", "tokens/s", "concurrent streams", "p99",
                            "all streams", "per stream (mean)"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 20, true);
  // One polyline per series: 2 throughput + 3 TTFT.
  size_t polylines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) ++polylines;
  EXPECT_EQ(polylines, 5u);
}

TEST(BenchSvg, LevelsWithoutSuccessLeaveGaps) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::string svg =
      render_svg("t", "s", "x", {1, 2, 4}, {{"panel", "ms", {{"a", "#000", false, {1.0, nan, 3.0}}}}});
  std::string why;
  EXPECT_TRUE(well_formed_xml(svg, why)) << why;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  size_t circles = 0;
  for (size_t p = svg.find("<circle"); p != std::string::npos; p = svg.find("<circle", p + 1)) ++circles;
  EXPECT_EQ(circles, 2u);
}

TEST(BenchSvg, NiceAxesAndEscaping) {
  EXPECT_EQ(nice_axis(93, 5), (std::pair<double, double>{20, 100}));
  EXPECT_EQ(nice_axis(1000, 5), (std::pair<double, double>{200, 1000}));
  EXPECT_EQ(nice_axis(0.37, 5), (std::pair<double, double>{0.1, 0.4}));
  EXPECT_EQ(nice_axis(0, 5).second, 5.0);
  EXPECT_EQ(xml_escape("a<b>&\"'\x01"), "a&lt;b&gt;&amp;&quot;&apos; ");
}

}  // namespace
}  // namespace tandem::client::bench
