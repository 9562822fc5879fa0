#pragma once

#include <chrono>

namespace litterbox::controlplane {

/// What the lifecycle machinery reports for metrics. Implemented by the metrics registry in
/// the HTTP layer; the core only calls it. Methods are cheap and thread-safe.
class lifecycle_observer {
 public:
  virtual ~lifecycle_observer() = default;
  /// A host was torn down and removed by the reaper.
  virtual void host_reaped() = 0;
  /// A teardown (reaper or DELETE) failed; the row is kept in `deleting`. Reported by
  /// host_service, which every teardown goes through.
  virtual void teardown_failed() = 0;
  /// `count` hosts' orphaned resources were removed by a sweep.
  virtual void orphans_removed(int count) = 0;
  /// An interrupted create was failed and released by crash recovery.
  virtual void create_recovered() = 0;
  /// One reap pass finished after `seconds`.
  virtual void reap_pass(std::chrono::duration<double> seconds) = 0;
};

/// An observer that records nothing (for `litterboxd reap` and tests).
class null_observer final : public lifecycle_observer {
 public:
  void host_reaped() override {}
  void teardown_failed() override {}
  void orphans_removed(int /*count*/) override {}
  void create_recovered() override {}
  void reap_pass(std::chrono::duration<double> /*seconds*/) override {}
};

}  // namespace litterbox::controlplane
