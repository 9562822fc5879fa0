#include "controlplane/pg/pg_store.hpp"

#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <latch>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace litterbox::controlplane::pg {
namespace {

using namespace std::chrono_literals;
using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));

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

const port_range k_ports{20000, 29999};

class pgstore : public ::testing::Test {
 protected:
  test::test_database db_;
  pg_store store_{db_.url(), 8};

  /// Inserts `r` without the port insert_host leases (as rows made before ports were leased
  /// with the row), so allocate_port's own leasing can be tested.
  host_record insert_unleased(const host_record& r) {
    auto rec = insert(r);
    pqxx::connection c(db_.url());
    pqxx::nontransaction tx(c);
    tx.exec_params("DELETE FROM ssh_ports WHERE host_id = $1::uuid", r.host.id);
    return rec;
  }

  host_record insert(const host_record& r) {
    auto out = store_.insert_host(r, std::nullopt, k_ports, r.host.created_at);
    EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
    return out ? out.value().existing : host_record{};
  }
};

TEST_F(pgstore, InsertThenGetReturnsEveryColumnUnchanged) {
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
  ASSERT_TRUE(store_.heartbeat("0190c0de-0000-7000-8000-000000000001", "node", 42,
                               std::chrono::seconds(10), t0));
  r.owner_id = "0190c0de-0000-7000-8000-000000000001";

  const auto inserted = store_.insert_host(r, std::nullopt, k_ports, t0);
  ASSERT_TRUE(inserted.has_value());
  EXPECT_TRUE(inserted.value().created);
  EXPECT_EQ(inserted.value().existing.host, r.host);

  const auto got = store_.get_host(r.host.id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value().host, r.host);
  EXPECT_EQ(got.value().lease_seconds, r.lease_seconds);
  EXPECT_EQ(got.value().owner_id, r.owner_id);
}

TEST_F(pgstore, OptionalColumnsRoundTripAsNull) {
  const auto r = make_host(t0);
  insert(r);
  const auto got = store_.get_host(r.host.id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value().host, r.host);
  EXPECT_FALSE(got.value().host.image_digest.has_value());
  EXPECT_FALSE(got.value().host.expires_at.has_value());
  EXPECT_FALSE(got.value().lease_seconds.has_value());
  EXPECT_FALSE(got.value().owner_id.has_value());
}

TEST_F(pgstore, TimestampsRoundTripExactToTheMicrosecond) {
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
    insert(r);
    const auto got = store_.get_host(r.host.id);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got.value().host.created_at, t);
    EXPECT_EQ(got.value().host.updated_at, t + 1us);
    EXPECT_EQ(got.value().host.activated_at, t + 2us);
    EXPECT_EQ(got.value().host.expires_at, t + 3us);
  }
}

TEST_F(pgstore, GetUnknownOrMalformedIdIsNotFound) {
  const auto unknown = store_.get_host(new_uuid_v7(t0));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, errc::not_found);
  const auto malformed = store_.get_host("not-a-uuid'; DROP TABLE hosts; --");
  ASSERT_FALSE(malformed.has_value());
  EXPECT_EQ(malformed.error().code, errc::not_found);
}

TEST_F(pgstore, ListIsNewestFirstAndFiltersByStatus) {
  std::vector<std::string> ids;
  ids.reserve(5);
  for (int i = 0; i < 5; ++i) {
    const auto status = i % 2 == 0 ? host_status::active : host_status::error;
    ids.push_back(insert(make_host(t0 + std::chrono::milliseconds(i), status)).host.id);
  }
  const auto all = store_.list_hosts({});
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all.value().size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(all.value()[i].host.id, ids[4 - i]);
  }
  list_query q;
  q.statuses = {host_status::error};
  const auto errors = store_.list_hosts(q);
  ASSERT_TRUE(errors.has_value());
  ASSERT_EQ(errors.value().size(), 2u);
  EXPECT_EQ(errors.value()[0].host.id, ids[3]);
  EXPECT_EQ(errors.value()[1].host.id, ids[1]);
  q.statuses = {host_status::error, host_status::active};
  const auto both = store_.list_hosts(q);
  ASSERT_TRUE(both.has_value());
  EXPECT_EQ(both.value().size(), 5u);
}

