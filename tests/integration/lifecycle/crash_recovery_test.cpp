#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <thread>

namespace litterbox {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* k_token = "crash-test-token";

/// A litterboxd whose fake hypervisor keeps VMs as files in `vm_dir`, so they outlive a
/// SIGKILL the way libvirt domains do. Every phase is slow enough to be caught in.
test::litterboxd_process start_server(const std::string& db_url, const fs::path& vm_dir) {
  test::litterboxd_options o;
  o.binary = LB_LITTERBOXD_PATH;
  o.database_url = db_url;
  o.service_tokens = {k_token};
  o.args = {"--fake-state-dir",       vm_dir.string(),
            "--fake-pull-delay-ms",   "1500",
            "--fake-create-delay-ms", "1500",
            "--fake-boot-delay-ms",   "1500",
            "--heartbeat-interval",   "1",
            "--reap-interval",        "1"};
  return test::litterboxd_process(std::move(o));
}

std::vector<test::http_header> auth(std::vector<test::http_header> more = {}) {
  more.push_back({"Authorization", std::string("Bearer ") + k_token});
  return more;
}

json get_host(const test::http_client& c, const std::string& id) {
  const auto r = c.get("/hosts/" + id, auth());
  EXPECT_EQ(r.status, 200) << r;
  return json::parse(r.body, nullptr, false);
}

/// Polls `id` until its status is `want` or `limit` passes; returns the last status seen.
std::string wait_status(const test::http_client& c, const std::string& id, const std::string& want,
                        std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  std::string status;
  while (std::chrono::steady_clock::now() < until) {
    status = get_host(c, id).value("status", "");
    if (status == want) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, not timing
  }
  return status;
}

std::size_t vm_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    n += e.path().extension() == ".vm" ? 1U : 0U;
  }
  return n;
}

class CrashRecovery : public ::testing::TestWithParam<const char*> {};

TEST_P(CrashRecovery, KillNineInAPhaseLeavesNothingAndTheKeyYieldsExactlyOneHost) {
  const std::string phase = GetParam();
  test::test_database db;
  const fs::path vm_dir = fs::temp_directory_path() / ("litterbox-crash-" + db.name());
  fs::create_directories(vm_dir);
  const std::string key = "crash-" + phase;
  const std::string body = R"({"env": {"A": "1"}})";

  std::string first_id;
  {
    auto server = start_server(db.url(), vm_dir);
    const test::http_client c("127.0.0.1", server.port());
    const auto created = c.post("/hosts", body,
                                auth({{"Idempotency-Key", key},
                                      {"Prefer", "respond-async"},
                                      {"Content-Type", "application/json"}}));
    ASSERT_EQ(created.status, 202) << created;
    first_id = json::parse(created.body).at("id").get<std::string>();
    ASSERT_EQ(wait_status(c, first_id, phase, std::chrono::seconds(20)), phase);
    server.kill();
  }

  // A new process (new instance id) notices the dead owner, fails the create and releases
  // its VM; then the original key provisions afresh, exactly once.
  auto server = start_server(db.url(), vm_dir);
  const test::http_client c("127.0.0.1", server.port());
  ASSERT_EQ(wait_status(c, first_id, "error", std::chrono::seconds(30)), "error")
      << server.output_tail();
  const auto failed = get_host(c, first_id);
  EXPECT_EQ(failed.value("last_error", "").rfind("Interrupted: ", 0), 0U) << failed.dump();
  EXPECT_EQ(vm_files(vm_dir), 0U);

  const auto retried = c.post(
      "/hosts", body, auth({{"Idempotency-Key", key}, {"Content-Type", "application/json"}}));
  ASSERT_EQ(retried.status, 201) << retried;
  const auto second_id = json::parse(retried.body).at("id").get<std::string>();
  EXPECT_NE(second_id, first_id);
  const auto replay = c.post(
      "/hosts", body, auth({{"Idempotency-Key", key}, {"Content-Type", "application/json"}}));
  ASSERT_EQ(replay.status, 201) << replay;
  EXPECT_EQ(json::parse(replay.body).at("id"), second_id);

  const auto active = c.get("/hosts?status=active", auth());
  ASSERT_EQ(active.status, 200);
  EXPECT_EQ(json::parse(active.body).size(), 1U);
  EXPECT_EQ(vm_files(vm_dir), 1U);
  server.stop();
  fs::remove_all(vm_dir);
}

INSTANTIATE_TEST_SUITE_P(EachProvisioningPhase, CrashRecovery,
                         ::testing::Values("pulling_image", "creating_vm", "bootstrapping"));

}  // namespace
}  // namespace litterbox
