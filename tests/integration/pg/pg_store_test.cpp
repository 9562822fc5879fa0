#include "controlplane/pg/pg_store.hpp"

#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

// What is particular to PostgreSQL: concurrency across connections and processes, rows made
// before ports were leased with them, and a database that is not there. The store contract
// itself (both store implementations) is tests/contract/store_contract_test.cpp.

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
        auto batch = mine.claim_interrupted(t0, 60s, "I", "O", 16, "");
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

// A backend that dies while committing: the client cannot know whether the commit landed.
// The server ends its own session from a deferred trigger, which runs inside COMMIT, when a
// row matching `condition` (over NEW) was written; the transaction is then not committed.
void lose_commits_when(const std::string& url, const std::string& table,
                       const std::string& condition) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec("CREATE FUNCTION lose_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF " +
          condition + " THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; " +
          "RETURN NULL; END $$");
  tx.exec("CREATE CONSTRAINT TRIGGER lose_commit AFTER INSERT OR UPDATE ON " + table +
          " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lose_commit()");
  tx.commit();
}

template_key_row pool_key() {
  return template_key_row{"sha256:pool", 1, 512, std::nullopt, "agent"};
}

TEST_F(pgstore, APoolClaimWhoseCommitIsLostIsOutcomeUnknownAndRetriesNothing) {
  const auto member = make_host(t0);
  ASSERT_TRUE(store_.insert_pool_member(member, pool_key(), 4, k_ports, t0).value().created);
  host_patch active;
  active.status = host_status::active;
  ASSERT_TRUE(store_.transition(member.host.id, {host_status::provisioning}, active, t0));
  lose_commits_when(db_.url(), "hosts", "NEW.create_path = 'pool' AND NOT NEW.pooled");

  pool_claim c;
  c.key = pool_key();
  c.as = make_host(t0);
  const auto out = store_.claim_pool_member(c, make_claim("k", "fp", t0 + 1h), t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::outcome_unknown);
  // Here the commit did not land: the member is still in the pool and the key is free.
  const auto after = store_.get_host(member.host.id);
  ASSERT_TRUE(after.has_value()) << after.error().message;
  EXPECT_TRUE(after.value().pooled);
  EXPECT_EQ(after.value().host.status, host_status::active);
  EXPECT_TRUE(store_.insert_host(make_host(t0), make_claim("k", "fp", t0 + 1h), k_ports, t0)
                  .value()
                  .created);
}

TEST_F(pgstore, ARefillWhoseCommitIsLostIsOutcomeUnknown) {
  lose_commits_when(db_.url(), "hosts", "NEW.pooled");
  const auto member = make_host(t0);
  const auto out = store_.insert_pool_member(member, pool_key(), 4, k_ports, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::outcome_unknown);
  EXPECT_EQ(store_.get_host(member.host.id).error().code, errc::not_found);
}

TEST_F(pgstore, ATemplateBuildClaimWhoseCommitIsLostIsOutcomeUnknown) {
  const std::string owner = "0190c0de-0000-7000-8000-0000000000a1";
  ASSERT_TRUE(store_.heartbeat(owner, "a", 1, 10s, t0));
  lose_commits_when(db_.url(), "templates", "NEW.status = 'building'");
  template_record want;
  want.id = new_uuid_v7(t0);
  want.key = pool_key();
  want.image = "registry.test/debian:12";
  want.owner_id = owner;
  const auto out = store_.claim_template_build(want, k_ports, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::outcome_unknown);
  EXPECT_FALSE(store_.find_template(pool_key()).value());
}

TEST_F(pgstore, ARetireWhoseCommitIsLostIsOutcomeUnknown) {
  const auto member = make_host(t0);
  ASSERT_TRUE(store_.insert_pool_member(member, pool_key(), 4, k_ports, t0).value().created);
  host_patch active;
  active.status = host_status::active;
  ASSERT_TRUE(store_.transition(member.host.id, {host_status::provisioning}, active, t0));
  lose_commits_when(db_.url(), "hosts", "NEW.status = 'deleting'");
  const auto out = store_.retire_pool_member(member.host.id, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::outcome_unknown);
  EXPECT_EQ(store_.get_host(member.host.id).value().host.status, host_status::active);
}

TEST_F(pgstore, AFinishWhoseCommitIsLostIsOutcomeUnknownAndTheBuildKeepsItsPort) {
  const std::string owner = "0190c0de-0000-7000-8000-0000000000a1";
  ASSERT_TRUE(store_.heartbeat(owner, "a", 1, 10s, t0));
  template_record want;
  want.id = new_uuid_v7(t0);
  want.key = pool_key();
  want.image = "registry.test/debian:12";
  want.owner_id = owner;
  const auto built = store_.claim_template_build(want, k_ports, t0);
  ASSERT_TRUE(built.has_value() && built.value());
  lose_commits_when(db_.url(), "templates", "NEW.status = 'ready'");
  const auto out = store_.finish_template(want.id, owner, true, "", std::nullopt, t0);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::outcome_unknown);
  const auto row = store_.find_template(pool_key()).value();
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, template_status::building);
  EXPECT_EQ(row->ssh_port, built.value()->ssh_port);
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
