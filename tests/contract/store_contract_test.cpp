#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/store.hpp"
#include "tests/contract/store_backends.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// The store contract (controlplane/core/store.hpp), run against every implementation: the
// in-memory fake that unit tests use must behave as pg_store does.

namespace litterbox::controlplane {
namespace {

using contract::make_host;

using namespace std::chrono_literals;
using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));
const port_range k_ports{20000, 29999};

idempotency_claim make_claim(std::string key, std::string fingerprint, timestamp expires) {
  idempotency_claim c;
  c.ns = "default";
  c.key = std::move(key);
  c.fingerprint = std::move(fingerprint);
  c.expires_at = expires;
  return c;
}

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

TYPED_TEST_SUITE(store_contract, contract::store_backends, contract::backend_names);

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

TYPED_TEST(store_contract, MovePortLeasesAnotherPortOutsideTheAvoidedOnesAndFreesTheOld) {
  const auto a = make_host(t0);
  const auto b = make_host(t0);
  const int pa = this->insert_with_port(a, {2200, 2203});
  const int pb = this->insert_with_port(b, {2200, 2203});
  const auto moved = this->store_.move_port(a.host.id, 2200, 2203, {pa}, t0);
  ASSERT_TRUE(moved.has_value()) << moved.error().message;
  EXPECT_NE(moved.value(), pa);
  EXPECT_NE(moved.value(), pb) << "a port another host holds is never given";
  EXPECT_EQ(this->store_.allocate_port(a.host.id, 2200, 2203, t0).value(), moved.value())
      << "the host holds exactly the new port";
  // The old port is free again for whoever asks next (it may be free on another try).
  std::set<int> rest;
  rest.insert(this->insert_with_port(make_host(t0), {2200, 2203}));
  rest.insert(this->insert_with_port(make_host(t0), {2200, 2203}));
  EXPECT_TRUE(rest.count(pa) == 1);
}

TYPED_TEST(store_contract, MovePortWithNoOtherFreePortIsCapacityAndKeepsTheOldLease) {
  const auto a = make_host(t0);
  const int pa = this->insert_with_port(a, {2200, 2201});
  const int pb = this->insert_with_port(make_host(t0), {2200, 2201});
  const auto moved = this->store_.move_port(a.host.id, 2200, 2201, {pa}, t0);
  ASSERT_FALSE(moved.has_value());
  EXPECT_EQ(moved.error().code, errc::capacity);
  EXPECT_EQ(this->store_.allocate_port(a.host.id, 2200, 2201, t0).value(), pa);
  EXPECT_NE(pa, pb);
  const auto unknown = this->store_.move_port(new_uuid_v7(t0), 2200, 2201, {}, t0);
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, errc::not_found);
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
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64, "");
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
  EXPECT_TRUE(this->store_.claim_interrupted(t0, 60s, "I", "O", 64, "").value().empty());
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
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64, "");
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_EQ(claimed.value().size(), 1U);
  EXPECT_EQ(claimed.value()[0].host.host.id, due.host.id);
  EXPECT_TRUE(claimed.value()[0].overdue);
  EXPECT_EQ(claimed.value()[0].host.host.last_error, "Overdue: in bootstrapping");
  EXPECT_EQ(this->store_.get_host(in_grace.host.id).value().host.status,
            host_status::bootstrapping);
  EXPECT_EQ(this->store_.get_host(at_grace.host.id).value().host.status, host_status::creating_vm);
}

TYPED_TEST(store_contract, ClaimInterruptedNeverTakesTheCallersOwnCreatesForALateBeat) {
  // The caller is alive by definition: on a loaded machine its beat can be late by more than
  // three intervals, and it once failed its own creates (and template builds) for that.
  const std::string me = "0190c0de-0000-7000-8000-00000000000d";
  ASSERT_TRUE(this->store_.heartbeat(me, "me", 1, 1s, t0 - 1min));
  auto mine = make_host(t0, host_status::creating_vm);
  mine.owner_id = me;
  auto mine_overdue = make_host(t0 - 10min, host_status::bootstrapping);
  mine_overdue.owner_id = me;
  mine_overdue.provision_deadline = t0 - 61s;
  this->insert(mine);
  this->insert(mine_overdue);
  const auto claimed =
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64, me);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_EQ(claimed.value().size(), 1U);  // only the overdue one: deadlines bind everyone
  EXPECT_EQ(claimed.value()[0].host.host.id, mine_overdue.host.id);
  // Another process judges the same late beat as gone.
  const auto other =
      this->store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64, "");
  ASSERT_TRUE(other.has_value());
  ASSERT_EQ(other.value().size(), 1U);
  EXPECT_EQ(other.value()[0].host.host.id, mine.host.id);
}

TYPED_TEST(store_contract, ClaimInterruptedClaimsAtMostLimitHosts) {
  for (int i = 0; i < 5; ++i) {
    this->insert(make_host(t0 + std::chrono::milliseconds(i), host_status::creating_vm));
  }
  EXPECT_TRUE(this->store_.claim_interrupted(t0, 60s, "I", "O", 0, "").value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0, 60s, "I", "O", 3, "").value().size(), 3U);
  EXPECT_EQ(this->store_.claim_interrupted(t0, 60s, "I", "O", 3, "").value().size(), 2U);
}

TYPED_TEST(store_contract, AnOwnerIsGoneAfterThreeOfItsOwnIntervalsWithoutABeat) {
  const std::string owner = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(this->store_.heartbeat(owner, "a", 1, 10s, t0));
  auto h = make_host(t0, host_status::creating_vm);
  h.owner_id = owner;
  this->insert(h);
  EXPECT_TRUE(this->store_.claim_interrupted(t0 + 30s, 60s, "I", "O", 8, "").value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0 + 30s + 1us, 60s, "I", "O", 8, "").value().size(),
            1U);
}

TYPED_TEST(store_contract, AHeartbeatIntervalBelowASecondCountsAsOneSecond) {
  const std::string owner = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(this->store_.heartbeat(owner, "a", 1, 0s, t0));
  auto h = make_host(t0, host_status::creating_vm);
  h.owner_id = owner;
  this->insert(h);
  EXPECT_TRUE(this->store_.claim_interrupted(t0 + 3s, 60s, "I", "O", 8, "").value().empty());
  EXPECT_EQ(this->store_.claim_interrupted(t0 + 3s + 1us, 60s, "I", "O", 8, "").value().size(), 1U);
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

// Templates (issue 9).

const std::string k_owner_a = "0190c0de-0000-7000-8000-0000000000a1";
const std::string k_owner_b = "0190c0de-0000-7000-8000-0000000000b2";

template_key_row make_key(std::string digest = "sha256:" + std::string(64, 'a'),
                          std::optional<int> disk_gb = std::nullopt) {
  // The sizes and user of make_host, so that its rows can be members of this key.
  return template_key_row{std::move(digest), 1, 512, disk_gb, "agent"};
}

template_record make_template(const template_key_row& key, const std::string& owner,
                              timestamp now) {
  template_record t;
  t.id = new_uuid_v7(now);
  t.key = key;
  t.image = "registry.test/debian:12";
  t.owner_id = owner;
  t.created_at = now;
  t.updated_at = now;
  t.last_used_at = now;
  return t;
}

TYPED_TEST(store_contract, AKeyHasNoTemplateUntilABuildIsClaimed) {
  const auto none = this->store_.find_template(make_key());
  ASSERT_TRUE(none.has_value()) << none.error().message;
  EXPECT_FALSE(none.value());
  EXPECT_TRUE(this->store_.list_templates().value().empty());
}

TYPED_TEST(store_contract, ClaimTemplateBuildInsertsOneBuildingRowPerKeyWithAPort) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0));
  const auto want = make_template(make_key(), k_owner_a, t0);
  const auto first = this->store_.claim_template_build(want, k_ports, t0);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  ASSERT_TRUE(first.value());
  const auto& row = *first.value();
  EXPECT_EQ(row.id, want.id);
  EXPECT_EQ(row.key, want.key);
  EXPECT_EQ(row.image, want.image);
  EXPECT_EQ(row.status, template_status::building);
  EXPECT_EQ(row.owner_id, k_owner_a);
  EXPECT_EQ(row.last_error, "");
  EXPECT_FALSE(row.retry_after);
  EXPECT_FALSE(row.ready_at);
  EXPECT_EQ(row.created_at, t0);
  EXPECT_EQ(row.updated_at, t0);
  EXPECT_GE(row.ssh_port, k_ports.lo);
  EXPECT_LE(row.ssh_port, k_ports.hi);

  // A live owner keeps it: the same key claimed again (by anyone) gets nothing.
  const auto second =
      this->store_.claim_template_build(make_template(make_key(), k_owner_b, t0), k_ports, t0);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_FALSE(second.value());
  const auto found = this->store_.find_template(make_key());
  ASSERT_TRUE(found.has_value());
  ASSERT_TRUE(found.value());
  EXPECT_EQ(found.value()->id, want.id);
  EXPECT_EQ(found.value()->owner_id, k_owner_a);
  EXPECT_EQ(found.value()->ssh_port, row.ssh_port);
  EXPECT_EQ(this->store_.list_templates().value().size(), 1U);
}

