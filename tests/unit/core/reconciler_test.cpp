#include "controlplane/core/reconciler.hpp"

#include "controlplane/core/host_service.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <vector>

namespace litterbox::controlplane {
namespace {

using hypervisor::fake_driver;
using schema::host_status;
using namespace std::chrono_literals;

class ReconcilerTest : public ::testing::Test {
 protected:
  ReconcilerTest() : clock_(timestamp(std::chrono::seconds(1'800'000'000))) {
    cfg_.default_image = "registry.test/base:1";
    cfg_.ssh_port_max = cfg_.ssh_port_min + 100;
    cfg_.reconcile_interval = 1h;  // only wake-ups (and start-up) run passes in these tests
    hosts_ = std::make_unique<host_service>(cfg_, store_, driver_, clock_, "me");
  }

  std::string active_host() {
    auto c = hosts_->create(*schema::parse_create_host_request("{}"), std::nullopt);
    EXPECT_TRUE(c);
    std::promise<void> done;
    if (hosts_->notify_when_settled(c->host.id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    EXPECT_EQ(store_.get_host(c->host.id).value().host.status, host_status::active);
    return c->host.id;
  }

  reconciler make(std::function<bool(const std::string&)> here = {}) {
    if (!here) {
      here = [this](const std::string& id) { return hosts_->provisioning_here(id); };
    }
    return reconciler(cfg_, store_, driver_, clock_, std::move(here));
  }

  std::vector<host_event> events_of(const std::string& id) {
    event_query q;
    q.host_id = id;
    return store_.list_events(q).value();
  }

  config cfg_;
  manual_clock clock_;
  testing::memory_store store_;
  fake_driver driver_;
  std::unique_ptr<host_service> hosts_;
};

TEST_F(ReconcilerTest, ACrashedVmTurnsItsHostIntoErrorWithTheConsoleTailAndReleasesIt) {
  const auto id = active_host();
  const auto ports_before = store_.port_count();
  ASSERT_TRUE(driver_.kill_vm(id, fake_driver::vm_fate::crashed));
  auto r = make();
  const auto n = r.run_once();
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 1);

  const auto h = store_.get_host(id).value();
  EXPECT_EQ(h.host.status, host_status::error);
  EXPECT_EQ(h.host.last_error.rfind("VMCrashed: QEMU exited unexpectedly", 0), 0U)
      << h.host.last_error;
  EXPECT_NE(h.host.last_error.find("[fake]"), std::string::npos) << h.host.last_error;
  EXPECT_EQ(driver_.live_vms().count(id), 0U);
  EXPECT_EQ(store_.port_count(), ports_before - 1);
  const auto events = events_of(id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, event_type::died);
  EXPECT_EQ(events.back().last_error, h.host.last_error);
  // The caller can still read it and delete it.
  EXPECT_TRUE(hosts_->get(id));
  const auto removed = hosts_->remove(id);
  EXPECT_TRUE(removed.has_value()) << removed.error().message;
}

TEST_F(ReconcilerTest, APoweredOffVmIsVmStoppedAndAVanishedOneIsVmGone) {
  const auto off = active_host();
  const auto gone = active_host();
  ASSERT_TRUE(driver_.kill_vm(off, fake_driver::vm_fate::powered_off));
  ASSERT_TRUE(driver_.kill_vm(gone, fake_driver::vm_fate::vanished));
  auto r = make();
  EXPECT_EQ(r.run_once().value(), 2);
  EXPECT_EQ(store_.get_host(off).value().host.last_error, "VMStopped: guest powered off");
  EXPECT_EQ(store_.get_host(gone).value().host.last_error, "VMGone: the VM no longer exists");
  EXPECT_EQ(store_.port_count(), 0U);
}

TEST_F(ReconcilerTest, HostsWithRunningVmsAndHostsNotActiveAreLeftAlone) {
  const auto running = active_host();
  const auto failed = active_host();
  host_patch p;
  p.status = host_status::error;
  p.last_error = "Boot: no";
  ASSERT_TRUE(store_.transition(failed, {host_status::active}, p, clock_.now()));
  ASSERT_TRUE(driver_.kill_vm(failed, fake_driver::vm_fate::vanished));
  auto r = make();
  EXPECT_EQ(r.run_once().value(), 0);
  EXPECT_EQ(store_.get_host(running).value().host.status, host_status::active);
  EXPECT_EQ(store_.get_host(failed).value().host.last_error, "Boot: no");
}

TEST_F(ReconcilerTest, AHostThisProcessIsStillCreatingIsLeftToItsProvisioner) {
  const auto id = active_host();
  ASSERT_TRUE(driver_.kill_vm(id, fake_driver::vm_fate::vanished));
  auto r = make([&id](const std::string& h) { return h == id; });
  EXPECT_EQ(r.run_once().value(), 0);
  EXPECT_EQ(store_.get_host(id).value().host.status, host_status::active);
}

TEST_F(ReconcilerTest, TwoReconcilersSeeingOneDeathActOnceBetweenThem) {
  const auto id = active_host();
  ASSERT_TRUE(driver_.kill_vm(id, fake_driver::vm_fate::crashed));
  auto a = make();
  auto b = make();
  auto first = std::async(std::launch::async, [&] { return a.run_once(); });
  auto second = std::async(std::launch::async, [&] { return b.run_once(); });
  const auto x = first.get();
  const auto y = second.get();
  ASSERT_TRUE(x && y);
  EXPECT_EQ(*x + *y, 1);
  int died = 0;
  for (const auto& e : events_of(id)) {
    died += e.type == event_type::died ? 1 : 0;
  }
  EXPECT_EQ(died, 1);
}

TEST_F(ReconcilerTest, AnUnreachableDatabaseOrHypervisorChangesNothing) {
  const auto id = active_host();
  ASSERT_TRUE(driver_.kill_vm(id, fake_driver::vm_fate::crashed));
  auto r = make();
  driver_.set_failure(hypervisor::fake_phase::vm_states,
                      make_error(hypervisor::errc::unavailable, "libvirt is unreachable"));
  EXPECT_FALSE(r.run_once().has_value());
  driver_.set_failure(hypervisor::fake_phase::vm_states, std::nullopt);
  store_.down = true;
  EXPECT_FALSE(r.run_once().has_value());
  store_.down = false;
  EXPECT_EQ(store_.get_host(id).value().host.status, host_status::active);
}

TEST_F(ReconcilerTest, TheLoopFindsDriftAtStartUpAndFollowsEveryWakeUp) {
  const auto before = active_host();
  ASSERT_TRUE(driver_.kill_vm(before, fake_driver::vm_fate::vanished));  // before start-up
  const auto later = active_host();

  std::mutex mutex;
  std::condition_variable cv;
  std::vector<int> passes;
  auto r = make();
  r.on_pass([&](const result<int>& n) {
    {
      const std::lock_guard lock(mutex);
      passes.push_back(n ? *n : -1);
    }
    cv.notify_all();
  });
  r.start_loop();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return !passes.empty(); }));
    EXPECT_EQ(passes.front(), 1);
  }
  EXPECT_EQ(store_.get_host(before).value().host.status, host_status::error);

  // The interval is an hour: only the driver's wake-up can run the next pass.
  ASSERT_TRUE(driver_.kill_vm(later, fake_driver::vm_fate::powered_off));
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(
        lock, 10s, [&] { return std::find(passes.begin() + 1, passes.end(), 1) != passes.end(); }));
  }
  r.stop();
  EXPECT_EQ(store_.get_host(later).value().host.last_error, "VMStopped: guest powered off");
}

}  // namespace
}  // namespace litterbox::controlplane
