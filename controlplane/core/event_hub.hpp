#pragma once

#include "base/result.hpp"
#include "controlplane/core/store.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace litterbox::controlplane {

/// Serves every event stream of this process from one follower of the events table: a
/// background thread reads the events after the newest it has (at once when poke()d — by
/// PostgreSQL NOTIFY — and at least every `poll_interval`, so a lost notification only
/// delays), keeps the last `cache_size` in memory and wakes the subscribers. A stream reads
/// from the cache while its resume point is inside it, from the store when it is older. The
/// table is the truth: ids become visible in order (store::list_events), so the cache is a
/// gap-free copy of its newest part. Thread-safe.
class event_hub {
 public:
  event_hub(store& db, std::chrono::milliseconds poll_interval, std::size_t cache_size = 4096);
  ~event_hub();
  event_hub(const event_hub&) = delete;
  event_hub& operator=(const event_hub&) = delete;

  /// Starts following the table from its newest event (the first subscribe() does too); a
  /// database outage is retried, streams read the store meanwhile. After stop() it stays
  /// stopped.
  void start();
  void stop();

  /// New events may be in the table: fetch now. Never blocks.
  void poke();

  /// Events matching `q` (after q.after, in id order, at most q.limit), from the cache when
  /// q.after is inside it. Errors: as store::list_events (history_gone, unavailable).
  result<std::vector<host_event>> read(const event_query& q);

  /// Where a stream without a resume point starts: the newest event id known.
  result<std::int64_t> newest();

  /// Calls `wake` (on the hub's thread; must not block) whenever new events arrived. Returns
  /// the subscription's id for unsubscribe().
  std::uint64_t subscribe(std::function<void()> wake);
  void unsubscribe(std::uint64_t id);

 private:
  void run();
  /// Reads what follows the cache from the store; true when something arrived.
  bool fetch();

  store& db_;
  const std::chrono::milliseconds poll_interval_;
  const std::size_t cache_size_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false;  ///< base_ is known: the cache holds every event in (base_, last_]
  bool stopping_ = false;
  bool poked_ = false;
  std::int64_t base_ = 0;
  std::int64_t last_ = 0;
  std::deque<host_event> cache_;
  std::map<std::uint64_t, std::function<void()>> subscribers_;
  std::uint64_t next_subscriber_ = 1;
  std::thread thread_;
};

}  // namespace litterbox::controlplane