TEST_F(pgstore, ListPagesWithLimitAndAfterCursor) {
  std::vector<std::string> ids;
  ids.reserve(5);
  for (int i = 0; i < 5; ++i) {
    ids.push_back(insert(make_host(t0 + std::chrono::milliseconds(i))).host.id);
  }
  list_query q;
  q.limit = 2;
  const auto page1 = store_.list_hosts(q);
  ASSERT_TRUE(page1.has_value());
  ASSERT_EQ(page1.value().size(), 2u);
  EXPECT_EQ(page1.value()[0].host.id, ids[4]);
  EXPECT_EQ(page1.value()[1].host.id, ids[3]);
  q.after = page1.value().back().host.id;
  const auto page2 = store_.list_hosts(q);
  ASSERT_TRUE(page2.has_value());
  ASSERT_EQ(page2.value().size(), 2u);
  EXPECT_EQ(page2.value()[0].host.id, ids[2]);
  EXPECT_EQ(page2.value()[1].host.id, ids[1]);
  q.after = page2.value().back().host.id;
  const auto page3 = store_.list_hosts(q);
  ASSERT_TRUE(page3.has_value());
  ASSERT_EQ(page3.value().size(), 1u);
  EXPECT_EQ(page3.value()[0].host.id, ids[0]);

  q.after = "garbage";
  const auto bad = store_.list_hosts(q);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, errc::validation);
}

TEST_F(pgstore, IdempotentReplayReturnsTheOriginalHostAndInsertsNothing) {
  const auto first = make_host(t0);
  const auto claim = make_claim("key-1", "fp-a", t0 + 24h);
  const auto a = store_.insert_host(first, claim, k_ports, t0);
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a.value().created);

  const auto second = make_host(t0 + 1s);
  const auto b = store_.insert_host(second, claim, k_ports, t0 + 1s);
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b.value().created);
  EXPECT_TRUE(b.value().fingerprint_matches);
  EXPECT_EQ(b.value().existing.host.id, first.host.id);
  EXPECT_EQ(store_.get_host(second.host.id).error().code, errc::not_found);
  EXPECT_EQ(store_.all_host_ids().value().size(), 1u);
}

TEST_F(pgstore, IdempotencyKeyWithAnotherBodyReportsFingerprintMismatch) {
  const auto first = make_host(t0);
  ASSERT_TRUE(store_.insert_host(first, make_claim("key-1", "fp-a", t0 + 24h), k_ports, t0));
  const auto b =
      store_.insert_host(make_host(t0), make_claim("key-1", "fp-b", t0 + 24h), k_ports, t0);
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b.value().created);
  EXPECT_FALSE(b.value().fingerprint_matches);
  EXPECT_EQ(b.value().existing.host.id, first.host.id);
}

TEST_F(pgstore, IdempotencyKeysAreScopedByNamespace) {
  ASSERT_TRUE(store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), k_ports, t0));
  auto other = make_claim("key-1", "fp", t0 + 1h);
  other.ns = "other";
  const auto b = store_.insert_host(make_host(t0), other, k_ports, t0);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b.value().created);
}

TEST_F(pgstore, ExpiredIdempotencyKeyIsReplaced) {
  const auto first = make_host(t0);
  ASSERT_TRUE(store_.insert_host(first, make_claim("key-1", "fp-a", t0 + 1h), k_ports, t0));
  const auto later = t0 + 2h;
  const auto second = make_host(later);
  const auto b =
      store_.insert_host(second, make_claim("key-1", "fp-b", later + 1h), k_ports, later);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b.value().created);
  EXPECT_EQ(b.value().existing.host.id, second.host.id);
  // The key now names the new host.
  const auto c = store_.insert_host(make_host(later), make_claim("key-1", "fp-b", later + 1h),
                                    k_ports, later + 1s);
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c.value().created);
  EXPECT_EQ(c.value().existing.host.id, second.host.id);
}

