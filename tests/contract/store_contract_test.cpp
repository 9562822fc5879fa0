#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "tests/support/memory_store.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

// The store contract (controlplane/core/store.hpp), run against every implementation: the
// in-memory fake that unit tests use must behave as pg_store does.

namespace litterbox::controlplane {
namespace {

using namespace std::chrono_literals;
using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));
const port_range k_ports{20000, 29999};

host_record make_host(timestamp created, host_status status = host_status::provisioning) {
  host_record r;
  auto& h = r.host;
  h.id = new_uuid_v7(created);
  h.name = schema::host_name_for(h.id);
  h.status = status;
  h.provider = "libvirt";
  h.image = "registry.test/debian:12";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = created;
  h.updated_at = created;
  return r;
}

idempotency_claim make_claim(std::string key, std::string fingerprint, timestamp expires) {
  idempotency_claim c;
  c.ns = "default";
  c.key = std::move(key);
  c.fingerprint = std::move(fingerprint);
  c.expires_at = expires;
  return c;
}

struct memory_backend {
  static constexpr const char* name = "memory";
  testing::memory_store store;
};

struct pg_backend {
  static constexpr const char* name = "pg";
  test::test_database db;
  pg::pg_store store{db.url(), 4};
};

template <class Backend>
class store_contract : public ::testing::Test {
 protected:
  Backend backend_;
  store& store_ = backend_.store;

  host_record insert(const host_record& r, port_range ports = k_ports) {
    auto out = store_.insert_host(r, std::nullopt, ports, r.host.created_at);
    EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
    return out ? out.value().existing : host_record{};
  }

  int insert_with_port(const host_record& r, port_range ports) {
    auto out = store_.insert_host(r, std::nullopt, ports, r.host.created_at);
    EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
    return out ? out.value().port : 0;
  }

  void release_port(const std::string& id) {
    host_patch p;
    p.release_port = true;
    const auto h = store_.get_host(id);
    ASSERT_TRUE(h.has_value());
    ASSERT_TRUE(store_.transition(id, {h.value().host.status}, p, t0));
  }
};

struct backend_names {
  template <class T>
  static std::string GetName(int /*index*/) {
    return T::name;
  }
};

using backends = ::testing::Types<memory_backend, pg_backend>;
TYPED_TEST_SUITE(store_contract, backends, backend_names);

// Inserts and reads.

TYPED_TEST(store_contract, InsertThenGetReturnsEveryColumnUnchanged) {
  auto r = make_host(t0);
  r.host.image_digest = "sha256:abc";
  r.host.instance_type = "small";
  r.host.disk_gb = 10;
  r.host.ssh_host = "127.0.0.1";
  r.host.ssh_port = 2222;
  r.host.internal_ssh_host = "10.0.2.15";
  r.host.known_hosts = "[127.0.0.1]:2222 ssh-ed25519 AAAA";
  r.host.last_error = "";
  r.host.activated_at = t0 + 1s;
  r.host.expires_at = t0 + 24h;
  r.lease_seconds = 3600;
  r.provision_deadline = t0 + 10min;
  ASSERT_TRUE(this->store_.heartbeat("0190c0de-0000-7000-8000-000000000001", "node", 42, 10s, t0));
  r.owner_id = "0190c0de-0000-7000-8000-000000000001";

  const auto inserted = this->store_.insert_host(r, std::nullopt, k_ports, t0);
  ASSERT_TRUE(inserted.has_value());
  EXPECT_TRUE(inserted.value().created);
  EXPECT_EQ(inserted.value().existing.host, r.host);

  const auto got = this->store_.get_host(r.host.id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value().host, r.host);
  EXPECT_EQ(got.value().lease_seconds, r.lease_seconds);
  EXPECT_EQ(got.value().owner_id, r.owner_id);
  EXPECT_EQ(got.value().provision_deadline, r.provision_deadline);
}

TYPED_TEST(store_contract, OptionalColumnsRoundTripAsNull) {
  const auto r = make_host(t0);
  this->insert(r);
  const auto got = this->store_.get_host(r.host.id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value().host, r.host);
  EXPECT_FALSE(got.value().host.image_digest.has_value());
  EXPECT_FALSE(got.value().host.expires_at.has_value());
  EXPECT_FALSE(got.value().lease_seconds.has_value());
  EXPECT_FALSE(got.value().owner_id.has_value());
  EXPECT_FALSE(got.value().provision_deadline.has_value());
}

