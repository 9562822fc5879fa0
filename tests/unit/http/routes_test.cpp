#include "controlplane/http/routes.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

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
  EXPECT_EQ(hosts->profile, wire_profile::litterbox);
  EXPECT_EQ(console->profile, wire_profile::litterbox);
}

TEST(MatchRoute, TheDrukboxPrefixSelectsTheDrukboxProfileOfTheSameRoutes) {
  const auto hosts = match_route("/drukbox/hosts");
  ASSERT_TRUE(hosts);
  EXPECT_EQ(hosts->matched->id, route_id::hosts);
  EXPECT_EQ(hosts->profile, wire_profile::drukbox);

  const auto renew = match_route("/drukbox/hosts/x%2Dy/renew");
  ASSERT_TRUE(renew);
  EXPECT_EQ(renew->matched->id, route_id::host_renew);
  EXPECT_EQ(renew->profile, wire_profile::drukbox);
  EXPECT_EQ(renew->host_id, "x-y");

  for (const auto& [path, id] : std::vector<std::pair<std::string, route_id>>{
           {"/drukbox/hosts/abc", route_id::host},
           {"/drukbox/doctor", route_id::doctor},
           {"/drukbox/healthz", route_id::healthz},
           {"/drukbox/openapi.json", route_id::openapi}}) {
    const auto m = match_route(path);
    ASSERT_TRUE(m) << path;
    EXPECT_EQ(m->matched->id, id) << path;
    EXPECT_EQ(m->profile, wire_profile::drukbox) << path;
  }
}

TEST(MatchRoute, DrukboxHasNoConsoleNorMetricsAndThePrefixAloneIsNoRoute) {
  for (const auto* path :
       {"/drukbox/hosts/abc/console", "/drukbox/metrics", "/drukbox", "/drukbox/", "/drukboxhosts",
        "/drukbox/drukbox/hosts", "/drukbox/hosts/", "/litterbox/hosts"}) {
    EXPECT_FALSE(match_route(path)) << path;
  }
}

TEST(MatchRoute, CapturesEveryTemplateParameterByName) {
  // A row as the HTTP proxy operations will add it: two parameters, POST in both profiles,
  // GET in litterbox's only.
  const std::vector<route> table{{route_id::hosts,
                                  "/http-proxies/{name}/hosts/{host_id}",
                                  {{"GET", profiles::litterbox, profiles::litterbox},
                                   {"POST", profiles::both, profiles::both}},
                                  true}};
  const auto m = match_route("/drukbox/http-proxies/open%2Dai/hosts/abc", table);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->matched, &table[0]);
  EXPECT_EQ(m->profile, wire_profile::drukbox);
  EXPECT_EQ(m->param("name"), "open-ai");
  EXPECT_EQ(m->param("host_id"), "abc");
  EXPECT_EQ(m->host_id, "abc");
  EXPECT_EQ(m->param("nope"), "");
  EXPECT_EQ(allow_header(*m->matched, wire_profile::drukbox), "POST");
  EXPECT_EQ(allow_header(*m->matched, wire_profile::litterbox), "GET, POST");
  EXPECT_FALSE(match_route("/http-proxies/x/hosts/", table));
}

TEST(RouteLabel, IsTheTemplateWithTheProfilePrefix) {
  EXPECT_EQ(route_label(*match_route("/hosts/abc")), "/hosts/{host_id}");
  EXPECT_EQ(route_label(*match_route("/drukbox/hosts/abc")), "/drukbox/hosts/{host_id}");
  EXPECT_EQ(route_label(*match_route("/drukbox/healthz")), "/drukbox/healthz");
}

