#include "controlplane/core/proxy_target.hpp"

#include "controlplane/core/errc.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <cstring>
#include <string>

namespace litterbox::controlplane {
namespace {

std::array<std::uint8_t, 16> addr(const std::string& text) {
  std::array<std::uint8_t, 16> out{};
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  in6_addr v6{};
  EXPECT_EQ(inet_pton(AF_INET6, text.c_str(), &v6), 1) << text;
  std::memcpy(out.data(), &v6, 16);
  return out;
}

schema::origin target(const std::string& text) {
  return schema::parse_origin(text).value();
}

TEST(ProxyTarget, LoopbackLinkLocalPrivateAndSpecialAddressesAreRestricted) {
  for (const auto* a : {"127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "172.31.255.255",
                        "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
                        "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(restricted_address(addr(a))) << a;
  }
}

TEST(ProxyTarget, PublicAddressesAreNotRestricted) {
  for (const auto* a : {"1.1.1.1", "8.8.8.8", "172.32.0.1", "192.169.0.1", "100.128.0.1",
                        "2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:1.1.1.1"}) {
    EXPECT_FALSE(restricted_address(addr(a))) << a;
  }
}

TEST(ProxyTarget, LoopbackTargetIsRefusedUnlessAllowed) {
  const auto refused = check_proxy_target(target("http://127.0.0.1:8080"), {});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, make_error_code(errc::validation));
  ASSERT_EQ(refused.error().issues.size(), 1U);
  EXPECT_EQ(refused.error().issues[0].loc, (std::vector<std::string>{"body", "target"}));

  EXPECT_TRUE(
      check_proxy_target(target("http://127.0.0.1:8080"), parse_proxy_allow("127.0.0.0/8").value())
          .has_value());
  EXPECT_TRUE(check_proxy_target(target("http://127.0.0.1:8080"),
                                 parse_proxy_allow(" 127.0.0.1:8080 ").value())
                  .has_value());
  // host:port allows that port only.
  EXPECT_FALSE(check_proxy_target(target("http://127.0.0.1:8081"),
                                  parse_proxy_allow("127.0.0.1:8080").value())
                   .has_value());
  EXPECT_FALSE(
      check_proxy_target(target("http://[::1]:80"), parse_proxy_allow("127.0.0.1/32").value())
          .has_value());
  EXPECT_TRUE(check_proxy_target(target("http://[::1]:80"), parse_proxy_allow("::1/128").value())
                  .has_value());
}

TEST(ProxyTarget, AllowListEntriesParseOrNameTheBadOne) {
  const auto ok = parse_proxy_allow("10.0.0.0/8, ::1, localhost:9000,[::1]:8443,,");
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->networks.size(), 2U);
  EXPECT_EQ(ok->host_ports.size(), 2U);
  EXPECT_EQ(ok->host_ports[1], (std::pair<std::string, int>{"::1", 8443}));
  for (const auto* bad : {"10.0.0.0/33", "localhost", "host:0", "::1/129", "a/b:1"}) {
    const auto r = parse_proxy_allow(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_NE(r.error().message.find(bad), std::string::npos);
  }
}

}  // namespace
}  // namespace litterbox::controlplane
