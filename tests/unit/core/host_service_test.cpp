#include "controlplane/core/host_service.hpp"

#include "base/time.hpp"
#include "controlplane/core/errc.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "hypervisor/ssh/keys.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <future>

namespace litterbox::controlplane {
namespace {

using hypervisor::fake_phase;
using schema::host_status;

const timestamp k_start = timestamp(std::chrono::seconds(1'800'000'000));

class HostServiceTest : public ::testing::Test {
 protected:
  HostServiceTest() : clock_(k_start) {
    cfg_.default_image = "registry.test/base:1";
    cfg_.lease_default_ttl = std::chrono::hours(1);
    cfg_.ssh_port_min = 30000;
    cfg_.ssh_port_max = 30001;
    cfg_.provision_timeout = std::chrono::seconds(2);
  }

  host_service& service() {
    if (!service_) {
      service_ = std::make_unique<host_service>(cfg_, store_, driver_, clock_, "instance-1");
    }
    return *service_;
  }

  result<create_result> create(std::string_view body,
                               std::optional<std::string> key = std::nullopt) {
    auto req = schema::parse_create_host_request(body);
    EXPECT_TRUE(req);
    return service().create(*req, key);
  }

  /// Blocks until host `id` stops provisioning in this process, then reads it back.
  schema::host settled(const std::string& id) {
    std::promise<void> done;
    if (service().notify_when_settled(id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    auto h = service().get(id);
    EXPECT_TRUE(h);
    return h ? *h : schema::host{};
  }

  config cfg_;
  manual_clock clock_;
  testing::memory_store store_;
  hypervisor::fake_driver driver_;
  std::unique_ptr<host_service> service_;
};

caller scoped(std::string ns, namespace_quota quota = {}) {
  caller c;
  c.admin = false;
  c.key_id = "key-" + ns;
  c.ns = std::move(ns);
  c.quota = quota;
  return c;
}

TEST_F(HostServiceTest, AScopedCallersHostIsItsNamespacesAndAnotherNamespaceFindsNoSuchHost) {
  cfg_.ssh_port_max = 30009;
  const auto a = scoped("team-a");
  const auto b = scoped("team-b");
  auto req = schema::parse_create_host_request("{}");
  ASSERT_TRUE(req);
  auto mine = service().create(*req, std::nullopt, a);
  ASSERT_TRUE(mine) << mine.error().message;
  const auto id = mine->host.id;
  ASSERT_EQ(settled(id).status, host_status::active);
  EXPECT_EQ(store_.get_host(id)->ns, "team-a");
  EXPECT_TRUE(service().get(id, a));
  EXPECT_TRUE(service().get(id)) << "an admin sees every namespace";
  for (const auto& e :
       {service().get(id, b).error(), service().renew(id, schema::renew_request{}, b).error(),
        service().remove(id, b).error(), service().console(id, 100, b).error()}) {
    EXPECT_EQ(e.code, errc::not_found);
    EXPECT_EQ(e.message, "host not found") << "existence is not revealed";
  }
  EXPECT_EQ(service().get(id)->status, host_status::active) << "b changed nothing";
  auto theirs = service().create(*req, std::nullopt, b);
  ASSERT_TRUE(theirs);
  settled(theirs->host.id);
  const auto listed_a = service().list({}, a).value().hosts;
  ASSERT_EQ(listed_a.size(), 1U);
  EXPECT_EQ(listed_a[0].id, id);
  EXPECT_EQ(service().list({}).value().hosts.size(), 2U);
  EXPECT_TRUE(service().remove(id, a));
}

TEST_F(HostServiceTest, AScopedCreateOverItsQuotaIsRefusedAndKeepsNothing) {
  cfg_.ssh_port_max = 30009;
  const auto a = scoped("team-a", namespace_quota{2, std::nullopt, 2048});
  auto req = schema::parse_create_host_request("{}");
  ASSERT_TRUE(req);
  ASSERT_TRUE(service().create(*req, std::nullopt, a));
  const auto rows_before = store_.port_count();
  auto over_memory = schema::parse_create_host_request(R"({"memory_mib": 2048})");
  auto refused = service().create(*over_memory, std::string("k1"), a);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::quota);
  EXPECT_EQ(refused.error().message, "quota exceeded: max_memory_mib=2048");
  EXPECT_EQ(store_.port_count(), rows_before);
  EXPECT_EQ(store_.key_count(), 0U);
  ASSERT_TRUE(service().create(*req, std::nullopt, a));
  auto third = service().create(*req, std::nullopt, a);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().message, "quota exceeded: max_hosts=2");
  // Admins have no quota; nor does another namespace share this one's.
  EXPECT_TRUE(service().create(*req, std::nullopt));
  EXPECT_TRUE(service().create(*req, std::nullopt, scoped("team-b", namespace_quota{1, {}, {}})));
}

TEST_F(HostServiceTest, OneIdempotencyKeyInTwoNamespacesIsTwoHosts) {
  auto req = schema::parse_create_host_request("{}");
  ASSERT_TRUE(req);
  auto a = service().create(*req, std::string("same"), scoped("team-a"));
  auto b = service().create(*req, std::string("same"), scoped("team-b"));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->created && b->created);
  EXPECT_NE(a->host.id, b->host.id);
  auto again = service().create(*req, std::string("same"), scoped("team-a"));
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->host.id, a->host.id);
}

TEST_F(HostServiceTest, CreateReachesActiveWithPinnedKnownHostsAndLeaseFromActivation) {
  auto c = create("{}");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->created);
  EXPECT_EQ(c->host.status, host_status::provisioning);
  EXPECT_EQ(c->host.name, schema::host_name_for(c->host.id));
  clock_.advance(std::chrono::minutes(5));  // activation happens "later"
  const auto h = settled(c->host.id);
  ASSERT_EQ(h.status, host_status::active) << h.last_error;
  EXPECT_EQ(h.ssh_host, "127.0.0.1");
  EXPECT_EQ(h.ssh_port, 30000);
  EXPECT_EQ(h.known_hosts.rfind("[127.0.0.1]:30000 ssh-ed25519 AAAA", 0), 0U) << h.known_hosts;
  ASSERT_TRUE(h.image_digest);
  EXPECT_EQ(h.image_digest->rfind("sha256:", 0), 0U);
  ASSERT_TRUE(h.activated_at && h.expires_at);
  EXPECT_EQ(*h.expires_at, *h.activated_at + std::chrono::hours(1));
  EXPECT_FALSE(h.private_key);
  EXPECT_EQ(driver_.live_vms().count(h.id), 1U);
}

TEST_F(HostServiceTest, MintedPrivateKeyIsReturnedOnlyToTheCreatingCall) {
  auto c = create("{}", "key-1");
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->host.private_key);
  EXPECT_NE(c->host.private_key->find("BEGIN OPENSSH PRIVATE KEY"), std::string::npos);
  settled(c->host.id);
  auto replay = create("{}", "key-1");
  ASSERT_TRUE(replay);
  EXPECT_FALSE(replay->created);
  EXPECT_EQ(replay->host.id, c->host.id);
  EXPECT_FALSE(replay->host.private_key);
  EXPECT_FALSE(service().get(c->host.id)->private_key);
}

