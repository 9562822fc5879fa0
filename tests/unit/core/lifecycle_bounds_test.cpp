// Failure paths of the create lifecycle that must always end, and end rightly: unknown commit
// outcomes, stuck rows, recovery races, deadlines, bounded queues and shutdown.
#include "base/secret.hpp"
#include "base/time.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "controlplane/core/reaper.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <future>
#include <thread>

namespace litterbox::controlplane {
namespace {

using hypervisor::fake_phase;
using schema::host_status;
using namespace std::chrono_literals;

const timestamp k_start = timestamp(std::chrono::seconds(1'800'000'000));

class LifecycleBoundsTest : public ::testing::Test {
 protected:
  LifecycleBoundsTest() : clock_(k_start) {
    cfg_.default_image = "registry.test/base:1";
    cfg_.lease_default_ttl = std::chrono::hours(1);
    cfg_.ssh_port_min = 30000;
    cfg_.ssh_port_max = 30009;
    cfg_.provision_timeout = std::chrono::seconds(2);
    cfg_.provision_grace = std::chrono::seconds(2);
    cfg_.shutdown_drain = std::chrono::seconds(0);
    cfg_.idempotency_secret = "test-secret";
  }

  host_service& service(hypervisor::driver& d) {
    if (!service_) {
      service_ = std::make_unique<host_service>(cfg_, store_, d, clock_, "instance-1");
    }
    return *service_;
  }
  host_service& service() { return service(driver_); }

  result<create_result> create(std::string_view body,
                               std::optional<std::string> key = std::nullopt) {
    auto req = schema::parse_create_host_request(body);
    EXPECT_TRUE(req);
    return service_ ? service_->create(*req, key) : service().create(*req, key);
  }

  schema::host settled(const std::string& id) {
    std::promise<void> done;
    if (service_->notify_when_settled(id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    auto h = store_.get_host(id);
    EXPECT_TRUE(h);
    return h ? h->host : schema::host{};
  }

  /// Waits (bounded) until the worker has moved host `id` to `status`.
  bool reaches(const std::string& id, host_status status) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      if (auto h = store_.get_host(id); h && h->host.status == status) {
        return true;
      }
      std::this_thread::yield();
    }
    return false;
  }

  /// A row another process left in `status`, owned by `owner`, with its deadline at `deadline`.
  host_record stranded(host_status status, std::optional<std::string> owner,
                       std::optional<timestamp> deadline, int n = 1) {
    host_record rec;
    rec.host.id = "01900000-0000-7000-8000-00000000000" + std::to_string(n);
    rec.host.name = schema::host_name_for(rec.host.id);
    rec.host.status = status;
    rec.host.cpus = 1;
    rec.host.memory_mib = 512;
    rec.host.created_at = clock_.now();
    rec.host.updated_at = clock_.now();
    rec.owner_id = std::move(owner);
    rec.provision_deadline = deadline;
    EXPECT_TRUE(store_.insert_host(rec, std::nullopt, {cfg_.ssh_port_min, cfg_.ssh_port_max},
                                   clock_.now()));
    hypervisor::vm_spec vm;
    vm.host_id = rec.host.id;
    vm.name = rec.host.name;
    EXPECT_TRUE(driver_.create_vm(vm));
    return rec;
  }

  config cfg_;
  manual_clock clock_;
  testing::memory_store store_;
  hypervisor::fake_driver driver_;
  std::unique_ptr<host_service> service_;
};

TEST_F(LifecycleBoundsTest, ActivationWhoseCommitOutcomeIsLostKeepsTheVmAndIsActive) {
  // The activation commits, but the connection drops during COMMIT. Guessing "not applied"
  // and retrying the compare-and-set failed against our own write and destroyed the VM of an
  // active host; reading the row back shows the write landed.
  store_.lose_commit_to = host_status::active;
  auto a = create("{}");
  ASSERT_TRUE(a);
  const auto h = settled(a->host.id);
  EXPECT_EQ(h.status, host_status::active);
  EXPECT_EQ(driver_.live_vms(), std::set<std::string>{a->host.id});
}

TEST_F(LifecycleBoundsTest, EveryStepWhoseCommitOutcomeIsLostStillReachesActive) {
  for (auto step :
       {host_status::pulling_image, host_status::creating_vm, host_status::bootstrapping}) {
    store_.lose_commit_to = step;
    auto a = create("{}");
    ASSERT_TRUE(a);
    EXPECT_EQ(settled(a->host.id).status, host_status::active) << schema::to_string(step);
    EXPECT_EQ(driver_.live_vms().count(a->host.id), 1U) << schema::to_string(step);
  }
}

TEST_F(LifecycleBoundsTest, InsertWhoseCommitOutcomeIsLostIsReadBackAndProvisioned) {
  service();
  store_.lose_insert_commit = true;
  auto a = create("{}", "lost-insert");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_TRUE(a->created);
  EXPECT_EQ(settled(a->host.id).status, host_status::active);
  // A retry of the same request is a replay of that host, never a second one.
  auto b = create("{}", "lost-insert");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->created);
  EXPECT_EQ(b->host.id, a->host.id);
}

TEST_F(LifecycleBoundsTest, RowPastItsDeadlineIsFailedByMaintenanceEvenWithALiveOwner) {
  // The owner is alive (it beat just now) but its create never settled, e.g. the database
  // was away for longer than its retry window. Recovery used to skip it forever.
  ASSERT_TRUE(store_.heartbeat("live-owner", "h", 1, 10s, clock_.now()));
  const auto rec = stranded(host_status::creating_vm, "live-owner", clock_.now() + 10s);
  maintenance upkeep(cfg_, store_, driver_, clock_);
  EXPECT_EQ(upkeep.recover_interrupted().value(), 0);  // within deadline + grace: left alone
  clock_.advance(11s);
  ASSERT_TRUE(store_.heartbeat("live-owner", "h", 1, 10s, clock_.now()));
  EXPECT_EQ(upkeep.recover_interrupted().value(), 0);  // past the deadline, not the grace
  clock_.advance(2s);
  ASSERT_TRUE(store_.heartbeat("live-owner", "h", 1, 10s, clock_.now()));
  EXPECT_EQ(upkeep.recover_interrupted().value(), 1);
  const auto h = store_.get_host(rec.host.id);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->host.status, host_status::error);
  EXPECT_EQ(h->host.last_error.rfind("ProvisionTimeout: ", 0), 0U) << h->host.last_error;
  EXPECT_NE(h->host.last_error.find("creating_vm"), std::string::npos);
  EXPECT_FALSE(h->owner_id);
  EXPECT_TRUE(driver_.live_vms().empty());
  EXPECT_EQ(store_.port_count(), 0U);
}

TEST_F(LifecycleBoundsTest, StalenessIsJudgedByTheOwnersOwnHeartbeatInterval) {
  // The owner beats every 60 s; 40 s of silence is three of the recovering process's 10 s
  // intervals but less than one of the owner's: it is alive and keeps its create.
  cfg_.heartbeat_interval = 10s;
  ASSERT_TRUE(store_.heartbeat("slow-owner", "h", 1, 60s, clock_.now()));
  const auto rec = stranded(host_status::bootstrapping, "slow-owner", clock_.now() + 1h);
  maintenance upkeep(cfg_, store_, driver_, clock_);
  clock_.advance(40s);
  EXPECT_EQ(upkeep.recover_interrupted().value(), 0);
  EXPECT_EQ(driver_.live_vms().count(rec.host.id), 1U);
  clock_.advance(150s);  // 190 s: more than three of its intervals
  EXPECT_EQ(upkeep.recover_interrupted().value(), 1);
  EXPECT_EQ(store_.get_host(rec.host.id)->host.last_error.rfind("Interrupted: ", 0), 0U);
  EXPECT_TRUE(driver_.live_vms().empty());
}

TEST_F(LifecycleBoundsTest, RecoveryClaimsBeforeItDestroysSoAnOwnerThatFinishesFirstKeepsItsVm) {
  ASSERT_TRUE(store_.heartbeat("slow-owner", "h", 1, 10s, clock_.now()));
  const auto rec = stranded(host_status::bootstrapping, "slow-owner", clock_.now() + 1h);
  clock_.advance(31s);  // stale by its interval
  // The owner activates the host just as recovery runs.
  store_.before_claim = [&] {
    host_patch p;
    p.status = host_status::active;
    p.clear_owner = true;
    ASSERT_TRUE(store_.transition(rec.host.id, {host_status::bootstrapping}, p, clock_.now()));
  };
  maintenance upkeep(cfg_, store_, driver_, clock_);
  EXPECT_EQ(upkeep.recover_interrupted().value(), 0);
  EXPECT_EQ(store_.get_host(rec.host.id)->host.status, host_status::active);
  EXPECT_EQ(driver_.live_vms(), std::set<std::string>{rec.host.id});
}

TEST_F(LifecycleBoundsTest, DeadlineStartsAtAdmissionSoTimeInTheQueueCounts) {
  // One worker, busy for longer than PROVISION_TIMEOUT with a slow pull: the queued create
  // has used up its own budget waiting and fails as soon as it reaches a worker, without
  // pulling or making anything.
  cfg_.max_concurrent_provisions = 1;
  hypervisor::fake_options slow_pull;
  slow_pull.pull_delay = std::chrono::milliseconds(3000);
  hypervisor::fake_driver slow(slow_pull);
  service(slow);
  auto first = create("{}");
  ASSERT_TRUE(first);
  auto queued = create("{}");
  ASSERT_TRUE(queued);
  EXPECT_EQ(settled(first->host.id).status, host_status::error);
  const auto h = settled(queued->host.id);
  EXPECT_EQ(h.status, host_status::error);
  EXPECT_EQ(h.last_error.rfind("BootTimeout: provisioning did not finish within 2 s", 0), 0U)
      << h.last_error;
  EXPECT_EQ(slow.calls(fake_phase::prepare_image), 1);  // only the first pulled
  EXPECT_EQ(slow.calls(fake_phase::create_vm), 0);
  EXPECT_EQ(store_.port_count(), 0U);
}

TEST_F(LifecycleBoundsTest, AdmissionIsBoundedAndARefusedCreateKeepsNothing) {
  cfg_.max_concurrent_provisions = 1;
  cfg_.max_queued_provisions = 1;
  auto a = create(R"({"image": "registry.test/slow-boot:1"})");
  auto b = create(R"({"image": "registry.test/slow-boot:1"})", "second");
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  auto c = create("{}", "third");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::capacity);
  EXPECT_EQ(store_.list_hosts({})->size(), 2U);
  EXPECT_EQ(store_.key_count(), 1U);   // only b's
  EXPECT_EQ(store_.port_count(), 2U);  // a's and b's
  settled(a->host.id);
  settled(b->host.id);
  EXPECT_TRUE(create("{}", "third"));  // a place is free again
}

TEST_F(LifecycleBoundsTest, ShutdownFailsQueuedCreatesCleanlyAndInterruptsRunningOnes) {
  cfg_.max_concurrent_provisions = 1;
  auto running = create(R"({"image": "registry.test/slow-boot:1"})", "running");
  auto queued = create("{}", "queued");
  ASSERT_TRUE(running);
  ASSERT_TRUE(queued);
  ASSERT_TRUE(reaches(running->host.id, host_status::bootstrapping));
  std::promise<void> queued_settled;
  ASSERT_TRUE(service_->notify_when_settled(queued->host.id,
                                            [&queued_settled] { queued_settled.set_value(); }));
  service_->shutdown();
  EXPECT_EQ(queued_settled.get_future().wait_for(0s), std::future_status::ready);
  const auto q = store_.get_host(queued->host.id)->host;
  EXPECT_EQ(q.status, host_status::error);
  EXPECT_EQ(q.last_error.rfind("ShuttingDown: ", 0), 0U) << q.last_error;
  const auto r = store_.get_host(running->host.id)->host;
  EXPECT_EQ(r.status, host_status::error);
  EXPECT_EQ(r.last_error.rfind("Interrupted: ", 0), 0U) << r.last_error;
  EXPECT_TRUE(driver_.live_vms().empty());
  EXPECT_EQ(store_.key_count(), 0U);
  EXPECT_EQ(store_.port_count(), 0U);
  auto after = create("{}");
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, errc::unavailable);
  EXPECT_EQ(store_.list_hosts({})->size(), 2U);  // nothing inserted after shutdown began
}

