// A real litterboxd (fake hypervisor, real PostgreSQL) serving creates from its warm pool, from
// clones and from boots, and killed with SIGKILL in the middle of a claim and of a refill.
#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

namespace litterbox {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* k_token = "fast-creates-token";

/// A litterboxd with templates on, a warm pool of `pool` members of the default image, and a
/// fake hypervisor that keeps VMs and templates as files in `vm_dir` (so they outlive a
/// SIGKILL the way libvirt's do).
test::litterboxd_process start_server(const std::string& db_url, const fs::path& vm_dir, int pool,
                                      std::vector<std::string> more = {}) {
  test::litterboxd_options o;
  o.binary = LB_LITTERBOXD_PATH;
  o.database_url = db_url;
  o.service_tokens = {k_token};
  o.args = {"--fake-state-dir",
            vm_dir.string(),
            "--templates",
            "on",
            "--pool",
            std::to_string(pool),
            "--heartbeat-interval",
            "1",
            "--reap-interval",
            "1",
            "--fake-boot-delay-ms",
            "300"};
  o.args.insert(o.args.end(), more.begin(), more.end());
  return test::litterboxd_process(std::move(o));
}

std::vector<test::http_header> auth(std::vector<test::http_header> more = {}) {
  more.push_back({"Authorization", std::string("Bearer ") + k_token});
  more.push_back({"Content-Type", "application/json"});
  return more;
}

/// The value of the first sample of `metric` whose labels contain every one of `labels`.
std::optional<double> sample(const std::string& scrape, const std::string& metric,
                             const std::vector<std::string>& labels) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(metric + "{", 0) != 0) {
      continue;
    }
    const bool all = std::all_of(labels.begin(), labels.end(), [&](const std::string& l) {
      return line.find(l) != std::string::npos;
    });
    if (all) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return std::nullopt;
}

/// Waits (bounded) until the pool reports `ready` claimable and `filling` restoring members.
bool pool_reaches(const test::http_client& c, double ready, double filling,
                  std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    const auto r = c.get("/metrics", auth());
    if (r.status == 200 && sample(r.body, "litterbox_pool_members", {"state=\"ready\""}) == ready &&
        sample(r.body, "litterbox_pool_members", {"state=\"filling\""}) == filling) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, not timing
  }
  return false;
}

std::size_t vm_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    n += e.path().extension() == ".vm" ? 1U : 0U;
  }
  return n;
}

std::string header_of(const test::http_response& r, std::string_view name) {
  return r.header(std::string(name)).value_or("");
}

json hosts(const test::http_client& c) {
  const auto r = c.get("/hosts", auth());
  EXPECT_EQ(r.status, 200) << r;
  return json::parse(r.body, nullptr, false);
}

/// Polls `id` until its status is `want` or `limit` passes; returns the last status seen.
std::string wait_status(const test::http_client& c, const std::string& id, const std::string& want,
                        std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  std::string status;
  while (std::chrono::steady_clock::now() < until) {
    const auto r = c.get("/hosts/" + id, auth());
    status = r.status == 200 ? json::parse(r.body).value("status", "") : std::to_string(r.status);
    if (status == want) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, not timing
  }
  return status;
}

class FastCreatesProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_dir_ = fs::temp_directory_path() / ("litterbox-fast-" + db_.name());
    fs::create_directories(vm_dir_);
  }
  void TearDown() override { fs::remove_all(vm_dir_); }

  test::test_database db_;
  fs::path vm_dir_;
};

