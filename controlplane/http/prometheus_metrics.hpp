#pragma once

#include "controlplane/http/metrics.hpp"

#include <memory>

namespace litterbox::controlplane::http {

/// `metrics` on prometheus-cpp: litterbox_http_requests_total{route,method,status},
/// litterbox_http_request_duration_seconds{route,method}, litterbox_hosts{status},
/// litterbox_hosts_reaped_total, litterbox_teardown_failures_total,
/// litterbox_orphans_removed_total, litterbox_creates_recovered_total and
/// litterbox_reap_pass_duration_seconds.
class prometheus_metrics final : public metrics {
 public:
  prometheus_metrics();
  ~prometheus_metrics() override;
  prometheus_metrics(const prometheus_metrics&) = delete;
  prometheus_metrics& operator=(const prometheus_metrics&) = delete;

  void request_done(std::string_view route, std::string_view method, int status,
                    std::chrono::duration<double> latency) override;
  void host_reaped() override;
  void teardown_failed() override;
  void orphans_removed(int count) override;
  void create_recovered() override;
  void reap_pass(std::chrono::duration<double> seconds) override;
  void set_hosts_by_status(const std::map<schema::host_status, std::int64_t>& counts) override;
  void set_pools(const std::vector<pool_gauge>& pools) override;
  void set_templates(const std::map<std::string, std::int64_t>& by_status) override;
  void create_served(std::string_view path) override;
  std::string scrape() override;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace litterbox::controlplane::http
