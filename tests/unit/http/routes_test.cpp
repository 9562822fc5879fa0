#include "controlplane/http/routes.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <utility>

namespace litterbox::schema::embedded {
extern const std::string_view openapi_json;
}  // namespace litterbox::schema::embedded

namespace litterbox::controlplane::http {
namespace {

TEST(OpenApi, ListsExactlyTheRouterOperations) {
  const auto doc = nlohmann::json::parse(schema::embedded::openapi_json);
  ASSERT_TRUE(doc.contains("paths"));
  std::set<std::pair<std::string, std::string>> documented;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [key, op] : item.items()) {
      // Path items also hold shared "parameters"; only HTTP verbs are operations.
      static const std::set<std::string> verbs{"get",     "put",  "post",  "delete",
                                               "options", "head", "patch", "trace"};
      if (verbs.count(key) != 0) {
        std::string method = key;
        for (auto& c : method) {
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        documented.emplace(method, path);
      }
    }
  }
  const auto ops = operations();
  const std::set<std::pair<std::string, std::string>> served(ops.begin(), ops.end());
  EXPECT_EQ(documented, served);
  EXPECT_EQ(served.size(), ops.size());
}

TEST(OpenApi, IsVersion3AndDescribesTheHost) {
  const auto doc = nlohmann::json::parse(schema::embedded::openapi_json);
  EXPECT_EQ(doc.at("openapi").get<std::string>().substr(0, 2), "3.");
  const auto& host = doc.at("components").at("schemas").at("Host").at("properties");
  EXPECT_TRUE(host.contains("private_key"));
  EXPECT_TRUE(host.contains("known_hosts"));
}

TEST(MatchRoute, ResolvesEachTemplateAndExtractsTheHostId) {
  const auto hosts = match_route("/hosts");
  ASSERT_TRUE(hosts);
  EXPECT_EQ(hosts->matched->id, route_id::hosts);

  const auto host = match_route("/hosts/abc");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->matched->id, route_id::host);
  EXPECT_EQ(host->host_id, "abc");

  const auto renew = match_route("/hosts/x%2Dy/renew");
  ASSERT_TRUE(renew);
  EXPECT_EQ(renew->matched->id, route_id::host_renew);
  EXPECT_EQ(renew->host_id, "x-y");

  const auto console = match_route("/hosts/abc/console");
  ASSERT_TRUE(console);
  EXPECT_EQ(console->matched->id, route_id::host_console);

  EXPECT_EQ(match_route("/openapi.json")->matched->id, route_id::openapi);
  EXPECT_EQ(match_route("/healthz")->matched->id, route_id::healthz);
}

TEST(MatchRoute, RejectsUnknownPathsTrailingSlashesAndEmptyIds) {
  EXPECT_FALSE(match_route("/"));
  EXPECT_FALSE(match_route(""));
  EXPECT_FALSE(match_route("/hosts/"));
  EXPECT_FALSE(match_route("/hosts//renew"));
  EXPECT_FALSE(match_route("/hosts/a/b"));
  EXPECT_FALSE(match_route("/hostsx"));
  EXPECT_FALSE(match_route("/healthz/"));
}

TEST(MatchRoute, OnlyHealthMetricsAndOpenApiAreServedWithoutAuth) {
  std::set<std::string> open;
  for (const auto& r : routes()) {
    if (!r.needs_auth) {
      open.emplace(r.path);
    }
  }
  EXPECT_EQ(open, (std::set<std::string>{"/healthz", "/metrics", "/openapi.json"}));
}

TEST(AllowHeader, ListsTheMethodsOfTheRoute) {
  const auto m = match_route("/hosts/abc");
  ASSERT_TRUE(m);
  EXPECT_EQ(allow_header(*m->matched), "GET, DELETE");
  EXPECT_TRUE(allows(*m->matched, "DELETE"));
  EXPECT_FALSE(allows(*m->matched, "POST"));
  EXPECT_FALSE(allows(*m->matched, "get"));
}

TEST(MethodLabel, KeepsStandardMethodsAndFoldsEveryOtherIntoOne) {
  for (const auto m :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}) {
    EXPECT_EQ(method_label(m), m);
  }
  EXPECT_EQ(method_label("get"), "other");
  EXPECT_EQ(method_label("XYZZY-0190b2"), "other");
  EXPECT_EQ(method_label(""), "other");
}

TEST(ParseQuery, DecodesRepeatedNamesInOrder) {
  const auto q = parse_query("status=active&status=error&limit=2&after=a%2Bb&x=1+2&&flag");
  ASSERT_EQ(q.size(), 6U);
  EXPECT_EQ(q[0], (std::pair<std::string, std::string>{"status", "active"}));
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>{"status", "error"}));
  EXPECT_EQ(q[3].second, "a+b");
  EXPECT_EQ(q[4].second, "1 2");
  EXPECT_EQ(q[5], (std::pair<std::string, std::string>{"flag", ""}));
}

TEST(PercentDecode, KeepsMalformedEscapesVerbatim) {
  EXPECT_EQ(percent_decode("%zz%4"), "%zz%4");
  EXPECT_EQ(percent_decode("%41%62"), "Ab");
  EXPECT_EQ(percent_decode("%"), "%");
}

TEST(PercentEncode, RoundTripsThroughDecode) {
  const std::string text = "a b&c=d/é";
  EXPECT_EQ(percent_decode(percent_encode(text)), text);
  EXPECT_EQ(percent_encode("abc-_.~"), "abc-_.~");
}

}  // namespace
}  // namespace litterbox::controlplane::http
