#pragma once

#include "controlplane/core/observer.hpp"
#include "schema/host.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

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

  /// One warm pool as a scrape sees it.
  struct pool_gauge {
    std::string image;
    int cpus = 0;
    int memory_mib = 0;
    std::int64_t size = 0;     ///< configured
    std::int64_t ready = 0;    ///< waiting for a claim
    std::int64_t filling = 0;  ///< being restored
  };
  /// Replaces the warm-pool gauges (refreshed at every scrape).
  virtual void set_pools(const std::vector<pool_gauge>& pools) = 0;
  /// Replaces the templates-by-status gauge ("building", "ready", "failed").
  virtual void set_templates(const std::map<std::string, std::int64_t>& by_status) = 0;
  /// A create answered 201, served by `path` ("pool", "clone", "boot").
  virtual void create_served(std::string_view path) = 0;
  /// The Prometheus text exposition of every metric.
  virtual std::string scrape() = 0;
};

}  // namespace litterbox::controlplane::http
