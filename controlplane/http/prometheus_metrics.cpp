#include "controlplane/http/prometheus_metrics.hpp"

#include <array>
#include <map>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <string>

namespace litterbox::controlplane::http {

struct prometheus_metrics::impl {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("litterbox_http_requests_total")
          .Help("HTTP requests by route template, method and status")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram()
          .Name("litterbox_http_request_duration_seconds")
          .Help("HTTP request latency by route template and method")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& hosts =
      prometheus::BuildGauge().Name("litterbox_hosts").Help("Hosts by status").Register(registry);
  prometheus::Family<prometheus::Gauge>& pool_members =
      prometheus::BuildGauge()
          .Name("litterbox_pool_members")
          .Help("Warm-pool members by pool and state (ready: claimable; filling: restoring)")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& pool_size = prometheus::BuildGauge()
                                                         .Name("litterbox_pool_size")
                                                         .Help("Configured warm-pool size by pool")
                                                         .Register(registry);
  prometheus::Family<prometheus::Gauge>& templates = prometheus::BuildGauge()
                                                         .Name("litterbox_templates")
                                                         .Help("Saved templates by status")
                                                         .Register(registry);
  prometheus::Family<prometheus::Counter>& creates =
      prometheus::BuildCounter()
          .Name("litterbox_creates_total")
          .Help("Creates answered 201, by how they were served (pool, clone, boot)")
          .Register(registry);
  prometheus::Counter& reaped = prometheus::BuildCounter()
                                    .Name("litterbox_hosts_reaped_total")
                                    .Help("Hosts removed by the reaper")
                                    .Register(registry)
                                    .Add({});
  prometheus::Counter& teardown_failures = prometheus::BuildCounter()
                                               .Name("litterbox_teardown_failures_total")
                                               .Help("Teardowns that failed and kept the row")
                                               .Register(registry)
                                               .Add({});
  prometheus::Counter& orphans = prometheus::BuildCounter()
                                     .Name("litterbox_orphans_removed_total")
                                     .Help("Leftover VMs or rows removed by orphan sweeps")
                                     .Register(registry)
                                     .Add({});
  prometheus::Counter& recovered = prometheus::BuildCounter()
                                       .Name("litterbox_creates_recovered_total")
                                       .Help("Interrupted creates failed by crash recovery")
                                       .Register(registry)
                                       .Add({});
  prometheus::Histogram& reap_duration =
      prometheus::BuildHistogram()
          .Name("litterbox_reap_pass_duration_seconds")
          .Help("Duration of one reaper pass")
          .Register(registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60});
};

namespace {

constexpr std::array k_all_statuses{
    schema::host_status::provisioning, schema::host_status::pulling_image,
    schema::host_status::creating_vm,  schema::host_status::bootstrapping,
    schema::host_status::active,       schema::host_status::deleting,
    schema::host_status::error};

const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets{
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return buckets;
}

}  // namespace

prometheus_metrics::prometheus_metrics() : impl_(std::make_unique<impl>()) {
  // Every status appears in the exposition even before the first scrape refresh.
  for (const auto s : k_all_statuses) {
    impl_->hosts.Add({{"status", std::string(schema::to_string(s))}}).Set(0);
  }
}

prometheus_metrics::~prometheus_metrics() = default;

void prometheus_metrics::request_done(std::string_view route, std::string_view method, int status,
                                      std::chrono::duration<double> latency) {
  const std::string r(route);
  const std::string m(method);
  impl_->requests.Add({{"route", r}, {"method", m}, {"status", std::to_string(status)}})
      .Increment();
  impl_->latency.Add({{"route", r}, {"method", m}}, latency_buckets()).Observe(latency.count());
}

void prometheus_metrics::host_reaped() {
  impl_->reaped.Increment();
}

void prometheus_metrics::teardown_failed() {
  impl_->teardown_failures.Increment();
}

void prometheus_metrics::orphans_removed(int count) {
  impl_->orphans.Increment(static_cast<double>(count));
}

void prometheus_metrics::create_recovered() {
  impl_->recovered.Increment();
}

void prometheus_metrics::reap_pass(std::chrono::duration<double> seconds) {
  impl_->reap_duration.Observe(seconds.count());
}

void prometheus_metrics::set_hosts_by_status(
    const std::map<schema::host_status, std::int64_t>& counts) {
  for (const auto s : k_all_statuses) {
    const auto it = counts.find(s);
    impl_->hosts.Add({{"status", std::string(schema::to_string(s))}})
        .Set(it == counts.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void prometheus_metrics::set_pools(const std::vector<pool_gauge>& pools) {
  for (const auto& p : pools) {
    const std::map<std::string, std::string> labels{{"image", p.image},
                                                    {"cpus", std::to_string(p.cpus)},
                                                    {"memory_mib", std::to_string(p.memory_mib)}};
    auto with_state = [&labels](const char* state) {
      auto l = labels;
      l.emplace("state", state);
      return l;
    };
    impl_->pool_members.Add(with_state("ready")).Set(static_cast<double>(p.ready));
    impl_->pool_members.Add(with_state("filling")).Set(static_cast<double>(p.filling));
    impl_->pool_size.Add(labels).Set(static_cast<double>(p.size));
  }
}

void prometheus_metrics::set_templates(const std::map<std::string, std::int64_t>& by_status) {
  for (const auto& [status, n] : by_status) {
    impl_->templates.Add({{"status", status}}).Set(static_cast<double>(n));
  }
}

void prometheus_metrics::create_served(std::string_view path) {
  impl_->creates.Add({{"path", std::string(path)}}).Increment();
}

std::string prometheus_metrics::scrape() {
  return prometheus::TextSerializer().Serialize(impl_->registry.Collect());
}

}  // namespace litterbox::controlplane::http
