#include "schema/http_proxy.hpp"

#include "schema/errc.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace litterbox::schema {
namespace {

std::vector<std::vector<std::string>> locs_of(const error& e) {
  std::vector<std::vector<std::string>> out;
  for (const auto& i : e.issues) {
    out.push_back(i.loc);
  }
  return out;
}

TEST(HttpProxyRequest, ValidBodyParsesWithCanonicalTarget) {
  const auto r = parse_create_http_proxy_request(
      R"({"name":"openai-1","target":"HTTPS://API.Example.com:8443/","headers":{"Authorization":"Bearer x"}})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->name, "openai-1");
  EXPECT_EQ(r->target.scheme, "https");
  EXPECT_EQ(r->target.host, "api.example.com");
  EXPECT_EQ(r->target.port, 8443);
  EXPECT_EQ(r->target.text, "https://api.example.com:8443");
  ASSERT_EQ(r->headers.size(), 1U);
  EXPECT_EQ(r->headers[0].first, "Authorization");
}

TEST(HttpProxyRequest, DefaultPortsFollowTheSchemeAndIpv6LiteralsKeepBrackets) {
  EXPECT_EQ(parse_origin("http://a.test").value().port, 80);
  EXPECT_EQ(parse_origin("https://a.test").value().port, 443);
  const auto v6 = parse_origin("http://[::1]:9000");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text, "http://[::1]:9000");
}

TEST(HttpProxyRequest, TargetsThatAreNoOriginAreRefused) {
  for (const auto* bad : {"ftp://a.test", "a.test", "https://a.test/v1", "https://a.test?x=1",
                          "https://a.test#f", "https://user:pw@a.test", "https://a.test:0",
                          "https://a.test:65536", "https://a.test:", "https://", "https://-a.test",
                          "https://a_b.test", "http://[::1", "http://[zz]:80"}) {
    EXPECT_FALSE(parse_origin(bad).has_value()) << bad;
  }
}

TEST(HttpProxyRequest, NamesFollowTheRule) {
  EXPECT_TRUE(valid_http_proxy_name("a"));
  EXPECT_TRUE(valid_http_proxy_name("0-x"));
  EXPECT_TRUE(valid_http_proxy_name(std::string(63, 'a')));
  EXPECT_FALSE(valid_http_proxy_name(""));
  EXPECT_FALSE(valid_http_proxy_name("-a"));
  EXPECT_FALSE(valid_http_proxy_name("A"));
  EXPECT_FALSE(valid_http_proxy_name("a_b"));
  EXPECT_FALSE(valid_http_proxy_name("a.b"));
  EXPECT_FALSE(valid_http_proxy_name(std::string(64, 'a')));
}

TEST(HttpProxyRequest, EveryFieldProblemIsReportedWithItsLoc) {
  const auto r = parse_create_http_proxy_request(R"({"name":"Bad","target":7,"headers":{}})");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, make_error_code(errc::invalid_field));
  const auto locs = locs_of(r.error());
  EXPECT_EQ(locs, (std::vector<std::vector<std::string>>{
                      {"body", "name"}, {"body", "target"}, {"body", "headers"}}));
}

TEST(HttpProxyRequest, MissingFieldsAndNonObjectsAreReported) {
  const auto missing = parse_create_http_proxy_request("{}");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().issues.size(), 3U);
  EXPECT_EQ(missing.error().issues[0].type, "missing");
  EXPECT_FALSE(parse_create_http_proxy_request("[]").has_value());
  const auto broken = parse_create_http_proxy_request("{");
  ASSERT_FALSE(broken.has_value());
  EXPECT_EQ(broken.error().code, make_error_code(errc::invalid_json));
}

TEST(HttpProxyRequest, BadHeaderValuesAreRefusedWithoutRepeatingThem) {
  const std::string secret = "sk-live-DO-NOT-ECHO";
  const auto r = parse_create_http_proxy_request(
      R"({"name":"p","target":"https://a.test","headers":{"X-Key":")" + secret +
      R"(\r\nInjected: 1","Bad Name":"v","host":"h","X-N":5,"x-key":"dup"}})");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().issues.size(), 5U);
  for (const auto& i : r.error().issues) {
    EXPECT_EQ(i.msg.find(secret), std::string::npos);
    for (const auto& part : i.loc) {
      EXPECT_EQ(part.find(secret), std::string::npos);
    }
  }
  EXPECT_EQ(r.error().message.find(secret), std::string::npos);
}

}  // namespace
}  // namespace litterbox::schema
