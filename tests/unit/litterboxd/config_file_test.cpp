#include "controlplane/litterboxd/config_file.hpp"

#include <gtest/gtest.h>

#include <string>

namespace litterbox::litterboxd {
namespace {

const std::set<std::string> k_keys{"DATABASE_URL", "SERVICE_TOKENS", "LITTERBOX_LISTEN"};

TEST(ConfigFileParser, ReadsKeyValueLinesSkippingCommentsAndBlanks) {
  const auto got = parse_config_file(
      "# comment\n\nDATABASE_URL=postgresql://u:p@h/db?sslmode=require\n  LITTERBOX_LISTEN = "
      "0.0.0.0:8080  \r\n",
      k_keys, "f");
  EXPECT_EQ(got, (std::map<std::string, std::string>{
                     {"DATABASE_URL", "postgresql://u:p@h/db?sslmode=require"},
                     {"LITTERBOX_LISTEN", "0.0.0.0:8080"}}));
}

TEST(ConfigFileParser, ShellStyleExportAndOnePairOfQuotesAreDroppedNothingExpanded) {
  const auto got = parse_config_file(
      "export SERVICE_TOKENS='a,b'\nDATABASE_URL=\"$HOME/x=y\"\nLITTERBOX_LISTEN='unbalanced\"\n",
      k_keys, "f");
  EXPECT_EQ(got.at("SERVICE_TOKENS"), "a,b");
  EXPECT_EQ(got.at("DATABASE_URL"), "$HOME/x=y");
  EXPECT_EQ(got.at("LITTERBOX_LISTEN"), "'unbalanced\"");
}

TEST(ConfigFileParser, AnEmptyValueIsKeptAsEmpty) {
  EXPECT_EQ(parse_config_file("SERVICE_TOKENS=\n", k_keys, "f").at("SERVICE_TOKENS"), "");
}

TEST(ConfigFileParser, UnknownKeyRepeatedKeyAndLineWithoutEqualsNameFileAndLine) {
  const auto message = [](const std::string& text) {
    try {
      parse_config_file(text, k_keys, "/etc/x.conf");
    } catch (const config_file_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("\nDATABSE_URL=x\n").rfind("/etc/x.conf:2: unknown setting DATABSE_URL", 0),
            0U);
  EXPECT_EQ(message("SERVICE_TOKENS=a\nSERVICE_TOKENS=b\n"),
            "/etc/x.conf:2: SERVICE_TOKENS is set twice");
  EXPECT_EQ(message("# ok\njust words\n"), "/etc/x.conf:2: expected KEY=value");
  EXPECT_EQ(message("=value\n"), "/etc/x.conf:1: expected KEY=value");
}

TEST(ConfigFileChoice, FlagBeatsEnvironmentBeatsDefault) {
  ::unsetenv("LITTERBOX_CONFIG");
  auto c = choose_config_file({"reap"});
  EXPECT_EQ(c.path, std::string(k_default_config_path));
  EXPECT_FALSE(c.explicit_choice);
  ::setenv("LITTERBOX_CONFIG", "/env.conf", 1);
  c = choose_config_file({"reap"});
  EXPECT_EQ(c.path, "/env.conf");
  EXPECT_TRUE(c.explicit_choice);
  EXPECT_EQ(choose_config_file({"reap", "--config", "/flag.conf"}).path, "/flag.conf");
  EXPECT_EQ(choose_config_file({"reap", "--config=/eq.conf"}).path, "/eq.conf");
  // After "--" nothing is a flag.
  EXPECT_EQ(choose_config_file({"reap", "--", "--config", "/no.conf"}).path, "/env.conf");
  ::unsetenv("LITTERBOX_CONFIG");
}

}  // namespace
}  // namespace litterbox::litterboxd
