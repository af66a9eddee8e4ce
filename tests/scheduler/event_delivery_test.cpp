// EventDelivery: events reach their callbacks on the delivery thread, in the
// order they were queued, only once handed over, and all of them before the
// delivery is destroyed.
#include "scheduler/event_delivery.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tandem {
namespace {

struct Received {
  std::mutex mutex;
  std::vector<std::pair<int, std::string>> events;  // (stream, text)
  std::vector<std::thread::id> threads;
};

std::shared_ptr<EventCallback> recorder(Received& r, int stream) {
  return std::make_shared<EventCallback>([&r, stream](StreamEvent&& e) {
    std::lock_guard<std::mutex> lock(r.mutex);
    r.events.emplace_back(stream, e.text);
    r.threads.push_back(std::this_thread::get_id());
  });
}

StreamEvent text_event(std::string text) {
  StreamEvent e;
  e.text = std::move(text);
  return e;
}

void wait_delivered(const EventDelivery& d) {
  for (int i = 0; i < 10000 && !d.delivered(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(d.delivered()) << "events handed over were not delivered within 10 s";
}

TEST(EventDelivery, DeliversInQueueOrderOnItsOwnThreadOnceHandedOver) {
  Received r;
  EventDelivery d;
  auto a = recorder(r, 0), b = recorder(r, 1);
  d.queue(a, text_event("a1"));
  d.queue(b, text_event("b1"));
  d.queue(a, text_event("a2"));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    EXPECT_TRUE(r.events.empty()) << "an event reached its callback before hand_over()";
  }
  EXPECT_TRUE(d.delivered());  // nothing handed over yet
  d.hand_over();
  wait_delivered(d);
  // A second batch after the first: still in order behind it.
  d.queue(b, text_event("b2"));
  d.queue(a, text_event("a3"));
  d.hand_over();
  wait_delivered(d);
  std::lock_guard<std::mutex> lock(r.mutex);
  const std::vector<std::pair<int, std::string>> want = {{0, "a1"}, {1, "b1"}, {0, "a2"}, {1, "b2"}, {0, "a3"}};
  EXPECT_EQ(r.events, want);
  for (const std::thread::id& t : r.threads) EXPECT_NE(t, std::this_thread::get_id());
}

TEST(EventDelivery, DestructionDeliversEverythingQueued) {
  Received r;
  {
    EventDelivery d;
    auto a = recorder(r, 0);
    // Slow callbacks: the destructor must wait for them, not drop the rest.
    auto slow = std::make_shared<EventCallback>([&r](StreamEvent&& e) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::lock_guard<std::mutex> lock(r.mutex);
      r.events.emplace_back(9, e.text);
    });
    for (int i = 0; i < 20; ++i) d.queue(slow, text_event(std::to_string(i)));
    d.hand_over();
    d.queue(a, text_event("queued, never handed over"));
  }
  std::lock_guard<std::mutex> lock(r.mutex);
  ASSERT_EQ(r.events.size(), 21u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(r.events[static_cast<size_t>(i)], std::make_pair(9, std::to_string(i)));
  EXPECT_EQ(r.events.back(), std::make_pair(0, std::string("queued, never handed over")));
}

TEST(EventDelivery, ACallbackThatThrowsDoesNotStopTheOthers) {
  Received r;
  EventDelivery d;
  auto thrower = std::make_shared<EventCallback>([](StreamEvent&&) { throw std::runtime_error("a failing client"); });
  auto a = recorder(r, 0);
  d.queue(thrower, text_event("x"));
  d.queue(a, text_event("after"));
  d.hand_over();
  wait_delivered(d);
  std::lock_guard<std::mutex> lock(r.mutex);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].second, "after");
}

TEST(EventDelivery, DeliveredWaitsForTheCallbackToReturn) {
  std::atomic<bool> release{false}, entered{false};
  EventDelivery d;
  auto blocking = std::make_shared<EventCallback>([&](StreamEvent&&) {
    entered = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  d.queue(blocking, text_event("x"));
  d.hand_over();
  for (int i = 0; i < 10000 && !entered; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(entered);
  EXPECT_FALSE(d.delivered()) << "delivered() while a callback still runs";
  release = true;
  wait_delivered(d);
}

}  // namespace
}  // namespace tandem