TYPED_TEST(store_contract, TemplateKeysDifferingInAnyColumnAreDistinctTemplates) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  auto cpus = make_key();
  cpus.cpus = 2;
  auto memory = make_key();
  memory.memory_mib = 1024;
  auto user = make_key();
  user.ssh_username = "root";
  const std::vector<template_key_row> keys = {make_key(),
                                              make_key("sha256:" + std::string(64, 'b')),
                                              make_key(make_key().image_digest, 10),
                                              cpus,
                                              memory,
                                              user};
  std::set<int> ports;
  for (const auto& k : keys) {
    const auto claimed =
        this->store_.claim_template_build(make_template(k, k_owner_a, t0), k_ports, t0);
    ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
    ASSERT_TRUE(claimed.value());
    ports.insert(claimed.value()->ssh_port);
  }
  EXPECT_EQ(ports.size(), keys.size());
  const auto all = this->store_.list_templates().value();
  ASSERT_EQ(all.size(), keys.size());
  for (const auto& k : keys) {
    const auto found = this->store_.find_template(k).value();
    ASSERT_TRUE(found);
    EXPECT_EQ(found->key, k);
  }
}

TYPED_TEST(store_contract, FinishTemplateReadyStampsItAndReleasesTheBuildsPort) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto built = this->store_
                         .claim_template_build(make_template(make_key(), k_owner_a, t0),
                                               port_range{20000, 20000}, t0)
                         .value();
  ASSERT_TRUE(built);
  EXPECT_EQ(built->ssh_port, 20000);
  // While the build runs its port is taken for hosts.
  const auto full = this->store_.insert_host(make_host(t0), std::nullopt, {20000, 20000}, t0);
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, errc::capacity);

  const auto done =
      this->store_.finish_template(built->id, k_owner_a, true, "", std::nullopt, t0 + 1min);
  ASSERT_TRUE(done.has_value()) << done.error().message;
  EXPECT_EQ(done.value().status, template_status::ready);
  EXPECT_EQ(done.value().ready_at, t0 + 1min);
  EXPECT_EQ(done.value().last_used_at, t0 + 1min);
  EXPECT_EQ(done.value().updated_at, t0 + 1min);
  EXPECT_EQ(done.value().created_at, t0);
  EXPECT_FALSE(done.value().owner_id);
  EXPECT_EQ(done.value().ssh_port, 0);
  EXPECT_EQ(this->insert_with_port(make_host(t0), {20000, 20000}), 20000);
  // Ready is final: nobody builds it again.
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0 + 1h));
  EXPECT_FALSE(
      this->store_
          .claim_template_build(make_template(make_key(), k_owner_b, t0 + 1h), k_ports, t0 + 1h)
          .value());
}

TYPED_TEST(store_contract, FinishTemplateByAnotherOwnerIsHostStateAndChangesNothing) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  for (const std::string& owner : {k_owner_b, std::string("not-a-uuid")}) {
    const auto other =
        this->store_.finish_template(built->id, owner, true, "", std::nullopt, t0 + 1s);
    ASSERT_FALSE(other.has_value());
    EXPECT_EQ(other.error().code, errc::host_state);
  }
  const auto row = this->store_.find_template(make_key()).value();
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, template_status::building);
  EXPECT_EQ(row->ssh_port, built->ssh_port);
  // The owner's own finish still lands, once; a second finish finds it no longer building.
  ASSERT_TRUE(
      this->store_.finish_template(built->id, k_owner_a, false, "Boot: no", t0 + 1h, t0 + 2s));
  const auto twice =
      this->store_.finish_template(built->id, k_owner_a, true, "", std::nullopt, t0 + 3s);
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code, errc::host_state);
}

TYPED_TEST(store_contract, FinishTemplateOfAnUnknownOrMalformedIdIsNotFound) {
  for (const std::string& id : {new_uuid_v7(t0), std::string("x'; DROP TABLE templates; --")}) {
    const auto out = this->store_.finish_template(id, k_owner_a, true, "", std::nullopt, t0);
    ASSERT_FALSE(out.has_value());
    EXPECT_EQ(out.error().code, errc::not_found);
  }
}

TYPED_TEST(store_contract, AFailedTemplateIsTakenOverOnceItsRetryAfterHasPassed) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  const auto failed = this->store_.finish_template(built->id, k_owner_a, false,
                                                   "Boot: guest never answered", t0 + 1min, t0);
  ASSERT_TRUE(failed.has_value()) << failed.error().message;
  EXPECT_EQ(failed.value().status, template_status::failed);
  EXPECT_EQ(failed.value().last_error, "Boot: guest never answered");
  EXPECT_EQ(failed.value().retry_after, t0 + 1min);
  EXPECT_FALSE(failed.value().owner_id);
  EXPECT_EQ(failed.value().ssh_port, 0);

  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0 + 1min));
  const auto early = this->store_.claim_template_build(
      make_template(make_key(), k_owner_b, t0 + 1min - 1us), k_ports, t0 + 1min - 1us);
  ASSERT_TRUE(early.has_value()) << early.error().message;
  EXPECT_FALSE(early.value());

  const auto retry = this->store_.claim_template_build(
      make_template(make_key(), k_owner_b, t0 + 1min), k_ports, t0 + 1min);
  ASSERT_TRUE(retry.has_value()) << retry.error().message;
  ASSERT_TRUE(retry.value());
  EXPECT_EQ(retry.value()->id, built->id);  // a rebuild keeps the id (the driver's files)
  EXPECT_EQ(retry.value()->status, template_status::building);
  EXPECT_EQ(retry.value()->owner_id, k_owner_b);
  EXPECT_EQ(retry.value()->created_at, t0);
  EXPECT_EQ(retry.value()->updated_at, t0 + 1min);
  EXPECT_FALSE(retry.value()->retry_after);
  EXPECT_NE(retry.value()->ssh_port, 0);
  EXPECT_EQ(this->store_.list_templates().value().size(), 1U);
}

TYPED_TEST(store_contract, AFailedTemplateWithoutRetryAfterIsNeverRebuilt) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  ASSERT_TRUE(this->store_.finish_template(built->id, k_owner_a, false,
                                           "Unsupported: no guest agent", std::nullopt, t0));
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0 + 24h));
  EXPECT_FALSE(
      this->store_
          .claim_template_build(make_template(make_key(), k_owner_b, t0 + 24h), k_ports, t0 + 24h)
          .value());
  EXPECT_EQ(this->store_.find_template(make_key()).value()->status, template_status::failed);
}

