#include "client/ui/routing.h"

#include <gtest/gtest.h>

#include "client/ui/aggregate_status.h"

namespace tandem::client::ui {
namespace {

RouteCandidate up(double load, int own = 0, std::string model = "m") { return {true, std::move(model), load, own}; }
RouteCandidate down() { return {false, "m", 0, 0}; }

TEST(Routing, PicksTheHealthyBackendWithTheLeastLoad) {
  EXPECT_EQ(least_loaded({up(0.5), up(0.25), up(0.75)}, ""), 1u);
  EXPECT_EQ(least_loaded({down(), up(2.0)}, ""), 1u);
  EXPECT_EQ(least_loaded({up(1, 3), up(1, 1)}, ""), 1u);  // tie: fewer of ours
  EXPECT_EQ(least_loaded({up(1), up(1)}, ""), 0u);        // full tie: lower index
  EXPECT_FALSE(least_loaded({down(), down()}, "").has_value());
  EXPECT_FALSE(least_loaded({}, "").has_value());
  EXPECT_EQ(least_loaded({up(0, 0, "a"), up(5, 0, "b")}, "b"), 1u);
  EXPECT_FALSE(least_loaded({up(0, 0, "a")}, "b").has_value());
}

TEST(Routing, ConversationsStayWhileTheirBackendIsHealthy) {
  StickyConversations sticky;
  std::vector<RouteCandidate> c = {up(0), up(1)};
  EXPECT_EQ(sticky.route("conv", c, ""), 0u);
  c[0].load = 10;  // busier now, but the conversation stays
  EXPECT_EQ(sticky.route("conv", c, ""), 0u);
  EXPECT_EQ(sticky.route("", c, ""), 1u);  // no conversation: least loaded
  c[0] = down();
  EXPECT_EQ(sticky.route("conv", c, ""), 1u);  // fails over...
  c[0] = up(0);
  EXPECT_EQ(sticky.route("conv", c, ""), 1u);  // ...and stays on the new one
}

TEST(Routing, StickyMapIsBounded) {
  StickyConversations sticky(8);
  const std::vector<RouteCandidate> c = {up(0)};
  for (int i = 0; i < 100; ++i) sticky.route("c" + std::to_string(i), c, "");
  EXPECT_LE(sticky.size(), 8u);
}

TEST(AggregateStatus, SumsBackendsThatAreUpAndListsThemAll) {
  const nlohmann::json a = {{"model", {{"id", "m"}}}, {"context_window", 4096},
                            {"batch", {{"running", 2}, {"batch_size", 4}}}, {"queue", {{"queued", 1}, {"max_queued_requests", 8}}},
                            {"kv_cache", {{"blocks_used", 10}, {"blocks_total", 100}, {"block_size", 16}}},
                            {"tokens", {{"prompt_total", 5}, {"generated_total", 50}}},
                            {"gpus", {{{"index", 0}, {"name", "G"}}}}};
  nlohmann::json b = a;
  b["context_window"] = 2048;
  b["kv_cache"]["blocks_used"] = 30;
  const nlohmann::json s = aggregate_status(
      {{"ws://a/ws", "ok", "", 1, a}, {"ws://b/ws", "ok", "", 0, b}, {"ws://c/ws", "unreachable", "refused", 0, nullptr}},
      {"0.1.0", 12.0, 2, 3});
  EXPECT_EQ(s["state"], "ok");
  EXPECT_EQ(s["batch"]["running"], 4);
  EXPECT_EQ(s["batch"]["batch_size"], 8);
  EXPECT_EQ(s["queue"]["queued"], 2);
  EXPECT_EQ(s["kv_cache"]["blocks_used"], 40);
  EXPECT_DOUBLE_EQ(s["kv_cache"]["usage"].get<double>(), 0.2);
  EXPECT_EQ(s["tokens"]["generated_total"], 100);
  EXPECT_EQ(s["context_window"], 2048);
  EXPECT_EQ(s["model"]["id"], "m");
  EXPECT_EQ(s["connections"]["websockets"], 2);
  ASSERT_EQ(s["backends"].size(), 3u);
  EXPECT_EQ(s["backends"][2]["state"], "unreachable");
  EXPECT_EQ(s["backends"][2]["reason"], "refused");
  EXPECT_EQ(s["gpus"].size(), 2u);
  EXPECT_EQ(s["gpus"][1]["backend"], "ws://b/ws");
  const nlohmann::json none = aggregate_status({{"ws://c/ws", "unreachable", "refused", 0, nullptr}}, {});
  EXPECT_EQ(none["state"], "unavailable");
  EXPECT_EQ(none["batch"]["running"], 0);
}

}  // namespace
}  // namespace tandem::client::ui
