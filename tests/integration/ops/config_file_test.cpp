#include "base/secret.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace litterbox {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* k_token = "config-file-test-token";

struct run_result {
  int exit_code = -1;
  std::string output;
};

/// Runs `argv` with exactly the environment `env` (nothing inherited, as `env -i` and cron
/// give it) and returns its exit code and combined output.
run_result run_with_env(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                        const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));  // execve's signature predates const
  }
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  run_result out;
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) {
    return out;
  }
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log);
  std::ostringstream text;
  text << in.rdbuf();
  out.output = text.str();
  return out;
}

void write_private_file(const fs::path& p, const std::string& text) {
  {
    std::ofstream out(p, std::ios::trunc);
    out << text;
  }
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
}

long host_rows(const std::string& db_url, const std::string& id) {
  pqxx::connection c(db_url);
  pqxx::nontransaction tx(c);
  return tx.exec_params1("SELECT count(*) FROM hosts WHERE id = $1::uuid", id)[0].as<long>();
}

std::size_t vm_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    n += e.path().extension() == ".vm" ? 1U : 0U;
  }
  return n;
}

/// One active host whose lease has already ended, created by a real `litterboxd serve` with
/// the fake hypervisor keeping its VM as a file in `vm_dir` (so a later `reap` process sees
/// it), then the server stopped: only a separate reap can remove it.
class ExpiredHost : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("litterbox-ops-" + db_.name());
    vm_dir_ = dir_ / "vms";
    fs::create_directories(vm_dir_);
    {
      test::litterboxd_options o;
      o.binary = LB_LITTERBOXD_PATH;
      o.database_url = db_.url();
      o.service_tokens = {k_token};
      o.args = {"--fake-state-dir", vm_dir_.string(),  "--state-dir",
                dir_.string(),      "--reap-interval", "3600"};
      test::litterboxd_process server(std::move(o));
      const test::http_client http("127.0.0.1", server.port());
      const auto r = http.post("/hosts", "{}",
                               {{"Authorization", std::string("Bearer ") + k_token},
                                {"Content-Type", "application/json"}});
      ASSERT_EQ(r.status, 201) << r;
      id_ = json::parse(r.body).at("id").get<std::string>();
      ASSERT_TRUE(server.stop().has_value());
    }
    pqxx::connection c(db_.url());
    pqxx::work tx(c);
    tx.exec_params("UPDATE hosts SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
                   id_);
    tx.commit();
    ASSERT_EQ(host_rows(db_.url(), id_), 1);
    ASSERT_EQ(vm_files(vm_dir_), 1U);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  /// The settings `scripts/up` and the package write, for this test's database and dirs.
  std::string config_text(const std::string& database_url) const {
    return "# written by the test, as scripts/up writes /etc/litterbox/litterboxd.conf\n"
           "DATABASE_URL=" +
           database_url +
           "\n"
           "SERVICE_TOKENS='" +
           std::string(k_token) +
           "'\n"
           "LITTERBOX_HYPERVISOR=fake\n"
           "LITTERBOX_STATE_DIR=" +
           dir_.string() +
           "\n"
           "LITTERBOX_FAKE_STATE_DIR=" +
           vm_dir_.string() + "\n";
  }

  test::test_database db_;
  fs::path dir_;
  fs::path vm_dir_;
  std::string id_;
};

TEST_F(ExpiredHost, ReapWithAnEmptyEnvironmentReadsTheConfigFileAndRemovesTheHost) {
  const auto conf = dir_ / "litterboxd.conf";
  write_private_file(conf, config_text(db_.url()));
  const auto r =
      run_with_env({"/usr/bin/env", "-i", LB_LITTERBOXD_PATH, "reap", "--config", conf.string()},
                   {}, dir_ / "reap.log");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(host_rows(db_.url(), id_), 0) << r.output;
  EXPECT_EQ(vm_files(vm_dir_), 0U) << r.output;
}

TEST_F(ExpiredHost, ReapFindsTheDefaultConfigFileWhereLitterboxConfigPointsIt) {
  const auto conf = dir_ / "default.conf";
  write_private_file(conf, config_text(db_.url()));
  const auto r = run_with_env({LB_LITTERBOXD_PATH, "reap"}, {"LITTERBOX_CONFIG=" + conf.string()},
                              dir_ / "reap.log");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(host_rows(db_.url(), id_), 0) << r.output;
}