TEST_F(pgstore, HundredConcurrentInsertsWithOneKeyCreateExactlyOneRow) {
  constexpr int threads = 100;
  pg_store store(db_.url(), 16);
  std::vector<std::string> seen(threads);
  std::atomic<int> created{0};
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      const auto h = make_host(t0);
      start.arrive_and_wait();
      const auto out = store.insert_host(h, make_claim("race", "fp", t0 + 1h), k_ports, t0);
      if (!out) {
        ++failures;
        return;
      }
      if (out.value().created) {
        ++created;
      }
      seen[static_cast<std::size_t>(i)] = out.value().existing.host.id;
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 1u);
  const auto ids = store.all_host_ids();
  ASSERT_TRUE(ids.has_value());
  ASSERT_EQ(ids.value().size(), 1u);
  EXPECT_EQ(ids.value().front(), seen.front());
}

TEST_F(pgstore, TransitionAppliesThePatchWhenTheStatusMatches) {
  const auto r = insert(make_host(t0));
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
  const auto out = store_.transition(r.host.id, {host_status::provisioning}, p, t0 + 5s);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(out.value().host.status, host_status::active);
  EXPECT_EQ(out.value().host.image_digest, "sha256:feed");
  EXPECT_EQ(out.value().host.ssh_port, 2201);
  EXPECT_EQ(out.value().host.known_hosts, "[127.0.0.1]:2201 ssh-ed25519 AAAA");
  EXPECT_EQ(out.value().host.activated_at, t0 + 5s);
  EXPECT_EQ(out.value().host.expires_at, t0 + 5s + 1h);
  EXPECT_EQ(out.value().host.updated_at, t0 + 5s);
  EXPECT_EQ(out.value().host.created_at, t0);
  EXPECT_EQ(store_.get_host(r.host.id).value().host, out.value().host);

  host_patch clear;
  clear.expires_at = std::optional<timestamp>();
  clear.last_error = "Boom: it broke";
  const auto cleared = store_.transition(r.host.id, {host_status::active}, clear, t0 + 6s);
  ASSERT_TRUE(cleared.has_value());
  EXPECT_FALSE(cleared.value().host.expires_at.has_value());
  EXPECT_EQ(cleared.value().host.last_error, "Boom: it broke");
  EXPECT_EQ(cleared.value().host.status, host_status::active);
}

TEST_F(pgstore, TransitionDistinguishesNotFoundFromHostState) {
  const auto r = insert(make_host(t0, host_status::active));
  host_patch p;
  p.status = host_status::deleting;
  const auto missing = store_.transition(new_uuid_v7(t0), {host_status::active}, p, t0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::not_found);
  const auto wrong =
      store_.transition(r.host.id, {host_status::provisioning, host_status::error}, p, t0);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code, errc::host_state);
  EXPECT_EQ(store_.get_host(r.host.id).value().host.status, host_status::active);
}

TEST_F(pgstore, TransitionReleasesTheIdempotencyKeyAndThePort) {
  const auto r = make_host(t0);
  const auto inserted = store_.insert_host(r, make_claim("key-1", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(inserted.has_value());
  const auto port = store_.allocate_port(r.host.id, 3000, 3000, t0);
  ASSERT_TRUE(port.has_value());
  EXPECT_EQ(port.value(), inserted.value().port);
  host_patch p;
  p.status = host_status::error;
  p.last_error = "Boot: no";
  p.release_idempotency_key = true;
  p.release_port = true;
  ASSERT_TRUE(store_.transition(r.host.id, {host_status::provisioning}, p, t0 + 1s));

  // The key is free again: a retry creates a new host.
  const auto retry =
      store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), {3000, 3000}, t0);
  ASSERT_TRUE(retry.has_value());
  EXPECT_TRUE(retry.value().created);
  // The port is free again: the new host gets the same one.
  EXPECT_EQ(retry.value().port, port.value());
}

TEST_F(pgstore, AllocatePortLeasesAFreePortInTheRangeAndKeepsIt) {
  const auto a = insert_unleased(make_host(t0));
  const auto b = insert_unleased(make_host(t0));
  const auto pa = store_.allocate_port(a.host.id, 2200, 2201, t0).value();
  const auto pb = store_.allocate_port(b.host.id, 2200, 2201, t0).value();
  EXPECT_TRUE(pa == 2200 || pa == 2201) << pa;
  EXPECT_TRUE(pb == 2200 || pb == 2201) << pb;
  EXPECT_NE(pa, pb);
  EXPECT_EQ(store_.allocate_port(a.host.id, 2200, 2201, t0).value(), pa);
}

