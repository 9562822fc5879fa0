#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/core/tenancy.hpp"
#include "tests/contract/store_backends.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <string>
#include <thread>
#include <vector>

// The tenant_store contract and the namespace rules of the host store (controlplane/core/
// tenancy.hpp, store.hpp): run against every implementation, so the in-memory fake behaves
// as pg_store does.

namespace litterbox::controlplane {
namespace {

using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));
const port_range k_ports{20000, 29999};

host_record make_host(timestamp created, std::string ns, namespace_quota quota = {}, int cpus = 1,
                      int memory_mib = 512) {
  auto r = contract::make_host(created);
  r.host.cpus = cpus;
  r.host.memory_mib = memory_mib;
  r.ns = std::move(ns);
  r.quota = quota;
  return r;
}

api_key_record make_key(timestamp at, std::string ns, std::string hash) {
  api_key_record k;
  k.id = new_uuid_v7(at);
  k.ns = std::move(ns);
  k.name = "ci";
  k.key_hash = std::move(hash);
  k.quota.max_hosts = 3;
  k.created_at = at;
  return k;
}

template <class Backend>
class tenant_contract : public ::testing::Test {
 protected:
  Backend backend_;
  store& hosts_ = backend_.store;
  tenant_store& tenants_ = backend_.store;
};

TYPED_TEST_SUITE(tenant_contract, contract::store_backends, contract::backend_names);

TYPED_TEST(tenant_contract, KeysRoundTripAreFoundByHashAndRevokedOnce) {
  auto& s = this->tenants_;
  const auto k = make_key(t0, "team-a", "hmac:aaaa");
  ASSERT_TRUE(s.insert_key(k));
  const auto found = s.find_key("hmac:aaaa");
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->id, k.id);
  EXPECT_EQ((*found)->ns, "team-a");
  EXPECT_EQ((*found)->name, "ci");
  EXPECT_EQ((*found)->quota, k.quota);
  EXPECT_EQ((*found)->created_at, t0);
  EXPECT_FALSE((*found)->revoked_at);
  EXPECT_FALSE(s.find_key("hmac:bbbb").value());
  EXPECT_FALSE(s.insert_key(make_key(t0, "team-b", "hmac:aaaa"))) << "hashes are unique";
  ASSERT_EQ(s.list_keys()->size(), 1U);
  EXPECT_TRUE(s.revoke_key(k.id, t0).value());
  EXPECT_FALSE(s.revoke_key(k.id, t0).value());
  EXPECT_FALSE(s.revoke_key("not-a-uuid", t0).value());
  EXPECT_FALSE(s.find_key("hmac:aaaa").value());
  EXPECT_TRUE(s.list_keys()->empty());
}

TYPED_TEST(tenant_contract, AuditEntriesKeepTheirOrderAndFilterByNamespaceAndCursor) {
  auto& s = this->tenants_;
  audit_entry e;
  e.at = t0;
  e.key_id = "admin:0123456789ab";
  e.action = "create_key";
  e.request_id = "r1";
  e.status = 201;
  const auto first = s.append_audit(e);
  e.key_id = new_uuid_v7(t0);
  e.ns = "team-a";
  e.action = "delete_host";
  e.host_id = new_uuid_v7(t0);
  e.request_id = "r2";
  e.status = 204;
  const auto second = s.append_audit(e);
  ASSERT_TRUE(first && second);
  EXPECT_LT(*first, *second);
  const auto all = s.list_audit({}).value();
  ASSERT_EQ(all.size(), 2U);
  EXPECT_EQ(all[0].action, "create_key");
  EXPECT_FALSE(all[0].ns);
  EXPECT_FALSE(all[0].host_id);
  EXPECT_EQ(all[1].ns, std::optional<std::string>("team-a"));
  EXPECT_EQ(all[1].host_id, e.host_id);
  EXPECT_EQ(all[1].at, t0);
  audit_query q;
  q.ns = "team-a";
  ASSERT_EQ(s.list_audit(q)->size(), 1U);
  q = {};
  q.after = *first;
  ASSERT_EQ(s.list_audit(q)->size(), 1U);
  q = {};
  q.limit = 1;
  ASSERT_EQ(s.list_audit(q)->size(), 1U);
}

