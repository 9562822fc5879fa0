#include "tests/integration/api/api_fixture.hpp"

#include <chrono>
#include <future>
#include <set>
#include <string>
#include <sys/wait.h>
#include <thread>

namespace litterbox::test::api {
namespace {

class restart : public api_test {};

TEST_F(restart, KilledServerRestartedOnTheSameDatabaseServesTheSameHosts) {
  const auto created = create_active(R"({"expires_at": null})");
  ASSERT_TRUE(created.is_object());
  const auto id = created["id"].get<std::string>();
  const auto status = process().kill();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);

  start_server_on(database_url(), default_args());
  const auto r = get("/hosts/" + id);
  ASSERT_EQ(r.status, 200) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  for (const char* k : {"id", "status", "image", "ssh_port", "known_hosts", "created_at",
                        "activated_at", "expires_at"}) {
    EXPECT_EQ(h[k], created[k]) << k;
  }
  EXPECT_TRUE(h["private_key"].is_null());
}

TEST_F(restart, TerminatedServerExitsCleanly) {
  const auto status = process().stop();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status)) << process().state();
  EXPECT_EQ(WEXITSTATUS(*status), 0) << process().output_tail();
  start_server_on(database_url(), default_args());
  EXPECT_EQ(get("/healthz").status, 200);
}

TEST_F(restart, SigtermAnswersTheRunningCreateAndFailsTheQueuedOneBeforeExiting) {
  auto args = default_args();
  set_arg(args, "--fake-boot-delay-ms", "1500");
  set_arg(args, "--max-provisioning", "1");
  set_arg(args, "--provision-timeout", "60");
  set_arg(args, "--shutdown-drain", "30");
  start_server_on(database_url(), args);

  // The suite's database also holds the hosts of the suite's earlier tests: only the hosts
  // this test made count.
  std::set<std::string> earlier;
  for (const auto& h : list_all()) {
    earlier.insert(h.value("id", ""));
  }
  // Waits (bounded) until GET /hosts shows `n` new hosts, the first of them `status`.
  const auto hosts_seen = [this, &earlier](std::size_t n, std::string_view status) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
      json made = json::array();
      for (const auto& h : list_all()) {
        if (!earlier.contains(h.value("id", ""))) {
          made.push_back(h);
        }
      }
      if (made.size() == n && made.back().value("status", "") == status) {
        return true;
      }
      std::this_thread::yield();
    }
    return false;
  };
  auto running = std::async(std::launch::async, [this] { return create("{}"); });
  ASSERT_TRUE(hosts_seen(1, "bootstrapping"));
  auto queued = std::async(std::launch::async, [this] { return create("{}"); });
  ASSERT_TRUE(hosts_seen(2, "bootstrapping"));

  const auto status = process().stop(std::chrono::seconds(40));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << process().output_tail();

  const auto r = running.get();
  EXPECT_EQ(r.status, 201) << "a create under way finishes within the drain: " << r;
  EXPECT_EQ(body_json(r).value("status", ""), "active") << r;
  const auto q = queued.get();
  EXPECT_EQ(q.status, 502) << q;
  EXPECT_TRUE(body_json(q).value("detail", "").starts_with("ShuttingDown: ")) << q;

  start_server_on(database_url(), default_args());
  const auto failed = find_failed(body_json(q).value("detail", ""));
  EXPECT_TRUE(failed.is_object()) << "the queued create's row is kept in error";
}

}  // namespace
}  // namespace litterbox::test::api
