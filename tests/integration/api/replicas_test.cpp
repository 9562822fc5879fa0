// Issue 14 "Replicas": two `litterboxd serve` on one database and one node (the fake
// hypervisor's state dir, fake_node_dir): either replica serves any host, a create whose
// replica is killed is ended by the other, and each expired host is reaped by one of them.
#include "base/time.hpp"
#include "tests/integration/api/api_fixture.hpp"
#include "tests/integration/api/sse_client.hpp"

#include <pqxx/pqxx>

#include <chrono>
#include <filesystem>
#include <future>
#include <latch>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;
using id_set = std::set<std::string>;

// Every replica beats each second, so one that is killed counts as gone three seconds
// later, and reaps each second: recovery and expiry show within seconds. A guest boots for
// half a second, so concurrent creates overlap; only a replica's death (never the create's
// deadline) ends a create here.
std::vector<std::string> replica_args() {
  auto args = default_args();
  set_arg(args, "--heartbeat-interval", "1");
  set_arg(args, "--reap-interval", "1");
  set_arg(args, "--provision-timeout", "60");
  set_arg(args, "--fake-boot-delay-ms", "500");
  return args;
}

/// The sample of an unlabelled counter in a /metrics scrape (0 when absent).
double counter(const std::string& scrape, const std::string& name) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(name + " ")) {
      return std::stod(line.substr(name.size() + 1));
    }
  }
  return 0;
}

class replicas : public api_test {
 protected:
  // Each case has a database, a node and replica A of its own, so what it counts is its own;
  // it starts replica B itself.
  static void SetUpTestSuite() {}
  void SetUp() override {
    start_server(replica_args());
    api_test::SetUp();
  }
  void TearDown() override {
    if (HasFailure() && b_) {
      std::cerr << "---- replica B (" << b_->state() << ") output, tail ----\n"
                << b_->output_tail(3000) << "\n---- end ----\n";
    }
    api_test::TearDown();
  }

  void start_b(std::vector<std::string> args = replica_args()) {
    b_ = start_replica(std::move(args));
    b_client_ = std::make_unique<http_client>("127.0.0.1", b_->port());
  }
  const http_client& a() const { return client(); }
  const http_client& b() const { return *b_client_; }

  /// POST /hosts through `via` with a bearer token.
  static http_response create_on(const http_client& via, const std::string& body,
                                 std::vector<http_header> headers = {}) {
    headers.push_back(bearer());
    headers.emplace_back("Content-Type", "application/json");
    return via.post("/hosts", body, std::move(headers));
  }
  /// The ids GET /hosts answers through `via`.
  static id_set listed(const http_client& via) {
    const auto r = via.get("/hosts", {bearer()});
    EXPECT_EQ(r.status, 200) << r;
    id_set ids;
    for (const auto& h : body_json(r)) {
      ids.insert(h.value("id", ""));
    }
    return ids;
  }
  /// The hosts whose VM the node holds: one `<id>.vm` file each.
  static id_set vms() {
    id_set ids;
    for (const auto& e : std::filesystem::directory_iterator(fake_node_dir(database_url()))) {
      if (e.path().extension() == ".vm") {
        ids.insert(e.path().stem().string());
      }
    }
    return ids;
  }
  /// The hosts holding an SSH port lease.
  static id_set port_leases() {
    pqxx::connection conn(database_url());
    pqxx::read_transaction tx(conn);
    id_set ids;
    for (const auto& row :
         tx.exec("SELECT host_id::text FROM ssh_ports WHERE host_id IS NOT NULL")) {
      ids.insert(row[0].as<std::string>());
    }
    return ids;
  }
  /// Idempotency-Keys reserved now.
  static long keys_reserved(const std::string& key) {
    pqxx::connection conn(database_url());
    pqxx::read_transaction tx(conn);
    return tx.exec_params1("SELECT count(*) FROM idempotency_keys WHERE key = $1", key)[0]
        .as<long>();
  }
  /// `name` summed over both replicas' /metrics.
  double counted(const std::string& name) const {
    return counter(a().get("/metrics").body, name) + counter(b().get("/metrics").body, name);
  }

  std::unique_ptr<litterboxd_process> b_;
  std::unique_ptr<http_client> b_client_;
};