TEST_F(pgstore, ConcurrentHostsStartTheirPortSearchAtDifferentPlaces) {
  // Many hosts leasing at once must not all contend for one port: over a wide range their
  // first choices spread out, so (nearly) none of them loses a race and retries.
  std::set<int> ports;
  for (int i = 0; i < 20; ++i) {
    const auto h = insert_unleased(make_host(t0));
    ports.insert(store_.allocate_port(h.host.id, 40000, 40999, t0).value());
  }
  EXPECT_EQ(ports.size(), 20U);
  EXPECT_GT(*ports.rbegin() - *ports.begin(), 100);  // not packed at the low end
}

TEST_F(pgstore, AllocatePortFailsWithCapacityWhenTheRangeIsFull) {
  const auto a = insert_unleased(make_host(t0));
  const auto b = insert_unleased(make_host(t0));
  ASSERT_TRUE(store_.allocate_port(a.host.id, 2200, 2200, t0));
  const auto full = store_.allocate_port(b.host.id, 2200, 2200, t0);
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, errc::capacity);
}

TEST_F(pgstore, AllocatePortForAnUnknownHostIsNotFound) {
  const auto out = store_.allocate_port(new_uuid_v7(t0), 2200, 2210, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::not_found);
}

TEST_F(pgstore, ImageDigestsInUseListsEachReferencedDigestOnce) {
  const auto a = insert(make_host(t0));
  const auto b = insert(make_host(t0));
  insert(make_host(t0));  // no digest yet
  host_patch p;
  p.image_digest = "sha256:aa";
  ASSERT_TRUE(store_.transition(a.host.id, {host_status::provisioning}, p, t0));
  ASSERT_TRUE(store_.transition(b.host.id, {host_status::provisioning}, p, t0));
  EXPECT_EQ(store_.image_digests_in_use().value(), std::vector<std::string>{"sha256:aa"});
}

TEST_F(pgstore, RemovingAHostFreesItsPort) {
  const auto a = insert_unleased(make_host(t0));
  ASSERT_EQ(store_.allocate_port(a.host.id, 2200, 2200, t0).value(), 2200);
  ASSERT_TRUE(store_.remove_host(a.host.id));
  const auto b = insert_unleased(make_host(t0));
  EXPECT_EQ(store_.allocate_port(b.host.id, 2200, 2200, t0).value(), 2200);
}

TEST_F(pgstore, EightThreadsAllocatingConcurrentlyGetDistinctPorts) {
  constexpr int threads = 8;
  constexpr int per_thread = 5;
  std::vector<std::string> hosts;
  hosts.reserve(std::size_t{threads} * per_thread);
  for (int i = 0; i < threads * per_thread; ++i) {
    hosts.push_back(insert(make_host(t0)).host.id);
  }
  std::mutex m;
  std::vector<int> ports;
  std::atomic<int> failures{0};
  std::latch start(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < per_thread; ++i) {
        const auto& id =
            hosts[(static_cast<std::size_t>(t) * per_thread) + static_cast<std::size_t>(i)];
        const auto port = store_.allocate_port(id, 4000, 4000 + threads * per_thread - 1, t0);
        if (!port) {
          ++failures;
          continue;
        }
        std::lock_guard lock(m);
        ports.push_back(port.value());
      }
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ports.size(), hosts.size());
  EXPECT_EQ(std::set<int>(ports.begin(), ports.end()).size(), hosts.size());
}