TEST_F(HostServiceTest, CallerSuppliedKeysMeanNoMintedKey) {
  auto pair = hypervisor::generate_ed25519("me");
  ASSERT_TRUE(pair);
  auto c = create(R"({"ssh_authorized_keys": [")" + pair->public_line + R"("]})");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->host.private_key);
  settled(c->host.id);
}

TEST_F(HostServiceTest, ReplayedKeyMakesNoSecondVm) {
  auto a = create(R"({"cpus": 2})", "k");
  ASSERT_TRUE(a);
  settled(a->host.id);
  auto b = create(R"({"cpus": 2})", "k");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host.id, a->host.id);
  EXPECT_EQ(driver_.calls(fake_phase::create_vm), 1);
}

TEST_F(HostServiceTest, ReusedKeyWithADifferentBodyIsRejected) {
  auto a = create(R"({"cpus": 2})", "k");
  ASSERT_TRUE(a);
  auto b = create(R"({"cpus": 1})", "k");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, errc::idempotency_mismatch);
  ASSERT_EQ(b.error().issues.size(), 1U);
  EXPECT_EQ(b.error().issues[0].msg, "Idempotency-Key was already used with a different request");
  settled(a->host.id);
}

TEST_F(HostServiceTest, MalformedIdempotencyKeyIsAHeaderValidationError) {
  auto r = create("{}", "has space");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::validation);
  EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"header", "Idempotency-Key"}));
}

