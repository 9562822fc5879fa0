#include "client/config.hpp"

#include "client/errc.hpp"

#include <gtest/gtest.h>

#include <map>

namespace litterbox::client {
namespace {

using namespace std::chrono_literals;

env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) {
      return std::nullopt;
    }
    return it->second;
  };
}

file_reader files_of(std::map<std::string, std::string> files) {
  return [files = std::move(files)](const std::string& path) -> std::optional<std::string> {
    const auto it = files.find(path);
    if (it == files.end()) {
      return std::nullopt;
    }
    return it->second;
  };
}

TEST(EnvFile, ReadsExportLinesAsScriptsUpWritesThem) {
  const auto vars = parse_env_file(
      "export SANDBOX_SERVICE_URL=http://127.0.0.1:8080\n"
      "export SANDBOX_SERVICE_TOKEN=abc123\n");
  EXPECT_EQ(vars.at("SANDBOX_SERVICE_URL"), "http://127.0.0.1:8080");
  EXPECT_EQ(vars.at("SANDBOX_SERVICE_TOKEN"), "abc123");
  EXPECT_EQ(vars.size(), 2U);
}

TEST(EnvFile, UndoesShellQuotingAndSkipsCommentsAndJunk) {
  const auto vars = parse_env_file(
      "# written by scripts/up\n"
      "\n"
      "  export A='single $quoted'  \n"
      "B=\"double \\\"esc\\\" \\$x\"\n"
      "C=bare # trailing comment\n"
      "not an assignment\n"
      "1BAD=x\n"
      "export D=\r\n"
      "E='a'\"b\"c\n");
  EXPECT_EQ(vars.at("A"), "single $quoted");
  EXPECT_EQ(vars.at("B"), "double \"esc\" $x");
  EXPECT_EQ(vars.at("C"), "bare");
  EXPECT_EQ(vars.at("D"), "");
  EXPECT_EQ(vars.at("E"), "abc");
  EXPECT_EQ(vars.count("1BAD"), 0U);
  EXPECT_EQ(vars.size(), 5U);
}

TEST(EnvFile, LaterAssignmentWins) {
  const auto vars = parse_env_file("X=1\nexport X=2");
  EXPECT_EQ(vars.at("X"), "2");
}

TEST(TimeoutSeconds, AcceptsPositiveNumbersOnly) {
  EXPECT_EQ(parse_timeout_seconds("300"), 300000ms);
  EXPECT_EQ(parse_timeout_seconds("2.5"), 2500ms);
  EXPECT_EQ(parse_timeout_seconds(" 10 "), 10000ms);
  EXPECT_FALSE(parse_timeout_seconds("0"));
  EXPECT_FALSE(parse_timeout_seconds("-1"));
  EXPECT_FALSE(parse_timeout_seconds("abc"));
  EXPECT_FALSE(parse_timeout_seconds("10s"));
  EXPECT_FALSE(parse_timeout_seconds("nan"));
  EXPECT_FALSE(parse_timeout_seconds(""));
}

TEST(LoadConfig, EnvironmentWinsOverTheEnvFile) {
  const auto cfg =
      load_config(env_of({{"SANDBOX_SERVICE_URL", "http://env:1/"}, {"LITTERBOX_STATE_DIR", "/s"}}),
                  files_of({{"/s/env",
                             "export SANDBOX_SERVICE_URL=http://file:2\n"
                             "export SANDBOX_SERVICE_TOKEN=from-file\n"}}));
  ASSERT_TRUE(cfg) << cfg.error().message;
  EXPECT_EQ(cfg->url, "http://env:1");  // trailing slash dropped
  EXPECT_EQ(cfg->token, "from-file");
  EXPECT_EQ(cfg->create_timeout, 300s);
  EXPECT_EQ(cfg->request_timeout, 30s);
}

TEST(LoadConfig, DefaultEnvFileIsUnderVarLib) {
  EXPECT_EQ(env_file_path(env_of({})), "/var/lib/litterbox/env");
  const auto cfg = load_config(
      env_of({}),
      files_of({{"/var/lib/litterbox/env", "export SANDBOX_SERVICE_URL=https://x.example\n"}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->url, "https://x.example");
  EXPECT_EQ(cfg->token, "");
}

TEST(LoadConfig, TimeoutSetsCreateBudgetAndCapsOthers) {
  auto cfg =
      load_config(env_of({{"SANDBOX_SERVICE_URL", "http://h"}, {"SANDBOX_SERVICE_TIMEOUT", "600"}}),
                  files_of({}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->create_timeout, 600s);
  EXPECT_EQ(cfg->request_timeout, 30s);
  cfg = load_config(env_of({{"SANDBOX_SERVICE_URL", "http://h"}, {"SANDBOX_SERVICE_TIMEOUT", "5"}}),
                    files_of({}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->create_timeout, 5s);
  EXPECT_EQ(cfg->request_timeout, 5s);
}

TEST(LoadConfig, MissingUrlBadSchemeAndBadTimeoutAreErrors) {
  auto cfg = load_config(env_of({}), files_of({}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.error().code, errc::invalid_argument);
  EXPECT_NE(cfg.error().message.find("SANDBOX_SERVICE_URL"), std::string::npos);
  cfg = load_config(env_of({{"SANDBOX_SERVICE_URL", "ftp://h"}}), files_of({}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.error().code, errc::invalid_argument);
  cfg = load_config(env_of({{"SANDBOX_SERVICE_URL", "http://h"}, {"SANDBOX_SERVICE_TIMEOUT", "x"}}),
                    files_of({}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.error().code, errc::invalid_argument);
}

TEST(LoadConfig, ErrorMessagesNeverContainTheToken) {
  const auto cfg = load_config(
      env_of({{"SANDBOX_SERVICE_URL", "gopher://h"}, {"SANDBOX_SERVICE_TOKEN", "s3cret-token"}}),
      files_of({}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.error().message.find("s3cret-token"), std::string::npos);
}

}  // namespace
}  // namespace litterbox::client