TEST_F(pgstore, RenewIsAllowedOnlyWhileBootstrappingOrActive) {
  auto leased = make_host(t0, host_status::active);
  leased.lease_seconds = 600;
  const auto active = insert(leased);
  const auto renewed = store_.renew(active.host.id, t0 + 2h, t0 + 1s);
  ASSERT_TRUE(renewed.has_value());
  EXPECT_EQ(renewed.value().host.expires_at, t0 + 2h);
  EXPECT_EQ(renewed.value().host.updated_at, t0 + 1s);
  EXPECT_FALSE(renewed.value().lease_seconds.has_value());

  const auto booting = insert(make_host(t0, host_status::bootstrapping));
  EXPECT_TRUE(store_.renew(booting.host.id, t0 + 2h, t0));

  for (auto s : {host_status::provisioning, host_status::deleting, host_status::error}) {
    const auto h = insert(make_host(t0, s));
    const auto out = store_.renew(h.host.id, t0 + 2h, t0);
    ASSERT_FALSE(out.has_value());
    EXPECT_EQ(out.error().code, errc::host_state);
    EXPECT_FALSE(store_.get_host(h.host.id).value().host.expires_at.has_value());
  }
  const auto missing = store_.renew(new_uuid_v7(t0), t0 + 2h, t0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST_F(pgstore, RemoveDeletesTheRowAndItsKeyAndMissingIsSuccess) {
  const auto r = make_host(t0);
  ASSERT_TRUE(store_.insert_host(r, make_claim("key-1", "fp", t0 + 1h), k_ports, t0));
  ASSERT_TRUE(store_.remove_host(r.host.id));
  EXPECT_EQ(store_.get_host(r.host.id).error().code, errc::not_found);
  EXPECT_TRUE(store_.remove_host(r.host.id));
  const auto again =
      store_.insert_host(make_host(t0), make_claim("key-1", "fp", t0 + 1h), k_ports, t0);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again.value().created);
}

TEST_F(pgstore, ClaimExpiredTakesDueHostsOnlyAndMovesThemToDeleting) {
  auto expired = make_host(t0, host_status::active);
  expired.host.expires_at = t0 - 1s;
  auto booting = make_host(t0, host_status::bootstrapping);
  booting.host.expires_at = t0;
  auto future = make_host(t0, host_status::active);
  future.host.expires_at = t0 + 1s;
  auto forever = make_host(t0, host_status::active);
  auto provisioning = make_host(t0, host_status::provisioning);
  provisioning.host.expires_at = t0 - 1h;
  auto old_error = make_host(t0 - 2h, host_status::error);
  auto new_error = make_host(t0, host_status::error);
  for (const auto& h : {expired, booting, future, forever, provisioning, old_error, new_error}) {
    insert(h);
  }
  const auto claimed = store_.claim_expired(t0, t0 - 1h, 100);
  ASSERT_TRUE(claimed.has_value());
  std::set<std::string> ids;
  for (const auto& h : claimed.value()) {
    ids.insert(h.host.id);
    EXPECT_EQ(h.host.status, host_status::deleting);
    EXPECT_EQ(h.host.updated_at, t0);
  }
  EXPECT_EQ(ids, (std::set<std::string>{expired.host.id, booting.host.id, old_error.host.id}));
  EXPECT_EQ(store_.get_host(future.host.id).value().host.status, host_status::active);
  EXPECT_EQ(store_.get_host(new_error.host.id).value().host.status, host_status::error);
  EXPECT_TRUE(store_.claim_expired(t0, t0 - 1h, 100).value().empty());
}

TEST_F(pgstore, ARenewCommittedBeforeTheClaimWins) {
  auto h = make_host(t0, host_status::active);
  h.host.expires_at = t0 - 1s;
  insert(h);
  ASSERT_TRUE(store_.renew(h.host.id, t0 + 1h, t0));
  EXPECT_TRUE(store_.claim_expired(t0, t0 - 1h, 10).value().empty());
  EXPECT_EQ(store_.get_host(h.host.id).value().host.status, host_status::active);
}

TEST_F(pgstore, ThreeConcurrentClaimersClaimEachOfThousandHostsExactlyOnce) {
  constexpr int hosts = 1000;
  for (int i = 0; i < hosts; ++i) {
    auto h = make_host(t0, host_status::active);
    h.host.expires_at = t0 - 1s;
    insert(h);
  }
  constexpr int claimers = 3;
  std::mutex m;
  std::vector<std::string> claimed;
  std::atomic<int> failures{0};
  std::latch start(claimers);
  std::vector<std::thread> pool;
  pool.reserve(claimers);
  for (int c = 0; c < claimers; ++c) {
    pool.emplace_back([&] {
      start.arrive_and_wait();
      for (;;) {
        const auto batch = store_.claim_expired(t0, t0 - 1h, 25);
        if (!batch) {
          ++failures;
          return;
        }
        if (batch.value().empty()) {
          return;
        }
        std::lock_guard lock(m);
        for (const auto& h : batch.value()) {
          claimed.push_back(h.host.id);
        }
      }
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(claimed.size(), static_cast<std::size_t>(hosts));
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(),
            static_cast<std::size_t>(hosts));
  EXPECT_EQ(store_.count_by_status().value().at(host_status::deleting), hosts);
}

TEST_F(pgstore, ClaimInterruptedTakesCreatesWithoutALiveOwnerAndReleasesTheirKeys) {
  const std::string live = "0190c0de-0000-7000-8000-00000000000a";
  const std::string stale = "0190c0de-0000-7000-8000-00000000000b";
  const std::string slow = "0190c0de-0000-7000-8000-00000000000c";
  ASSERT_TRUE(store_.heartbeat(live, "a", 1, 10s, t0 - 1h));
  ASSERT_TRUE(store_.heartbeat(stale, "b", 2, 10s, t0 - 1min));
  // Silent for a minute, but it beats every 60 s: three of its own intervals have not passed.
  ASSERT_TRUE(store_.heartbeat(slow, "c", 3, 60s, t0 - 1min));
  // A second heartbeat refreshes the row rather than adding one.
  ASSERT_TRUE(store_.heartbeat(live, "a", 1, 10s, t0));

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
    insert(h);
  }
  ASSERT_TRUE(store_.insert_host(owned_stale, make_claim("k", "fp", t0 + 1h), k_ports, t0));

  const auto claimed = store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64);
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
  EXPECT_FALSE(s.host.owner_id);
  EXPECT_EQ(by_id.at(unowned.host.id).host.host.last_error, "Interrupted: in bootstrapping");
  // The key is free again; the port is kept until the caller has destroyed the VM.
  auto fresh = make_host(t0);
  fresh.owner_id = live;
  auto retry = store_.insert_host(fresh, make_claim("k", "fp", t0 + 1h), k_ports, t0);
  ASSERT_TRUE(retry.has_value());
  EXPECT_TRUE(retry.value().created);
  auto again = store_.allocate_port(owned_stale.host.id, k_ports.lo, k_ports.hi, t0);
  ASSERT_TRUE(again.has_value());
  // Claimed once: a second sweep finds nothing more.
  EXPECT_TRUE(store_.claim_interrupted(t0, 60s, "I", "O", 64).value().empty());
}

TEST_F(pgstore, ClaimInterruptedTakesOverdueCreatesWhoeverOwnsThem) {
  const std::string live = "0190c0de-0000-7000-8000-00000000000a";
  ASSERT_TRUE(store_.heartbeat(live, "a", 1, 10s, t0));
  auto due = make_host(t0 - 10min, host_status::bootstrapping);
  due.owner_id = live;
  due.provision_deadline = t0 - 61s;
  auto in_grace = make_host(t0 - 10min, host_status::bootstrapping);
  in_grace.owner_id = live;
  in_grace.provision_deadline = t0 - 59s;
  insert(due);
  insert(in_grace);
  const auto claimed = store_.claim_interrupted(t0, 60s, "Interrupted: in ", "Overdue: in ", 64);
  ASSERT_TRUE(claimed.has_value()) << claimed.error().message;
  ASSERT_EQ(claimed.value().size(), 1U);
  EXPECT_EQ(claimed.value()[0].host.host.id, due.host.id);
  EXPECT_TRUE(claimed.value()[0].overdue);
  EXPECT_EQ(claimed.value()[0].host.host.last_error, "Overdue: in bootstrapping");
  EXPECT_EQ(store_.get_host(in_grace.host.id).value().host.status, host_status::bootstrapping);
}

TEST_F(pgstore, ConcurrentSweepsNeverClaimOneInterruptedCreateTwice) {
  constexpr int k_hosts = 200;
  for (int i = 0; i < k_hosts; ++i) {
    insert(make_host(t0, host_status::creating_vm));  // no owner: all interrupted
  }
  std::mutex mutex;
  std::vector<std::string> claimed;
  std::vector<std::thread> sweeps;
  for (int t = 0; t < 4; ++t) {
    sweeps.emplace_back([&] {
      pg_store mine(db_.url(), 1);
      for (;;) {
        auto batch = mine.claim_interrupted(t0, 60s, "I", "O", 16);
        ASSERT_TRUE(batch.has_value());
        if (batch.value().empty()) {
          return;
        }
        const std::lock_guard lock(mutex);
        for (const auto& h : batch.value()) {
          claimed.push_back(h.host.host.id);
        }
      }
    });
  }
  for (auto& t : sweeps) {
    t.join();
  }
  EXPECT_EQ(claimed.size(), static_cast<std::size_t>(k_hosts));
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(),
            static_cast<std::size_t>(k_hosts));
}