TEST(ListedOperations, LitterboxListsEveryOperationDrukboxOnlyItsOwn) {
  using ops = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(listed_operations(wire_profile::litterbox),
            (ops{{"GET", "/hosts"},
                 {"POST", "/hosts"},
                 {"GET", "/hosts/{host_id}"},
                 {"DELETE", "/hosts/{host_id}"},
                 {"POST", "/hosts/{host_id}/renew"},
                 {"GET", "/hosts/{host_id}/console"},
                 {"GET", "/http-proxies"},
                 {"POST", "/http-proxies"},
                 {"DELETE", "/http-proxies/{name}"},
                 {"POST", "/http-proxies/{name}/hosts/{host_id}"},
                 {"DELETE", "/http-proxies/{name}/hosts/{host_id}"},
                 {"GET", "/healthz"},
                 {"GET", "/doctor"},
                 {"GET", "/metrics"},
                 {"GET", "/openapi.json"},
                 {"GET", "/events"},
                 {"GET", "/hosts/{host_id}/events"},
                 {"GET", "/keys"},
                 {"POST", "/keys"},
                 {"DELETE", "/keys/{id}"},
                 {"GET", "/audit"}}));
  EXPECT_EQ(listed_operations(wire_profile::drukbox),
            (ops{{"GET", "/hosts"},
                 {"POST", "/hosts"},
                 {"GET", "/hosts/{host_id}"},
                 {"DELETE", "/hosts/{host_id}"},
                 {"POST", "/hosts/{host_id}/renew"},
                 {"POST", "/http-proxies"},
                 {"DELETE", "/http-proxies/{name}"},
                 {"POST", "/http-proxies/{name}/hosts/{host_id}"},
                 {"DELETE", "/http-proxies/{name}/hosts/{host_id}"},
                 {"GET", "/doctor"}}));
}

TEST(ListedOperations, AreAllServedInTheirProfile) {
  for (const auto& r : routes()) {
    for (const auto& op : r.operations) {
      for (const auto p : k_wire_profiles) {
        if (includes(op.listed, p)) {
          EXPECT_TRUE(includes(op.served, p)) << op.method << ' ' << r.path;
        }
      }
    }
  }
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

TEST(AllowHeader, ListsTheMethodsOfTheRouteInTheProfile) {
  const auto m = match_route("/hosts/abc");
  ASSERT_TRUE(m);
  for (const auto p : k_wire_profiles) {
    EXPECT_EQ(allow_header(*m->matched, p), "GET, DELETE");
    EXPECT_TRUE(allows(*m->matched, "DELETE", p));
    EXPECT_FALSE(allows(*m->matched, "POST", p));
    EXPECT_FALSE(allows(*m->matched, "get", p));
  }
  const auto console = match_route("/hosts/abc/console");
  ASSERT_TRUE(console);
  EXPECT_TRUE(allows(*console->matched, "GET", wire_profile::litterbox));
  EXPECT_FALSE(allows(*console->matched, "GET", wire_profile::drukbox));
  EXPECT_EQ(allow_header(*console->matched, wire_profile::drukbox), "");
}

TEST(Profiles, IncludesIsMembership) {
  EXPECT_TRUE(includes(profiles::both, wire_profile::litterbox));
  EXPECT_TRUE(includes(profiles::both, wire_profile::drukbox));
  EXPECT_TRUE(includes(profiles::litterbox, wire_profile::litterbox));
  EXPECT_FALSE(includes(profiles::litterbox, wire_profile::drukbox));
  EXPECT_FALSE(includes(profiles::drukbox, wire_profile::litterbox));
  EXPECT_FALSE(includes(profiles::none, wire_profile::litterbox));
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

TEST(Routes, KeysAndAuditAreAdminOnlyAndServedInTheLitterboxProfileAlone) {
  for (const auto* path : {"/keys", "/keys/01890a5d-ac96-774b-bcce-b302099a8057", "/audit"}) {
    const auto m = match_route(path);
    ASSERT_TRUE(m) << path;
    EXPECT_TRUE(m->matched->admin_only) << path;
    EXPECT_FALSE(match_route(std::string("/drukbox") + path)) << path;
  }
  for (const auto& r : routes()) {
    if (r.id != route_id::keys && r.id != route_id::key && r.id != route_id::audit) {
      EXPECT_FALSE(r.admin_only) << r.path << ": scoped keys may call every host route";
    }
  }
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