TEST_F(LifecycleBoundsTest, AFailedReleaseKeepsThePortLeasedWhileQemuMayHoldIt) {
  driver_.set_failure(fake_phase::wait_ready,
                      make_error(hypervisor::errc::boot_failed, "guest crashed"));
  driver_.set_failure(fake_phase::destroy, make_error(hypervisor::errc::teardown_failed, "busy"));
  auto a = create("{}");
  ASSERT_TRUE(a);
  const auto h = settled(a->host.id);
  EXPECT_EQ(h.status, host_status::error);
  EXPECT_EQ(store_.port_count(), 1U);
  EXPECT_EQ(store_.key_count(), 0U);
}

TEST_F(LifecycleBoundsTest, ReaperWithZeroRetentionClaimsEachFailureOncePerPass) {
  cfg_.error_retention = 0s;
  auto a = create("{}");
  ASSERT_TRUE(a);
  ASSERT_EQ(settled(a->host.id).status, host_status::active);
  clock_.advance(2h);
  driver_.set_failure(fake_phase::destroy, make_error(hypervisor::errc::teardown_failed, "busy"));
  maintenance upkeep(cfg_, store_, driver_, clock_);
  null_observer observer;
  reaper r(cfg_, store_, *service_, upkeep, clock_, observer);
  // Before, the pass re-claimed its own failure (updated_at <= now - 0) forever.
  auto done = std::async(std::launch::async, [&] { return r.run_once(); });
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(done.get().failed, 1);
  clock_.advance(1s);
  EXPECT_EQ(r.run_once().failed, 1);  // the next pass tries again
}

