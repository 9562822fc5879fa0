#pragma once

#include <atomic>
#include <chrono>

namespace litterbox {

/// Wall-clock time with microsecond precision, the resolution PostgreSQL stores.
using timestamp = std::chrono::sys_time<std::chrono::microseconds>;

/// The source of "now" for every rule that depends on time; injected so tests control it.
class clock {
 public:
  virtual ~clock() = default;
  /// Current wall-clock time. Thread-safe, never blocks.
  virtual timestamp now() const = 0;
};

/// The real clock.
class system_clock final : public clock {
 public:
  timestamp now() const override {
    return std::chrono::time_point_cast<std::chrono::microseconds>(
        std::chrono::system_clock::now());
  }
};

/// A clock that only moves when a test moves it.
class manual_clock final : public clock {
 public:
  explicit manual_clock(timestamp start) : now_(start.time_since_epoch().count()) {}
  timestamp now() const override { return timestamp(std::chrono::microseconds(now_.load())); }
  void advance(std::chrono::microseconds d) { now_ += d.count(); }
  void set(timestamp t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<std::chrono::microseconds::rep> now_;
};

}  // namespace litterbox