TYPED_TEST(store_contract, TimestampsRoundTripExactToTheMicrosecond) {
  const std::vector<timestamp> samples = {
      timestamp(std::chrono::microseconds(1)),
      timestamp(std::chrono::microseconds(1'700'000'000'000'001)),
      timestamp(std::chrono::microseconds(1'700'000'000'999'999)),
      timestamp(std::chrono::microseconds(1'799'999'999'500'000)),
      timestamp(std::chrono::microseconds(4'102'444'799'999'999)),  // 2099-12-31T23:59:59.999999Z
      t0,
  };
  for (const auto t : samples) {
    auto r = make_host(t0);
    r.host.created_at = t;
    r.host.updated_at = t + 1us;
    r.host.activated_at = t + 2us;
    r.host.expires_at = t + 3us;
    r.provision_deadline = t + 4us;
    this->insert(r);
    const auto got = this->store_.get_host(r.host.id);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got.value().host.created_at, t);
    EXPECT_EQ(got.value().host.updated_at, t + 1us);
    EXPECT_EQ(got.value().host.activated_at, t + 2us);
    EXPECT_EQ(got.value().host.expires_at, t + 3us);
    EXPECT_EQ(got.value().provision_deadline, t + 4us);
  }
}

TYPED_TEST(store_contract, GetUnknownOrMalformedIdIsNotFound) {
  const auto unknown = this->store_.get_host(new_uuid_v7(t0));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, errc::not_found);
  const auto malformed = this->store_.get_host("not-a-uuid'; DROP TABLE hosts; --");
  ASSERT_FALSE(malformed.has_value());
  EXPECT_EQ(malformed.error().code, errc::not_found);
}

TYPED_TEST(store_contract, IdsAreUuidsWhateverTheirLetterCase) {
  const auto r = this->insert(make_host(t0, host_status::active));
  std::string upper = r.host.id;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  const auto got = this->store_.get_host(upper);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value().host.id, r.host.id);
  const auto renewed = this->store_.renew(upper, t0 + 1h, t0);
  ASSERT_TRUE(renewed.has_value());
  host_patch p;
  p.last_error = "x";
  ASSERT_TRUE(this->store_.transition(upper, {host_status::active}, p, t0));
  ASSERT_TRUE(this->store_.remove_host(upper));
  EXPECT_EQ(this->store_.get_host(r.host.id).error().code, errc::not_found);
}

TYPED_TEST(store_contract, InsertingAnExistingIdFailsAndKeepsTheFirstRow) {
  const auto first = this->insert(make_host(t0, host_status::active), {2200, 2201});
  auto again = first;
  again.host.status = host_status::error;
  again.host.image = "registry.test/other:1";
  const auto out = this->store_.insert_host(again, std::nullopt, {2200, 2201}, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::internal);
  EXPECT_EQ(this->store_.get_host(first.host.id).value().host, first.host);
  // The failed insert leased nothing: one port of the two is still free.
  EXPECT_TRUE(this->store_.insert_host(make_host(t0), std::nullopt, {2200, 2201}, t0));
}

TYPED_TEST(store_contract, InsertingAMalformedIdIsAnInternalError) {
  auto r = make_host(t0);
  r.host.id = "not-a-uuid";
  const auto out = this->store_.insert_host(r, std::nullopt, k_ports, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::internal);
  EXPECT_TRUE(this->store_.all_host_ids().value().empty());
}

// Listing.

TYPED_TEST(store_contract, ListIsNewestFirstAndFiltersByStatus) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    const auto status = i % 2 == 0 ? host_status::active : host_status::error;
    ids.push_back(this->insert(make_host(t0 + std::chrono::milliseconds(i), status)).host.id);
  }
  const auto all = this->store_.list_hosts({});
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all.value().size(), 5U);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(all.value()[i].host.id, ids[4 - i]);
  }
  list_query q;
  q.statuses = {host_status::error};
  const auto errors = this->store_.list_hosts(q);
  ASSERT_TRUE(errors.has_value());
  ASSERT_EQ(errors.value().size(), 2U);
  EXPECT_EQ(errors.value()[0].host.id, ids[3]);
  EXPECT_EQ(errors.value()[1].host.id, ids[1]);
  q.statuses = {host_status::error, host_status::active};
  const auto both = this->store_.list_hosts(q);
  ASSERT_TRUE(both.has_value());
  EXPECT_EQ(both.value().size(), 5U);
}

TYPED_TEST(store_contract, ListPagesWithLimitAndAfterCursor) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(this->insert(make_host(t0 + std::chrono::milliseconds(i))).host.id);
  }
  list_query q;
  q.limit = 2;
  const auto page1 = this->store_.list_hosts(q);
  ASSERT_TRUE(page1.has_value());
  ASSERT_EQ(page1.value().size(), 2U);
  EXPECT_EQ(page1.value()[0].host.id, ids[4]);
  EXPECT_EQ(page1.value()[1].host.id, ids[3]);
  q.after = page1.value().back().host.id;
  const auto page2 = this->store_.list_hosts(q);
  ASSERT_TRUE(page2.has_value());
  ASSERT_EQ(page2.value().size(), 2U);
  EXPECT_EQ(page2.value()[0].host.id, ids[2]);
  EXPECT_EQ(page2.value()[1].host.id, ids[1]);
  q.after = page2.value().back().host.id;
  const auto page3 = this->store_.list_hosts(q);
  ASSERT_TRUE(page3.has_value());
  ASSERT_EQ(page3.value().size(), 1U);
  EXPECT_EQ(page3.value()[0].host.id, ids[0]);
  q.after = ids[0];
  EXPECT_TRUE(this->store_.list_hosts(q).value().empty());
}

