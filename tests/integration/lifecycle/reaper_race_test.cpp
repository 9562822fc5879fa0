#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "controlplane/core/reaper.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace litterbox::controlplane {
namespace {

using schema::host_status;

/// Inserts an active host whose lease ended at `expires_at`, with a VM in `driver`.
std::string insert_active(store& db, hypervisor::fake_driver& driver, timestamp now,
                          timestamp expires_at) {
  host_record rec;
  rec.host.id = new_uuid_v7(now);
  rec.host.name = schema::host_name_for(rec.host.id);
  rec.host.status = host_status::active;
  rec.host.provider = "fake";
  rec.host.image = "registry.test/base:1";
  rec.host.cpus = 1;
  rec.host.memory_mib = 512;
  rec.host.ssh_username = "agent";
  rec.host.created_at = now;
  rec.host.updated_at = now;
  rec.host.activated_at = now;
  rec.host.expires_at = expires_at;
  EXPECT_TRUE(db.insert_host(rec, std::nullopt, port_range{20000, 29999}, now));
  hypervisor::vm_spec vm;
  vm.host_id = rec.host.id;
  vm.name = rec.host.name;
  EXPECT_TRUE(driver.create_vm(vm));
  return rec.host.id;
}

TEST(ReaperRace, ThreeReapersTearDownEachExpiredHostExactlyOnceWhileRenewsThatLandFirstWin) {
  test::test_database db;
  pg_store store(db.url(), 16);
  hypervisor::fake_driver driver;
  config cfg;
  const system_clock clock;
  const timestamp now = clock.now();

  constexpr int k_hosts = 1000;
  std::vector<std::string> ids;
  for (int i = 0; i < k_hosts; ++i) {
    ids.push_back(insert_active(store, driver, now, now - std::chrono::seconds(1)));
  }
  // Every fourth host is renewed concurrently with the reapers: whichever commits first wins.
  std::vector<std::string> to_renew;
  for (int i = 0; i < k_hosts; i += 4) {
    to_renew.push_back(ids[static_cast<std::size_t>(i)]);
  }

  null_observer observer;
  std::vector<std::unique_ptr<host_service>> services;
  std::vector<std::unique_ptr<maintenance>> upkeeps;
  std::vector<std::unique_ptr<reaper>> reapers;
  for (int i = 0; i < 3; ++i) {
    services.push_back(
        std::make_unique<host_service>(cfg, store, driver, clock, new_uuid_v7(clock.now())));
    upkeeps.push_back(std::make_unique<maintenance>(cfg, store, driver, clock));
    reapers.push_back(
        std::make_unique<reaper>(cfg, store, *services.back(), *upkeeps.back(), clock, observer));
  }

  std::mutex mutex;
  std::map<std::string, int> reaped_count;
  std::set<std::string> renewed;
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    for (const auto& id : to_renew) {
      auto r = services[0]->renew(id, {clock.now() + std::chrono::hours(1)});
      if (r) {
        const std::lock_guard lock(mutex);
        renewed.insert(id);
      } else {
        // Too late: a reaper claimed it first, so it must have been reaped.
        EXPECT_TRUE(r.error().code == errc::host_state || r.error().code == errc::not_found)
            << r.error().message;
      }
    }
  });
  for (auto& rp : reapers) {
    threads.emplace_back([&, r = rp.get()] {
      const auto report = r->run_once();
      EXPECT_EQ(report.failed, 0);
      const std::lock_guard lock(mutex);
      for (const auto& id : report.reaped_ids) {
        ++reaped_count[id];
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  // Renews that lost the race were claimed; anything left expired is reaped by a final pass.
  const auto last = reapers[0]->run_once();
  for (const auto& id : last.reaped_ids) {
    ++reaped_count[id];
  }

  for (const auto& id : ids) {
    const bool was_renewed = renewed.count(id) != 0;
    const auto it = reaped_count.find(id);
    const int times = it == reaped_count.end() ? 0 : it->second;
    if (was_renewed) {
      EXPECT_EQ(times, 0) << id << " was renewed but reaped";
      auto row = store.get_host(id);
      ASSERT_TRUE(row) << id;
      EXPECT_EQ(row->host.status, host_status::active);
      EXPECT_EQ(driver.live_vms().count(id), 1U);
    } else {
      EXPECT_EQ(times, 1) << id << " torn down " << times << " times";
      EXPECT_FALSE(store.get_host(id)) << id;
    }
  }
  EXPECT_EQ(driver.vms_destroyed(), k_hosts - static_cast<int>(renewed.size()));
  EXPECT_EQ(driver.live_vms().size(), renewed.size());
}

/// One reaper on a fresh database with a clock the test moves; retention is ten minutes.
class RetentionTest : public ::testing::Test {
 protected:
  RetentionTest()
      : store_(db_.url(), 4),
        clock_(timestamp(std::chrono::seconds(1'800'000'000))),
        cfg_(retention_config()),
        service_(cfg_, store_, driver_, clock_, new_uuid_v7(clock_.now())),
        upkeep_(cfg_, store_, driver_, clock_),
        reaper_(cfg_, store_, service_, upkeep_, clock_, observer_) {}

  static config retention_config() {
    config c;
    c.error_retention = std::chrono::minutes(10);
    return c;
  }

  std::string active_host() {
    return insert_active(store_, driver_, clock_.now(), clock_.now() + std::chrono::hours(9));
  }

  test::test_database db_;
  pg_store store_;
  hypervisor::fake_driver driver_;
  manual_clock clock_;
  config cfg_;
  host_service service_;
  maintenance upkeep_;
  null_observer observer_;
  reaper reaper_;
};

TEST_F(RetentionTest, RetainedErrorHostsAreReapedOnlyAfterTheRetention) {
  const auto id = active_host();
  host_patch to_error;
  to_error.status = host_status::error;
  to_error.last_error = "BootTimeout: test";
  ASSERT_TRUE(store_.transition(id, {host_status::active}, to_error, clock_.now()));
  clock_.advance(std::chrono::minutes(9));
  EXPECT_EQ(reaper_.run_once().reaped, 0);
  clock_.advance(std::chrono::minutes(2));
  EXPECT_EQ(reaper_.run_once().reaped_ids, std::vector<std::string>{id});
}

TEST_F(RetentionTest, ADeleteWhoseTeardownFailedIsRetriedByTheReaperAfterTheRetention) {
  const auto id = active_host();
  driver_.set_failure(hypervisor::fake_phase::destroy,
                      make_error(hypervisor::errc::teardown_failed, "disk busy"));
  auto del = service_.remove(id);
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().code, errc::teardown_failed);
  driver_.set_failure(hypervisor::fake_phase::destroy, std::nullopt);
  EXPECT_EQ(reaper_.run_once().reaped, 0);  // a DELETE retry may still be on its way
  clock_.advance(std::chrono::minutes(11));
  EXPECT_EQ(reaper_.run_once().reaped_ids, std::vector<std::string>{id});
  EXPECT_TRUE(driver_.live_vms().empty());
}

}  // namespace
}  // namespace litterbox::controlplane
