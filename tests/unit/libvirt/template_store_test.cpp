#include "hypervisor/libvirt/template_store.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/guest_agent.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace litterbox::hypervisor {
namespace {

vm_spec clone_spec() {
  vm_spec s;
  s.host_id = "0190a3b4-0000-7000-8000-0000000000aa";
  s.name = "sb-0000000000aa";
  s.ssh_username = "agent";
  s.authorized_keys = {"ssh-ed25519 AAAAC3Nza one", "ssh-ed25519 AAAAC3Nzb two"};
  s.env = {{"A", "x y"}, {"MIXED", "  '$(id)' \"q\" \\ "}, {"EMPTY", ""}};
  s.host_key = {"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
                "ssh-ed25519 AAAAC3Nzhost"};
  return s;
}

constexpr std::string_view k_machine_id = "0123456789abcdef0123456789abcdef";

TEST(TemplateInfo, RoundTripsEveryFieldIncludingANullDiskSize) {
  template_info info{{"sha256:abc", 2, 1536, std::nullopt}, "agent", "lbt-1"};
  auto back = parse_template_info(render_template_info(info));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->key, info.key);
  EXPECT_EQ(back->ssh_username, "agent");
  EXPECT_EQ(back->name, "lbt-1");
  EXPECT_EQ(back->accel, "tcg");
  info.key.disk_gb = 20;
  info.accel = "kvm";
  back = parse_template_info(render_template_info(info));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->key.disk_gb, 20);
  EXPECT_EQ(back->accel, "kvm");
}

TEST(TemplateInfo, ATemplateThatDoesNotSayItsAcceleratorIsMissingSoItIsRebuilt) {
  std::string text = render_template_info({{"sha256:abc", 2, 1536, 8}, "agent", "lbt-1", "kvm"});
  text.erase(text.find("accel="), std::string("accel=kvm\n").size());
  const auto r = parse_template_info(text);
  ASSERT_FALSE(r) << text;
  EXPECT_EQ(r.error().code, errc::template_missing);
}

TEST(TemplateInfo, ATruncatedOrGarbledFileIsNoTemplate) {
  const std::string full = render_template_info({{"sha256:abc", 2, 1536, 8}, "agent", "lbt-1"});
  std::string garbled = full;
  garbled.replace(garbled.find("cpus=2"), 6, "cpus=two");
  for (const std::string& bad :
       {full.substr(0, full.size() - 1), full.substr(0, full.find("ssh_username")), garbled,
        std::string()}) {
    const auto r = parse_template_info(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::template_missing);
  }
}

TEST(TemplateInfo, ATemplateSavedWithAnotherDeviceLayoutIsMissingSoItIsRebuilt) {
  const std::string full = render_template_info({{"sha256:abc", 2, 1536, 8}, "agent", "lbt-1"});
  ASSERT_NE(full.find("layout=" + std::to_string(k_template_layout) + "\n"), std::string::npos);
  ASSERT_TRUE(parse_template_info(full));
  std::string before_proxy_nic = full;
  before_proxy_nic.erase(before_proxy_nic.find("layout="));
  std::string other = full;
  other.replace(other.find("layout=") + 7, 1, "1");
  for (const std::string& old : {before_proxy_nic, other}) {
    const auto r = parse_template_info(old);
    ASSERT_FALSE(r) << old;
    EXPECT_EQ(r.error().code, errc::template_missing);
    EXPECT_NE(r.error().message.find("layout"), std::string::npos);
  }
}

TEST(TemplateScrub, EmptiesHostKeysLoginSeedCopiesRandomSeedAndReadyScript) {
  const auto paths = template_scrub_paths("agent", "0190a3b4-0000-7000-8000-000000000001");
  const auto has = [&](std::string_view p) {
    return std::find(paths.begin(), paths.end(), p) != paths.end();
  };
  EXPECT_TRUE(has("/etc/ssh/ssh_host_ed25519_key"));
  EXPECT_TRUE(has("/etc/ssh/ssh_host_ed25519_key.pub"));
  EXPECT_TRUE(has("/home/agent/.ssh/authorized_keys"));
  EXPECT_TRUE(has("/home/agent/.ssh/environment"));
  EXPECT_TRUE(has("/var/lib/systemd/random-seed"));
  EXPECT_TRUE(has("/var/lib/cloud/instances/0190a3b4-0000-7000-8000-000000000001/user-data.txt"));
  EXPECT_TRUE(has("/run/cloud-init/instance-data-sensitive.json"));
  EXPECT_TRUE(has("/usr/local/lib/litterbox/ready"));
}

