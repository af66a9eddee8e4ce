// StepWatch over loopback links: a step within its limit goes on, one past
// it is given up with the limit named, and a link that ends mid-step (node
// 0 watching the others, the others node 0) is named at once; a message
// waiting to be read is not an end. NodeLink::ended underneath.
#include "parallel/step_watch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "parallel/node_link.h"
#include "tests/parallel/loopback_nodes.h"

namespace tandem::parallel {
namespace {

using testing_nodes::free_port;
using testing_nodes::node;

using namespace std::chrono_literals;

// Polls `f` until it returns something or 10 s pass (a closed socket's end
// reaches the other side at once on loopback, but not within the call).
std::string within_10s(const std::function<std::string()>& f) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string s;
  while ((s = f()).empty() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  return s;
}

TEST(StepWatch, TheLimitGivesTheStepUp) {
  const StepWatch unlimited(nullptr, 0ms);
  const StepWatch long_limit(nullptr, 60s);
  const StepWatch limited(nullptr, 500ms);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(unlimited.check(), "");
  EXPECT_EQ(long_limit.check(), "");
  EXPECT_EQ(limited.check(), "a step ran past 500 ms");
  EXPECT_EQ(describe_limit(120s), "120 s");
}

TEST(StepWatch, NodeZeroHearsAnotherNodeEndMidStep) {
  const int port = free_port();
  std::promise<void> sent, leave;
  auto others = std::async(std::launch::async, [&, port] {
    auto link1 = NodeLink::open(node(1, 3, port));
    link1->send(0, std::vector<uint8_t>{1, 2, 3});
    sent.set_value();
    leave.get_future().wait();
  });
  auto other2 = std::async(std::launch::async, [port] { return NodeLink::open(node(2, 3, port)); });
  auto link = NodeLink::open(node(0, 3, port));
  auto link2 = other2.get();  // node 2 stays
  sent.get_future().wait();
  const StepWatch watch(link.get(), 60s);
  // Node 1's message waits unread: its link is open.
  EXPECT_EQ(link->ended(1), "");
  EXPECT_EQ(watch.check(), "");
  leave.set_value();
  others.get();  // node 1's process "ends": its link closes
  EXPECT_EQ(watch.check(), "") << "the unread message comes before the end";
  EXPECT_EQ(link->recv(1), (std::vector<uint8_t>{1, 2, 3}));
  const std::string why = within_10s([&] { return watch.check(); });
  EXPECT_NE(why.find("node 0 lost node 1: it closed the link"), std::string::npos) << why;
  EXPECT_NE(why.find("mid-step"), std::string::npos) << why;
  EXPECT_EQ(link->ended(2), "");
}

// peek: a message's first bytes once they have all arrived, left in place
// for recv; nothing while none is there. shut_down: the peers hear the end
// at once, and this node's own sends fail.
TEST(NodeLink, PeekLeavesTheMessageAndShutDownEndsEveryLink) {
  const int port = free_port();
  std::promise<void> sent;
  auto other = std::async(std::launch::async, [&, port] {
    auto link1 = NodeLink::open(node(1, 2, port));
    link1->send(0, std::vector<uint8_t>{9, 8, 7});
    sent.set_value();
    const StepWatch watch(link1.get(), 0ms);
    return within_10s([&] { return watch.link_ended(); });
  });
  auto link = NodeLink::open(node(0, 2, port));
  sent.get_future().wait();
  std::vector<uint8_t> head;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((head = link->peek(1, 2)).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(head, (std::vector<uint8_t>{9, 8}));
  EXPECT_EQ(link->peek(1, 4), std::vector<uint8_t>{}) << "only 3 bytes came";
  EXPECT_EQ(link->recv(1), (std::vector<uint8_t>{9, 8, 7}));
  EXPECT_EQ(link->peek(1, 1), std::vector<uint8_t>{});
  link->shut_down();
  const std::string heard = other.get();
  EXPECT_NE(heard.find("node 1 lost node 0"), std::string::npos) << heard;
  EXPECT_THROW(link->send(1, std::vector<uint8_t>{1}), Error);
}

TEST(StepWatch, AnotherNodeHearsNodeZeroEnd) {
  const int port = free_port();
  std::promise<void> leave;
  auto zero = std::async(std::launch::async, [&, port] {
    auto link0 = NodeLink::open(node(0, 2, port));
    leave.get_future().wait();
  });
  auto link = NodeLink::open(node(1, 2, port));
  const StepWatch watch(link.get(), 60s);
  EXPECT_EQ(watch.check(), "");
  leave.set_value();
  zero.get();
  const std::string why = within_10s([&] { return watch.check(); });
  EXPECT_NE(why.find("node 1 lost node 0: it closed the link"), std::string::npos) << why;
}

TEST(StepWatch, ANodeThatOnlyHangsIsCaughtByTheLimit) {
  const int port = free_port();
  std::promise<void> leave;
  auto zero = std::async(std::launch::async, [&, port] {
    auto link0 = NodeLink::open(node(0, 2, port));
    leave.get_future().wait();  // "hangs": holds its link open, sends nothing
  });
  auto link = NodeLink::open(node(1, 2, port));
  const StepWatch watch(link.get(), 500ms);
  EXPECT_EQ(watch.link_ended(), "");
  const std::string why = within_10s([&] { return watch.check(); });
  EXPECT_NE(why.find("a step ran past 500 ms (the larger of --node-silence-s and 30 s)"), std::string::npos) << why;
  EXPECT_NE(why.find("node 1 gives the step up"), std::string::npos) << why;
  leave.set_value();
  zero.get();
}

}  // namespace
}  // namespace tandem::parallel
