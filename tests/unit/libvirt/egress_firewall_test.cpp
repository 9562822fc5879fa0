#include "hypervisor/libvirt/egress_firewall.hpp"

#include "hypervisor/errc.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace litterbox::hypervisor {
namespace {

namespace fs = std::filesystem;

cidr block(std::string_view text) {
  return parse_cidr(text).value();
}

TEST(ParseCidr, AcceptsV4AndV6BlocksAndBareAddresses) {
  EXPECT_EQ(block("10.1.2.0/24").text(), "10.1.2.0/24");
  EXPECT_EQ(block("8.8.8.8").text(), "8.8.8.8/32");
  EXPECT_EQ(block("2001:DB8::/32").text(), "2001:db8::/32");
  EXPECT_EQ(block("fe80::1").text(), "fe80::1/128");
  EXPECT_EQ(block("0.0.0.0/0").text(), "0.0.0.0/0");
  EXPECT_EQ(block("10.1.2.0/24").family, ip_family::v4);
  EXPECT_EQ(block("::/0").family, ip_family::v6);
}

TEST(ParseCidr, RejectsHostBitsBadPrefixesAndNonAddresses) {
  for (const auto* bad : {"10.1.2.3/24", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0/8",
                          "example.com", "", "fe80::1/64", "::/129", "10.0.0.0/8x"}) {
    const auto r = parse_cidr(bad);
    EXPECT_FALSE(r) << bad;
  }
}

TEST(ParseEgressPolicy, ReadsAllowAndDenyEntriesInOrder) {
  const auto p = parse_egress_policy(" allow=10.1.2.0/24 , deny=8.8.8.8/32,allow=fd00:1::/32");
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_EQ(p->size(), 3U);
  EXPECT_EQ((*p)[0], (egress_entry{true, block("10.1.2.0/24")}));
  EXPECT_EQ((*p)[1], (egress_entry{false, block("8.8.8.8/32")}));
  EXPECT_EQ((*p)[2], (egress_entry{true, block("fd00:1::/32")}));
  EXPECT_TRUE(parse_egress_policy("")->empty());
  EXPECT_TRUE(parse_egress_policy("  ")->empty());
}

TEST(ParseEgressPolicy, RejectsUnknownVerbsEmptyEntriesAndBadBlocksNamingTheEntry) {
  for (const auto* bad : {"permit=10.0.0.0/8", "10.0.0.0/8", "allow=", "allow=10.0.0.0/8,",
                          "allow=10.0.0.1/8", ",deny=8.8.8.8"}) {
    const auto p = parse_egress_policy(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_NE(p.error().message.find("LITTERBOX_GUEST_EGRESS"), std::string::npos) << bad;
  }
  const auto p = parse_egress_policy("allow=10.0.0.1/8");
  EXPECT_NE(p.error().message.find("allow=10.0.0.1/8"), std::string::npos) << p.error().message;
}

TEST(DefaultDenied, CoversMetadataPrivateLoopbackMulticastAndV6Equivalents) {
  const auto covers = [](ip_family f, std::string_view address) {
    const auto a = block(address);
    for (const auto& b : default_denied(f)) {
      const auto full = static_cast<std::size_t>(b.prefix / 8);
      bool same =
          std::equal(b.bytes.begin(), b.bytes.begin() + static_cast<long>(full), a.bytes.begin());
      if (same && b.prefix % 8 != 0) {
        const auto mask =
            static_cast<std::uint8_t>(0xFFU << (8U - static_cast<unsigned>(b.prefix % 8)));
        same = (a.bytes[full] & mask) == b.bytes[full];
      }
      if (same) {
        return true;
      }
    }
    return false;
  };
  for (const auto* a :
       {"169.254.169.254", "10.20.30.40", "172.31.255.1", "192.168.1.1", "100.64.0.1", "127.0.0.1",
        "0.0.0.0", "224.0.0.251", "239.255.255.250", "255.255.255.255", "240.0.0.1"}) {
    EXPECT_TRUE(covers(ip_family::v4, a)) << a;
  }
  for (const auto* a : {"1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "93.184.216.34"}) {
    EXPECT_FALSE(covers(ip_family::v4, a)) << a;
  }
  for (const auto* a :
       {"::1", "fe80::1", "fd00:ec2::254", "fc00::1", "ff02::1", "::ffff:10.0.0.1", "::"}) {
    EXPECT_TRUE(covers(ip_family::v6, a)) << a;
  }
  for (const auto* a : {"2606:4700::1111", "2001:4860:4860::8888"}) {
    EXPECT_FALSE(covers(ip_family::v6, a)) << a;
  }
}

TEST(ParseResolvConf, TakesEveryNameserverOnceAndDropsZoneIds) {
  const auto r = parse_resolv_conf(
      "# comment\nsearch example.com\nnameserver 10.255.255.53\nnameserver\t127.0.0.53 # local\n"
      "nameserver fe80::1%eth0\nnameserver 10.255.255.53\nnameservers 1.2.3.4\n"
      "options edns0\nnameserver not-an-address\n");
  ASSERT_EQ(r.size(), 3U);
  EXPECT_EQ(r[0].text(), "10.255.255.53/32");
  EXPECT_EQ(r[1].text(), "127.0.0.53/32");
  EXPECT_EQ(r[2].text(), "fe80::1/128");
}

egress_policy sample_policy() {
  egress_policy p;
  p.entries = parse_egress_policy("allow=10.1.2.0/24,deny=8.8.8.8/32,allow=fd00:1::/32").value();
  p.resolvers = {block("10.255.255.53"), block("fd00::53")};
  return p;
}

TEST(RenderRestore, V4RebuildsTheChainReplacesOurOutputRulesAndPutsTheJumpFirst) {
  const std::vector<std::string> stale{
      "-A OUTPUT -m owner --uid-owner 64055 -m comment --comment litterbox-guest-egress -j "
      "LITTERBOX-GUEST-EGRESS"};
  const std::string expected =
      "*filter\n"
      ":LITTERBOX-GUEST-EGRESS - [0:0]\n"
      ":LITTERBOX-GUEST-REJECT - [0:0]\n"
      "-A LITTERBOX-GUEST-REJECT -p tcp -j REJECT --reject-with tcp-reset\n"
      "-A LITTERBOX-GUEST-REJECT -j REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d 10.255.255.53/32 -p udp -m udp --dport 53 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d 10.255.255.53/32 -p tcp -m tcp --dport 53 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -m addrtype --dst-type LOCAL -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -m addrtype --dst-type BROADCAST -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 10.1.2.0/24 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d 8.8.8.8/32 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 0.0.0.0/8 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 10.0.0.0/8 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 100.64.0.0/10 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 127.0.0.0/8 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 169.254.0.0/16 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 172.16.0.0/12 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 192.0.0.0/24 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 192.0.2.0/24 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 192.88.99.0/24 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 192.168.0.0/16 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 198.18.0.0/15 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 198.51.100.0/24 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 203.0.113.0/24 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 224.0.0.0/4 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 240.0.0.0/4 -j LITTERBOX-GUEST-REJECT\n"
      "-D OUTPUT -m owner --uid-owner 64055 -m comment --comment litterbox-guest-egress -j "
      "LITTERBOX-GUEST-EGRESS\n"
      "-I OUTPUT 1 -m owner --uid-owner 64055 -m comment --comment litterbox-guest-egress -j "
      "LITTERBOX-GUEST-EGRESS\n"
      "COMMIT\n";
  EXPECT_EQ(render_restore(sample_policy(), ip_family::v4, {64055U}, stale), expected);
}

TEST(RenderRestore, V6HasTheSameShapeWithV6BlocksAndNoBroadcast) {
  const std::string expected =
      "*filter\n"
      ":LITTERBOX-GUEST-EGRESS - [0:0]\n"
      ":LITTERBOX-GUEST-REJECT - [0:0]\n"
      "-A LITTERBOX-GUEST-REJECT -p tcp -j REJECT --reject-with tcp-reset\n"
      "-A LITTERBOX-GUEST-REJECT -j REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d fd00::53/128 -p udp -m udp --dport 53 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d fd00::53/128 -p tcp -m tcp --dport 53 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -m addrtype --dst-type LOCAL -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d fd00:1::/32 -j RETURN\n"
      "-A LITTERBOX-GUEST-EGRESS -d ::/128 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d ::1/128 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d ::ffff:0.0.0.0/96 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 64:ff9b:1::/48 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 100::/64 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d 2001:db8::/32 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d fc00::/7 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d fe80::/10 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d fec0::/10 -j LITTERBOX-GUEST-REJECT\n"
      "-A LITTERBOX-GUEST-EGRESS -d ff00::/8 -j LITTERBOX-GUEST-REJECT\n"
      "-I OUTPUT 1 -m owner --uid-owner 64055 -m comment --comment litterbox-guest-egress -j "
      "LITTERBOX-GUEST-EGRESS\n"
      "COMMIT\n";
  EXPECT_EQ(render_restore(sample_policy(), ip_family::v6, {64055U}, {}), expected);
}

TEST(RenderChain, WithoutInternetPassesOnlyEstablishedTrafficNotEvenDns) {
  auto p = sample_policy();
  p.internet = false;
  EXPECT_EQ(render_chain(p, ip_family::v4),
            (std::vector<std::string>{
                "-A LITTERBOX-GUEST-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A LITTERBOX-GUEST-EGRESS -j LITTERBOX-GUEST-REJECT"}));
  EXPECT_EQ(render_chain(p, ip_family::v6).size(), 2U);
}

TEST(RenderChain, OperatorAllowsComeAfterTheDenyOfThisHostsOwnAddresses) {
  egress_policy p;
  p.entries = parse_egress_policy("allow=0.0.0.0/0").value();
  const auto rules = render_chain(p, ip_family::v4);
  const auto local =
      std::find(rules.begin(), rules.end(),
                "-A LITTERBOX-GUEST-EGRESS -m addrtype --dst-type LOCAL -j LITTERBOX-GUEST-REJECT");
  const auto allow =
      std::find(rules.begin(), rules.end(), "-A LITTERBOX-GUEST-EGRESS -d 0.0.0.0/0 -j RETURN");
  ASSERT_NE(local, rules.end());
  ASSERT_NE(allow, rules.end());
  EXPECT_LT(local, allow);
}

const char* const k_listing =
    "-P OUTPUT ACCEPT\n"
    "-A OUTPUT -o lo -j ACCEPT\n"
    "-A OUTPUT -m owner --uid-owner 1000 -m comment --comment litterbox-guest-egress -j "
    "LITTERBOX-GUEST-EGRESS\n"
    "-A OUTPUT -m owner --uid-owner 64055 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW "
    "-m comment --comment litterbox-guest-isolation -j REJECT --reject-with icmp-port-unreachable\n"
    "-A OUTPUT -d 10.0.0.0/8 -j LITTERBOX-GUEST-EGRESS-OTHER\n";

TEST(OurOutputRules, FindsJumpsForAnyUidAndTheOldIsolationRuleOnly) {
  const auto rules = our_output_rules(k_listing);
  ASSERT_EQ(rules.size(), 2U);
  EXPECT_NE(rules[0].find("--uid-owner 1000"), std::string::npos);
  EXPECT_NE(rules[1].find("litterbox-guest-isolation"), std::string::npos);
}

TEST(JumpProblem, NamesTheRuleThatComesFirstOrAMissingOrForeignUidJump) {
  const auto above = jump_problem(k_listing, {1000U});
  ASSERT_TRUE(above);
  EXPECT_NE(above->find("-A OUTPUT -o lo -j ACCEPT"), std::string::npos) << *above;
  EXPECT_TRUE(jump_problem("-P OUTPUT ACCEPT\n", {64055U}));
  const std::string ours = "-P OUTPUT ACCEPT\n" + render_jump(64055) + "\n-A OUTPUT -j ACCEPT\n";
  EXPECT_FALSE(jump_problem(ours, {64055U}));
  EXPECT_TRUE(jump_problem(ours, {1000U}));
}

TEST(RenderRestore, PutsOneJumpPerUidOnTopInTheGivenOrder) {
  const auto text = render_restore(egress_policy{}, ip_family::v4, {64055U, 1000U}, {});
  const auto first = text.find("-I OUTPUT 1 -m owner --uid-owner 1000 ");
  const auto second = text.find("-I OUTPUT 1 -m owner --uid-owner 64055 ");
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  EXPECT_LT(first, second) << "inserted last, 64055 must end up first";
}

TEST(JumpProblem, AcceptsTheJumpsOfSeveralUidsInAnyOrderAndNamesAMissingOne) {
  const std::string both = "-P OUTPUT ACCEPT\n" + render_jump(1000) + "\n" + render_jump(64055) +
                           "\n-A OUTPUT -j ACCEPT\n";
  EXPECT_FALSE(jump_problem(both, {64055U, 1000U}));
  const std::string one = "-P OUTPUT ACCEPT\n" + render_jump(64055) + "\n";
  const auto missing = jump_problem(one, {64055U, 1000U});
  ASSERT_TRUE(missing);
  EXPECT_NE(missing->find("uid 1000"), std::string::npos) << *missing;
  const std::string split = "-P OUTPUT ACCEPT\n" + render_jump(64055) + "\n-A OUTPUT -j ACCEPT\n" +
                            render_jump(1000) + "\n";
  const auto below = jump_problem(split, {64055U, 1000U});
  ASSERT_TRUE(below);
  EXPECT_NE(below->find("-A OUTPUT -j ACCEPT"), std::string::npos) << *below;
}

TEST(QemuConfUser, ReadsTheLastUncommentedUser) {
  EXPECT_EQ(qemu_conf_user("#user = \"root\"\n# user = \"x\"\n"), std::nullopt);
  EXPECT_EQ(qemu_conf_user("user = \"root\"\ngroup = \"root\"\n"), "root");
  EXPECT_EQ(qemu_conf_user("user=\"+64055\"\n"), "+64055");
  EXPECT_EQ(qemu_conf_user("user = \"a\"\nuser = \"b\"\n"), "b");
  EXPECT_EQ(qemu_conf_user("username = \"a\"\n"), std::nullopt);
}

TEST(StatusUid, ReadsTheRealUid) {
  EXPECT_EQ(status_uid("Name:\tqemu\nUid:\t64055\t64055\t64055\t64055\nGid:\t108\n"), 64055U);
  EXPECT_EQ(status_uid("Name:\tqemu\n"), std::nullopt);
}

TEST(QemuCmdlineDomain, ReadsTheGuestNameOfLibvirtsNameArgument) {
  using namespace std::string_literals;
  EXPECT_EQ(
      qemu_cmdline_domain("/usr/bin/qemu-system-x86_64\0-name\0guest=sb-1a2b,debug-threads=on\0"s),
      "sb-1a2b");
  EXPECT_EQ(qemu_cmdline_domain("qemu-system-x86_64\0-name\0odd,,name,process=x\0"s), "odd,name");
  EXPECT_EQ(qemu_cmdline_domain("/usr/bin/python3\0-name\0guest=sb-1\0"s), std::nullopt);
  EXPECT_EQ(qemu_cmdline_domain("/usr/bin/qemu-system-x86_64\0-m\0512\0"s), std::nullopt);
}

/// Answers each tool by its argv[0] and argv[last] and records what ran, with the content
/// of restore files read while they exist.
struct scripted_tools {
  std::map<std::string, process_output> answers;
  std::vector<std::vector<std::string>> calls;
  std::vector<std::string> restored;

  command_runner runner() {
    return [this](const std::vector<std::string>& argv, std::chrono::milliseconds) {
      calls.push_back(argv);
      if (argv[0].find("restore") != std::string::npos) {
        std::ifstream in(argv.back());
        std::ostringstream s;
        s << in.rdbuf();
        restored.push_back(s.str());
      }
      const auto it = answers.find(argv[0] + " " + argv.back());
      return result<process_output>(it == answers.end() ? process_output{0, false, "", ""}
                                                        : it->second);
    };
  }
};

TEST(IptablesEgressFirewall, ApplyRestoresBothFamiliesWithResolversAndStaleRulesRemoved) {
  const auto dir = fs::temp_directory_path() / ("lb-egress-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  { std::ofstream(dir / "resolv.conf") << "nameserver 10.255.255.53\nnameserver fd00::53\n"; }
  scripted_tools tools;
  tools.answers["iptables OUTPUT"] = {0, false, k_listing, ""};
  iptables_egress_firewall fw(egress_policy{}, (dir / "resolv.conf").string(), tools.runner());
  ASSERT_TRUE(fw.apply({64055U}));
  ASSERT_EQ(tools.calls.size(), 4U);
  EXPECT_EQ(tools.calls[0], (std::vector<std::string>{"iptables", "-w", "-S", "OUTPUT"}));
  EXPECT_EQ(tools.calls[1][0], "iptables-restore");
  EXPECT_EQ(tools.calls[1][2], "--noflush");
  EXPECT_EQ(tools.calls[2], (std::vector<std::string>{"ip6tables", "-w", "-S", "OUTPUT"}));
  EXPECT_EQ(tools.calls[3][0], "ip6tables-restore");
  ASSERT_EQ(tools.restored.size(), 2U);
  egress_policy with_dns;
  with_dns.resolvers = {block("10.255.255.53"), block("fd00::53")};
  EXPECT_EQ(tools.restored[0],
            render_restore(with_dns, ip_family::v4, {64055U}, our_output_rules(k_listing)));
  EXPECT_EQ(tools.restored[1], render_restore(with_dns, ip_family::v6, {64055U}, {}));
  EXPECT_FALSE(fs::exists(tools.calls[1].back())) << "the rules file is left behind";
  fs::remove_all(dir);
}

TEST(IptablesEgressFirewall, ApplyFailsWithTheToolsMessageWhenARestoreFails) {
  scripted_tools tools;
  const auto path_independent = [&](const std::vector<std::string>& argv,
                                    std::chrono::milliseconds t) {
    if (argv[0] == "ip6tables-restore") {
      return result<process_output>(
          process_output{2, false, "", "ip6tables-restore: line 3 failed\n"});
    }
    return tools.runner()(argv, t);
  };
  iptables_egress_firewall failing(egress_policy{}, "", path_independent);
  const auto r = failing.apply({64055U});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, make_error_code(errc::unavailable));
  EXPECT_NE(r.error().message.find("IPv6"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("line 3 failed"), std::string::npos) << r.error().message;
}

TEST(IptablesEgressFirewall, ApplyListsAgainWhenARestoreLosesARaceWithAnotherWriter) {
  scripted_tools tools;
  int restores = 0;
  const auto racing = [&](const std::vector<std::string>& argv, std::chrono::milliseconds t) {
    if (argv[0] == "iptables-restore" && ++restores == 1) {
      return result<process_output>(
          process_output{1, false, "", "iptables-restore: line 30 failed\n"});
    }
    return tools.runner()(argv, t);
  };
  iptables_egress_firewall fw(egress_policy{}, "", racing);
  ASSERT_TRUE(fw.apply({64055U}));
  EXPECT_EQ(restores, 2);
  // The failed restore is answered above, not recorded.
  ASSERT_EQ(tools.calls.size(), 5U) << "list, list again, restore, v6 list, v6 restore";
  EXPECT_EQ(tools.calls[1], (std::vector<std::string>{"iptables", "-w", "-S", "OUTPUT"}));
}

TEST(IptablesEgressFirewall, InspectFailsWhenARuleComesBeforeTheJumpOrTheChainIsShort) {
  egress_policy policy;
  scripted_tools tools;
  const std::string chain_v4 = [&] {
    std::string s = "-N LITTERBOX-GUEST-EGRESS\n";
    for (const auto& r : render_chain(policy, ip_family::v4)) {
      s += r + "\n";
    }
    return s;
  }();
  const std::string chain_v6 = [&] {
    std::string s = "-N LITTERBOX-GUEST-EGRESS\n";
    for (const auto& r : render_chain(policy, ip_family::v6)) {
      s += r + "\n";
    }
    return s;
  }();
  const std::string first = "-P OUTPUT ACCEPT\n" + render_jump(64055) + "\n";
  tools.answers["iptables OUTPUT"] = {0, false, first, ""};
  tools.answers["ip6tables OUTPUT"] = {0, false, first, ""};
  tools.answers["iptables LITTERBOX-GUEST-EGRESS"] = {0, false, chain_v4, ""};
  tools.answers["ip6tables LITTERBOX-GUEST-EGRESS"] = {0, false, chain_v6, ""};
  std::string reject = "-N LITTERBOX-GUEST-REJECT\n";
  for (const auto& r : render_reject_chain()) {
    reject += r + "\n";
  }
  tools.answers["iptables LITTERBOX-GUEST-REJECT"] = {0, false, reject, ""};
  tools.answers["ip6tables LITTERBOX-GUEST-REJECT"] = {0, false, reject, ""};
  iptables_egress_firewall fw(policy, "", tools.runner());
  const auto good = fw.inspect({64055U});
  EXPECT_TRUE(good.ok) << good.detail;

  tools.answers["ip6tables OUTPUT"] = {
      0, false, "-P OUTPUT ACCEPT\n-A OUTPUT -j ACCEPT\n" + render_jump(64055) + "\n", ""};
  const auto above = fw.inspect({64055U});
  EXPECT_FALSE(above.ok);
  EXPECT_NE(above.detail.find("IPv6"), std::string::npos) << above.detail;

  tools.answers["ip6tables OUTPUT"] = {0, false, first, ""};
  tools.answers["iptables LITTERBOX-GUEST-EGRESS"] = {0, false, "-N LITTERBOX-GUEST-EGRESS\n", ""};
  const auto flushed = fw.inspect({64055U});
  EXPECT_FALSE(flushed.ok);
  EXPECT_NE(flushed.detail.find("holds 0 rules"), std::string::npos) << flushed.detail;

  tools.answers["iptables LITTERBOX-GUEST-EGRESS"] = {0, false, chain_v4, ""};
  tools.answers["ip6tables LITTERBOX-GUEST-REJECT"] = {0, false, "-N LITTERBOX-GUEST-REJECT\n", ""};
  const auto no_reject = fw.inspect({64055U});
  EXPECT_FALSE(no_reject.ok) << "an empty reject chain lets every denied packet through";
  EXPECT_NE(no_reject.detail.find("LITTERBOX-GUEST-REJECT holds 0"), std::string::npos)
      << no_reject.detail;

  const auto other_uid = fw.inspect({1000U});
  EXPECT_FALSE(other_uid.ok);
}

}  // namespace
}  // namespace litterbox::hypervisor