TEST_F(LifecycleBoundsTest, DeadInstanceRowsArePruned) {
  ASSERT_TRUE(store_.heartbeat("long-gone", "h", 1, 10s, clock_.now()));
  service();
  EXPECT_EQ(store_.instance_count(), 2U);
  clock_.advance(2h);
  ASSERT_TRUE(service_->heartbeat());
  maintenance upkeep(cfg_, store_, driver_, clock_);
  EXPECT_EQ(upkeep.prune_instances().value(), 1);
  EXPECT_EQ(store_.instance_count(), 1U);
}

TEST_F(LifecycleBoundsTest, FingerprintIsKeyedAndOldUnkeyedOnesStillMatchOnReplay) {
  auto a = create(R"({"env": {"TOKEN": "hunter2"}})", "fp");
  ASSERT_TRUE(a);
  settled(a->host.id);
  // A key stored by an older version (plain SHA-256 of the canonical body) still replays.
  auto req = schema::parse_create_host_request(R"({"env": {"TOKEN": "hunter2"}})");
  idempotency_claim old;
  old.ns = "default";
  old.key = "old-fp";
  old.fingerprint = sha256_hex(schema::canonical_text(*req));
  old.expires_at = clock_.now() + 1h;
  store_.put_key(old, a->host.id);
  auto replay = create(R"({"env": {"TOKEN": "hunter2"}})", "old-fp");
  ASSERT_TRUE(replay);
  EXPECT_FALSE(replay->created);
  EXPECT_EQ(replay->host.id, a->host.id);
  auto other = create(R"({"env": {"TOKEN": "hunter3"}})", "old-fp");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, errc::idempotency_mismatch);
}

}  // namespace
}  // namespace litterbox::controlplane
