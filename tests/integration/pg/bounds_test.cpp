#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/pg/connection_pool.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "tests/support/pg_cluster.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

namespace litterbox::controlplane::pg {
namespace {

using namespace std::chrono_literals;
using schema::host_status;
using steady = std::chrono::steady_clock;

const timestamp k_now(std::chrono::microseconds(1'790'000'000'000'000));

host_record sample_host() {
  host_record r;
  r.host.id = new_uuid_v7(k_now);
  r.host.name = schema::host_name_for(r.host.id);
  r.host.status = host_status::active;
  r.host.provider = "libvirt";
  r.host.image = "img";
  r.host.cpus = 1;
  r.host.memory_mib = 256;
  r.host.ssh_username = "agent";
  r.host.created_at = k_now;
  r.host.updated_at = k_now;
  return r;
}

std::string show(pqxx::connection& conn, const std::string& setting) {
  pqxx::nontransaction tx(conn);
  return tx.exec1("SHOW " + setting)[0].as<std::string>();
}

/// The parent pid of `pid` (0 when it is gone).
int parent_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const auto paren = line.rfind(')');
  if (paren == std::string::npos) {
    return 0;
  }
  std::istringstream rest(line.substr(paren + 2));
  std::string state;
  int ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

/// Stops (SIGSTOP) the postmaster of a cluster the test started and every one of its
/// backends, so that the server still holds its sockets (the kernel keeps ACKing) but never
/// answers; SIGCONT on destruction.
class frozen_cluster {
 public:
  explicit frozen_cluster(const std::string& admin_url) {
    int postmaster = 0;
    {
      pqxx::connection c(admin_url);
      pqxx::nontransaction tx(c);
      postmaster = parent_of(tx.exec1("SELECT pg_backend_pid()")[0].as<int>());
    }
    if (postmaster <= 1) {
      throw std::runtime_error("cannot find the postmaster");
    }
    pids_.push_back(postmaster);
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const auto name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") == std::string::npos &&
          parent_of(std::stoi(name)) == postmaster) {
        pids_.push_back(std::stoi(name));
      }
    }
    for (const int pid : pids_) {
      ::kill(pid, SIGSTOP);
    }
  }
  ~frozen_cluster() {
    for (const int pid : pids_) {
      ::kill(pid, SIGCONT);
    }
  }
  frozen_cluster(const frozen_cluster&) = delete;
  frozen_cluster& operator=(const frozen_cluster&) = delete;

 private:
  std::vector<int> pids_;
};

TEST(SessionLimits, AreAddedToTheUrlAndEverySettingTheUrlMakesItselfWins) {
  test::test_database db;
  // The operator's own statement_timeout (in options) and connect_timeout stay.
  const std::string url =
      db.url() + (db.url().find('?') == std::string::npos ? "?" : "&") +
      "connect_timeout=7&options=-c%20statement_timeout%3D1234%20-c%20work_mem%3D8MB";
  session_limits limits;
  limits.statement_timeout = 30s;
  limits.lock_timeout = 2500ms;
  limits.idle_in_transaction_timeout = 60s;
  limits.tcp_timeout = 12s;
  const auto bounded = with_session_limits(url, limits);
  ASSERT_TRUE(bounded) << bounded.error().message;
  EXPECT_NE(bounded->find("connect_timeout='7'"), std::string::npos) << *bounded;
  EXPECT_NE(bounded->find("tcp_user_timeout='12000'"), std::string::npos) << *bounded;
  EXPECT_NE(bounded->find("keepalives='1'"), std::string::npos) << *bounded;

  pqxx::connection conn(*bounded);
  EXPECT_EQ(show(conn, "statement_timeout"), "1234ms");
  EXPECT_EQ(show(conn, "work_mem"), "8MB");
  EXPECT_EQ(show(conn, "lock_timeout"), "2500ms");
  EXPECT_EQ(show(conn, "idle_in_transaction_session_timeout"), "1min");
}

TEST(SessionLimits, LibpqEnvironmentVariablesCountAsSetExplicitly) {
  test::test_database db;
  ASSERT_EQ(::setenv("PGOPTIONS", "-c lock_timeout=777", 1), 0);
  ASSERT_EQ(::setenv("PGCONNECT_TIMEOUT", "9", 1), 0);
  const auto bounded = with_session_limits(db.url(), {});
  ::unsetenv("PGOPTIONS");
  ::unsetenv("PGCONNECT_TIMEOUT");
  ASSERT_TRUE(bounded) << bounded.error().message;
  EXPECT_EQ(bounded->find("connect_timeout="), std::string::npos) << *bounded;
  pqxx::connection conn(*bounded);
  EXPECT_EQ(show(conn, "lock_timeout"), "777ms");
  EXPECT_EQ(show(conn, "statement_timeout"), "30s");
}

TEST(SessionLimits, KeyValueUrlsGetThemToo) {
  test::test_database db;
  pqxx::connection probe(db.url());
  const std::string kv = "host=127.0.0.1 port=" + std::string(probe.port()) +
                         " user=postgres dbname=" + probe.dbname() + " lock_timeout=ignored";
  // lock_timeout is not a libpq keyword: such a string is rejected, without echoing it.
  const auto bad = with_session_limits(kv, {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.find("127.0.0.1"), std::string::npos);

  const std::string good = "host=127.0.0.1 port=" + std::string(probe.port()) +
                           " user=postgres dbname=" + probe.dbname();
  const auto bounded = with_session_limits(good, {});
  ASSERT_TRUE(bounded) << bounded.error().message;
  pqxx::connection conn(*bounded);
  EXPECT_EQ(show(conn, "statement_timeout"), "30s");
  EXPECT_EQ(show(conn, "lock_timeout"), "5s");
}

TEST(PgStoreBounds, ALockHeldByAnotherSessionFailsAStoreCallWithUnavailableWithinLockTimeout) {
  test::test_database db;
  session_limits limits;
  limits.lock_timeout = 500ms;
  pg_store store(db.url(), 2, 5s, limits);
  const auto r = sample_host();
  ASSERT_TRUE(store.insert_host(r, std::nullopt, port_range{20000, 29999}, k_now));

  pqxx::connection other(db.url());
  pqxx::work lock(other);
  lock.exec("LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE");

  const auto started = steady::now();
  auto call = std::async(std::launch::async, [&] { return store.get_host(r.host.id); });
  const bool ended = call.wait_for(10s) == std::future_status::ready;
  const auto took = steady::now() - started;
  lock.abort();  // lets a hanging call finish, so the test can end either way
  ASSERT_TRUE(ended) << "the store call hung behind the lock";
  const auto out = call.get();
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::unavailable) << out.error().message;
  EXPECT_LT(took, 3s);
  EXPECT_TRUE(store.get_host(r.host.id)) << "the connection stays usable";
}

TEST(PgStoreBounds, HeartbeatSucceedsWhileEveryRequestConnectionIsBusy) {
  test::test_database db;
  session_limits limits;
  limits.lock_timeout = 0ms;  // the blocked call waits as long as the lock is held
  limits.statement_timeout = 0ms;
  pg_store store(db.url(), 1, 500ms, limits);
  const auto r = sample_host();
  ASSERT_TRUE(store.insert_host(r, std::nullopt, port_range{20000, 29999}, k_now));

  pqxx::connection other(db.url());
  pqxx::work lock(other);
  lock.exec("LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE");
  // The one request connection is now stuck behind the lock.
  auto blocked = std::async(std::launch::async, [&] { return store.get_host(r.host.id); });
  pqxx::connection watcher(db.url());
  bool blocked_yet = false;
  for (const auto until = steady::now() + 10s; !blocked_yet && steady::now() < until;) {
    pqxx::nontransaction q(watcher);
    blocked_yet = q.exec1(
                       "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                       "'Lock' AND datname = current_database()")[0]
                      .as<int>() > 0;
  }

  const auto beat =
      store.heartbeat(new_uuid_v7(k_now), "test-host", 4242, std::chrono::seconds(10), k_now);
  lock.abort();
  ASSERT_TRUE(blocked_yet);
  EXPECT_TRUE(beat) << beat.error().message;
  EXPECT_TRUE(blocked.get());
}

TEST(PgStoreBounds, AStoppedServerMakesCallsFailWithinTheStatementAndTcpBounds) {
  test::test_cluster cluster;
  test::test_database db(cluster.url());
  session_limits limits;
  limits.statement_timeout = 1s;
  limits.tcp_timeout = 1s;
  limits.connect_timeout = 2s;
  pg_store store(db.url(), 2, 2s, limits);
  const auto r = sample_host();
  ASSERT_TRUE(store.insert_host(r, std::nullopt, port_range{20000, 29999}, k_now));
  ASSERT_TRUE(store.get_host(r.host.id));  // a pooled connection to a live backend

  // Declared before the freeze: destroyed after the thaw, so a hung call can finish.
  std::future<result<host_record>> call;
  bool ended = false;
  std::chrono::steady_clock::duration took{};
  {
    const frozen_cluster frozen(cluster.url());
    const auto started = steady::now();
    call = std::async(std::launch::async, [&] { return store.get_host(r.host.id); });
    ended = call.wait_for(20s) == std::future_status::ready;
    took = steady::now() - started;
  }
  ASSERT_TRUE(ended) << "a call on a stopped server hung";
  const auto out = call.get();
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::unavailable) << out.error().message;
  // The lease watchdog (statement 1 s + TCP 1 s), then one reconnect bounded by connect 2 s.
  EXPECT_LT(took, 10s);
  EXPECT_TRUE(store.get_host(r.host.id)) << "calls work again once the server runs";
}

}  // namespace
}  // namespace litterbox::controlplane::pg
