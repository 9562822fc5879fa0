#include "client/cli/remote.hpp"

#include <gtest/gtest.h>

namespace litterbox::client::cli {
namespace {

TEST(KnownHosts, ReadsKeysAndSkipsMarkersAndComments) {
  const auto keys = parse_known_hosts(
      "# pinned\n"
      "[127.0.0.1]:22017 ssh-ed25519 AAAAblob1 comment\r\n"
      "\n"
      "@cert-authority * ssh-ed25519 AAAAca\n"
      "@revoked * ssh-ed25519 AAAArev\n"
      "127.0.0.1 ecdsa-sha2-nistp256 AAAAblob2");
  ASSERT_EQ(keys.size(), 2U);
  EXPECT_EQ(keys[0].type, "ssh-ed25519");
  EXPECT_EQ(keys[0].blob, "AAAAblob1");
  EXPECT_EQ(keys[1].type, "ecdsa-sha2-nistp256");
  EXPECT_EQ(keys[1].blob, "AAAAblob2");
  EXPECT_TRUE(parse_known_hosts("").empty());
  EXPECT_TRUE(parse_known_hosts("just-two words").empty());
}

TEST(OpensshArgv, PinsTheKnownHostsFileAndPassesTheCommandAsArgv) {
  schema::host h;
  h.ssh_host = "127.0.0.1";
  h.ssh_port = 22017;
  h.ssh_username = "agent";
  const auto argv = openssh_argv(h, "/tmp/kh", std::filesystem::path("/keys/id"), {"ls", "-la"});
  const std::vector<std::string> expected{"ssh",
                                          "-o",
                                          "StrictHostKeyChecking=yes",
                                          "-o",
                                          "UserKnownHostsFile=/tmp/kh",
                                          "-o",
                                          "GlobalKnownHostsFile=/dev/null",
                                          "-o",
                                          "UpdateHostKeys=no",
                                          "-p",
                                          "22017",
                                          "-i",
                                          "/keys/id",
                                          "-o",
                                          "IdentitiesOnly=yes",
                                          "-l",
                                          "agent",
                                          "--",
                                          "127.0.0.1",
                                          "ls",
                                          "-la"};
  EXPECT_EQ(argv, expected);
}

TEST(OpensshArgv, NoIdentityWithoutAStoredKey) {
  schema::host h;
  h.ssh_host = "h";
  h.ssh_port = 22;
  h.ssh_username = "u";
  const auto argv = openssh_argv(h, "/kh", std::nullopt, {});
  EXPECT_EQ(std::find(argv.begin(), argv.end(), "-i"), argv.end());
  EXPECT_EQ(argv.back(), "h");
}

TEST(ShellQuote, KeepsEveryWordIntact) {
  EXPECT_EQ(shell_quote("ls"), "ls");
  EXPECT_EQ(shell_quote("/etc/os-release"), "/etc/os-release");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
  EXPECT_EQ(shell_quote("a;b"), "'a;b'");
}

TEST(CpOperand, OnlyAUuidBeforeTheColonMakesItRemote) {
  auto op = parse_cp_operand("0190A1B2-c3d4-7e5f-8a6b-7c8d9e0f1a2b:/tmp/x");
  ASSERT_TRUE(op.host_id);
  EXPECT_EQ(*op.host_id, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  EXPECT_EQ(op.path, "/tmp/x");
  op = parse_cp_operand("./a:b");
  EXPECT_FALSE(op.host_id);
  EXPECT_EQ(op.path, "./a:b");
  op = parse_cp_operand("local.txt");
  EXPECT_FALSE(op.host_id);
}

}  // namespace
}  // namespace litterbox::client::cli
