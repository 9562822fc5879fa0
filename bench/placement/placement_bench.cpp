// Placement: what choosing a node costs a create. Each insert is the create's one
// transaction (namespace quota, node locks and capacity, port lease, the row); T threads
// insert N hosts, and the same is done three ways side by side in each round:
//   fixed     the host names its node (one node, as a single-machine install places);
//   1 of 1    the store chooses among one candidate;
//   2 of 2    the store chooses among two candidates (both rows locked, in id order).
// Prints a Markdown table with the median and the spread over the rounds. Driven by
// bench/placement/run.sh; usage: placement_bench URL [HOSTS] [THREADS] [ROUNDS].

#include "base/log.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/pg/migrate.hpp"
#include "controlplane/pg/pg_store.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace lb = litterbox;
namespace cp = litterbox::controlplane;
using steady = std::chrono::steady_clock;

namespace {

struct run_result {
  double per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  std::map<std::string, int> per_node;
  int failed = 0;
};

double quantile(std::vector<double> v, double q) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

run_result insert_all(cp::store& store, const std::vector<std::string>& candidates, bool fixed,
                      int hosts, int threads) {
  // A port range the size of the default one (1000) plus the hosts: the lease's search of a
  // free port grows with the range, and runs under the node locks.
  const cp::port_range ports{20000, 20000 + hosts + 999};
  const lb::system_clock clock;
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(threads));
  std::vector<std::map<std::string, int>> placed(static_cast<std::size_t>(threads));
  const auto started = steady::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      while (next.fetch_add(1) < hosts) {
        const auto now = clock.now();
        cp::host_record rec;
        rec.host.id = lb::new_uuid_v7(now);
        rec.host.name = lb::schema::host_name_for(rec.host.id);
        rec.host.status = lb::schema::host_status::provisioning;
        rec.host.provider = "fake";
        rec.host.image = "registry.test/base:1";
        rec.host.cpus = 1;
        rec.host.memory_mib = 512;
        rec.host.ssh_username = "agent";
        rec.host.created_at = now;
        rec.host.updated_at = now;
        if (fixed) {
          rec.node_id = candidates.front();
        } else {
          rec.node_choices = candidates;
        }
        const auto t0 = steady::now();
        auto out = store.insert_host(rec, std::nullopt, ports, now);
        const auto t1 = steady::now();
        if (!out) {
          ++failed;
          continue;
        }
        latencies[static_cast<std::size_t>(t)].push_back(
            std::chrono::duration<double, std::milli>(t1 - t0).count());
        ++placed[static_cast<std::size_t>(t)][out->existing.node_id.value_or("")];
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  const double seconds = std::chrono::duration<double>(steady::now() - started).count();
  run_result r;
  std::vector<double> all;
  for (std::size_t t = 0; t < latencies.size(); ++t) {
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
    for (const auto& [node, n] : placed[t]) {
      r.per_node[node] += n;
    }
  }
  r.failed = failed.load();
  r.per_second = static_cast<double>(all.size()) / seconds;
  r.p50_ms = quantile(all, 0.5);
  r.p99_ms = quantile(all, 0.99);
  return r;
}

// Empties hosts and ports between runs so that every run starts from the same table sizes.
void reset(const std::string& url) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec0("DELETE FROM ssh_ports");
  tx.exec0("DELETE FROM hosts");
  tx.commit();
  // No VACUUM ANALYZE here: statistics of an empty ssh_ports make the planner scan it per
  // candidate port for the rest of the run, which measures the planner, not placement.
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: placement_bench DATABASE_URL [HOSTS] [THREADS] [ROUNDS]\n");
    return 2;
  }
  const std::string url = argv[1];
  const int hosts = argc > 2 ? std::atoi(argv[2]) : 2000;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 8;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  lb::setup_logging("warn", lb::log_format::text);
  if (auto m = cp::migrate(url); !m) {
    std::fprintf(stderr, "migrate: %s\n", m.error().message.c_str());
    return 1;
  }
  cp::pg_store store(url, static_cast<std::size_t>(threads) + 2);
  const lb::system_clock clock;
  // Nodes with room for every host of a run, so that capacity never refuses one.
  std::vector<std::string> nodes;
  for (const char* uri : {"fake:///bench-a", "fake:///bench-b"}) {
    auto n = store.register_node({uri, "127.0.0.1", 1 << 20, std::int64_t{1} << 40}, clock.now());
    if (!n) {
      std::fprintf(stderr, "register_node: %s\n", n.error().message.c_str());
      return 1;
    }
    nodes.push_back(n->id);
  }

  struct way {
    const char* name;
    std::vector<std::string> candidates;
    bool fixed;
  };
  const std::vector<way> ways{{"fixed node", {nodes[0]}, true},
                              {"1 of 1 nodes", {nodes[0]}, false},
                              {"2 of 2 nodes", nodes, false}};
  std::map<std::string, std::vector<run_result>> results;
  for (int round = 0; round < rounds; ++round) {
    for (const auto& w : ways) {
      reset(url);
      auto r = insert_all(store, w.candidates, w.fixed, hosts, threads);
      if (r.failed > 0) {
        std::fprintf(stderr, "%s: %d inserts failed\n", w.name, r.failed);
        return 1;
      }
      results[w.name].push_back(r);
    }
  }

  std::printf("%d hosts from %d threads, %d rounds (median, min-max)\n\n", hosts, threads, rounds);
  std::printf("| placement | inserts/s | p50 ms | p99 ms | hosts per node (last round) |\n");
  std::printf("|---|---|---|---|---|\n");
  const auto median = [](std::vector<double> v) { return quantile(std::move(v), 0.5); };
  std::map<std::string, double> rate;
  for (const auto& w : ways) {
    std::vector<double> per_second;
    std::vector<double> p50;
    std::vector<double> p99;
    for (const auto& r : results[w.name]) {
      per_second.push_back(r.per_second);
      p50.push_back(r.p50_ms);
      p99.push_back(r.p99_ms);
    }
    rate[w.name] = median(per_second);
    std::string spread;
    for (const auto& [node, n] : results[w.name].back().per_node) {
      spread += (spread.empty() ? "" : " / ") + std::to_string(n);
    }
    std::printf("| %s | %.0f (%.0f-%.0f) | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %s |\n", w.name,
                rate[w.name], *std::min_element(per_second.begin(), per_second.end()),
                *std::max_element(per_second.begin(), per_second.end()), median(p50),
                *std::min_element(p50.begin(), p50.end()),
                *std::max_element(p50.begin(), p50.end()), median(p99),
                *std::min_element(p99.begin(), p99.end()),
                *std::max_element(p99.begin(), p99.end()), spread.c_str());
  }
  std::printf("\n2 of 2 against fixed: %.2f x the inserts/s\n",
              rate["2 of 2 nodes"] / rate["fixed node"]);
  return 0;
}
