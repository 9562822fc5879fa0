#include "controlplane/core/reaper.hpp"

#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <future>

namespace litterbox::controlplane {
namespace {

using hypervisor::fake_phase;
using schema::host_status;

class ReaperTest : public ::testing::Test {
 protected:
  ReaperTest() : clock_(timestamp(std::chrono::seconds(1'800'000'000))) {
    cfg_.default_image = "registry.test/base:1";
    cfg_.ssh_port_max = cfg_.ssh_port_min + 100;
    cfg_.lease_default_ttl = std::chrono::hours(1);
    cfg_.error_retention = std::chrono::minutes(10);
    hosts_ = std::make_unique<host_service>(cfg_, store_, driver_, clock_, "me");
    upkeep_ = std::make_unique<maintenance>(cfg_, store_, driver_, clock_);
    reaper_ = std::make_unique<reaper>(cfg_, store_, *hosts_, *upkeep_, clock_, observer_);
  }

  std::string settled_host(std::string_view body) {
    auto c = hosts_->create(*schema::parse_create_host_request(body), std::nullopt);
    EXPECT_TRUE(c);
    std::promise<void> done;
    if (hosts_->notify_when_settled(c->host.id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    return c->host.id;
  }

  config cfg_;
  manual_clock clock_;
  testing::memory_store store_;
  hypervisor::fake_driver driver_{[] {
    hypervisor::fake_options o;
    o.image_grace = std::chrono::milliseconds(0);  // every image here was prepared long ago
    return o;
  }()};
  null_observer observer_;
  std::unique_ptr<host_service> hosts_;
  std::unique_ptr<maintenance> upkeep_;
  std::unique_ptr<reaper> reaper_;
};

TEST_F(ReaperTest, APassPrunesEventsPastTheirRetentionAndKeepsNewerOnes) {
  cfg_.event_retention = std::chrono::hours(1);
  const auto old_host = settled_host(R"({"expires_at": null})");
  const auto old_events = store_.list_events({}).value();
  ASSERT_FALSE(old_events.empty());
  clock_.advance(std::chrono::hours(2));
  const auto new_host = settled_host(R"({"expires_at": null})");
  reaper_->run_once();
  const auto kept = store_.list_events({old_events.back().id, {}, {}, 0, {}});
  ASSERT_TRUE(kept.has_value()) << kept.error().message;
  ASSERT_FALSE(kept->empty());
  for (const auto& e : *kept) {
    EXPECT_EQ(e.host_id, new_host);
  }
  const auto from_start = store_.list_events({});
  ASSERT_FALSE(from_start.has_value());
  EXPECT_EQ(from_start.error().code, errc::history_gone);
  EXPECT_NE(old_host, new_host);
}

TEST_F(ReaperTest, ExpiredHostsAreTornDownOnceAndLiveOnesAreLeftAlone) {
  const auto expiring = settled_host("{}");
  const auto permanent = settled_host(R"({"expires_at": null})");
  EXPECT_EQ(reaper_->run_once().reaped, 0);
  clock_.advance(std::chrono::hours(2));
  const auto report = reaper_->run_once();
  EXPECT_EQ(report.reaped, 1);
  EXPECT_EQ(report.failed, 0);
  EXPECT_FALSE(hosts_->get(expiring));
  EXPECT_TRUE(hosts_->get(permanent));
  EXPECT_EQ(driver_.live_vms(), std::set<std::string>{permanent});
  EXPECT_EQ(reaper_->run_once().reaped, 0);
}

TEST_F(ReaperTest, ARenewBeforeThePassWins) {
  const auto id = settled_host("{}");
  clock_.advance(std::chrono::minutes(59));
  ASSERT_TRUE(hosts_->renew(id, {}));
  clock_.advance(std::chrono::minutes(2));
  EXPECT_EQ(reaper_->run_once().reaped, 0);
  EXPECT_TRUE(hosts_->get(id));
}

TEST_F(ReaperTest, FailedHostsAreKeptForTheRetentionThenReaped) {
  const auto id = settled_host(R"({"image": "registry.test/missing:1"})");
  ASSERT_EQ(hosts_->get(id)->status, host_status::error);
  clock_.advance(std::chrono::minutes(5));
  EXPECT_EQ(reaper_->run_once().reaped, 0);
  clock_.advance(std::chrono::minutes(6));
  EXPECT_EQ(reaper_->run_once().reaped, 1);
  EXPECT_FALSE(hosts_->get(id));
}

TEST_F(ReaperTest, FailedTeardownIsCountedAndTheRowKept) {
  const auto id = settled_host("{}");
  clock_.advance(std::chrono::hours(2));
  driver_.set_failure(fake_phase::destroy, make_error(hypervisor::errc::teardown_failed, "busy"));
  const auto report = reaper_->run_once();
  EXPECT_EQ(report.failed, 1);
  EXPECT_EQ(hosts_->get(id)->status, host_status::deleting);
}

TEST_F(ReaperTest, CreatesOfADeadInstanceAreFailedAndReleased) {
  // A row left behind by another process that stopped heartbeating mid-create.
  host_record rec;
  rec.host.id = "01900000-0000-7000-8000-000000000001";
  rec.host.name = schema::host_name_for(rec.host.id);
  rec.host.status = host_status::creating_vm;
  rec.host.cpus = 1;
  rec.host.memory_mib = 512;
  rec.owner_id = "dead-instance";
  ASSERT_TRUE(store_.heartbeat("dead-instance", "h", 1, std::chrono::seconds(10), clock_.now()));
  ASSERT_TRUE(store_.insert_host(rec, std::nullopt, port_range{20000, 29999}, clock_.now()));
  clock_.advance(std::chrono::minutes(5));
  ASSERT_TRUE(hosts_->heartbeat());
  const auto report = reaper_->run_once();
  EXPECT_EQ(report.recovered, 1);
  const auto h = hosts_->get(rec.host.id);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, host_status::error);
  EXPECT_EQ(h->last_error.rfind("Interrupted: ", 0), 0U);
}

TEST_F(ReaperTest, ResourcesWithNoRowAreSwept) {
  hypervisor::vm_spec stray;
  stray.host_id = "01900000-0000-7000-8000-0000000000ff";
  stray.name = "sb-0000000000ff";
  ASSERT_TRUE(driver_.create_vm(stray));
  const auto kept = settled_host("{}");
  const auto report = reaper_->run_once();
  EXPECT_EQ(report.orphans_removed, 1);
  EXPECT_EQ(driver_.live_vms(), std::set<std::string>{kept});
}

TEST_F(ReaperTest, CachedImagesNoRowReferencesAreCollected) {
  settled_host(R"({"image": "registry.test/kept:1"})");
  ASSERT_TRUE(driver_.prepare_image("registry.test/unused:1"));
  EXPECT_EQ(driver_.conversions(), 2);
  EXPECT_EQ(reaper_->run_once().images_collected, 1);
  // The kept image is still cached; the collected one converts again when next needed.
  ASSERT_TRUE(driver_.prepare_image("registry.test/kept:1"));
  EXPECT_EQ(driver_.conversions(), 2);
  ASSERT_TRUE(driver_.prepare_image("registry.test/unused:1"));
  EXPECT_EQ(driver_.conversions(), 3);
}

}  // namespace
}  // namespace litterbox::controlplane