TEST_F(HostServiceTest, FailedPullRecordsKindReleasesEverythingAndFreesTheKey) {
  auto a = create(R"({"image": "registry.test/missing:1"})", "k");
  ASSERT_TRUE(a);
  const auto h = settled(a->host.id);
  EXPECT_EQ(h.status, host_status::error);
  EXPECT_EQ(h.last_error.rfind("ImageNotFound: ", 0), 0U) << h.last_error;
  EXPECT_EQ(store_.key_count(), 0U);
  EXPECT_EQ(store_.port_count(), 0U);
  // The key is free again: the same request provisions a new host.
  auto b = create(R"({"image": "registry.test/missing:1"})", "k");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->created);
  EXPECT_NE(b->host.id, a->host.id);
  settled(b->host.id);
}

TEST_F(HostServiceTest, VmThatNeverBootsTimesOutAndIsReleased) {
  auto a = create(R"({"image": "registry.test/fail-boot:1"})");
  ASSERT_TRUE(a);
  const auto h = settled(a->host.id);
  EXPECT_EQ(h.status, host_status::error);
  EXPECT_EQ(h.last_error.rfind("BootTimeout: ", 0), 0U) << h.last_error;
  EXPECT_NE(h.last_error.find("console"), std::string::npos);
  EXPECT_TRUE(driver_.live_vms().empty());
  EXPECT_EQ(store_.port_count(), 0U);
}

TEST_F(HostServiceTest, NoFreePortIsACapacityErrorThatKeepsNothing) {
  cfg_.ssh_port_max = cfg_.ssh_port_min;  // one port
  auto a = create("{}");
  ASSERT_TRUE(a);
  ASSERT_EQ(settled(a->host.id).status, host_status::active);
  auto b = create("{}", "retry-me");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, errc::capacity);
  EXPECT_EQ(service().list({})->hosts.size(), 1U);
  EXPECT_EQ(store_.key_count(), 0U);  // the key is free for the retry
  ASSERT_TRUE(service().remove(a->host.id));
  auto retried = create("{}", "retry-me");
  ASSERT_TRUE(retried);
  EXPECT_EQ(settled(retried->host.id).status, host_status::active);
}

TEST_F(HostServiceTest, APortBoundBySomethingElseIsSwappedForAFreeOneAndTheHostServesOnIt) {
  cfg_.ssh_port_max = 30003;
  driver_.set_busy_ports({30000, 30001, 30002});  // only 30003 can be bound on this node
  auto a = create("{}");
  ASSERT_TRUE(a) << a.error().message;
  const auto h = settled(a->host.id);
  ASSERT_EQ(h.status, host_status::active) << h.last_error;
  EXPECT_EQ(h.ssh_port, 30003);
  EXPECT_EQ(h.known_hosts.rfind("[127.0.0.1]:30003 ", 0), 0U) << h.known_hosts;
  EXPECT_EQ(driver_.vm(a->host.id)->ssh_port, 30003);
  EXPECT_EQ(store_.port_count(), 1U) << "the busy ports went back to the range";
}

TEST_F(HostServiceTest, WhenEveryPortTriedIsBoundTheCreateFailsWithPortBusyAndKeepsNothing) {
  cfg_.ssh_port_max = 30009;
  driver_.set_busy_ports({30000, 30001, 30002, 30003, 30004, 30005, 30006, 30007, 30008, 30009});
  auto a = create("{}", "k");
  ASSERT_TRUE(a);
  const auto h = settled(a->host.id);
  EXPECT_EQ(h.status, host_status::error);
  EXPECT_EQ(h.last_error.rfind("PortBusy: ", 0), 0U) << h.last_error;
  EXPECT_EQ(driver_.calls(fake_phase::create_vm), 4) << "a bounded number of ports is tried";
  EXPECT_TRUE(driver_.live_vms().empty());
  EXPECT_EQ(store_.port_count(), 0U);
  EXPECT_EQ(store_.key_count(), 0U);
}