TYPED_TEST(store_contract, ABuildIsTakenOverOnlyAfterThreeOfItsOwnersIntervalsWithoutABeat) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0 + 31s));
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  EXPECT_FALSE(
      this->store_
          .claim_template_build(make_template(make_key(), k_owner_b, t0 + 30s), k_ports, t0 + 30s)
          .value());
  const auto taken = this->store_
                         .claim_template_build(make_template(make_key(), k_owner_b, t0 + 31s),
                                               k_ports, t0 + 30s + 1us)
                         .value();
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->id, built->id);
  EXPECT_EQ(taken->owner_id, k_owner_b);
  EXPECT_EQ(taken->status, template_status::building);
  // The build keeps its port lease: one per template, never a second.
  EXPECT_EQ(taken->ssh_port, built->ssh_port);
  // The old owner, back from a stall, no longer records its result.
  const auto late =
      this->store_.finish_template(built->id, k_owner_a, true, "", std::nullopt, t0 + 32s);
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().code, errc::host_state);
  ASSERT_TRUE(this->store_.finish_template(built->id, k_owner_b, true, "", std::nullopt, t0 + 33s));
}

TYPED_TEST(store_contract, TemplatePortsAndHostPortsNeverCollide) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const port_range two{21000, 21001};
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), two, t0).value();
  ASSERT_TRUE(built);
  const int host_port = this->insert_with_port(make_host(t0), two);
  EXPECT_NE(host_port, built->ssh_port);
  EXPECT_GE(host_port, two.lo);
  EXPECT_LE(host_port, two.hi);
  // The range is full: neither a host nor another template gets a port, and nothing is kept.
  const auto host = make_host(t0);
  const auto no_host = this->store_.insert_host(host, std::nullopt, two, t0);
  ASSERT_FALSE(no_host.has_value());
  EXPECT_EQ(no_host.error().code, errc::capacity);
  EXPECT_EQ(this->store_.get_host(host.host.id).error().code, errc::not_found);
  const auto other_key = make_key("sha256:" + std::string(64, 'c'));
  const auto no_template =
      this->store_.claim_template_build(make_template(other_key, k_owner_a, t0), two, t0);
  ASSERT_FALSE(no_template.has_value());
  EXPECT_EQ(no_template.error().code, errc::capacity);
  EXPECT_FALSE(this->store_.find_template(other_key).value());
  const auto pool_full = this->store_.insert_pool_member(make_host(t0), other_key, 4, two, t0);
  ASSERT_FALSE(pool_full.has_value());
  EXPECT_EQ(pool_full.error().code, errc::capacity);
}

TYPED_TEST(store_contract, ATakeoverWithNoFreePortLeavesTheFailedRowAsItWas) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const port_range one{21100, 21100};
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), one, t0).value();
  ASSERT_TRUE(built);
  ASSERT_TRUE(this->store_.finish_template(built->id, k_owner_a, false, "Boot: x", t0, t0));
  this->insert_with_port(make_host(t0), one);  // takes the freed port
  const auto retry = this->store_.claim_template_build(
      make_template(make_key(), k_owner_a, t0 + 1s), one, t0 + 1s);
  ASSERT_FALSE(retry.has_value());
  EXPECT_EQ(retry.error().code, errc::capacity);
  const auto row = this->store_.find_template(make_key()).value();
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, template_status::failed);
  EXPECT_EQ(row->last_error, "Boot: x");
  EXPECT_FALSE(row->owner_id);
  EXPECT_EQ(row->ssh_port, 0);
}

TYPED_TEST(store_contract, ClaimStaleTemplateBuildsNeverTakesTheCallersOwnBuild) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto key = make_key();
  ASSERT_TRUE(
      this->store_.claim_template_build(make_template(key, k_owner_a, t0), k_ports, t0).value());
  const auto own = this->store_.claim_stale_template_builds(t0 + 1min, "x", k_owner_a);
  ASSERT_TRUE(own.has_value()) << own.error().message;
  EXPECT_TRUE(own.value().empty());
  EXPECT_EQ(this->store_.find_template(key).value()->status, template_status::building);
  EXPECT_EQ(this->store_.claim_stale_template_builds(t0 + 1min, "x", "").value().size(), 1U);
}

TYPED_TEST(store_contract, ClaimStaleTemplateBuildsFailsOnlyBuildsWhoseOwnerIsGone) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0));
  const auto dead_key = make_key();
  const auto live_key = make_key("sha256:" + std::string(64, 'd'));
  const auto dead =
      this->store_.claim_template_build(make_template(dead_key, k_owner_a, t0), k_ports, t0)
          .value();
  const auto live =
      this->store_.claim_template_build(make_template(live_key, k_owner_b, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(dead && live);
  ASSERT_TRUE(this->store_.heartbeat(k_owner_b, "b", 2, 10s, t0 + 1min));
  const auto stale = this->store_.claim_stale_template_builds(t0 + 1min, "Interrupted: build", "");
  ASSERT_TRUE(stale.has_value()) << stale.error().message;
  ASSERT_EQ(stale.value().size(), 1U);
  const auto& s = stale.value()[0];
  EXPECT_EQ(s.id, dead->id);
  EXPECT_EQ(s.status, template_status::failed);
  EXPECT_EQ(s.last_error, "Interrupted: build");
  EXPECT_EQ(s.retry_after, t0 + 1min);
  EXPECT_EQ(s.updated_at, t0 + 1min);
  EXPECT_FALSE(s.owner_id);
  EXPECT_EQ(s.ssh_port, 0);
  EXPECT_EQ(this->store_.find_template(live_key).value()->status, template_status::building);
  EXPECT_TRUE(this->store_.claim_stale_template_builds(t0 + 1min, "x", "").value().empty());
  // Its port is free again, and the build may be retried at once.
  const auto retry =
      this->store_.claim_template_build(make_template(dead_key, k_owner_b, t0 + 1min),
                                        port_range{dead->ssh_port, dead->ssh_port}, t0 + 1min);
  ASSERT_TRUE(retry.has_value()) << retry.error().message;
  ASSERT_TRUE(retry.value());
  EXPECT_EQ(retry.value()->id, dead->id);
  EXPECT_EQ(retry.value()->last_error, "Interrupted: build");  // why the last one failed
}

TYPED_TEST(store_contract, TouchTemplateStampsLastUsedAtAndAMissingOneIsSuccess) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  ASSERT_TRUE(this->store_.finish_template(built->id, k_owner_a, true, "", std::nullopt, t0));
  ASSERT_TRUE(this->store_.touch_template(built->id, t0 + 5min));
  const auto row = this->store_.find_template(make_key()).value();
  EXPECT_EQ(row->last_used_at, t0 + 5min);
  EXPECT_EQ(row->ready_at, t0);
  EXPECT_TRUE(this->store_.touch_template(new_uuid_v7(t0), t0));
  EXPECT_TRUE(this->store_.touch_template("not-a-uuid", t0));
}

TYPED_TEST(store_contract, RemoveTemplateDeletesOnlyFromTheGivenStatusesAndFreesItsPort) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const port_range one{21200, 21200};
  const auto built =
      this->store_.claim_template_build(make_template(make_key(), k_owner_a, t0), one, t0).value();
  ASSERT_TRUE(built);
  const auto kept =
      this->store_.remove_template(built->id, {template_status::ready, template_status::failed});
  ASSERT_TRUE(kept.has_value()) << kept.error().message;
  EXPECT_FALSE(kept.value());
  EXPECT_TRUE(this->store_.find_template(make_key()).value());
  const auto removed = this->store_.remove_template(built->id, {template_status::building});
  ASSERT_TRUE(removed.has_value()) << removed.error().message;
  EXPECT_TRUE(removed.value());
  EXPECT_FALSE(this->store_.find_template(make_key()).value());
  EXPECT_EQ(this->insert_with_port(make_host(t0), one), 21200);
  EXPECT_FALSE(this->store_.remove_template(built->id, {template_status::building}).value());
  EXPECT_FALSE(this->store_.remove_template("not-a-uuid", {template_status::building}).value());
}

