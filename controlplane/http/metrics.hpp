#pragma once

#include "schema/host.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// What the control plane reports to monitoring. Implementations are thread-safe and never
/// block; every hook may be called from any thread.
class metrics {
 public:
  virtual ~metrics() = default;

  /// One HTTP request finished: `route` is the route template ("/hosts/{host_id}") or
  /// "unmatched", so label cardinality stays bounded.
  virtual void request_done(std::string_view route, std::string_view method, int status,
                            std::chrono::duration<double> latency) = 0;
  /// The reaper removed `count` hosts.
  virtual void hosts_reaped(std::int64_t count) = 0;
  /// A teardown (DELETE or reap) failed and the row was kept.
  virtual void teardown_failed() = 0;
  /// An orphan sweep removed `count` leftover VMs or rows.
  virtual void orphans_removed(std::int64_t count) = 0;
  /// One reaper pass took `duration`.
  virtual void reap_pass(std::chrono::duration<double> duration) = 0;
  /// Replaces the hosts-by-status gauge (refreshed at every scrape).
  virtual void set_hosts_by_status(const std::map<schema::host_status, std::int64_t>& counts) = 0;
  /// The Prometheus text exposition of every metric.
  virtual std::string scrape() = 0;
};

}  // namespace litterbox::controlplane::http
