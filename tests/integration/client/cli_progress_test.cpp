#include "tests/integration/client/cli_runner.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace litterbox::client::test {
namespace {

constexpr const char* k_progress_token = "client-progress-token-3f7a21";

/// `litterboxd serve --hypervisor=fake` whose pull, VM creation and boot each take a moment,
/// so a create goes through every status while the CLI watches it.
class CliCreateProgress : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      db_ = std::make_unique<litterbox::test::test_database>();
      litterbox::test::litterboxd_options o;
      o.binary = LB_LITTERBOXD_PATH;
      o.database_url = db_->url();
      o.service_tokens = {k_progress_token};
      o.args = {"--provision-timeout",
                "5",
                "--ssh-ports",
                "44000-44999",
                "--fake-pull-delay-ms",
                "150",
                "--fake-create-delay-ms",
                "150",
                "--fake-boot-delay-ms",
                "150"};
      server_ = std::make_unique<litterbox::test::litterboxd_process>(std::move(o));
    } catch (const std::exception& e) {
      start_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    server_.reset();
    db_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << "litterboxd did not start: " << start_error_;
    ASSERT_TRUE(server_ && server_->running()) << server_->output_tail();
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-progress-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string url() { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  cli_result run(const std::vector<std::string>& args, const std::string& base = url()) const {
    return run_cli(
        dir_,
        {"PATH=/usr/bin:/bin", "HOME=" + dir_.string(), "XDG_DATA_HOME=" + (dir_ / "data").string(),
         "LITTERBOX_STATE_DIR=" + (dir_ / "state").string(), "SANDBOX_SERVICE_URL=" + base,
         std::string("SANDBOX_SERVICE_TOKEN=") + k_progress_token},
        args);
  }

  /// How many requests for exactly `path` (no sub-resource) the server logged.
  static std::size_t logged_gets(const std::string& path) {
    const auto log = server_->output();
    const std::string needle = " GET " + path + " ";
    std::size_t n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }

  std::filesystem::path dir_;
  static inline std::unique_ptr<litterbox::test::test_database> db_;
  static inline std::unique_ptr<litterbox::test::litterboxd_process> server_;
  static inline std::string start_error_;
};

TEST_F(CliCreateProgress, DrawsEveryStatusInOrderFromTheEventStreamWithoutPolling) {
  const auto r = run({"create", "--progress", "always", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto id = j["id"].get<std::string>();
  EXPECT_EQ(j["status"], "active");
  EXPECT_EQ(r.err, "creating " + id + " (" + j["name"].get<std::string>() +
                       ")\n"
                       "  provisioning\n  pulling_image\n  creating_vm\n  bootstrapping\n"
                       "  active\n");
  // Every status came from GET /hosts/{id}/events: polling would have fetched the host at
  // least twice (once before it was active); the stream needs it once, for the final object.
  // (The stream's own log line comes only when the server notices the closed connection.)
  EXPECT_EQ(logged_gets("/hosts/" + id), 1U) << server_->output_tail();
}

TEST_F(CliCreateProgress, FailedCreateDrawsTheErrorAndExitsWithTheLastError) {
  const auto r = run({"create", "--progress", "always", "--image", "registry.local/missing:1"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("  provisioning\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("  error\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("litterbox: ImageNotFound: "), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(CliCreateProgress, NeverMeansAQuietBlockingCreate) {
  const auto r = run({"create", "--progress", "never", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(nlohmann::json::parse(r.out)["status"], "active");
  const auto bad = run({"create", "--progress", "sometimes"});
  EXPECT_EQ(bad.exit_code, 1);
}

}  // namespace
}  // namespace litterbox::client::test