TYPED_TEST(store_contract, ListWithAMalformedCursorIsAValidationErrorNamingIt) {
  this->insert(make_host(t0));
  list_query q;
  q.after = "garbage";
  const auto bad = this->store_.list_hosts(q);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, errc::validation);
  ASSERT_EQ(bad.error().issues.size(), 1U);
  EXPECT_EQ(bad.error().issues[0].loc, (std::vector<std::string>{"query", "after"}));
}

TYPED_TEST(store_contract, ListCursorIsComparedAsAUuidWhateverItsLetterCase) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(this->insert(make_host(t0 + std::chrono::milliseconds(i))).host.id);
  }
  std::string upper = ids[2];
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  list_query q;
  q.after = upper;
  const auto page = this->store_.list_hosts(q);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page.value().size(), 2U);
  EXPECT_EQ(page.value()[0].host.id, ids[1]);
}

TYPED_TEST(store_contract, AllHostIdsListsEveryRowInIdOrder) {
  const auto a = this->insert(make_host(t0, host_status::deleting));
  const auto b = this->insert(make_host(t0 + 1ms, host_status::active));
  const auto ids = this->store_.all_host_ids();
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(ids.value(), (std::vector<std::string>{a.host.id, b.host.id}));
}

TYPED_TEST(store_contract, CountByStatusReportsEveryStatusEvenWhenEmpty) {
  const auto empty = this->store_.count_by_status();
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty.value().size(), 7U);
  for (const auto& [status, n] : empty.value()) {
    EXPECT_EQ(n, 0) << schema::to_string(status);
  }
  this->insert(make_host(t0, host_status::active));
  this->insert(make_host(t0, host_status::active));
  this->insert(make_host(t0, host_status::error));
  const auto counts = this->store_.count_by_status();
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ(counts.value().size(), 7U);
  EXPECT_EQ(counts.value().at(host_status::active), 2);
  EXPECT_EQ(counts.value().at(host_status::error), 1);
  EXPECT_EQ(counts.value().at(host_status::provisioning), 0);
}

TYPED_TEST(store_contract, ImageDigestsInUseListsEachReferencedDigestOnce) {
  const auto a = this->insert(make_host(t0));
  const auto b = this->insert(make_host(t0));
  const auto c = this->insert(make_host(t0, host_status::error));
  this->insert(make_host(t0));  // no digest yet
  host_patch p;
  p.image_digest = "sha256:aa";
  ASSERT_TRUE(this->store_.transition(a.host.id, {host_status::provisioning}, p, t0));
  ASSERT_TRUE(this->store_.transition(b.host.id, {host_status::provisioning}, p, t0));
  p.image_digest = "sha256:bb";
  ASSERT_TRUE(this->store_.transition(c.host.id, {host_status::error}, p, t0));
  auto digests = this->store_.image_digests_in_use().value();
  std::sort(digests.begin(), digests.end());
  EXPECT_EQ(digests, (std::vector<std::string>{"sha256:aa", "sha256:bb"}));
}

TYPED_TEST(store_contract, PingSucceedsWhileTheStoreIsUp) {
  EXPECT_TRUE(this->store_.ping());
}

// Idempotency keys.

TYPED_TEST(store_contract, IdempotentReplayReturnsTheOriginalHostAndInsertsNothing) {
  const auto first = make_host(t0);
  const auto claim = make_claim("key-1", "fp-a", t0 + 24h);
  const auto a = this->store_.insert_host(first, claim, k_ports, t0);
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a.value().created);

  const auto second = make_host(t0 + 1s);
  const auto b = this->store_.insert_host(second, claim, k_ports, t0 + 1s);
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b.value().created);
  EXPECT_TRUE(b.value().fingerprint_matches);
  EXPECT_EQ(b.value().existing.host.id, first.host.id);
  EXPECT_EQ(this->store_.get_host(second.host.id).error().code, errc::not_found);
  EXPECT_EQ(this->store_.all_host_ids().value().size(), 1U);
}

TYPED_TEST(store_contract, IdempotencyKeyWithAnotherBodyReportsFingerprintMismatch) {
  const auto first = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(first, make_claim("key-1", "fp-a", t0 + 24h), k_ports, t0));
  const auto b =
      this->store_.insert_host(make_host(t0), make_claim("key-1", "fp-b", t0 + 24h), k_ports, t0);
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b.value().created);
  EXPECT_FALSE(b.value().fingerprint_matches);
  EXPECT_EQ(b.value().existing.host.id, first.host.id);
}

TYPED_TEST(store_contract, StoredLegacyFingerprintMatchesOnlyTheLegacyFingerprintGiven) {
  // A key stored by an older version holds the unkeyed hash.
  const auto first = make_host(t0);
  ASSERT_TRUE(
      this->store_.insert_host(first, make_claim("key-1", "unkeyed", t0 + 24h), k_ports, t0));
  auto replay = make_claim("key-1", "keyed", t0 + 24h);
  replay.legacy_fingerprint = "unkeyed";
  const auto same = this->store_.insert_host(make_host(t0), replay, k_ports, t0);
  ASSERT_TRUE(same.has_value());
  EXPECT_FALSE(same.value().created);
  EXPECT_TRUE(same.value().fingerprint_matches);
  EXPECT_EQ(same.value().existing.host.id, first.host.id);

  replay.legacy_fingerprint = "unkeyed-of-another-body";
  const auto other = this->store_.insert_host(make_host(t0), replay, k_ports, t0);
  ASSERT_TRUE(other.has_value());
  EXPECT_FALSE(other.value().created);
  EXPECT_FALSE(other.value().fingerprint_matches);
}