TYPED_TEST(store_contract, ImageDigestsInUseIncludeEveryTemplatesDigest) {
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  auto h = make_host(t0);
  h.host.image_digest = "sha256:host";
  this->insert(h);
  const auto built =
      this->store_
          .claim_template_build(make_template(make_key("sha256:tmpl"), k_owner_a, t0), k_ports, t0)
          .value();
  ASSERT_TRUE(built);
  // A failed template still names its digest until it is removed.
  ASSERT_TRUE(this->store_.finish_template(built->id, k_owner_a, false, "x", std::nullopt, t0));
  auto digests = this->store_.image_digests_in_use().value();
  std::sort(digests.begin(), digests.end());
  EXPECT_EQ(digests, (std::vector<std::string>{"sha256:host", "sha256:tmpl"}));
}

// The warm pool.

/// Fills `key`'s pool by one member created at `created` and moves it to `status`; its id.
std::string add_member(store& s, const template_key_row& key, timestamp created,
                       host_status status = host_status::active) {
  const auto out = s.insert_pool_member(make_host(created), key, 1000, k_ports, created);
  EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
  if (!out || !out.value().created) {
    ADD_FAILURE() << "the pool member was not inserted";
    return {};
  }
  const auto id = out.value().existing.host.id;
  if (status != host_status::provisioning) {
    host_patch p;
    p.status = status;
    p.path = create_path::clone;
    if (status == host_status::active) {
      p.activated_at = created + 1s;
    }
    EXPECT_TRUE(s.transition(id, {host_status::provisioning}, p, created + 1s));
  }
  return id;
}

/// Every column of two rows (host_record has no operator==: private_key is never stored).
void expect_same_row(const host_record& a, const host_record& b) {
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.lease_seconds, b.lease_seconds);
  EXPECT_EQ(a.owner_id, b.owner_id);
  EXPECT_EQ(a.provision_deadline, b.provision_deadline);
  EXPECT_EQ(a.pooled, b.pooled);
  EXPECT_EQ(a.path, b.path);
}

pool_claim make_pool_claim(const template_key_row& key, timestamp now,
                           std::optional<std::string> owner = std::nullopt) {
  pool_claim c;
  c.key = key;
  c.as = make_host(now, host_status::provisioning);
  c.as.host.image = "registry.test/debian:12-slim";
  c.as.host.instance_type = "small";
  c.as.host.expires_at = now + 2h;
  c.as.lease_seconds = 7200;
  c.as.owner_id = std::move(owner);
  c.as.provision_deadline = now + 10min;
  return c;
}

TYPED_TEST(store_contract, InsertPoolMemberMakesAPooledProvisioningRowOfTheKey) {
  auto h = make_host(t0, host_status::active);  // whatever it says, a member starts provisioning
  h.host.cpus = 3;
  const auto key = make_key();
  const auto out = this->store_.insert_pool_member(h, key, 1, k_ports, t0);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  ASSERT_TRUE(out.value().created);
  EXPECT_GE(out.value().port, k_ports.lo);
  EXPECT_LE(out.value().port, k_ports.hi);
  const auto got = this->store_.get_host(h.host.id);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got.value().pooled);
  EXPECT_EQ(got.value().host.status, host_status::provisioning);
  EXPECT_EQ(got.value().host.image_digest, key.image_digest);
  EXPECT_EQ(got.value().host.cpus, key.cpus);
  EXPECT_EQ(got.value().host.memory_mib, key.memory_mib);
  EXPECT_EQ(got.value().host.disk_gb, key.disk_gb);
  EXPECT_EQ(got.value().host.ssh_username, key.ssh_username);
  expect_same_row(got.value(), out.value().existing);
}

TYPED_TEST(store_contract, InsertPoolMemberNeverFillsAKeyPastItsTarget) {
  const auto key = make_key();
  const auto other = make_key("sha256:" + std::string(64, 'e'));
  std::vector<std::string> members;
  for (int i = 0; i < 3; ++i) {
    const auto out = this->store_.insert_pool_member(make_host(t0), key, 2, k_ports, t0);
    ASSERT_TRUE(out.has_value()) << out.error().message;
    EXPECT_EQ(out.value().created, i < 2) << i;
    if (out.value().created) {
      members.push_back(out.value().existing.host.id);
    }
  }
  ASSERT_EQ(members.size(), 2U);
  // A full pool inserts nothing: no row, no port.
  EXPECT_EQ(this->store_.list_pool_members().value().size(), 2U);
  // Other keys have pools of their own.
  EXPECT_TRUE(
      this->store_.insert_pool_member(make_host(t0), other, 2, k_ports, t0).value().created);
  // Members that failed or are being deleted leave room; every other status counts.
  host_patch to_error;
  to_error.status = host_status::error;
  ASSERT_TRUE(this->store_.transition(members[0], {host_status::provisioning}, to_error, t0));
  EXPECT_TRUE(this->store_.insert_pool_member(make_host(t0), key, 2, k_ports, t0).value().created);
  EXPECT_FALSE(this->store_.insert_pool_member(make_host(t0), key, 2, k_ports, t0).value().created);
  ASSERT_TRUE(this->store_.retire_pool_member(members[0], t0).value());  // error → deleting
  EXPECT_FALSE(this->store_.insert_pool_member(make_host(t0), key, 2, k_ports, t0).value().created);
  EXPECT_FALSE(this->store_.insert_pool_member(make_host(t0), key, 0, k_ports, t0).value().created);
}

TYPED_TEST(store_contract, PoolMembersAreHiddenFromListAndCountButNotFromSweepsOrIds) {
  const auto key = make_key();
  const auto host = this->insert(make_host(t0, host_status::active));
  const auto member = add_member(this->store_, key, t0);
  const auto listed = this->store_.list_hosts({}).value();
  ASSERT_EQ(listed.size(), 1U);
  EXPECT_EQ(listed[0].host.id, host.host.id);
  list_query active;
  active.statuses = {host_status::active};
  EXPECT_EQ(this->store_.list_hosts(active).value().size(), 1U);
  EXPECT_EQ(this->store_.count_by_status().value().at(host_status::active), 1);
  auto ids = this->store_.all_host_ids().value();
  std::sort(ids.begin(), ids.end());
  auto want = std::vector<std::string>{host.host.id, member};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ids, want);
  const auto pooled = this->store_.list_pool_members().value();
  ASSERT_EQ(pooled.size(), 1U);
  EXPECT_EQ(pooled[0].host.id, member);
  EXPECT_TRUE(pooled[0].pooled);
}

TYPED_TEST(store_contract, ExpiredAndInterruptedPoolMembersAreSweptLikeAnyHost) {
  const auto key = make_key();
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto aged = add_member(this->store_, key, t0);
  host_patch max_age;
  max_age.expires_at = t0 + 1min;
  ASSERT_TRUE(this->store_.transition(aged, {host_status::active}, max_age, t0));
  auto refilling = make_host(t0);
  refilling.owner_id = k_owner_a;
  ASSERT_TRUE(this->store_.insert_pool_member(refilling, key, 10, k_ports, t0).value().created);

  const auto expired = this->store_.claim_expired(t0 + 1min, t0 - 1h, 10);
  ASSERT_TRUE(expired.has_value()) << expired.error().message;
  ASSERT_EQ(expired.value().size(), 1U);
  EXPECT_EQ(expired.value()[0].host.id, aged);
  EXPECT_TRUE(expired.value()[0].pooled);
  EXPECT_EQ(expired.value()[0].host.status, host_status::deleting);

  const auto interrupted = this->store_.claim_interrupted(t0 + 1h, 60s, "I: ", "O: ", 10, "");
  ASSERT_TRUE(interrupted.has_value()) << interrupted.error().message;
  ASSERT_EQ(interrupted.value().size(), 1U);
  EXPECT_EQ(interrupted.value()[0].host.host.id, refilling.host.id);
  EXPECT_TRUE(interrupted.value()[0].host.pooled);
  EXPECT_EQ(interrupted.value()[0].host.host.status, host_status::error);
}

