// Reaps N expired hosts in one pass with the fake hypervisor against a real PostgreSQL and
// prints a Markdown table row. Driven by bench/reap/run.sh; usage: reap_bench URL [N].

#include "base/log.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "controlplane/core/reaper.hpp"
#include "controlplane/pg/migrate.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "hypervisor/fake/fake_driver.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace lb = litterbox;
namespace cp = litterbox::controlplane;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: reap_bench DATABASE_URL [HOSTS]\n");
    return 2;
  }
  const std::string url = argv[1];
  const int hosts = argc > 2 ? std::atoi(argv[2]) : 10000;
  lb::setup_logging("warn", lb::log_format::text);
  if (auto m = cp::migrate(url); !m) {
    std::fprintf(stderr, "migrate: %s\n", m.error().message.c_str());
    return 1;
  }
  cp::pg_store store(url, 8);
  lb::hypervisor::fake_driver driver;
  const lb::system_clock clock;
  const auto now = clock.now();

  // Setup (not measured): expired active hosts, each with a VM, inserted from 4 threads.
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&] {
      while (next.fetch_add(1) < hosts) {
        cp::host_record rec;
        rec.host.id = lb::new_uuid_v7(now);
        rec.host.name = lb::schema::host_name_for(rec.host.id);
        rec.host.status = lb::schema::host_status::active;
        rec.host.provider = "fake";
        rec.host.image = "registry.test/base:1";
        rec.host.cpus = 1;
        rec.host.memory_mib = 512;
        rec.host.ssh_username = "agent";
        rec.host.created_at = now;
        rec.host.updated_at = now;
        rec.host.activated_at = now;
        rec.host.expires_at = now - std::chrono::seconds(1);
        lb::hypervisor::vm_spec vm;
        vm.host_id = rec.host.id;
        vm.name = rec.host.name;
        if (!store.insert_host(rec, std::nullopt, cp::port_range{1024, 65535}, now) ||
            !driver.create_vm(vm)) {
          ++failed;
        }
      }
    });
  }
  for (auto& w : writers) {
    w.join();
  }
  if (failed > 0) {
    std::fprintf(stderr, "setup: %d inserts failed\n", failed.load());
    return 1;
  }

  cp::config cfg;
  cp::host_service service(cfg, store, driver, clock, lb::new_uuid_v7(clock.now()));
  cp::null_observer observer;
  cp::maintenance upkeep(cfg, store, driver, clock);
  cp::reaper reaper(cfg, store, service, upkeep, clock, observer);
  const auto started = std::chrono::steady_clock::now();
  const auto report = reaper.run_once();
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;

  std::printf("| expired hosts | reaped | failed | pass (s) | hosts/s | target |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::printf("| %d | %d | %d | %.2f | %.0f | <= 10 s |\n", hosts, report.reaped, report.failed,
              took.count(), report.reaped / took.count());
  service.shutdown();
  return report.reaped == hosts && driver.live_vms().empty() ? 0 : 1;
}