TYPED_TEST(tenant_contract, HostsKeepTheirNamespaceAndListsAndEventsFilterByIt) {
  auto& s = this->hosts_;
  const auto a = make_host(t0, "team-a");
  const auto b = make_host(t0 + std::chrono::seconds(1), "team-b");
  ASSERT_TRUE(s.insert_host(a, std::nullopt, k_ports, t0));
  ASSERT_TRUE(s.insert_host(b, std::nullopt, k_ports, t0));
  EXPECT_EQ(s.get_host(a.host.id)->ns, "team-a");
  list_query q;
  q.ns = "team-b";
  const auto listed = s.list_hosts(q).value();
  ASSERT_EQ(listed.size(), 1U);
  EXPECT_EQ(listed[0].host.id, b.host.id);
  EXPECT_EQ(s.list_hosts({}).value().size(), 2U);
  event_query e;
  e.ns = "team-a";
  const auto events = s.list_events(e).value();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].host_id, a.host.id);
  EXPECT_EQ(events[0].ns, "team-a");
}

TYPED_TEST(tenant_contract, AQuotaCountsTheNamespacesLiveHostsAndRefusesWithoutKeepingAnything) {
  auto& s = this->hosts_;
  const namespace_quota q{2, 3, std::nullopt};
  ASSERT_TRUE(s.insert_host(make_host(t0, "team-a", q, 2), std::nullopt, k_ports, t0));
  // Another namespace's hosts and an admin's do not count.
  ASSERT_TRUE(s.insert_host(make_host(t0, "team-b", {}, 8), std::nullopt, k_ports, t0));
  const auto over_cpus = make_host(t0, "team-a", q, 2);
  auto refused = s.insert_host(over_cpus, std::nullopt, k_ports, t0);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::quota);
  EXPECT_EQ(refused.error().message, "quota exceeded: max_cpus=3");
  EXPECT_EQ(s.get_host(over_cpus.host.id).error().code, errc::not_found);
  const auto second = make_host(t0, "team-a", q, 1);
  ASSERT_TRUE(s.insert_host(second, std::nullopt, k_ports, t0));
  idempotency_claim key;
  key.ns = "team-a";
  key.key = "k";
  key.fingerprint = "f";
  key.expires_at = t0 + std::chrono::hours(1);
  auto third = s.insert_host(make_host(t0, "team-a", q, 0), key, k_ports, t0);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().message, "quota exceeded: max_hosts=2");
  // A host in error holds nothing: it no longer counts.
  host_patch failed;
  failed.status = host_status::error;
  ASSERT_TRUE(s.transition(second.host.id, {host_status::provisioning}, failed, t0));
  auto fits = s.insert_host(make_host(t0, "team-a", q, 1), key, k_ports, t0);
  ASSERT_TRUE(fits) << fits.error().message;
  EXPECT_TRUE(fits->created) << "the refused create did not keep the key";
}

TYPED_TEST(tenant_contract, ConcurrentInsertsNeverOvershootAQuota) {
  auto& s = this->hosts_;
  constexpr int k_writers = 16;
  const namespace_quota q{3, std::nullopt, std::nullopt};
  std::atomic<int> created = 0;
  std::atomic<int> refused = 0;
  std::atomic<int> other = 0;
  std::latch start(k_writers);
  std::vector<std::thread> writers;
  for (int w = 0; w < k_writers; ++w) {
    writers.emplace_back([&, w] {
      const auto h = make_host(t0 + std::chrono::milliseconds(w), "race", q);
      start.arrive_and_wait();
      auto r = s.insert_host(h, std::nullopt, k_ports, t0);
      if (r) {
        ++created;
      } else if (r.error().code == errc::quota) {
        ++refused;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : writers) {
    t.join();
  }
  EXPECT_EQ(created.load(), 3);
  EXPECT_EQ(refused.load(), k_writers - 3);
  EXPECT_EQ(other.load(), 0);
  list_query all;
  all.ns = "race";
  EXPECT_EQ(s.list_hosts(all)->size(), 3U);
}

}  // namespace
}  // namespace litterbox::controlplane
