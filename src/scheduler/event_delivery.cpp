#include "scheduler/event_delivery.h"

namespace tandem {

EventDelivery::EventDelivery() : thread_([this] { loop(); }) {}

EventDelivery::~EventDelivery() {
  hand_over();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void EventDelivery::hand_over() {
  if (batch_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (handed_.empty()) {
      handed_.swap(batch_);
    } else {
      for (Item& item : batch_) handed_.push_back(std::move(item));
      batch_.clear();
    }
  }
  wake_.notify_one();
}

bool EventDelivery::delivered() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return handed_.empty() && !delivering_;
}

void EventDelivery::loop() {
  std::vector<Item> items;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      delivering_ = false;
      wake_.wait(lock, [&] { return !handed_.empty() || stopping_; });
      if (handed_.empty()) return;  // stopping, and everything delivered
      items.swap(handed_);
      delivering_ = true;
    }
    for (Item& item : items) {
      try {  // a callback's failure must not end the deliveries of the others
        (*item.callback)(std::move(item.event));
      } catch (...) {
      }
    }
    items.clear();  // the callbacks' last references may go here, off the lock
  }
}

}  // namespace tandem