TYPED_TEST(store_contract, IdempotencyKeysAreScopedByNamespace) {
  ASSERT_TRUE(
      this->store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), k_ports, t0));
  auto other = make_claim("key-1", "fp", t0 + 1h);
  other.ns = "other";
  const auto b = this->store_.insert_host(make_host(t0), other, k_ports, t0);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b.value().created);
}

TYPED_TEST(store_contract, ExpiredIdempotencyKeyIsReplaced) {
  const auto first = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(first, make_claim("key-1", "fp-a", t0 + 1h), k_ports, t0));
  const auto later = t0 + 2h;
  const auto second = make_host(later);
  const auto b =
      this->store_.insert_host(second, make_claim("key-1", "fp-b", later + 1h), k_ports, later);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b.value().created);
  EXPECT_EQ(b.value().existing.host.id, second.host.id);
  // The key now names the new host.
  const auto c = this->store_.insert_host(make_host(later), make_claim("key-1", "fp-b", later + 1h),
                                          k_ports, later + 1s);
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c.value().created);
  EXPECT_EQ(c.value().existing.host.id, second.host.id);
}

TYPED_TEST(store_contract, IdempotencyKeyExpiresAtItsExpiryInstant) {
  const auto first = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(first, make_claim("key-1", "fp", t0 + 1h), k_ports, t0));
  const auto just_before = this->store_.insert_host(
      make_host(t0), make_claim("key-1", "fp", t0 + 2h), k_ports, t0 + 1h - 1us);
  ASSERT_TRUE(just_before.has_value());
  EXPECT_FALSE(just_before.value().created);
  const auto at =
      this->store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 2h), k_ports, t0 + 1h);
  ASSERT_TRUE(at.has_value());
  EXPECT_TRUE(at.value().created);
}

// Ports.

TYPED_TEST(store_contract, InsertLeasesAPortInTheSameTransactionAndKeepsNothingWhenNoneIsFree) {
  const port_range one{40000, 40000};
  const auto a = this->store_.insert_host(make_host(t0), make_claim("a", "fp", t0 + 1h), one, t0);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a.value().port, 40000);
  const auto b = this->store_.insert_host(make_host(t0), make_claim("b", "fp", t0 + 1h), one, t0);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, errc::capacity);
  EXPECT_EQ(this->store_.list_hosts({}).value().size(), 1U);
  // Key "b" was rolled back with the row: once the port is free it creates afresh.
  ASSERT_TRUE(this->store_.remove_host(a.value().existing.host.id));
  const auto c = this->store_.insert_host(make_host(t0), make_claim("b", "fp", t0 + 1h), one, t0);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c.value().created);
}

TYPED_TEST(store_contract, InsertWithAnEmptyOrOutOfRangePortRangeIsCapacity) {
  for (const auto range :
       {port_range{2201, 2200}, port_range{0, 0}, port_range{65536, 65536}, port_range{-5, 0}}) {
    const auto out = this->store_.insert_host(make_host(t0), std::nullopt, range, t0);
    ASSERT_FALSE(out.has_value()) << range.lo << ".." << range.hi;
    EXPECT_EQ(out.error().code, errc::capacity);
  }
  EXPECT_TRUE(this->store_.all_host_ids().value().empty());
}

TYPED_TEST(store_contract, InsertedHostsGetDistinctPortsInTheRange) {
  std::set<int> ports;
  for (int i = 0; i < 4; ++i) {
    const int port = this->insert_with_port(make_host(t0), {3000, 3003});
    EXPECT_GE(port, 3000);
    EXPECT_LE(port, 3003);
    ports.insert(port);
  }
  EXPECT_EQ(ports.size(), 4U);
}

TYPED_TEST(store_contract, AllocatePortReturnsThePortTheHostAlreadyHolds) {
  const auto r = make_host(t0);
  const int port = this->insert_with_port(r, {3000, 3009});
  const auto again = this->store_.allocate_port(r.host.id, 3000, 3009, t0);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again.value(), port);
}

TYPED_TEST(store_contract, AllocatePortLeasesAFreedPortAgainAndFailsWithCapacityWhenFull) {
  const auto a = make_host(t0);
  const auto b = make_host(t0);
  const int pa = this->insert_with_port(a, {2200, 2201});
  const int pb = this->insert_with_port(b, {2200, 2201});
  EXPECT_NE(pa, pb);
  this->release_port(a.host.id);
  const auto back = this->store_.allocate_port(a.host.id, 2200, 2201, t0);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back.value(), pa);

  this->release_port(b.host.id);
  this->insert_with_port(make_host(t0), {2200, 2201});  // takes b's port
  const auto full = this->store_.allocate_port(b.host.id, 2200, 2201, t0);
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, errc::capacity);
}

