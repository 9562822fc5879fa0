#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/store.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace litterbox::controlplane {

/// This process's liveness row: beats every `interval` on a thread of its own, so hosts it
/// creates stay owned while it lives; other processes judge it gone after three missed beats
/// of that same interval (recorded with the beat). Thread-safe.
class instance_heartbeat {
 public:
  instance_heartbeat(store& db, const clock& clk, std::string instance_id,
                     std::chrono::seconds interval);
  ~instance_heartbeat();
  instance_heartbeat(const instance_heartbeat&) = delete;
  instance_heartbeat& operator=(const instance_heartbeat&) = delete;

  const std::string& id() const { return id_; }

  /// Beats once now. Errors: unavailable.
  result<void> beat();

  /// Beats unless a beat has already succeeded: a row may only name this instance as its
  /// owner once the instance row exists. Errors: unavailable.
  result<void> ensure_registered();

  /// Stops the thread. Idempotent.
  void stop();

 private:
  void loop();

  store& db_;
  const clock& clock_;
  const std::string id_;
  const std::chrono::seconds interval_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool registered_ = false;
  std::thread thread_;
};

}  // namespace litterbox::controlplane