TEST_F(pgstore, InsertLeasesAPortInTheSameTransactionAndKeepsNothingWhenNoneIsFree) {
  const port_range one{40000, 40000};
  const auto a = store_.insert_host(make_host(t0), make_claim("a", "fp", t0 + 1h), one, t0);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a.value().port, 40000);
  const auto b = store_.insert_host(make_host(t0), make_claim("b", "fp", t0 + 1h), one, t0);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, errc::capacity);
  EXPECT_EQ(store_.list_hosts({}).value().size(), 1U);
  // Key "b" was rolled back with the row: once the port is free it creates afresh.
  ASSERT_TRUE(store_.remove_host(a.value().existing.host.id));
  const auto c = store_.insert_host(make_host(t0), make_claim("b", "fp", t0 + 1h), one, t0);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c.value().created);
}

TEST_F(pgstore, PruneInstancesRemovesOnlyLongDeadOnes) {
  const std::string fresh = "0190c0de-0000-7000-8000-00000000000a";
  const std::string dead = "0190c0de-0000-7000-8000-00000000000b";
  ASSERT_TRUE(store_.heartbeat(fresh, "a", 1, 10s, t0 - 30min));
  ASSERT_TRUE(store_.heartbeat(dead, "b", 2, 10s, t0 - 2h));
  auto owned = make_host(t0, host_status::active);
  owned.owner_id = dead;
  insert(owned);
  const auto pruned = store_.prune_instances(t0);
  ASSERT_TRUE(pruned.has_value()) << pruned.error().message;
  EXPECT_EQ(pruned.value(), 1);
  EXPECT_FALSE(store_.get_host(owned.host.id).value().owner_id);
  EXPECT_EQ(store_.prune_instances(t0).value(), 0);
}