TYPED_TEST(store_contract, AClaimTurnsTheOldestActiveMemberIntoTheClaimersHost) {
  const auto key = make_key();
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  add_member(this->store_, key, t0 - 3s, host_status::provisioning);
  const auto oldest = add_member(this->store_, key, t0 - 2s);
  const auto newer = add_member(this->store_, key, t0 - 1s);
  add_member(this->store_, make_key("sha256:" + std::string(64, 'f')), t0 - 4s);  // another key
  const auto before = this->store_.get_host(oldest).value();
  const int member_port = this->store_.allocate_port(oldest, k_ports.lo, k_ports.hi, t0).value();
  const auto c = make_pool_claim(key, t0, k_owner_a);

  const auto out = this->store_.claim_pool_member(c, std::nullopt, t0);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  ASSERT_TRUE(out.value());
  const auto& o = *out.value();
  EXPECT_TRUE(o.created);
  EXPECT_TRUE(o.fingerprint_matches);
  EXPECT_EQ(o.port, member_port);
  const auto& r = o.existing;
  // The member's identity stays…
  EXPECT_EQ(r.host.id, oldest);
  EXPECT_EQ(r.host.name, before.host.name);
  EXPECT_EQ(r.host.image_digest, key.image_digest);
  EXPECT_EQ(r.host.cpus, key.cpus);
  EXPECT_EQ(r.host.ssh_username, key.ssh_username);
  // …and it becomes the claimer's host, out of the pool.
  EXPECT_FALSE(r.pooled);
  EXPECT_EQ(r.path, create_path::pool);
  EXPECT_EQ(r.host.status, host_status::bootstrapping);
  EXPECT_EQ(r.host.image, c.as.host.image);
  EXPECT_EQ(r.host.instance_type, c.as.host.instance_type);
  EXPECT_EQ(r.host.expires_at, c.as.host.expires_at);
  EXPECT_EQ(r.host.created_at, c.as.host.created_at);
  EXPECT_EQ(r.host.updated_at, t0);
  EXPECT_FALSE(r.host.activated_at);  // activated again once re-identified
  EXPECT_EQ(r.lease_seconds, c.as.lease_seconds);
  EXPECT_EQ(r.owner_id, k_owner_a);
  EXPECT_EQ(r.provision_deadline, c.as.provision_deadline);
  expect_same_row(this->store_.get_host(oldest).value(), r);
  const auto listed = this->store_.list_hosts({}).value();
  ASSERT_EQ(listed.size(), 1U);
  EXPECT_EQ(listed[0].host.id, oldest);
  EXPECT_EQ(this->store_.count_by_status().value().at(host_status::bootstrapping), 1);
  // Its port lease stays with it: the forward is already in place.
  EXPECT_EQ(this->store_.allocate_port(oldest, k_ports.lo, k_ports.hi, t0).value(), member_port);
  // The next claim takes the next member.
  const auto next = this->store_.claim_pool_member(make_pool_claim(key, t0), std::nullopt, t0);
  ASSERT_TRUE(next.has_value()) << next.error().message;
  ASSERT_TRUE(next.value());
  EXPECT_EQ(next.value()->existing.host.id, newer);
}

TYPED_TEST(store_contract, AClaimWithNoActiveMemberChangesNothingAndLeavesTheKeyFree) {
  const auto key = make_key();
  add_member(this->store_, key, t0, host_status::provisioning);
  add_member(this->store_, key, t0, host_status::error);
  const auto k = make_claim("k", "fp", t0 + 1h);
  const auto out = this->store_.claim_pool_member(make_pool_claim(key, t0), k, t0);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_FALSE(out.value());
  for (const auto& m : this->store_.list_pool_members().value()) {
    EXPECT_TRUE(m.pooled);
    EXPECT_NE(m.host.status, host_status::bootstrapping);
  }
  const auto fresh = this->store_.insert_host(make_host(t0), k, k_ports, t0);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  EXPECT_TRUE(fresh.value().created);
}

TYPED_TEST(store_contract, AClaimWithAHeldKeyReplaysItsHostAndClaimsNothing) {
  const auto key = make_key();
  const auto member = add_member(this->store_, key, t0);
  const auto booted = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(booted, make_claim("k", "fp", t0 + 1h), k_ports, t0));
  const auto same =
      this->store_.claim_pool_member(make_pool_claim(key, t0), make_claim("k", "fp", t0 + 1h), t0);
  ASSERT_TRUE(same.has_value()) << same.error().message;
  ASSERT_TRUE(same.value());
  EXPECT_FALSE(same.value()->created);
  EXPECT_TRUE(same.value()->fingerprint_matches);
  EXPECT_EQ(same.value()->existing.host.id, booted.host.id);
  const auto other = this->store_.claim_pool_member(make_pool_claim(key, t0),
                                                    make_claim("k", "other", t0 + 1h), t0);
  ASSERT_TRUE(other.has_value()) << other.error().message;
  ASSERT_TRUE(other.value());
  EXPECT_FALSE(other.value()->created);
  EXPECT_FALSE(other.value()->fingerprint_matches);
  const auto m = this->store_.get_host(member).value();
  EXPECT_TRUE(m.pooled);
  EXPECT_EQ(m.host.status, host_status::active);
}

TYPED_TEST(store_contract, AClaimReservesItsKeySoThatARetryReplaysTheClaimedHost) {
  const auto key = make_key();
  const auto first_member = add_member(this->store_, key, t0 - 2s);
  const auto second_member = add_member(this->store_, key, t0 - 1s);
  const auto k = make_claim("k", "fp", t0 + 1h);
  const auto claimed = this->store_.claim_pool_member(make_pool_claim(key, t0), k, t0);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_TRUE(claimed.value());
  EXPECT_EQ(claimed.value()->existing.host.id, first_member);
  const auto retry = this->store_.claim_pool_member(make_pool_claim(key, t0 + 1s), k, t0 + 1s);
  ASSERT_TRUE(retry.has_value()) << retry.error().message;
  ASSERT_TRUE(retry.value());
  EXPECT_FALSE(retry.value()->created);
  EXPECT_EQ(retry.value()->existing.host.id, first_member);
  // A boot with the same key replays it too.
  const auto boot = this->store_.insert_host(make_host(t0 + 2s), k, k_ports, t0 + 2s);
  ASSERT_TRUE(boot.has_value()) << boot.error().message;
  EXPECT_FALSE(boot.value().created);
  EXPECT_EQ(boot.value().existing.host.id, first_member);
  EXPECT_TRUE(this->store_.get_host(second_member).value().pooled);
  // Once the key has expired it is replaced by the next claim.
  const auto later = this->store_.claim_pool_member(make_pool_claim(key, t0 + 1h),
                                                    make_claim("k", "fp", t0 + 2h), t0 + 1h);
  ASSERT_TRUE(later.has_value()) << later.error().message;
  ASSERT_TRUE(later.value());
  EXPECT_TRUE(later.value()->created);
  EXPECT_EQ(later.value()->existing.host.id, second_member);
}