TYPED_TEST(store_contract, AllocatePortForAnUnknownOrMalformedHostIsNotFound) {
  const auto out = this->store_.allocate_port(new_uuid_v7(t0), 2200, 2210, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::not_found);
  const auto bad = this->store_.allocate_port("nope", 2200, 2210, t0);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, errc::not_found);
}

TYPED_TEST(store_contract, RemovingAHostFreesItsPort) {
  const auto a = make_host(t0);
  ASSERT_EQ(this->insert_with_port(a, {2200, 2200}), 2200);
  ASSERT_TRUE(this->store_.remove_host(a.host.id));
  EXPECT_EQ(this->insert_with_port(make_host(t0), {2200, 2200}), 2200);
}

// Transitions.

TYPED_TEST(store_contract, TransitionAppliesThePatchWhenTheStatusMatches) {
  const auto r = this->insert(make_host(t0));
  host_patch p;
  p.status = host_status::active;
  p.image_digest = "sha256:feed";
  p.ssh_host = "127.0.0.1";
  p.ssh_port = 2201;
  p.known_hosts = "[127.0.0.1]:2201 ssh-ed25519 AAAA";
  p.activated_at = t0 + 5s;
  p.expires_at = std::optional<timestamp>(t0 + 5s + 1h);
  p.clear_lease = true;
  p.clear_owner = true;
  const auto out = this->store_.transition(r.host.id, {host_status::provisioning}, p, t0 + 5s);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(out.value().host.status, host_status::active);
  EXPECT_EQ(out.value().host.image_digest, "sha256:feed");
  EXPECT_EQ(out.value().host.ssh_host, "127.0.0.1");
  EXPECT_EQ(out.value().host.ssh_port, 2201);
  EXPECT_EQ(out.value().host.known_hosts, "[127.0.0.1]:2201 ssh-ed25519 AAAA");
  EXPECT_EQ(out.value().host.activated_at, t0 + 5s);
  EXPECT_EQ(out.value().host.expires_at, t0 + 5s + 1h);
  EXPECT_EQ(out.value().host.updated_at, t0 + 5s);
  EXPECT_EQ(out.value().host.created_at, t0);
  EXPECT_EQ(this->store_.get_host(r.host.id).value().host, out.value().host);

  host_patch clear;
  clear.expires_at = std::optional<timestamp>();
  clear.last_error = "Boom: it broke";
  const auto cleared = this->store_.transition(r.host.id, {host_status::active}, clear, t0 + 6s);
  ASSERT_TRUE(cleared.has_value());
  EXPECT_FALSE(cleared.value().host.expires_at.has_value());
  EXPECT_EQ(cleared.value().host.last_error, "Boom: it broke");
  EXPECT_EQ(cleared.value().host.status, host_status::active);
}

TYPED_TEST(store_contract, TransitionClearsLeaseAndOwnerOnlyWhenAsked) {
  ASSERT_TRUE(this->store_.heartbeat("0190c0de-0000-7000-8000-000000000001", "a", 1, 10s, t0));
  auto r = make_host(t0);
  r.lease_seconds = 600;
  r.owner_id = "0190c0de-0000-7000-8000-000000000001";
  this->insert(r);
  host_patch p;
  p.status = host_status::pulling_image;
  auto out = this->store_.transition(r.host.id, {host_status::provisioning}, p, t0);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out.value().lease_seconds, 600);
  EXPECT_EQ(out.value().owner_id, r.owner_id);
  p.status.reset();
  p.clear_lease = true;
  out = this->store_.transition(r.host.id, {host_status::pulling_image}, p, t0);
  ASSERT_TRUE(out.has_value());
  EXPECT_FALSE(out.value().lease_seconds.has_value());
  EXPECT_EQ(out.value().owner_id, r.owner_id);
  p.clear_owner = true;
  out = this->store_.transition(r.host.id, {host_status::pulling_image}, p, t0);
  ASSERT_TRUE(out.has_value());
  EXPECT_FALSE(out.value().owner_id.has_value());
  EXPECT_EQ(this->store_.get_host(r.host.id).value().owner_id, std::nullopt);
}

TYPED_TEST(store_contract, TransitionDistinguishesNotFoundFromHostState) {
  const auto r = this->insert(make_host(t0, host_status::active));
  host_patch p;
  p.status = host_status::deleting;
  const auto missing = this->store_.transition(new_uuid_v7(t0), {host_status::active}, p, t0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::not_found);
  const auto malformed = this->store_.transition("x", {host_status::active}, p, t0);
  ASSERT_FALSE(malformed.has_value());
  EXPECT_EQ(malformed.error().code, errc::not_found);
  const auto wrong =
      this->store_.transition(r.host.id, {host_status::provisioning, host_status::error}, p, t0);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code, errc::host_state);
  EXPECT_EQ(this->store_.get_host(r.host.id).value().host.status, host_status::active);
}

