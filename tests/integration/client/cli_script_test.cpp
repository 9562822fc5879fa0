#include "schema/host.hpp"
#include "tests/integration/client/cli_runner.hpp"
#include "tests/integration/client/stub_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace litterbox::client::test {
namespace {

/// The CLI against a scripted stub: what the server answers is fixed, what the CLI asks and
/// prints is checked.
class CliAgainstScript : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-stub-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  cli_result run(const stub_server& stub, const std::vector<std::string>& args) const {
    return run_cli(
        dir_,
        {"PATH=/usr/bin:/bin", "HOME=" + dir_.string(), "XDG_DATA_HOME=" + (dir_ / "data").string(),
         "LITTERBOX_STATE_DIR=" + (dir_ / "state").string(), "SANDBOX_SERVICE_URL=" + stub.url(),
         "SANDBOX_SERVICE_TOKEN=admin"},
        args);
  }

  /// The request lines the stub received, in order.
  static std::vector<std::string> request_lines(const stub_server& stub) {
    std::vector<std::string> out;
    for (const auto& r : stub.requests()) {
      out.push_back(r.at(":request"));
    }
    return out;
  }

  std::filesystem::path dir_;
};

std::string host_json(const std::string& id, schema::host_status status) {
  schema::host h;
  h.id = id;
  h.name = schema::host_name_for(id);
  h.status = status;
  h.provider = "fake";
  h.image = "img";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = timestamp(std::chrono::seconds(1800000000));
  h.updated_at = h.created_at;
  return schema::to_json(h).dump();
}

TEST_F(CliAgainstScript, CreateProgressPollsAServerThatHasNoEventStream) {
  const std::string id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
  stub_server stub({{404, R"({"detail":"Not Found","error_code":"NOT_FOUND"})"},
                    {202, host_json(id, schema::host_status::provisioning)},
                    {200, host_json(id, schema::host_status::bootstrapping)},
                    {200, host_json(id, schema::host_status::active)}});
  const auto r = run(stub, {"create", "--progress", "always", "--ssh-key", "/dev/null"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err,
            "creating " + id + " (" + schema::host_name_for(id) + ")\n  bootstrapping\n  active\n");
  EXPECT_EQ(request_lines(stub),
            (std::vector<std::string>{"GET /events HTTP/1.1", "POST /hosts HTTP/1.1",
                                      "GET /hosts/" + id + " HTTP/1.1",
                                      "GET /hosts/" + id + " HTTP/1.1"}));
  EXPECT_EQ(stub.requests()[1].at("prefer"), "respond-async");
}

}  // namespace
}  // namespace litterbox::client::test