TEST_F(FastCreatesProcess, PoolCloneAndBootEachSayHowTheyWereServedAndMembersStayHidden) {
  // Restores take long enough that the pool is still refilling when the next create comes.
  auto server = start_server(db_.url(), vm_dir_, 1, {"--fake-restore-delay-ms", "1500"});
  const test::http_client c("127.0.0.1", server.port());
  ASSERT_TRUE(pool_reaches(c, 1, 0)) << server.output_tail();
  EXPECT_TRUE(hosts(c).empty()) << "pool members are no caller's hosts";

  const auto pooled =
      c.post("/hosts", R"({"env": {"A": "x"}})", auth({{"Idempotency-Key", "pool-create"}}));
  ASSERT_EQ(pooled.status, 201) << pooled;
  EXPECT_EQ(header_of(pooled, "X-Litterbox-Create-Path"), "pool");
  EXPECT_FALSE(json::parse(pooled.body).value("private_key", "").empty());
  const auto cloned = c.post("/hosts", "{}", auth());
  ASSERT_EQ(cloned.status, 201) << cloned;
  EXPECT_EQ(header_of(cloned, "X-Litterbox-Create-Path"), "clone");
  const auto booted = c.post("/hosts", R"({"cpus": 2})", auth());
  ASSERT_EQ(booted.status, 201) << booted;
  EXPECT_EQ(header_of(booted, "X-Litterbox-Create-Path"), "boot");

  // A replay says how the original was served, and hands out no key.
  const auto replay =
      c.post("/hosts", R"({"env": {"A": "x"}})", auth({{"Idempotency-Key", "pool-create"}}));
  ASSERT_EQ(replay.status, 201) << replay;
  EXPECT_EQ(header_of(replay, "X-Litterbox-Create-Path"), "pool");
  EXPECT_EQ(json::parse(replay.body).at("id"), json::parse(pooled.body).at("id"));
  EXPECT_TRUE(json::parse(replay.body).at("private_key").is_null());

  ASSERT_TRUE(pool_reaches(c, 1, 0)) << "the pool refills after the claim";
  EXPECT_EQ(hosts(c).size(), 3U);
  const auto m = c.get("/metrics", auth());
  ASSERT_EQ(m.status, 200);
  for (const char* path : {"pool", "clone", "boot"}) {
    EXPECT_EQ(sample(m.body, "litterbox_creates_total", {std::string("path=\"") + path + "\""}),
              1.0)
        << path;
  }
  EXPECT_EQ(sample(m.body, "litterbox_pool_size", {}), 1.0);
  EXPECT_GE(sample(m.body, "litterbox_templates", {"status=\"ready\""}).value_or(0), 1.0);
  const auto d = c.get("/doctor", auth());
  ASSERT_EQ(d.status, 200) << d;
  bool saw_pool = false;
  const auto report = json::parse(d.body);
  for (const auto& check : report.at("checks")) {
    if (check.at("name") == "warm_pool") {
      saw_pool = true;
      EXPECT_EQ(check.at("status"), "ok") << check.dump();
      EXPECT_NE(check.at("detail").get<std::string>().find("1/1 ready"), std::string::npos)
          << check.dump();
    }
  }
  EXPECT_TRUE(saw_pool) << d.body;
  // Three callers' VMs and one pool member, nothing else.
  EXPECT_EQ(vm_files(vm_dir_), 4U);
  server.stop();
}

TEST_F(FastCreatesProcess, KillNineDuringAClaimLeaksNothingAndClaimsNothingTwice) {
  std::string claimed_id;
  {
    auto server = start_server(db_.url(), vm_dir_, 2, {"--fake-login-delay-ms", "60000"});
    const test::http_client c("127.0.0.1", server.port());
    ASSERT_TRUE(pool_reaches(c, 2, 0)) << server.output_tail();
    const auto r = c.post("/hosts", "{}",
                          auth({{"Idempotency-Key", "claim-killed"}, {"Prefer", "respond-async"}}));
    ASSERT_EQ(r.status, 202) << r;
    claimed_id = json::parse(r.body).at("id").get<std::string>();
    ASSERT_EQ(wait_status(c, claimed_id, "bootstrapping"), "bootstrapping");
    server.kill();  // the caller's login is being applied
  }
  auto server = start_server(db_.url(), vm_dir_, 2);
  const test::http_client c("127.0.0.1", server.port());
  // Recovered like any interrupted create: error, its VM gone, its key free.
  ASSERT_EQ(wait_status(c, claimed_id, "error"), "error") << server.output_tail();
  ASSERT_TRUE(pool_reaches(c, 2, 0)) << "the pool refills after the restart";
  EXPECT_EQ(vm_files(vm_dir_), 2U) << "only the two pool members";
  const auto retried = c.post("/hosts", "{}", auth({{"Idempotency-Key", "claim-killed"}}));
  ASSERT_EQ(retried.status, 201) << retried;
  EXPECT_NE(json::parse(retried.body).at("id"), claimed_id);
  EXPECT_EQ(header_of(retried, "X-Litterbox-Create-Path"), "pool");
  ASSERT_TRUE(pool_reaches(c, 2, 0));
  EXPECT_EQ(vm_files(vm_dir_), 3U);
  server.stop();
}

TEST_F(FastCreatesProcess, KillNineDuringARefillLeaksNothingAndTheRefillResumes) {
  {
    auto server = start_server(db_.url(), vm_dir_, 1, {"--fake-restore-delay-ms", "60000"});
    const test::http_client c("127.0.0.1", server.port());
    ASSERT_TRUE(pool_reaches(c, 0, 1)) << server.output_tail();  // a member is restoring
    server.kill();
  }
  auto server = start_server(db_.url(), vm_dir_, 1);
  const test::http_client c("127.0.0.1", server.port());
  ASSERT_TRUE(pool_reaches(c, 1, 0)) << server.output_tail();
  EXPECT_EQ(vm_files(vm_dir_), 1U) << "the interrupted member's VM is gone";
  const auto r = c.post("/hosts", "{}", auth());
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(header_of(r, "X-Litterbox-Create-Path"), "pool");
  server.stop();
}

}  // namespace
}  // namespace litterbox