TYPED_TEST(store_contract, RetireTakesOnlyPooledMembersThatAreActiveOrFailed) {
  const auto key = make_key();
  const auto active = add_member(this->store_, key, t0 - 3s);
  const auto failed = add_member(this->store_, key, t0 - 2s, host_status::error);
  const auto starting = add_member(this->store_, key, t0 - 1s, host_status::provisioning);
  const auto claimed = add_member(this->store_, key, t0 - 4s);
  ASSERT_EQ(this->store_.claim_pool_member(make_pool_claim(key, t0), std::nullopt, t0)
                .value()
                ->existing.host.id,
            claimed);
  const auto host = this->insert(make_host(t0, host_status::active));

  EXPECT_FALSE(this->store_.retire_pool_member(claimed, t0 + 1s).value());
  EXPECT_EQ(this->store_.get_host(claimed).value().host.status, host_status::bootstrapping);
  EXPECT_FALSE(this->store_.retire_pool_member(starting, t0 + 1s).value());
  EXPECT_FALSE(this->store_.retire_pool_member(host.host.id, t0 + 1s).value());
  EXPECT_FALSE(this->store_.retire_pool_member(new_uuid_v7(t0), t0 + 1s).value());
  EXPECT_FALSE(this->store_.retire_pool_member("not-a-uuid", t0 + 1s).value());
  for (const auto& id : {active, failed}) {
    const auto retired = this->store_.retire_pool_member(id, t0 + 1s);
    ASSERT_TRUE(retired.has_value()) << retired.error().message;
    EXPECT_TRUE(retired.value());
    const auto row = this->store_.get_host(id).value();
    EXPECT_EQ(row.host.status, host_status::deleting);
    EXPECT_EQ(row.host.updated_at, t0 + 1s);
    EXPECT_TRUE(row.pooled);
  }
  // A member being deleted is not claimed.
  EXPECT_FALSE(
      this->store_.claim_pool_member(make_pool_claim(key, t0 + 2s), std::nullopt, t0 + 2s).value());
}

TYPED_TEST(store_contract, CountPoolCountsMembersPerKeyAndStatus) {
  const auto a = make_key();
  const auto b = make_key("sha256:" + std::string(64, 'b'), 20);
  add_member(this->store_, a, t0);
  add_member(this->store_, a, t0);
  add_member(this->store_, a, t0, host_status::provisioning);
  add_member(this->store_, b, t0);
  this->insert(make_host(t0, host_status::active));  // not pooled: not counted
  const auto counts = this->store_.count_pool();
  ASSERT_TRUE(counts.has_value()) << counts.error().message;
  std::map<std::pair<template_key_row, host_status>, std::int64_t> got;
  for (const auto& c : counts.value()) {
    got[{c.key, c.status}] = c.count;
  }
  const std::map<std::pair<template_key_row, host_status>, std::int64_t> want = {
      {{a, host_status::active}, 2},
      {{a, host_status::provisioning}, 1},
      {{b, host_status::active}, 1},
  };
  EXPECT_EQ(got, want);
}

TYPED_TEST(store_contract, InsertAndTransitionKeepPooledAndCreatePath) {
  auto booted = make_host(t0);
  booted.path = create_path::boot;
  this->insert(booted);
  auto got = this->store_.get_host(booted.host.id).value();
  EXPECT_EQ(got.path, create_path::boot);
  EXPECT_FALSE(got.pooled);
  const auto undecided = this->insert(make_host(t0));
  EXPECT_FALSE(this->store_.get_host(undecided.host.id).value().path);
  host_patch p;
  p.path = create_path::clone;
  const auto moved = this->store_.transition(undecided.host.id, {host_status::provisioning}, p, t0);
  ASSERT_TRUE(moved.has_value()) << moved.error().message;
  EXPECT_EQ(moved.value().path, create_path::clone);
  EXPECT_EQ(this->store_.get_host(undecided.host.id).value().path, create_path::clone);
  // A patch without a path leaves it alone.
  host_patch other;
  other.last_error = "x";
  ASSERT_TRUE(this->store_.transition(undecided.host.id, {host_status::provisioning}, other, t0));
  EXPECT_EQ(this->store_.get_host(undecided.host.id).value().path, create_path::clone);
}

// Concurrency: what several processes sharing the database must never do. The memory store
// serialises every call; pg_store must get the same answers from its locks.

TYPED_TEST(store_contract, ConcurrentRefillsOfOneKeyInsertExactlyTheTarget) {
  constexpr int threads = 8;
  constexpr int per_thread = 3;
  constexpr int target = 5;
  const auto key = make_key();
  std::atomic<int> created{0};
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < per_thread; ++i) {
        const auto out = this->store_.insert_pool_member(make_host(t0), key, target, k_ports, t0);
        if (!out) {
          ++failures;
        } else if (out.value().created) {
          ++created;
        }
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(created.load(), target);
  EXPECT_EQ(this->store_.list_pool_members().value().size(), std::size_t{target});
}

