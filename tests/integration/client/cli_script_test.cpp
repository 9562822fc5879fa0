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

TEST_F(CliAgainstScript, KeysCreatePrintsTheSecretOnceAndJsonPrintsTheWholeAnswer) {
  const std::string answer = R"({"id": "0190aaaa-0000-7000-8000-000000000001",
      "namespace": "acme", "name": "agents", "quota": {"max_hosts": 5, "max_cpus": null,
      "max_memory_mib": 8192}, "created_at": "2026-12-02T04:00:00.000000Z",
      "key": "lbk_0123456789abcdef"})";
  stub_server stub({{201, answer}, {201, answer}});
  const auto r = run(stub, {"keys", "create", "--namespace", "acme", "--name", "agents",
                            "--max-hosts", "5", "--max-memory-mib", "8192"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "id:         0190aaaa-0000-7000-8000-000000000001\n"
            "namespace:  acme\n"
            "name:       agents\n"
            "quota:      max_hosts=5 max_memory_mib=8192\n"
            "created_at: 2026-12-02T04:00:00.000000Z\n"
            "key:        lbk_0123456789abcdef\n");
  EXPECT_NE(r.err.find("shown only this once"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("lbk_"), std::string::npos) << "the secret belongs on stdout only";
  EXPECT_EQ(nlohmann::json::parse(stub.bodies()[0]),
            nlohmann::json::parse(R"({"namespace": "acme", "name": "agents",
                                      "quota": {"max_hosts": 5, "max_memory_mib": 8192}})"));
  EXPECT_EQ(stub.requests()[0].at(":request"), "POST /keys HTTP/1.1");
  EXPECT_EQ(stub.requests()[0].at("authorization"), "Bearer admin");

  const auto j = run(stub, {"keys", "create", "--namespace", "acme", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_EQ(nlohmann::json::parse(j.out), nlohmann::json::parse(answer));
  EXPECT_EQ(j.err, "");
  EXPECT_EQ(stub.bodies()[1], R"({"namespace":"acme"})");
}

TEST_F(CliAgainstScript, KeysLsAndRmAndTheirErrors) {
  stub_server stub({{200, R"([{"id": "k1", "namespace": "acme", "name": null, "quota": null,
                               "created_at": "2026-12-02T04:00:00Z"}])"},
                    {200, R"([{"id": "k1", "namespace": "acme", "name": null, "quota": null,
                               "created_at": "2026-12-02T04:00:00Z"}])"},
                    {204, ""},
                    {404, R"({"detail":"key not found","error_code":"NOT_FOUND"})"},
                    {403, R"({"detail":"service token rejected"})"}});
  const auto ls = run(stub, {"keys", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out,
            "ID  NAMESPACE  NAME  QUOTA  CREATED\n"
            "k1  acme       -     none   2026-12-02T04:00:00Z\n");
  const auto json = run(stub, {"keys", "ls", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out)[0]["id"], "k1");
  const auto rm = run(stub, {"keys", "rm", "k1", "k2"});
  EXPECT_EQ(rm.exit_code, 3);
  EXPECT_EQ(rm.out, "k1\n");
  EXPECT_EQ(rm.err, "litterbox: key not found\n");
  const auto denied = run(stub, {"keys", "ls"});
  EXPECT_EQ(denied.exit_code, 4);
  EXPECT_EQ(denied.err, "litterbox: service token rejected\n");
  EXPECT_EQ(stub.requests()[2].at(":request"), "DELETE /keys/k1 HTTP/1.1");
  const auto usage = run(stub, {"keys", "create"});
  EXPECT_EQ(usage.exit_code, 1);  // --namespace is required
}

TEST_F(CliAgainstScript, AuditFollowsPagesToTheEndAndStopsAtItsLimit) {
  const auto page = [](int from, int to) {
    auto a = nlohmann::json::array();
    for (int id = from; id <= to; ++id) {
      a.push_back({{"id", id},
                   {"at", "2026-12-02T04:00:0" + std::to_string(id) + "Z"},
                   {"key_id", nullptr},
                   {"namespace", "acme"},
                   {"action", "host.delete"},
                   {"host_id", "h" + std::to_string(id)},
                   {"request_id", "r" + std::to_string(id)},
                   {"status", 204}});
    }
    return a.dump();
  };
  stub_server stub({{200, page(1, 2)}, {200, page(3, 3)}, {200, "[]"}, {200, page(1, 2)}});
  const auto all = run(stub, {"audit", "--namespace", "acme", "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const auto j = nlohmann::json::parse(all.out);
  ASSERT_EQ(j.size(), 3U);
  EXPECT_EQ(j[2]["id"], 3);
  const auto limited = run(stub, {"audit", "--after", "0", "--limit", "2"});
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_EQ(limited.out,
            "ID  AT                    NAMESPACE  KEY    ACTION       HOST  STATUS  REQUEST\n"
            "1   2026-12-02T04:00:01Z  acme       admin  host.delete  h1    204     r1\n"
            "2   2026-12-02T04:00:02Z  acme       admin  host.delete  h2    204     r2\n");
  EXPECT_EQ(
      request_lines(stub),
      (std::vector<std::string>{
          "GET /audit?namespace=acme HTTP/1.1", "GET /audit?namespace=acme&after=2 HTTP/1.1",
          "GET /audit?namespace=acme&after=3 HTTP/1.1", "GET /audit?after=0&limit=2 HTTP/1.1"}));
}

TEST_F(CliAgainstScript, RateLimitedCallExitsWithTheQuotaCodeAndSaysWhenToRetry) {
  stub_server stub({{429,
                     R"({"detail":"quota exceeded: max_hosts=5","error_code":"QUOTA"})",
                     false,
                     {{"Retry-After", "12"}}}});
  const auto r = run(stub, {"create", "--ssh-key", "/dev/null"});
  EXPECT_EQ(r.exit_code, 8);
  EXPECT_EQ(r.err, "litterbox: quota exceeded: max_hosts=5 (retry after 12 s)\n");
}

}  // namespace
}  // namespace litterbox::client::test