TEST_F(replicas, TwentyConcurrentCreatesThroughTwoReplicasHalfSharingOneKeyGiveExactlyElevenHosts) {
  start_b();
  constexpr int k_creates = 20;
  constexpr int k_sharing = 10;
  const std::string shared_body = R"({"env": {"JOB": "replicas"}})";
  // All twenty leave together, alternately through A and B: ten with one key and one body,
  // five with keys of their own, five with none.
  std::latch start(k_creates);
  std::vector<std::future<http_response>> answers;
  for (int i = 0; i < k_creates; ++i) {
    answers.push_back(std::async(std::launch::async, [&, i] {
      std::vector<http_header> headers;
      if (i < k_sharing) {
        headers.emplace_back("Idempotency-Key", "shared-by-ten");
      } else if (i < 15) {
        headers.emplace_back("Idempotency-Key", "own-" + std::to_string(i));
      }
      start.arrive_and_wait();
      return create_on(i % 2 == 0 ? a() : b(), i < k_sharing ? shared_body : "{}", headers);
    }));
  }
  id_set all;
  id_set shared;
  int keys_handed_out = 0;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const auto r = answers[i].get();
    ASSERT_EQ(r.status, 201) << "create " << i << ":\n" << r;
    const auto h = body_json(r);
    EXPECT_EQ(h.value("status", ""), "active") << r;
    all.insert(h.value("id", ""));
    if (i < static_cast<std::size_t>(k_sharing)) {
      shared.insert(h.value("id", ""));
      keys_handed_out += h.value("private_key", json()).is_string() ? 1 : 0;
    }
  }
  EXPECT_EQ(shared.size(), 1U) << "one key, one host, whichever replica answered";
  EXPECT_EQ(keys_handed_out, 1) << "only the request that created the host sees its key";
  EXPECT_EQ(all.size(), 11U);
  EXPECT_EQ(listed(a()), all);
  EXPECT_EQ(listed(b()), all);
  EXPECT_EQ(vms(), all) << "one VM per host: none leaked, none missing";
  EXPECT_EQ(port_leases(), all) << "one SSH port lease per host";
  EXPECT_EQ(keys_reserved("shared-by-ten"), 1);
}

TEST_F(replicas, AReplicaKilledMidCreateIsRecoveredByTheOtherWhichEndsTheCreateAndReleasesItsKey) {
  // On B a guest boots for a minute: its create is still under way when B is killed.
  auto slow = replica_args();
  set_arg(slow, "--fake-boot-delay-ms", "60000");
  start_b(slow);
  const std::string body = R"({"env": {"JOB": "doomed"}})";
  const http_header key{"Idempotency-Key", "killed-mid-create"};
  const auto accepted = create_on(b(), body, {key, {"Prefer", "respond-async"}});
  ASSERT_EQ(accepted.status, 202) << accepted;
  const std::string id = body_json(accepted)["id"];
  poll_host(id, [](const json& h) { return h.value("status", "") == "bootstrapping"; });
  ASSERT_EQ(vms(), id_set{id});
  // The same request through A, on the wire before B dies, waits for B's host (API.md:
  // never a second VM).
  http_connection waiting("127.0.0.1", a().port(), 30s);
  ASSERT_TRUE(waiting.connected()) << waiting.error();
  ASSERT_TRUE(waiting.write(
      serialize({"POST", "/hosts", {bearer(), key, {"Content-Type", "application/json"}}, body},
                "127.0.0.1:" + std::to_string(a().port()))));

  const auto status = b_->kill();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);

  // Three missed beats later A's reaper claims the create, fails it and releases its VM.
  const auto failed = poll_host(
      id, [](const json& h) { return h.value("status", "") == "error"; }, 20s);
  ASSERT_EQ(failed.value("status", ""), "error") << failed.dump();
  const std::string last_error = failed.value("last_error", "");
  EXPECT_EQ(last_error,
            "Interrupted: the control plane creating this host stopped during "
            "bootstrapping");
  const auto answered = waiting.read_response();
  expect_error(answered, 502, last_error, "PROVISIONING_FAILED");
  EXPECT_TRUE(vms().empty()) << "the dead replica's VM is destroyed";
  EXPECT_TRUE(port_leases().empty()) << "and its SSH port released";
  EXPECT_EQ(keys_reserved(key.second), 0) << "and its Idempotency-Key";
  EXPECT_EQ(counter(get("/metrics").body, "litterbox_creates_recovered_total"), 1);

  // API.md: after a failure the key is free again: the same request provisions afresh, once.
  const auto retried = create_on(a(), body, {key});
  ASSERT_EQ(retried.status, 201) << retried;
  const std::string fresh = body_json(retried)["id"];
  EXPECT_NE(fresh, id);
  const auto replayed = create_on(a(), body, {key});
  ASSERT_EQ(replayed.status, 201) << replayed;
  EXPECT_EQ(body_json(replayed).value("id", ""), fresh);
  EXPECT_EQ(vms(), id_set{fresh});
  EXPECT_EQ(listed(a()), (id_set{id, fresh})) << "the failed host's row is kept in error";
}