TEST(CloneIdentity, WritesTheHostKeyFirstThenMachineIdHostnameAndTheLoginLast) {
  const auto files = identity_files(clone_spec(), k_machine_id);
  ASSERT_TRUE(files) << files.error().message;
  std::vector<std::string> order;
  std::map<std::string, std::string> content;
  for (const auto& f : *files) {
    order.push_back(f.path);
    content[f.path] = f.content;
  }
  ASSERT_GE(order.size(), k_host_key_files + 2);
  EXPECT_EQ(order[0], "/etc/ssh/ssh_host_ed25519_key.pub");
  EXPECT_EQ(order[1], "/etc/ssh/ssh_host_ed25519_key");
  EXPECT_EQ(order.back(), "/home/agent/.ssh/authorized_keys");
  EXPECT_EQ(content["/etc/machine-id"], std::string(k_machine_id) + "\n");
  EXPECT_EQ(content["/etc/hostname"], "sb-0000000000aa\n");
  EXPECT_EQ(content["/proc/sys/kernel/hostname"], "sb-0000000000aa");
  EXPECT_NE(content["/etc/hosts"].find("127.0.1.1 sb-0000000000aa sb-0000000000aa\n"),
            std::string::npos);
  EXPECT_NE(content["/etc/hosts"].find("\n169.254.77.1 proxy.litterbox.internal\n"),
            std::string::npos);
  EXPECT_EQ(content["/etc/ssh/ssh_host_ed25519_key"],
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n");
  EXPECT_EQ(content["/etc/ssh/ssh_host_ed25519_key.pub"], "ssh-ed25519 AAAAC3Nzhost\n");
  const auto login_at = std::find(order.begin(), order.end(), "/home/agent/.ssh/authorized_keys");
  const auto hostname_at = std::find(order.begin(), order.end(), "/proc/sys/kernel/hostname");
  EXPECT_LT(hostname_at, login_at);
}

TEST(CloneLogin, EnvIsWrittenBeforeTheKeysAndByteForByteAsTheSeedDoes) {
  const auto files = login_files(clone_spec());
  ASSERT_TRUE(files);
  ASSERT_EQ(files->size(), 2U);
  EXPECT_EQ((*files)[0].path, "/home/agent/.ssh/environment");
  EXPECT_EQ((*files)[0].content, "A=x y\nEMPTY=\nMIXED=  '$(id)' \"q\" \\ \n");
  EXPECT_EQ((*files)[1].path, "/home/agent/.ssh/authorized_keys");
  EXPECT_EQ((*files)[1].content, "ssh-ed25519 AAAAC3Nza one\nssh-ed25519 AAAAC3Nzb two\n");
}

TEST(CloneLogin, AnEmptyLoginWritesEmptyFiles) {
  auto s = clone_spec();
  s.authorized_keys.clear();
  s.env.clear();
  const auto files = login_files(s);
  ASSERT_TRUE(files);
  for (const auto& f : *files) {
    EXPECT_EQ(f.content, "") << f.path;
  }
}

TEST(CloneLogin, ValuesThatWouldAddLinesOrBadNamesAreRefused) {
  auto newline_env = clone_spec();
  newline_env.env["X"] = "a\nB=c";
  auto bad_key_name = clone_spec();
  bad_key_name.env["1X"] = "a";
  auto two_line_key = clone_spec();
  two_line_key.authorized_keys = {"ssh-ed25519 A\nssh-ed25519 B"};
  auto bad_user = clone_spec();
  bad_user.ssh_username = "../root";
  auto bad_host = clone_spec();
  bad_host.name = "sb_1/..";
  for (const auto& s : {newline_env, bad_key_name, two_line_key, bad_user}) {
    const auto r = login_files(s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::vm_create_failed);
  }
  EXPECT_FALSE(identity_files(bad_host, k_machine_id));
  EXPECT_FALSE(identity_files(clone_spec(), "not-hex"));
}

TEST(GuestAgentJson, RequestsCarryTheCommandAndItsArguments) {
  EXPECT_EQ(agent_request("guest-ping"), R"({"execute":"guest-ping"})");
  EXPECT_EQ(agent_request("guest-file-close", R"({"handle":3})"),
            R"({"arguments":{"handle":3},"execute":"guest-file-close"})");
}

TEST(GuestAgentJson, RepliesYieldTheirReturnValueOrTheAgentsError) {
  EXPECT_EQ(*agent_return(R"({"return":{"count":5,"eof":false}})"), R"({"count":5,"eof":false})");
  EXPECT_EQ(*agent_return(R"({"return":1000})"), "1000");
  const auto failed = agent_return(
      R"({"error":{"class":"CommandNotFound","desc":"The command guest-exec has been disabled for this instance"}})");
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("has been disabled"), std::string::npos);
  EXPECT_FALSE(agent_return("not json"));
  EXPECT_FALSE(agent_return(R"({"id":1})"));
}

TEST(GuestAgentJson, ClockCommandIsTheFixedDateArgvWithTheHostTimeToTheNanosecond) {
  using namespace std::chrono;
  const system_clock::time_point now{
      duration_cast<system_clock::duration>(seconds(1'764'659'130) + nanoseconds(7'000'001))};
  const auto args = clock_exec_arguments(now);
  ASSERT_TRUE(args) << args.error().message;
  EXPECT_EQ(
      *args,
      R"({"arg":["-u","-s","@1764659130.007000001"],"capture-output":false,"path":"/bin/date"})");
  const auto round = clock_exec_arguments(system_clock::time_point{seconds(1'764'659'130)});
  ASSERT_TRUE(round);
  EXPECT_NE(round->find(R"("@1764659130.000000000")"), std::string::npos) << *round;
}

TEST(GuestAgentJson, ClockCommandRefusesAHostClockOutsideThisCentury) {
  using namespace std::chrono;
  EXPECT_FALSE(clock_exec_arguments(system_clock::time_point{}));
  EXPECT_FALSE(clock_exec_arguments(system_clock::time_point{seconds(946'684'799)}));
  EXPECT_FALSE(clock_exec_arguments(system_clock::time_point{seconds(4'102'444'800)}));
  EXPECT_FALSE(clock_exec_arguments(system_clock::time_point{seconds(-5)}));
  EXPECT_TRUE(clock_exec_arguments(system_clock::time_point{seconds(946'684'800)}));
}

TEST(GuestAgentJson, RefusalsAreToldApartFromSilence) {
  EXPECT_TRUE(agent_refused("The command guest-exec has been disabled for this instance"));
  EXPECT_TRUE(agent_refused("this feature or command is not currently supported"));
  EXPECT_FALSE(agent_refused("Guest agent is not responding: QEMU guest agent is not connected"));
}

}  // namespace
}  // namespace litterbox::hypervisor