TEST_F(ExpiredHost, TheEnvironmentOverridesTheConfigFile) {
  const auto conf = dir_ / "litterboxd.conf";
  // The file names a database nobody serves; the environment's URL must win.
  write_private_file(conf, config_text("postgresql://nobody@127.0.0.1:1/nothing"));
  const auto r = run_with_env({LB_LITTERBOXD_PATH, "reap", "--config", conf.string()},
                              {"DATABASE_URL=" + db_.url()}, dir_ / "reap.log");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(host_rows(db_.url(), id_), 0) << r.output;
}

TEST_F(ExpiredHost, AFlagOverridesTheConfigFile) {
  const auto conf = dir_ / "litterboxd.conf";
  write_private_file(conf, config_text("postgresql://nobody@127.0.0.1:1/nothing"));
  const auto r = run_with_env(
      {LB_LITTERBOXD_PATH, "reap", "--config", conf.string(), "--database-url", db_.url()}, {},
      dir_ / "reap.log");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(host_rows(db_.url(), id_), 0) << r.output;
}

TEST_F(ExpiredHost, AnUnknownKeyInTheConfigFileFailsAndReapsNothing) {
  const auto conf = dir_ / "litterboxd.conf";
  write_private_file(conf, config_text(db_.url()) + "LITTERBOX_REAP_CONCURENCY=4\n");
  const auto r =
      run_with_env({LB_LITTERBOXD_PATH, "reap", "--config", conf.string()}, {}, dir_ / "reap.log");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("litterboxd.conf:7: unknown setting LITTERBOX_REAP_CONCURENCY"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(host_rows(db_.url(), id_), 1);
}

TEST(ConfigFile, AMissingFileNamedByConfigIsAnError) {
  const auto missing = fs::temp_directory_path() / ("litterbox-missing-" + random_hex(8));
  const auto log = fs::temp_directory_path() / ("litterbox-ops-" + random_hex(8) + ".log");
  const auto r = run_with_env(
      {LB_LITTERBOXD_PATH, "migrate", "--config", (missing / "litterboxd.conf").string()}, {}, log);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot read the configuration file"), std::string::npos) << r.output;
  fs::remove(log);
}

TEST(ConfigFile, MigrateReadsTheDatabaseUrlFromTheConfigFile) {
  const test::test_database db;
  const auto dir = fs::temp_directory_path() / ("litterbox-ops-" + db.name());
  fs::create_directories(dir);
  write_private_file(dir / "litterboxd.conf",
                     "export DATABASE_URL=\"" + db.url() + "\"\nSERVICE_TOKENS=x\n");
  const auto r =
      run_with_env({LB_LITTERBOXD_PATH, "migrate", "--config", (dir / "litterboxd.conf").string()},
                   {}, dir / "migrate.log");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("database schema up to date"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(ConfigFile, AFlagOverridesTheEnvironmentForEverySubcommand) {
  // serve and reap share their options; the environment once overwrote a flag given to the
  // subcommand that ran through the options of the one that did not.
  const auto dir = fs::temp_directory_path() / ("litterbox-ops-" + random_hex(8));
  fs::create_directories(dir);
  for (const char* sub : {"reap", "serve"}) {
    // Nothing listens on port 1: both exit once their configuration is read and the database
    // refuses them, which is all this needs.
    const auto r = run_with_env(
        {LB_LITTERBOXD_PATH, sub, "--log-format", "text", "--hypervisor", "fake", "--templates",
         "on", "--pool", "1", "--state-dir", dir.string()},
        {"DATABASE_URL=postgresql://127.0.0.1:1/none?connect_timeout=2", "SERVICE_TOKENS=x",
         "LITTERBOX_CONFIG=/dev/null", "LITTERBOX_LOG_FORMAT=json", "LITTERBOX_TEMPLATES=off"},
        dir / (std::string(sub) + ".log"));
    EXPECT_EQ(r.exit_code, 1) << sub << r.output;
    EXPECT_EQ(r.output.find("readable by every user"), std::string::npos) << sub << r.output;
    EXPECT_EQ(r.output.find("LITTERBOX_POOL needs"), std::string::npos) << sub << r.output;
    EXPECT_EQ(r.output.find("{\"ts\""), std::string::npos) << sub << ": " << r.output;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace litterbox
