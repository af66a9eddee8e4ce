// Stream events handed to their callbacks on a thread of their own.
//
// The engine thread queues a step's events (one per sampled token, one per
// finished stream) and hands them over in one batch when the step is done;
// the delivery thread then runs the callbacks, which post to the server's
// connections, while the engine thread goes on to plan and run its next
// step. Events are delivered in the order they were queued, so each stream's
// events stay in order and its final event comes last.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "scheduler/engine_service.h"

namespace tandem {

class EventDelivery {
 public:
  EventDelivery();
  // Delivers everything queued and handed over, then joins the thread.
  ~EventDelivery();
  EventDelivery(const EventDelivery&) = delete;
  EventDelivery& operator=(const EventDelivery&) = delete;

  // Queues an event for `callback`. Only one thread (the engine's) queues;
  // nothing reaches a callback before hand_over().
  void queue(const std::shared_ptr<EventCallback>& callback, StreamEvent event) {
    batch_.push_back({callback, std::move(event)});
  }
  // Hands what was queued to the delivery thread: one lock and one wake-up
  // however many events. Called by the thread that queues.
  void hand_over();
  // True when every event handed over has been delivered (its callback
  // returned). Thread-safe.
  bool delivered() const;

 private:
  struct Item {
    std::shared_ptr<EventCallback> callback;
    StreamEvent event;
  };
  void loop();

  std::vector<Item> batch_;  // the queuing thread's, until hand_over()

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Item> handed_;  // under mutex_
  bool delivering_ = false;   // under mutex_: the thread holds a batch
  bool stopping_ = false;     // under mutex_
  std::thread thread_;        // last: started once the rest exists
};

}  // namespace tandem