TYPED_TEST(store_contract, ConcurrentClaimsOfKMembersGiveKDistinctHosts) {
  constexpr int members = 4;
  constexpr int threads = 8;
  const auto key = make_key();
  for (int i = 0; i < members; ++i) {
    add_member(this->store_, key, t0 - std::chrono::seconds(i + 1));
  }
  std::vector<std::optional<std::string>> got(threads);
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      const auto out = this->store_.claim_pool_member(make_pool_claim(key, t0), std::nullopt, t0);
      if (!out) {
        ++failures;
      } else if (out.value()) {
        got[static_cast<std::size_t>(t)] = out.value()->existing.host.id;
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  std::set<std::string> distinct;
  int claims = 0;
  for (const auto& g : got) {
    if (g) {
      ++claims;
      distinct.insert(*g);
    }
  }
  EXPECT_EQ(claims, members);
  EXPECT_EQ(distinct.size(), std::size_t{members});
  for (const auto& m : this->store_.list_pool_members().value()) {
    ADD_FAILURE() << "still pooled after every member was claimed: " << m.host.id;
  }
}

TYPED_TEST(store_contract, ConcurrentClaimsWithOneKeyGiveOneClaimAndReplaysOfIt) {
  // More members than claimers: every claimer finds one to lock, so each answer is the claim
  // or a replay of it, never "pool empty".
  constexpr int threads = 8;
  const auto key = make_key();
  for (int i = 0; i < threads; ++i) {
    add_member(this->store_, key, t0 - std::chrono::seconds(i + 1));
  }
  struct answer {
    bool ok = false;
    bool present = false;
    bool created = false;
    bool matches = false;
    std::string id;
  };
  std::vector<answer> got(threads);
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // Half of them send another body under the same key.
      const auto k = make_claim("shared", t % 2 == 0 ? "fp-even" : "fp-odd", t0 + 1h);
      start.arrive_and_wait();
      const auto out = this->store_.claim_pool_member(make_pool_claim(key, t0), k, t0);
      auto& a = got[static_cast<std::size_t>(t)];
      a.ok = out.has_value();
      if (out && out.value()) {
        a.present = true;
        a.created = out.value()->created;
        a.matches = out.value()->fingerprint_matches;
        a.id = out.value()->existing.host.id;
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  int winner = -1;
  for (int t = 0; t < threads; ++t) {
    const auto& a = got[static_cast<std::size_t>(t)];
    ASSERT_TRUE(a.ok) << t;
    ASSERT_TRUE(a.present) << t;
    if (a.created) {
      EXPECT_EQ(winner, -1) << "two claims for one key";
      winner = t;
    }
  }
  ASSERT_NE(winner, -1);
  const auto& w = got[static_cast<std::size_t>(winner)];
  for (int t = 0; t < threads; ++t) {
    const auto& a = got[static_cast<std::size_t>(t)];
    EXPECT_EQ(a.id, w.id) << t;
    if (t != winner) {
      EXPECT_EQ(a.matches, t % 2 == winner % 2) << t;
    }
  }
  EXPECT_EQ(this->store_.list_pool_members().value().size(), std::size_t{threads - 1});
  EXPECT_EQ(this->store_.list_hosts({}).value().size(), 1U);
}

TYPED_TEST(store_contract, ConcurrentFirstBuildsOfOneKeyGiveOneBuilder) {
  constexpr int threads = 6;
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto key = make_key();
  std::atomic<int> builders{0};
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      const auto want = make_template(key, k_owner_a, t0);
      start.arrive_and_wait();
      const auto out = this->store_.claim_template_build(want, k_ports, t0);
      if (!out) {
        ++failures;
      } else if (out.value()) {
        ++builders;
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(builders.load(), 1);
  EXPECT_EQ(this->store_.list_templates().value().size(), 1U);
}

TYPED_TEST(store_contract, ConcurrentTakeoversOfAnAbandonedBuildGiveOneBuilder) {
  constexpr int threads = 6;
  ASSERT_TRUE(this->store_.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto key = make_key();
  const auto abandoned =
      this->store_.claim_template_build(make_template(key, k_owner_a, t0), k_ports, t0).value();
  ASSERT_TRUE(abandoned);
  const timestamp later = t0 + 1min;
  std::vector<std::string> owners;
  for (int t = 0; t < threads; ++t) {
    owners.push_back(new_uuid_v7(later));
    ASSERT_TRUE(this->store_.heartbeat(owners.back(), "n", t, 10s, later));
  }
  std::vector<std::optional<std::string>> winners(threads);
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const auto want = make_template(key, owners[static_cast<std::size_t>(t)], later);
      start.arrive_and_wait();
      const auto out = this->store_.claim_template_build(want, k_ports, later);
      if (!out) {
        ++failures;
      } else if (out.value()) {
        winners[static_cast<std::size_t>(t)] = out.value()->owner_id;
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  std::vector<std::string> won;
  for (const auto& w : winners) {
    if (w) {
      won.push_back(*w);
    }
  }
  ASSERT_EQ(won.size(), 1U);
  const auto row = this->store_.find_template(key).value();
  ASSERT_TRUE(row);
  EXPECT_EQ(row->id, abandoned->id);
  EXPECT_EQ(row->owner_id, won[0]);
}

// Host events (issue 15).

/// The (type, status) of each event, in id order.
std::vector<std::pair<event_type, host_status>> kinds(const std::vector<host_event>& events) {
  std::vector<std::pair<event_type, host_status>> out;
  for (const auto& e : events) {
    out.emplace_back(e.type, e.status);
  }
  return out;
}

std::vector<host_event> events_of(store& s, const std::string& host_id) {
  event_query q;
  q.host_id = host_id;
  auto out = s.list_events(q);
  EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
  return out ? out.value() : std::vector<host_event>{};
}

host_patch to(host_status status) {
  host_patch p;
  p.status = status;
  return p;
}

TYPED_TEST(store_contract, EveryStatusChangeOfAHostIsOneEventInOrder) {
  auto& s = this->store_;
  const auto h = this->insert(make_host(t0));
  const std::string& id = h.host.id;
  const std::vector<host_status> path{host_status::pulling_image, host_status::creating_vm,
                                      host_status::bootstrapping, host_status::active};
  host_status at = host_status::provisioning;
  for (std::size_t i = 0; i < path.size(); ++i) {
    ASSERT_TRUE(s.transition(id, {at}, to(path[i]), t0 + std::chrono::seconds(i + 1)));
    at = path[i];
  }
  host_patch same;  // no status change: no event
  same.ssh_host = "127.0.0.1";
  ASSERT_TRUE(s.transition(id, {host_status::active}, same, t0 + 10s));
  ASSERT_TRUE(s.renew(id, t0 + 2h, t0 + 11s));  // a renewal is no state change either
  ASSERT_FALSE(s.transition(id, {host_status::error}, to(host_status::deleting), t0 + 12s));
  host_patch failing = to(host_status::error);
  failing.last_error = "Boot: no";
  ASSERT_TRUE(s.transition(id, {host_status::active}, failing, t0 + 13s));
  ASSERT_TRUE(s.remove_host(id));

  const auto events = events_of(s, id);
  using P = std::pair<event_type, host_status>;
  EXPECT_EQ(kinds(events), (std::vector<P>{P{event_type::created, host_status::provisioning},
                                           P{event_type::status, host_status::pulling_image},
                                           P{event_type::status, host_status::creating_vm},
                                           P{event_type::status, host_status::bootstrapping},
                                           P{event_type::status, host_status::active},
                                           P{event_type::status, host_status::error},
                                           P{event_type::deleted, host_status::error}}));
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].host_id, id);
    if (i > 0) {
      EXPECT_GT(events[i].id, events[i - 1].id);
    }
  }
  ASSERT_EQ(events.size(), 7U);
  EXPECT_EQ(events[0].at, t0);
  EXPECT_EQ(events[4].at, t0 + 4s);
  EXPECT_EQ(events[5].last_error, "Boot: no");
  EXPECT_EQ(events[5].at, t0 + 13s);
  EXPECT_EQ(s.newest_event_id().value(), events.back().id);
}

TYPED_TEST(store_contract, ADiedTransitionIsADiedEventWithItsLastError) {
  auto& s = this->store_;
  const auto id = this->insert(make_host(t0, host_status::active)).host.id;
  host_patch died = to(host_status::error);
  died.last_error = "VMStopped: guest powered off";
  died.died = true;
  ASSERT_TRUE(s.transition(id, {host_status::active}, died, t0 + 1s));
  const auto events = events_of(s, id);
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[1].type, event_type::died);
  EXPECT_EQ(events[1].status, host_status::error);
  EXPECT_EQ(events[1].last_error, "VMStopped: guest powered off");
  // The mark lasts one transaction: the next change is a plain status change.
  ASSERT_TRUE(s.transition(id, {host_status::error}, to(host_status::deleting), t0 + 2s));
  EXPECT_EQ(events_of(s, id).back().type, event_type::status);
}

TYPED_TEST(store_contract, ARefusedChangeRecordsNoEvent) {
  auto& s = this->store_;
  const auto id = this->insert(make_host(t0)).host.id;
  ASSERT_FALSE(s.transition(id, {host_status::active}, to(host_status::error), t0 + 1s));
  const port_range one{k_ports.hi + 1, k_ports.hi + 1};
  auto full = make_host(t0);
  ASSERT_TRUE(s.insert_host(make_host(t0), std::nullopt, one, t0));
  const auto none_left = s.insert_host(full, std::nullopt, one, t0);
  ASSERT_FALSE(none_left.has_value());
  EXPECT_EQ(none_left.error().code, errc::capacity);
  EXPECT_TRUE(events_of(s, full.host.id).empty());
  EXPECT_EQ(events_of(s, id).size(), 1U);
  EXPECT_EQ(s.list_events({}).value().size(), 2U);
}

TYPED_TEST(store_contract, PoolMembersHaveNoEventsUntilAClaimCreatesTheCallersHost) {
  auto& s = this->store_;
  const auto key = make_key();
  ASSERT_TRUE(s.heartbeat(k_owner_a, "a", 1, 10s, t0));
  const auto member = add_member(s, key, t0 - 2s);
  const auto retired = add_member(s, make_key("sha256:" + std::string(64, 'e')), t0 - 1s);
  ASSERT_TRUE(s.retire_pool_member(retired, t0).value());
  ASSERT_TRUE(s.remove_host(retired));
  EXPECT_TRUE(events_of(s, member).empty());
  EXPECT_TRUE(events_of(s, retired).empty());
  EXPECT_EQ(s.newest_event_id().value(), 0);

  const auto claimed = s.claim_pool_member(make_pool_claim(key, t0, k_owner_a), std::nullopt, t0);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_TRUE(claimed.value());
  ASSERT_EQ(claimed.value()->existing.host.id, member);
  ASSERT_TRUE(s.transition(member, {host_status::bootstrapping}, to(host_status::active), t0 + 1s));
  using P = std::pair<event_type, host_status>;
  EXPECT_EQ(kinds(events_of(s, member)),
            (std::vector<P>{P{event_type::created, host_status::bootstrapping},
                            P{event_type::status, host_status::active}}));
}

TYPED_TEST(store_contract, SweepsRecordTheirChangesAsEvents) {
  auto& s = this->store_;
  auto expiring = make_host(t0, host_status::active);
  expiring.host.expires_at = t0 + 1min;
  const auto expired_id = this->insert(expiring).host.id;
  const auto stuck_id = this->insert(make_host(t0, host_status::creating_vm)).host.id;  // no owner

  ASSERT_EQ(s.claim_expired(t0 + 1min, t0 - 1h, 10).value().size(), 1U);
  ASSERT_EQ(s.claim_interrupted(t0 + 1min, 60s, "I: ", "O: ", 10, "").value().size(), 1U);
  // A second sweep of a deleting host whose teardown failed changes no status.
  ASSERT_EQ(s.claim_expired(t0 + 3h, t0 + 2h, 10).value().size(), 2U);

  using P = std::pair<event_type, host_status>;
  EXPECT_EQ(kinds(events_of(s, expired_id)),
            (std::vector<P>{P{event_type::created, host_status::active},
                            P{event_type::status, host_status::deleting}}));
  const auto stuck = events_of(s, stuck_id);
  EXPECT_EQ(kinds(stuck), (std::vector<P>{P{event_type::created, host_status::creating_vm},
                                          P{event_type::status, host_status::error},
                                          P{event_type::status, host_status::deleting}}));
  ASSERT_EQ(stuck.size(), 3U);
  EXPECT_EQ(stuck[1].last_error, "I: creating_vm");
}

TYPED_TEST(store_contract, ListEventsResumesAfterAnIdAndFiltersByHostAndStatus) {
  auto& s = this->store_;
  const auto a = this->insert(make_host(t0)).host.id;
  const auto b = this->insert(make_host(t0 + 1s)).host.id;
  ASSERT_TRUE(s.transition(a, {host_status::provisioning}, to(host_status::error), t0 + 2s));
  ASSERT_TRUE(s.transition(b, {host_status::provisioning}, to(host_status::error), t0 + 3s));

  const auto all = s.list_events({}).value();
  ASSERT_EQ(all.size(), 4U);
  EXPECT_EQ(all[0].host_id, a);
  EXPECT_EQ(all[1].host_id, b);

  event_query after;
  after.after = all[1].id;
  const auto rest = s.list_events(after).value();
  ASSERT_EQ(rest.size(), 2U);
  EXPECT_EQ(rest[0], all[2]);
  EXPECT_EQ(rest[1], all[3]);

  event_query limited;
  limited.limit = 3;
  EXPECT_EQ(s.list_events(limited).value().size(), 3U);

  event_query errors;
  errors.statuses = {host_status::error};
  errors.host_id = b;
  const auto b_errors = s.list_events(errors).value();
  ASSERT_EQ(b_errors.size(), 1U);
  EXPECT_EQ(b_errors[0], all[3]);

  event_query upper;  // ids in any letter case name the same host
  upper.host_id = b;
  std::transform(upper.host_id->begin(), upper.host_id->end(), upper.host_id->begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  EXPECT_EQ(s.list_events(upper).value().size(), 2U);

  event_query nonsense;
  nonsense.host_id = "not-a-uuid";
  EXPECT_TRUE(s.list_events(nonsense).value().empty());

  event_query beyond;
  beyond.after = all[3].id;
  EXPECT_TRUE(s.list_events(beyond).value().empty());
}

TYPED_TEST(store_contract, PrunedHistoryRefusesAnOlderResumePointInsteadOfSkipping) {
  auto& s = this->store_;
  const auto old_host = this->insert(make_host(t0)).host.id;
  ASSERT_TRUE(s.transition(old_host, {host_status::provisioning}, to(host_status::error), t0 + 1s));
  const auto recent = this->insert(make_host(t0 + 1h)).host.id;
  const auto before = s.list_events({}).value();
  ASSERT_EQ(before.size(), 3U);

  EXPECT_EQ(s.prune_events(t0 + 30min).value(), 2);
  EXPECT_EQ(s.prune_events(t0 + 30min).value(), 0);

  for (const std::int64_t stale : {std::int64_t{0}, before[0].id}) {
    event_query q;
    q.after = stale;
    const auto out = s.list_events(q);
    ASSERT_FALSE(out.has_value()) << "resuming after " << stale;
    EXPECT_EQ(out.error().code, errc::history_gone);
  }
  event_query from_kept;
  from_kept.after = before[1].id;  // the newest pruned one: nothing after it is missing
  const auto kept = s.list_events(from_kept).value();
  ASSERT_EQ(kept.size(), 1U);
  EXPECT_EQ(kept[0].host_id, recent);

  EXPECT_EQ(s.prune_events(t0 + 2h).value(), 1);
  // With nothing left, the newest id is still the last one handed out: a new stream starts
  // there rather than at a pruned past.
  EXPECT_EQ(s.newest_event_id().value(), before[2].id);
  event_query now;
  now.after = s.newest_event_id().value();
  EXPECT_TRUE(s.list_events(now).value().empty());
}

TYPED_TEST(store_contract, OneHostsWholeHistoryIsServedFromTheStartAfterOthersWerePruned) {
  auto& s = this->store_;
  const auto old_host = this->insert(make_host(t0)).host.id;
  const auto recent = this->insert(make_host(t0 + 1h)).host.id;
  ASSERT_TRUE(s.transition(recent, {host_status::provisioning}, to(host_status::error), t0 + 2h));
  ASSERT_EQ(s.prune_events(t0 + 30min).value(), 1);
  // The recent host's history is whole (its created event is there): served from 0.
  event_query mine;
  mine.host_id = recent;
  const auto whole = s.list_events(mine);
  ASSERT_TRUE(whole.has_value()) << whole.error().message;
  ASSERT_EQ(whole->size(), 2U);
  EXPECT_EQ((*whole)[0].type, event_type::created);
  // The old host's was cut: its stream from the start is refused, not silently short.
  event_query theirs;
  theirs.host_id = old_host;
  const auto cut = s.list_events(theirs);
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.error().code, errc::history_gone);
}

TYPED_TEST(store_contract, AReaderFollowingConcurrentWritersSeesEveryEventOnceInIdOrder) {
  auto& s = this->store_;
  constexpr int writers = 4;
  constexpr int hosts_each = 6;
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<host_event> seen;
  std::thread reader([&] {
    std::int64_t after = 0;
    for (bool last = false; !last;) {
      last = done.load();
      event_query q;
      q.after = after;
      const auto out = s.list_events(q);
      if (!out) {
        ++failures;
        return;
      }
      for (const auto& e : out.value()) {
        seen.push_back(e);
        after = e.id;
      }
    }
  });
  std::latch start(writers);
  std::vector<std::thread> pool;
  pool.reserve(writers);
  for (int w = 0; w < writers; ++w) {
    pool.emplace_back([&, w] {
      start.arrive_and_wait();
      for (int i = 0; i < hosts_each; ++i) {
        const auto h = make_host(t0 + std::chrono::milliseconds(w * 1000 + i));
        if (!s.insert_host(h, std::nullopt, k_ports, t0) ||
            !s.transition(h.host.id, {host_status::provisioning}, to(host_status::error), t0) ||
            !s.remove_host(h.host.id)) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  done = true;
  reader.join();
  ASSERT_EQ(failures.load(), 0);
  const auto all = s.list_events({}).value();
  EXPECT_EQ(all.size(), static_cast<std::size_t>(writers * hosts_each * 3));
  EXPECT_EQ(seen, all);  // nothing skipped, nothing twice, same order
}

}  // namespace
}  // namespace litterbox::controlplane
