#include "schema/host.hpp"
#include "tests/integration/client/cli_runner.hpp"
#include "tests/integration/client/server_fixture.hpp"
#include "tests/integration/client/stub_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace litterbox::client::test {
namespace {

/// The value of the "label:   value" line of a rendered host; "" when absent.
std::string field(const std::string& block, const std::string& label) {
  std::istringstream in(block);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(label + ":")) {
      const auto v = line.find_first_not_of(' ', label.size() + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
  }
  return "";
}

class CliAgainstServer : public server_suite {
 protected:
  void SetUp() override {
    server_suite::SetUp();
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    env_ = {"PATH=/usr/bin:/bin",
            "HOME=" + dir_.string(),
            "XDG_DATA_HOME=" + (dir_ / "data").string(),
            "LITTERBOX_STATE_DIR=" + (dir_ / "state").string(),
            "SANDBOX_SERVICE_URL=" + url(),
            std::string("SANDBOX_SERVICE_TOKEN=") + k_token};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  /// Runs the CLI with `args` (argv only, no shell) and the test's environment.
  cli_result run(const std::vector<std::string>& args) const { return run_cli(dir_, env_, args); }

  std::filesystem::path dir_;
  std::vector<std::string> env_;
};

TEST_F(CliAgainstServer, CreateGetLsRmKeepAndRemoveTheMintedKey) {
  const auto created = run({"create", "--json", "--env", "A=1", "--expires-in", "2h"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const auto j = nlohmann::json::parse(created.out);
  const auto id = j["id"].get<std::string>();
  EXPECT_EQ(j["status"], "active");
  EXPECT_TRUE(j["private_key"].is_null());
  const std::filesystem::path key = j["private_key_file"].get<std::string>();
  EXPECT_EQ(key, dir_ / "data" / "litterbox" / "keys" / id);
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777U, 0600U);
  EXPECT_NE(slurp(key).find("PRIVATE KEY"), std::string::npos);

  const auto got = run({"get", id});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(field(got.out, "status"), "active") << got.out;
  EXPECT_EQ(field(got.out, "private key"), key.string()) << got.out;

  const auto listed = run({"ls", "--status", "active"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(listed.out.starts_with("ID  ") || listed.out.starts_with("ID ")) << listed.out;
  EXPECT_NE(listed.out.find(id), std::string::npos);
  const auto quiet = run({"ls", "-q"});
  EXPECT_NE(quiet.out.find(id + "\n"), std::string::npos);

  const auto removed = run({"rm", id});
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_EQ(removed.out, id + "\n");
  EXPECT_FALSE(std::filesystem::exists(key));

  const auto gone = run({"get", id});
  EXPECT_EQ(gone.exit_code, 3);
  EXPECT_EQ(gone.err, "litterbox: host not found\n");
  EXPECT_EQ(gone.out, "");
}

TEST_F(CliAgainstServer, ProxyCreateAttachLsDetachRmAndTheHeaderNeverShows) {
  const std::string secret = "Bearer sk-cli-5b0e7d2a9c41-never-printed";
  auto env = env_;
  env.push_back("LB_TEST_AUTH=" + secret);
  const auto run_env = [&](const std::vector<std::string>& args) {
    auto r = run_cli(dir_, env, args);
    EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
    return r;
  };
  const auto created = run_env({"proxy", "create", "cli-proxy", "https://1.1.1.1", "--header-env",
                                "Authorization=LB_TEST_AUTH"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_EQ(created.out, "cli-proxy\n");
  const auto again = run_env({"proxy", "create", "cli-proxy", "https://1.1.1.1", "--header-env",
                              "Authorization=LB_TEST_AUTH"});
  EXPECT_EQ(again.exit_code, 7) << again.err;  // conflict
  EXPECT_NE(again.err.find("http proxy already exists"), std::string::npos) << again.err;

  const auto host = run_env({"create", "--json"});
  ASSERT_EQ(host.exit_code, 0) << host.err;
  const auto id = nlohmann::json::parse(host.out)["id"].get<std::string>();
  const auto attached = run_env({"proxy", "attach", "cli-proxy", id});
  ASSERT_EQ(attached.exit_code, 0) << attached.err;
  const auto listed = run_env({"proxy", "ls", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const auto proxies = nlohmann::json::parse(listed.out);
  ASSERT_EQ(proxies.size(), 1U) << listed.out;
  EXPECT_EQ(proxies[0]["name"], "cli-proxy");
  EXPECT_EQ(proxies[0]["target"], "https://1.1.1.1");
  EXPECT_EQ(proxies[0]["host_ids"], nlohmann::json::array({id}));
  const auto table = run_env({"proxy", "ls"});
  EXPECT_TRUE(table.out.starts_with("NAME\tTARGET\tHOSTS\tCREATED\n")) << table.out;

  EXPECT_EQ(run_env({"proxy", "detach", "cli-proxy", id}).exit_code, 0);
  EXPECT_EQ(run_env({"proxy", "detach", "cli-proxy", id}).exit_code, 3);  // not attached
  EXPECT_EQ(run_env({"proxy", "rm", "cli-proxy"}).exit_code, 0);
  EXPECT_EQ(run_env({"proxy", "rm", "cli-proxy"}).exit_code, 3);
  EXPECT_EQ(run_env({"rm", id}).exit_code, 0);
}

TEST_F(CliAgainstServer, ProxyCreateRefusesAHeaderWhoseVariableIsUnset) {
  const auto r = run({"proxy", "create", "p", "https://1.1.1.1", "--header-env", "X-Key=LB_UNSET"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("LB_UNSET is not set"), std::string::npos) << r.err;
  EXPECT_EQ(run({"proxy", "create", "p", "https://1.1.1.1", "--header-env", "X-Key"}).exit_code, 1);
}

TEST_F(CliAgainstServer, KeysCreateLsRmAndAuditDriveTheServersTenants) {
  const auto minted = run({"keys", "create", "--namespace", "cli-ns", "--name", "agents",
                           "--max-hosts", "1", "--json"});
  ASSERT_EQ(minted.exit_code, 0) << minted.err;
  const auto k = nlohmann::json::parse(minted.out);
  const auto key = k["key"].get<std::string>();
  const auto key_id = k["id"].get<std::string>();
  ASSERT_EQ(key.rfind("lbk_", 0), 0U);
  EXPECT_EQ(k["quota"]["max_hosts"], 1);

  const auto listed = run({"keys", "ls", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(key_id), std::string::npos);
  EXPECT_EQ(listed.out.find(key), std::string::npos) << "the key is shown once only";

  // The customer's CLI, with the scoped key: its host, then the quota's 429 (exit 8).
  auto customer = env_;
  customer.back() = "SANDBOX_SERVICE_TOKEN=" + key;
  const auto created = run_cli(dir_, customer, {"create", "--json"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const auto host_id = nlohmann::json::parse(created.out)["id"].get<std::string>();
  const auto over = run_cli(dir_, customer, {"create", "--json"});
  EXPECT_EQ(over.exit_code, 8) << over.err;
  EXPECT_NE(over.err.find("quota exceeded: max_hosts=1"), std::string::npos) << over.err;
  EXPECT_EQ(run_cli(dir_, customer, {"keys", "ls"}).exit_code, 4) << "admin only";

  const auto audit = run({"audit", "--namespace", "cli-ns", "--json"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  std::vector<std::pair<std::string, int>> calls;
  for (const auto& r : nlohmann::json::parse(audit.out)) {
    calls.emplace_back(r["action"].get<std::string>(), r["status"].get<int>());
  }
  const std::vector<std::pair<std::string, int>> want{{"create_host", 201}, {"create_host", 429}};
  EXPECT_EQ(calls, want) << audit.out;

  const auto removed = run({"keys", "rm", key_id});
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  const auto refused = run_cli(dir_, customer, {"ls"});
  EXPECT_EQ(refused.exit_code, 4);
  EXPECT_EQ(refused.err, "litterbox: service token rejected\n");
  EXPECT_EQ(run({"rm", host_id}).exit_code, 0) << "an admin still reaches the host";
}

TEST_F(CliAgainstServer, WrongTokenExitsWithTheAuthCode) {
  env_.back() = "SANDBOX_SERVICE_TOKEN=wrong";
  const auto r = run({"ls"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.err, "litterbox: service token rejected\n");
}

TEST_F(CliAgainstServer, FailedProvisioningExitsWithItsCodeAndTheLastError) {
  const auto r = run({"create", "--image", "registry.local/missing:1"});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(r.err.starts_with("litterbox: ImageNotFound: ")) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(CliAgainstServer, ReadsTheEnvFileWhenTheEnvironmentIsSilent) {
  std::filesystem::create_directories(dir_ / "state");
  std::ofstream(dir_ / "state" / "env") << "export SANDBOX_SERVICE_URL=" << url() << "\n"
                                        << "export SANDBOX_SERVICE_TOKEN=" << k_token << "\n";
  env_.resize(4);  // drop SANDBOX_SERVICE_URL and SANDBOX_SERVICE_TOKEN
  const auto r = run({"ls", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out).is_array());
}

TEST_F(CliAgainstServer, UsageErrorsExitWithOne) {
  auto r = run({"create", "--expires-in", "2h", "--no-expiry"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.err.starts_with("litterbox: ")) << r.err;
  r = run({"create", "--expires-in", "soon"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "litterbox: --expires-in wants a duration like 90m, 2h, 1h30m or 7d\n");
  r = run({"cp", "a", "b"});
  EXPECT_EQ(r.exit_code, 1);
  r = run({"frobnicate"});
  EXPECT_EQ(r.exit_code, 1);
  r = run({"exec", "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"});
  EXPECT_EQ(r.exit_code, 1);  // exec needs a command
}

TEST_F(CliAgainstServer, HelpOnEveryCommandAndBashCompletion) {
  for (const char* cmd : {"create", "ls", "get", "renew", "rm", "console", "events", "doctor",
                          "ssh", "exec", "cp", "proxy", "keys", "audit", "completion"}) {
    const auto r = run({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << cmd;
  }
  const auto top = run({"--help"});
  EXPECT_NE(top.out.find("Exit codes:"), std::string::npos);
  const auto completion = run({"completion", "bash"});
  ASSERT_EQ(completion.exit_code, 0);
  EXPECT_NE(completion.out.find("complete -F _litterbox litterbox"), std::string::npos);
  EXPECT_NE(completion.out.find("--expires-in"), std::string::npos);
  EXPECT_NE(
      completion.out.find(
          "create ls get renew rm console events doctor ssh exec cp proxy keys audit completion"),
      std::string::npos);
}

TEST_F(CliAgainstServer, RenewAndConsoleAndDoctor) {
  const auto created = run({"create", "--json", "--no-expiry"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const auto id = nlohmann::json::parse(created.out)["id"].get<std::string>();
  const auto renewed = run({"renew", id, "--expires-in", "90m", "--json"});
  ASSERT_EQ(renewed.exit_code, 0) << renewed.err;
  EXPECT_TRUE(nlohmann::json::parse(renewed.out)["expires_at"].is_string());
  EXPECT_EQ(run({"console", id}).exit_code, 0);
  const auto doctor = run({"doctor"});
  EXPECT_TRUE(doctor.exit_code == 0 || doctor.exit_code == 2) << doctor.err;
  EXPECT_NE(doctor.out.find("provider: "), std::string::npos) << doctor.out;
  const auto removed = run({"rm", id, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"});
  EXPECT_EQ(removed.exit_code, 3);  // the second id is unknown; the first is still deleted
  EXPECT_EQ(removed.out, id + "\n");
  EXPECT_EQ(removed.err, "litterbox: host not found\n");
}

TEST_F(CliAgainstServer, EventsPrintsEveryTransitionOfACreateOneJsonLineEachAndStopsAtMax) {
  const auto created = run({"create", "--json"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const auto id = nlohmann::json::parse(created.out)["id"].get<std::string>();
  const auto r = run({"events", "--host", id, "--after", "0", "--max", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> statuses;
  std::int64_t previous = 0;
  std::size_t at = 0;
  while (at < r.out.size()) {
    const auto nl = r.out.find('\n', at);
    ASSERT_NE(nl, std::string::npos) << r.out;
    const auto e = nlohmann::json::parse(r.out.substr(at, nl - at));
    EXPECT_EQ(e["host_id"], id);
    EXPECT_GT(e["id"].get<std::int64_t>(), previous);
    previous = e["id"].get<std::int64_t>();
    statuses.push_back(e["status"].get<std::string>());
    at = nl + 1;
  }
  EXPECT_EQ(statuses, (std::vector<std::string>{"provisioning", "pulling_image", "creating_vm",
                                                "bootstrapping", "active"}));
  const auto text = run({"events", "--host", id, "--after", "0", "--max", "1"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(id + "  created  provisioning"), std::string::npos) << text.out;
  const auto unknown = run({"events", "--host", "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"});
  EXPECT_EQ(unknown.exit_code, 3);
  EXPECT_EQ(unknown.err, "litterbox: host not found\n");
}

TEST(CliAgainstStub, RmWhoseFirstAnswerWasLostExitsZeroOnTheRetrys404) {
  // Issue 10: the first DELETE deleted the host but its answer never arrived; the retry's
  // 404 confirms the deletion and must not turn into exit code 3.
  stub_server stub({{stub_answer{0, "", true}},
                    {404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"}});
  std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir = tmpl;
  const std::string id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
  const auto r = run_cli(
      dir,
      {"PATH=/usr/bin:/bin", "HOME=" + dir.string(), "XDG_DATA_HOME=" + (dir / "data").string(),
       "LITTERBOX_STATE_DIR=" + (dir / "state").string(), "SANDBOX_SERVICE_URL=" + stub.url(),
       "SANDBOX_SERVICE_TOKEN=t"},
      {"rm", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, id + "\n");
  EXPECT_EQ(stub.requests().size(), 2U);
  std::filesystem::remove_all(dir);
}

/// The public key line `ssh-keygen -y` derives from a private key file ("" on failure).
std::string public_half_of(const std::filesystem::path& private_key) {
  const std::string cmd = "ssh-keygen -y -f '" + private_key.string() + "' 2>/dev/null";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    return "";
  }
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    out += buf;
  }
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.pop_back();
  }
  return out;
}

/// "type base64" of an authorized_keys line, without its comment.
std::string key_material(const std::string& line) {
  const auto first = line.find(' ');
  const auto second = line.find(' ', first + 1);
  return line.substr(0, second);
}

TEST(CliAgainstStub, CreateMintsTheKeyLocallyAndKeepsItWhenTheAnswerIsLost) {
  const std::string id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
  std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir = tmpl;
  const auto env = [&dir](const std::string& url) {
    return std::vector<std::string>{"PATH=/usr/bin:/bin",
                                    "HOME=" + dir.string(),
                                    "XDG_DATA_HOME=" + (dir / "data").string(),
                                    "LITTERBOX_STATE_DIR=" + (dir / "state").string(),
                                    "SANDBOX_SERVICE_URL=" + url,
                                    "SANDBOX_SERVICE_TOKEN=t"};
  };
  const auto keys = dir / "data" / "litterbox" / "keys";

  // Every attempt reaches the service but no answer comes back.
  std::string sent_key;
  {
    stub_server lost({{stub_answer{0, "", true}},
                      {stub_answer{0, "", true}},
                      {stub_answer{0, "", true}},
                      {stub_answer{0, "", true}},
                      {stub_answer{0, "", true}}});
    const auto r = run_cli(dir, env(lost.url()), {"create", "--idempotency-key", "lost-answer-1"});
    EXPECT_EQ(r.exit_code, 6) << r.err;
    EXPECT_NE(r.err.find("--idempotency-key lost-answer-1"), std::string::npos) << r.err;
    const auto bodies = lost.bodies();
    ASSERT_FALSE(bodies.empty());
    const auto body = nlohmann::json::parse(bodies.front());
    ASSERT_TRUE(body["ssh_authorized_keys"].is_array()) << bodies.front();
    sent_key = body["ssh_authorized_keys"][0].get<std::string>();
    EXPECT_TRUE(sent_key.starts_with("ssh-ed25519 ")) << sent_key;
    for (const auto& b : bodies) {
      EXPECT_EQ(b, bodies.front()) << "a retry sent a different request";
    }
    ASSERT_TRUE(std::filesystem::exists(keys / "pending"));
    std::size_t pending = 0;
    for (const auto& e : std::filesystem::directory_iterator(keys / "pending")) {
      ++pending;
      struct stat st {};
      ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777U, 0600U);
      EXPECT_EQ(key_material(public_half_of(e.path())), key_material(sent_key));
    }
    EXPECT_EQ(pending, 1U);
  }

  // The retry under the same key sends the same public half and adopts the kept key.
  schema::host h;
  h.id = id;
  h.name = schema::host_name_for(id);
  h.status = schema::host_status::active;
  h.provider = "fake";
  h.image = "img";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = timestamp(std::chrono::seconds(1800000000));
  h.updated_at = h.created_at;
  stub_server ok({{201, schema::to_json(h).dump()}});
  const auto r =
      run_cli(dir, env(ok.url()), {"create", "--json", "--idempotency-key", "lost-answer-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(ok.bodies().size(), 1U);
  EXPECT_EQ(nlohmann::json::parse(ok.bodies()[0])["ssh_authorized_keys"][0], sent_key);
  EXPECT_EQ(ok.requests()[0].at("idempotency-key"), "lost-answer-1");
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["private_key_file"], (keys / id).string());
  EXPECT_EQ(key_material(public_half_of(keys / id)), key_material(sent_key));
  EXPECT_TRUE(std::filesystem::is_empty(keys / "pending"));
  std::filesystem::remove_all(dir);
}

TEST(CliAgainstStub, CreateRejectedByTheServiceLeavesNoPendingKey) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "lb-cli-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir = tmpl;
  stub_server stub(
      {{422, R"({"detail":[{"loc":["body","cpus"],"msg":"too many","type":"value_error"}],)"
             R"("error_code":"VALIDATION_ERROR"})"}});
  const auto r = run_cli(
      dir,
      {"PATH=/usr/bin:/bin", "HOME=" + dir.string(), "XDG_DATA_HOME=" + (dir / "data").string(),
       "SANDBOX_SERVICE_URL=" + stub.url(), "SANDBOX_SERVICE_TOKEN=t"},
      {"create", "--cpus", "64"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  const auto pending = dir / "data" / "litterbox" / "keys" / "pending";
  EXPECT_TRUE(!std::filesystem::exists(pending) || std::filesystem::is_empty(pending));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace litterbox::client::test