TYPED_TEST(store_contract, AFailedCompareAndSetChangesNothing) {
  const auto r = this->store_.insert_host(make_host(t0, host_status::active),
                                          make_claim("k", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(r.has_value());
  host_patch p;
  p.status = host_status::error;
  p.last_error = "no";
  p.release_idempotency_key = true;
  p.release_port = true;
  const auto id = r.value().existing.host.id;
  ASSERT_FALSE(this->store_.transition(id, {host_status::provisioning}, p, t0 + 1s));
  EXPECT_EQ(this->store_.get_host(id).value().host, r.value().existing.host);
  // Key and port are still held.
  const auto replay =
      this->store_.insert_host(make_host(t0), make_claim("k", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(replay.has_value());
  EXPECT_FALSE(replay.value().created);
  const auto other = this->store_.insert_host(make_host(t0), std::nullopt, {3000, 3000}, t0);
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code, errc::capacity);
}

TYPED_TEST(store_contract, TransitionReleasesTheIdempotencyKeyAndThePort) {
  const auto r = make_host(t0);
  const auto inserted =
      this->store_.insert_host(r, make_claim("key-1", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(inserted.has_value());
  host_patch p;
  p.status = host_status::error;
  p.last_error = "Boot: no";
  p.release_idempotency_key = true;
  p.release_port = true;
  ASSERT_TRUE(this->store_.transition(r.host.id, {host_status::provisioning}, p, t0 + 1s));

  // The key is free again: a retry creates a new host.
  const auto retry =
      this->store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(retry.has_value());
  EXPECT_TRUE(retry.value().created);
  // The port is free again: the new host gets the same one.
  EXPECT_EQ(retry.value().port, inserted.value().port);
}

TYPED_TEST(store_contract, RenewIsAllowedOnlyWhileBootstrappingOrActive) {
  auto leased = make_host(t0, host_status::active);
  leased.lease_seconds = 600;
  const auto active = this->insert(leased);
  const auto renewed = this->store_.renew(active.host.id, t0 + 2h, t0 + 1s);
  ASSERT_TRUE(renewed.has_value());
  EXPECT_EQ(renewed.value().host.expires_at, t0 + 2h);
  EXPECT_EQ(renewed.value().host.updated_at, t0 + 1s);
  EXPECT_FALSE(renewed.value().lease_seconds.has_value());

  const auto booting = this->insert(make_host(t0, host_status::bootstrapping));
  EXPECT_TRUE(this->store_.renew(booting.host.id, t0 + 2h, t0));

  for (auto s : {host_status::provisioning, host_status::pulling_image, host_status::creating_vm,
                 host_status::deleting, host_status::error}) {
    const auto h = this->insert(make_host(t0, s));
    const auto out = this->store_.renew(h.host.id, t0 + 2h, t0);
    ASSERT_FALSE(out.has_value());
    EXPECT_EQ(out.error().code, errc::host_state);
    EXPECT_FALSE(this->store_.get_host(h.host.id).value().host.expires_at.has_value());
  }
  const auto missing = this->store_.renew(new_uuid_v7(t0), t0 + 2h, t0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TYPED_TEST(store_contract, RemoveDeletesTheRowAndItsKeyAndMissingIsSuccess) {
  const auto r = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(r, make_claim("key-1", "fp", t0 + 1h), k_ports, t0));
  ASSERT_TRUE(this->store_.remove_host(r.host.id));
  EXPECT_EQ(this->store_.get_host(r.host.id).error().code, errc::not_found);
  EXPECT_TRUE(this->store_.remove_host(r.host.id));
  EXPECT_TRUE(this->store_.remove_host("not-a-uuid"));
  const auto again =
      this->store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), k_ports, t0);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again.value().created);
}

// The reaper's claim.

TYPED_TEST(store_contract, ClaimExpiredTakesDueHostsOnlyAndMovesThemToDeleting) {
  auto expired = make_host(t0, host_status::active);
  expired.host.expires_at = t0 - 1s;
  auto booting = make_host(t0, host_status::bootstrapping);
  booting.host.expires_at = t0;  // due at its expiry instant
  auto future = make_host(t0, host_status::active);
  future.host.expires_at = t0 + 1us;
  auto forever = make_host(t0, host_status::active);
  auto provisioning = make_host(t0, host_status::provisioning);
  provisioning.host.expires_at = t0 - 1h;
  auto old_error = make_host(t0 - 2h, host_status::error);
  auto stuck_delete = make_host(t0 - 2h, host_status::deleting);
  auto new_error = make_host(t0, host_status::error);
  auto at_cutoff = make_host(t0 - 1h, host_status::error);  // the cutoff is strict
  for (const auto& h : {expired, booting, future, forever, provisioning, old_error, stuck_delete,
                        new_error, at_cutoff}) {
    this->insert(h);
  }
  const auto claimed = this->store_.claim_expired(t0, t0 - 1h, 100);
  ASSERT_TRUE(claimed.has_value());
  std::set<std::string> ids;
  for (const auto& h : claimed.value()) {
    ids.insert(h.host.id);
    EXPECT_EQ(h.host.status, host_status::deleting);
    EXPECT_EQ(h.host.updated_at, t0);
  }
  EXPECT_EQ(ids, (std::set<std::string>{expired.host.id, booting.host.id, old_error.host.id,
                                        stuck_delete.host.id}));
  EXPECT_EQ(this->store_.get_host(future.host.id).value().host.status, host_status::active);
  EXPECT_EQ(this->store_.get_host(new_error.host.id).value().host.status, host_status::error);
  EXPECT_EQ(this->store_.get_host(at_cutoff.host.id).value().host.status, host_status::error);
  EXPECT_EQ(this->store_.get_host(provisioning.host.id).value().host.status,
            host_status::provisioning);
  // Claimed hosts were stamped at `now`: not due again for the same cutoff.
  EXPECT_TRUE(this->store_.claim_expired(t0, t0 - 1h, 100).value().empty());
}

TYPED_TEST(store_contract, ClaimExpiredClaimsAtMostLimitHosts) {
  for (int i = 0; i < 5; ++i) {
    auto h = make_host(t0 + std::chrono::milliseconds(i), host_status::active);
    h.host.expires_at = t0 - 1s;
    this->insert(h);
  }
  EXPECT_TRUE(this->store_.claim_expired(t0, t0 - 1h, 0).value().empty());
  EXPECT_EQ(this->store_.claim_expired(t0, t0 - 1h, 3).value().size(), 3U);
  EXPECT_EQ(this->store_.claim_expired(t0, t0 - 1h, 3).value().size(), 2U);
  EXPECT_EQ(this->store_.count_by_status().value().at(host_status::deleting), 5);
}

TYPED_TEST(store_contract, ARenewCommittedBeforeTheClaimWins) {
  auto h = make_host(t0, host_status::active);
  h.host.expires_at = t0 - 1s;
  this->insert(h);
  ASSERT_TRUE(this->store_.renew(h.host.id, t0 + 1h, t0));
  EXPECT_TRUE(this->store_.claim_expired(t0, t0 - 1h, 10).value().empty());
  EXPECT_EQ(this->store_.get_host(h.host.id).value().host.status, host_status::active);
}

// Instances and crash recovery.

TYPED_TEST(store_contract, ClaimInterruptedTakesCreatesWithoutALiveOwnerAndReleasesTheirKeys) {
  const std::string live = "0190c0de-0000-7000-8000-00000000000a";
  const std::string stale = "0190c0de-0000-7000-8000-00000000000b";
  const std::string slow = "0190c0de-0000-7000-8000-00000000000c";
  ASSERT_TRUE(this->store_.heartbeat(live, "a", 1, 10s, t0 - 1h));
  ASSERT_TRUE(this->store_.heartbeat(stale, "b", 2, 10s, t0 - 1min));
  // Silent for a minute, but it beats every 60 s: three of its own intervals have not passed.
  ASSERT_TRUE(this->store_.heartbeat(slow, "c", 3, 60s, t0 - 1min));
  // A second heartbeat refreshes the row rather than adding one.
  ASSERT_TRUE(this->store_.heartbeat(live, "a", 1, 10s, t0));

  auto owned_live = make_host(t0, host_status::creating_vm);
  owned_live.owner_id = live;
  auto owned_stale = make_host(t0, host_status::pulling_image);
  owned_stale.owner_id = stale;
  auto owned_slow = make_host(t0, host_status::bootstrapping);
  owned_slow.owner_id = slow;
  auto unowned = make_host(t0, host_status::bootstrapping);
  auto active_stale = make_host(t0, host_status::active);
  active_stale.owner_id = stale;
  for (const auto& h : {owned_live, owned_slow, unowned, active_stale}) {
    this->insert(h);
  }
  const auto stale_insert =
      this->store_.insert_host(owned_stale, make_claim("k", "fp", t0 + 1h), k_ports, t0);
  ASSERT_TRUE(stale_insert.has_value());

  const auto claimed =
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  std::map<std::string, interrupted_host> by_id;
  for (const auto& h : claimed.value()) {
    by_id[h.host.host.id] = h;
  }
  ASSERT_EQ(by_id.size(), 2U);
  const auto& s = by_id.at(owned_stale.host.id);
  EXPECT_EQ(s.was, host_status::pulling_image);
  EXPECT_FALSE(s.overdue);
  EXPECT_EQ(s.host.host.status, host_status::error);
  EXPECT_EQ(s.host.host.last_error, "Interrupted: in pulling_image");
  EXPECT_EQ(s.host.host.updated_at, t0);
  EXPECT_FALSE(s.host.owner_id);
  EXPECT_EQ(this->store_.get_host(owned_stale.host.id).value().host, s.host.host);
  EXPECT_EQ(by_id.at(unowned.host.id).host.host.last_error, "Interrupted: in bootstrapping");
  EXPECT_EQ(this->store_.get_host(owned_live.host.id).value().host.status,
            host_status::creating_vm);
  EXPECT_EQ(this->store_.get_host(owned_slow.host.id).value().host.status,
            host_status::bootstrapping);
  EXPECT_EQ(this->store_.get_host(active_stale.host.id).value().host.status, host_status::active);
  // The key is free again; the port is kept until the caller has destroyed the VM.
  auto fresh = make_host(t0);
  fresh.owner_id = live;
  auto retry = this->store_.insert_host(fresh, make_claim("k", "fp", t0 + 1h), k_ports, t0);
  ASSERT_TRUE(retry.has_value());
  EXPECT_TRUE(retry.value().created);
  auto again = this->store_.allocate_port(owned_stale.host.id, k_ports.lo, k_ports.hi, t0);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again.value(), stale_insert.value().port);
  // Claimed once: a second sweep finds nothing more.
  EXPECT_TRUE(this->store_.claim_interrupted(t0, 60s, "I", "O", 64).value().empty());
}

TYPED_TEST(store_contract, ClaimInterruptedTakesOverdueCreatesWhoeverOwnsThem) {
  const std::string live = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(this->store_.heartbeat(live, "a", 1, 10s, t0));
  auto due = make_host(t0 - 10min, host_status::bootstrapping);
  due.owner_id = live;
  due.provision_deadline = t0 - 61s;
  auto in_grace = make_host(t0 - 10min, host_status::bootstrapping);
  in_grace.owner_id = live;
  in_grace.provision_deadline = t0 - 59s;
  auto at_grace = make_host(t0 - 10min, host_status::creating_vm);  // the bound is strict
  at_grace.owner_id = live;
  at_grace.provision_deadline = t0 - 60s;
  this->insert(due);
  this->insert(in_grace);
  this->insert(at_grace);
  const auto claimed =
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_EQ(claimed.value().size(), 1U);
  EXPECT_EQ(claimed.value()[0].host.host.id, due.host.id);
  EXPECT_TRUE(claimed.value()[0].overdue);
  EXPECT_EQ(claimed.value()[0].host.host.last_error, "Overdue: in bootstrapping");
  EXPECT_EQ(this->store_.get_host(in_grace.host.id).value().host.status,
            host_status::bootstrapping);
  EXPECT_EQ(this->store_.get_host(at_grace.host.id).value().host.status, host_status::creating_vm);
}

TYPED_TEST(store_contract, ClaimInterruptedClaimsAtMostLimitHosts) {
  for (int i = 0; i < 5; ++i) {
    this->insert(make_host(t0 + std::chrono::milliseconds(i), host_status::creating_vm));
  }
  EXPECT_TRUE(this->store_.claim_interrupted(t0, 60s, "I", "O", 0).value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0, 60s, "I", "O", 3).value().size(), 3U);
  EXPECT_EQ(this->store_.claim_interrupted(t0, 60s, "I", "O", 3).value().size(), 2U);
}

TYPED_TEST(store_contract, AnOwnerIsGoneAfterThreeOfItsOwnIntervalsWithoutABeat) {
  const std::string owner = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(this->store_.heartbeat(owner, "a", 1, 10s, t0));
  auto h = make_host(t0, host_status::creating_vm);
  h.owner_id = owner;
  this->insert(h);
  EXPECT_TRUE(this->store_.claim_interrupted(t0 + 30s, 60s, "I", "O", 8).value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0 + 30s + 1us, 60s, "I", "O", 8).value().size(), 1U);
}

