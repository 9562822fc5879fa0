#include "controlplane/core/event_hub.hpp"

#include "base/log.hpp"
#include "controlplane/core/errc.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace litterbox::controlplane {
namespace {

// Events read per fetch; a burst larger than this is read in several.
constexpr std::size_t k_fetch_batch = 512;

bool matches(const host_event& e, const event_query& q) {
  if (e.id <= q.after || (q.host_id && e.host_id != *q.host_id)) {
    return false;
  }
  return q.statuses.empty() ||
         std::find(q.statuses.begin(), q.statuses.end(), e.status) != q.statuses.end();
}

}  // namespace

event_hub::event_hub(store& db, std::chrono::milliseconds poll_interval, std::size_t cache_size)
    : db_(db), poll_interval_(poll_interval), cache_size_(std::max<std::size_t>(1, cache_size)) {}

event_hub::~event_hub() {
  stop();
}

void event_hub::start() {
  const std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) {
    return;
  }
  thread_ = std::thread([this] { run(); });
}

void event_hub::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void event_hub::poke() {
  {
    const std::lock_guard lock(mutex_);
    poked_ = true;
  }
  cv_.notify_all();
}

void event_hub::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    poked_ = false;
    lock.unlock();
    bool arrived = false;
    while (fetch()) {
      arrived = true;
    }
    lock.lock();
    if (arrived) {
      const auto subscribers = subscribers_;
      lock.unlock();
      for (const auto& [id, wake] : subscribers) {
        wake();
      }
      lock.lock();
    }
    cv_.wait_for(lock, poll_interval_, [this] { return stopping_ || poked_; });
  }
}

bool event_hub::fetch() {
  bool started = false;
  std::int64_t after = 0;
  {
    const std::lock_guard lock(mutex_);
    started = started_;
    after = last_;
  }
  if (!started) {
    // Follow from the newest event: older ones are read from the store by whoever wants them.
    auto newest = db_.newest_event_id();
    if (!newest) {
      spdlog::warn("events: cannot read the newest event: {}", log_escape(newest.error().message));
      return false;
    }
    const std::lock_guard lock(mutex_);
    base_ = last_ = *newest;
    cache_.clear();
    started_ = true;
    return false;
  }
  event_query q;
  q.after = after;
  q.limit = k_fetch_batch;
  auto got = db_.list_events(q);
  if (!got) {
    if (got.error().code == errc::history_gone) {
      // Pruned past our own cursor (a stall longer than the retention): start afresh; the
      // streams behind it get history_gone from the store themselves.
      const std::lock_guard lock(mutex_);
      started_ = false;
      cache_.clear();
    } else {
      spdlog::warn("events: reading new events failed: {}", log_escape(got.error().message));
    }
    return false;
  }
  if (got->empty()) {
    return false;
  }
  const std::lock_guard lock(mutex_);
  for (auto& e : *got) {
    last_ = e.id;
    cache_.push_back(std::move(e));
  }
  while (cache_.size() > cache_size_) {
    base_ = cache_.front().id;
    cache_.pop_front();
  }
  return true;
}

result<std::vector<host_event>> event_hub::read(const event_query& q) {
  {
    const std::lock_guard lock(mutex_);
    if (started_ && q.after >= base_) {
      std::vector<host_event> out;
      // Ids are increasing: start at the first one past q.after.
      auto it = std::upper_bound(cache_.begin(), cache_.end(), q.after,
                                 [](std::int64_t a, const host_event& e) { return a < e.id; });
      for (; it != cache_.end(); ++it) {
        if (matches(*it, q)) {
          out.push_back(*it);
          if (q.limit != 0 && out.size() == q.limit) {
            break;
          }
        }
      }
      return out;
    }
  }
  return db_.list_events(q);
}

result<std::int64_t> event_hub::newest() {
  {
    const std::lock_guard lock(mutex_);
    if (started_) {
      return last_;
    }
  }
  return db_.newest_event_id();
}

std::uint64_t event_hub::subscribe(std::function<void()> wake) {
  std::uint64_t id = 0;
  {
    const std::lock_guard lock(mutex_);
    id = next_subscriber_++;
    subscribers_.emplace(id, std::move(wake));
  }
  start();  // the first stream starts the follower
  return id;
}

void event_hub::unsubscribe(std::uint64_t id) {
  const std::lock_guard lock(mutex_);
  subscribers_.erase(id);
}

}  // namespace litterbox::controlplane