TEST_F(pgstore, CountByStatusReportsEveryStatus) {
  insert(make_host(t0, host_status::active));
  insert(make_host(t0, host_status::active));
  insert(make_host(t0, host_status::error));
  const auto counts = store_.count_by_status();
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ(counts.value().size(), 7u);
  EXPECT_EQ(counts.value().at(host_status::active), 2);
  EXPECT_EQ(counts.value().at(host_status::error), 1);
  EXPECT_EQ(counts.value().at(host_status::provisioning), 0);
}

TEST_F(pgstore, AllHostIdsListsEveryRow) {
  const auto a = insert(make_host(t0, host_status::deleting));
  const auto b = insert(make_host(t0 + 1ms, host_status::active));
  const auto ids = store_.all_host_ids();
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(ids.value(), (std::vector<std::string>{a.host.id, b.host.id}));
}

TEST_F(pgstore, PingSucceedsAgainstALiveDatabase) {
  EXPECT_TRUE(store_.ping());
}

TEST(PgStoreDown, CallsFailWithUnavailableWhenNothingListens) {
  // A port that is bound but not listening refuses connections for as long as we hold it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url =
      "postgresql://postgres@127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/postgres";

  pg_store store(url, 2);
  const auto out = store.get_host(new_uuid_v7(t0));
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::unavailable);
  EXPECT_EQ(out.error().message.find("127.0.0.1"), std::string::npos);
  EXPECT_EQ(store.ping().error().code, errc::unavailable);
  ::close(fd);
}

}  // namespace
}  // namespace litterbox::controlplane::pg