TEST_F(HostServiceTest, DeleteWhileProvisioningIsRefusedWithHostState) {
  hypervisor::fake_options slow_boot;
  slow_boot.boot_delay = std::chrono::milliseconds(500);
  hypervisor::fake_driver slow(slow_boot);
  host_service svc(cfg_, store_, slow, clock_, "instance-2");
  auto req = schema::parse_create_host_request("{}");
  auto a = svc.create(*req, std::nullopt);
  ASSERT_TRUE(a);
  auto d = svc.remove(a->host.id);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::host_state);
  std::promise<void> done;
  if (svc.notify_when_settled(a->host.id, [&done] { done.set_value(); })) {
    done.get_future().wait();
  }
  EXPECT_TRUE(svc.remove(a->host.id));
}

TEST_F(HostServiceTest, DeleteTearsDownTheVmAndRemovesTheRow) {
  auto a = create("{}");
  ASSERT_TRUE(a);
  settled(a->host.id);
  ASSERT_TRUE(service().remove(a->host.id));
  EXPECT_TRUE(driver_.live_vms().empty());
  auto gone = service().get(a->host.id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  auto again = service().remove(a->host.id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::not_found);
}

TEST_F(HostServiceTest, FailedTeardownKeepsTheRowInDeletingAndARetrySucceeds) {
  auto a = create("{}");
  ASSERT_TRUE(a);
  settled(a->host.id);
  driver_.set_failure(fake_phase::destroy,
                      make_error(hypervisor::errc::teardown_failed, "disk busy"));
  auto d = service().remove(a->host.id);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::teardown_failed);
  EXPECT_EQ(service().get(a->host.id)->status, host_status::deleting);
  driver_.set_failure(fake_phase::destroy, std::nullopt);
  EXPECT_TRUE(service().remove(a->host.id));
}

TEST_F(HostServiceTest, RenewDefaultsToTheLeaseTtlAndRefusesThePast) {
  auto a = create(R"({"expires_at": null})");
  ASSERT_TRUE(a);
  EXPECT_FALSE(settled(a->host.id).expires_at);
  auto r = service().renew(a->host.id, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->expires_at, clock_.now() + std::chrono::hours(1));
  auto past = service().renew(a->host.id, {clock_.now() - std::chrono::seconds(1)});
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, errc::validation);
}

TEST_F(HostServiceTest, RenewOfAFailedHostIsAStateConflict) {
  auto a = create(R"({"image": "registry.test/missing:1"})");
  ASSERT_TRUE(a);
  settled(a->host.id);
  auto r = service().renew(a->host.id, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::host_state);
}

TEST_F(HostServiceTest, MalformedIdsAreValidationErrorsOnThePath) {
  auto r = service().get("not-a-uuid");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::validation);
  EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"path", "host_id"}));
}

TEST_F(HostServiceTest, ListPagesNewestFirstWithACursor) {
  cfg_.ssh_port_max = 30010;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    clock_.advance(std::chrono::milliseconds(2));  // distinct UUIDv7 timestamps
    auto c = create("{}");
    ASSERT_TRUE(c);
    settled(c->host.id);
    ids.push_back(c->host.id);
  }
  auto first = service().list({{}, "2", std::nullopt});
  ASSERT_TRUE(first);
  ASSERT_EQ(first->hosts.size(), 2U);
  EXPECT_EQ(first->hosts[0].id, ids[2]);
  ASSERT_TRUE(first->next_after);
  auto second = service().list({{}, "2", first->next_after});
  ASSERT_TRUE(second);
  ASSERT_EQ(second->hosts.size(), 1U);
  EXPECT_EQ(second->hosts[0].id, ids[0]);
  EXPECT_FALSE(second->next_after);
  auto bad = service().list({{"running"}, "0", std::string("x")});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().issues.size(), 3U);
}

TEST_F(HostServiceTest, DatabaseOutageIsReportedAsUnavailable) {
  service();
  store_.down = true;
  auto c = create("{}");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::unavailable);
  store_.down = false;
  EXPECT_TRUE(create("{}"));
}

}  // namespace
}  // namespace litterbox::controlplane
