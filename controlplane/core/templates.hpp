#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace litterbox::controlplane {

class instance_heartbeat;

/// The key of the template a create of this size and digest would be cloned from.
template_key_row template_key_for(const hypervisor::vm_spec& spec);

/// Builds templates in the background, one at a time per process and once per key across
/// every process sharing the database (the template row is the lock: store::
/// claim_template_build). A build boots the template guest through the cold path, strips its
/// identity and saves it (driver::build_template); creates that arrive meanwhile boot. A build
/// that fails is retried after LITTERBOX_TEMPLATE_RETRY, one of an image that cannot be
/// cloned never (the reason is kept in the row, for the log and /doctor). Thread-safe.
class template_builder {
 public:
  template_builder(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
                   instance_heartbeat& instance, std::string probe_public_key);
  ~template_builder();
  template_builder(const template_builder&) = delete;
  template_builder& operator=(const template_builder&) = delete;

  /// Asks for the template of `key` (wanted by a create of `image` on node `node_id`; empty:
  /// config::node_id) unless one exists or is being built. It is built on that node. Returns
  /// at once; repeated wants of one key coalesce.
  void want(const template_key_row& key, const std::string& image, const std::string& node_id = {});

  /// The id of the ready template of `key`, if there is one and it is on node `node_id`
  /// (empty: any node; a template row from before nodes is on every). Errors: unavailable.
  result<std::optional<std::string>> ready(const template_key_row& key,
                                           const std::string& node_id = {});

  /// Builds every wanted template that is not being built elsewhere, on the calling thread,
  /// until none is wanted (for tests and `start()`'s thread). Returns how many were built.
  int build_pending();

  /// Runs build_pending() on a background thread whenever something is wanted.
  void start();

  /// `cb` runs (on the building thread) after each template that became ready, e.g. to wake
  /// the warm pool. Set before start().
  void on_ready(std::function<void()> cb) { on_ready_ = std::move(cb); }

  /// Stops the thread; a build under way is abandoned (its guest destroyed, its row failed
  /// for a retry) rather than waited for. Idempotent.
  void stop();

 private:
  /// One claimed build, start to finish. True when it ended ready.
  struct wanted {
    std::string image;    ///< the reference of the first create that wanted it
    std::string node_id;  ///< where that create was placed
  };
  bool build(const template_key_row& key, const wanted& w);
  void loop();

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  instance_heartbeat& instance_;
  const std::string probe_public_key_;
  std::function<void()> on_ready_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<template_key_row, wanted> wanted_;
  std::optional<std::string> building_id_;  ///< the template this process builds now
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace litterbox::controlplane