TYPED_TEST(store_contract, AHeartbeatIntervalBelowASecondCountsAsOneSecond) {
  const std::string owner = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(this->store_.heartbeat(owner, "a", 1, 0s, t0));
  auto h = make_host(t0, host_status::creating_vm);
  h.owner_id = owner;
  this->insert(h);
  EXPECT_TRUE(this->store_.claim_interrupted(t0 + 3s, 60s, "I", "O", 8).value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0 + 3s + 1us, 60s, "I", "O", 8).value().size(), 1U);
}

TYPED_TEST(store_contract, PruneInstancesRemovesOnlyLongDeadOnesAndDisownsTheirHosts) {
  const std::string fresh = "0190c0de-0000-7000-8000-00000000000a";
  const std::string dead = "0190c0de-0000-7000-8000-00000000000b";
  const std::string slow = "0190c0de-0000-7000-8000-00000000000c";
  ASSERT_TRUE(this->store_.heartbeat(fresh, "a", 1, 10s, t0 - 30min));
  ASSERT_TRUE(this->store_.heartbeat(dead, "b", 2, 10s, t0 - 2h));
  // Silent for two hours, but three of its intervals are longer than that.
  ASSERT_TRUE(this->store_.heartbeat(slow, "c", 3, 3600s, t0 - 2h));
  auto owned = make_host(t0, host_status::active);
  owned.owner_id = dead;
  this->insert(owned);
  auto kept = make_host(t0, host_status::active);
  kept.owner_id = fresh;
  this->insert(kept);
  const auto pruned = this->store_.prune_instances(t0);
  ASSERT_TRUE(pruned.has_value()) << pruned.error().message;
  EXPECT_EQ(pruned.value(), 1);
  EXPECT_FALSE(this->store_.get_host(owned.host.id).value().owner_id);
  EXPECT_EQ(this->store_.get_host(kept.host.id).value().owner_id, fresh);
  EXPECT_EQ(this->store_.prune_instances(t0).value(), 0);
  // The slow one goes once three of its own intervals have passed.
  EXPECT_EQ(this->store_.prune_instances(t0 + 1h + 1s).value(), 2);
}

}  // namespace
}  // namespace litterbox::controlplane