TEST_F(replicas, EachExpiredHostIsReapedExactlyOnceWithTwoReplicasReaping) {
  start_b();
  constexpr int k_hosts = 10;
  // Leases end 200 ms apart from 3 s on, so both reapers' passes (1 s apart, out of step)
  // find expired hosts; half the hosts were made through each replica.
  const auto first_end = std::chrono::system_clock::now() + 3s;
  std::vector<std::future<http_response>> answers;
  for (int i = 0; i < k_hosts; ++i) {
    const auto ends =
        std::chrono::time_point_cast<std::chrono::microseconds>(first_end + i * 200ms);
    const json body{{"expires_at", format_rfc3339(ends)}};
    answers.push_back(std::async(std::launch::async, [this, i, body] {
      return create_on(i % 2 == 0 ? a() : b(), body.dump());
    }));
  }
  id_set hosts;
  for (auto& answer : answers) {
    const auto r = answer.get();
    ASSERT_EQ(r.status, 201) << r;
    hosts.insert(body_json(r).value("id", ""));
  }
  ASSERT_EQ(hosts.size(), static_cast<std::size_t>(k_hosts));

  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!listed(a()).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(listed(a()).empty()) << "every host expired and was reaped";
  for (const auto& id : hosts) {
    EXPECT_EQ(a().get("/hosts/" + id, {bearer()}).status, 404) << id;
    EXPECT_EQ(b().get("/hosts/" + id, {bearer()}).status, 404) << id;
  }
  EXPECT_TRUE(vms().empty());
  EXPECT_TRUE(port_leases().empty());

  // Each host was torn down by one pass of one replica: the reaped counts add up to the
  // hosts, and neither replica found a VM the other had reaped as an orphan to remove again.
  EXPECT_EQ(counted("litterbox_hosts_reaped_total"), k_hosts);
  EXPECT_EQ(counted("litterbox_teardown_failures_total"), 0);
  EXPECT_EQ(counted("litterbox_orphans_removed_total"), 0);
  RecordProperty("reaped_by_a",
                 std::to_string(counter(a().get("/metrics").body, "litterbox_hosts_reaped_total")));

  // And each host's history ends in one `deleted` event, after one `deleting`.
  sse_client history(process().port(), "/events?after=0");
  ASSERT_NE(history.head().find("200 OK"), std::string::npos);
  const auto deleted = [&hosts](const std::vector<sse_event>& evs) {
    std::size_t n = 0;
    for (const auto& ev : evs) {
      if (ev.data.value("type", "") == "deleted" && hosts.contains(ev.data.value("host_id", ""))) {
        ++n;
      }
    }
    return n;
  };
  const auto events = history.until([&](const auto& evs) { return deleted(evs) >= hosts.size(); });
  EXPECT_EQ(deleted(events), hosts.size());
  for (const auto& id : hosts) {
    int deletes = 0;
    int deletings = 0;
    for (const auto& ev : events) {
      if (ev.data.value("host_id", "") != id) {
        continue;
      }
      const auto type = ev.data.value("type", "");
      deletes += type == "deleted" ? 1 : 0;
      deletings += type == "status" && ev.data.value("status", "") == "deleting" ? 1 : 0;
    }
    EXPECT_EQ(deletes, 1) << id;
    EXPECT_EQ(deletings, 1) << id;
  }
}

}  // namespace
}  // namespace litterbox::test::api
