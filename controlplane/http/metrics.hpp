#pragma once

#include "controlplane/core/observer.hpp"
#include "schema/host.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// What the control plane reports to monitoring: the lifecycle hooks the core calls
/// (reaped, teardown failures, orphans, recoveries, reap passes) plus what the HTTP layer
/// adds. Implementations are thread-safe and never block.
class metrics : public lifecycle_observer {
 public:
  /// One HTTP request finished: `route` is the route template ("/hosts/{host_id}") or
  /// "unmatched", so label cardinality stays bounded.
  virtual void request_done(std::string_view route, std::string_view method, int status,
                            std::chrono::duration<double> latency) = 0;
  /// Replaces the hosts-by-status gauge (refreshed at every scrape).
  virtual void set_hosts_by_status(const std::map<schema::host_status, std::int64_t>& counts) = 0;
  /// The Prometheus text exposition of every metric.
  virtual std::string scrape() = 0;
};

}  // namespace litterbox::controlplane::http
