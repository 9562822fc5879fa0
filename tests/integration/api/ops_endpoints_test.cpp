#include "tests/integration/api/api_fixture.hpp"

#include <regex>
#include <set>
#include <sstream>

namespace litterbox::test::api {
namespace {

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

/// The operations API.md documents, as "METHOD path-template".
const std::set<std::string>& documented_operations() {
  static const std::set<std::string> ops{"GET /hosts",
                                         "POST /hosts",
                                         "GET /hosts/{host_id}",
                                         "DELETE /hosts/{host_id}",
                                         "POST /hosts/{host_id}/renew",
                                         "GET /hosts/{host_id}/console",
                                         "GET /http-proxies",
                                         "POST /http-proxies",
                                         "DELETE /http-proxies/{name}",
                                         "POST /http-proxies/{name}/hosts/{host_id}",
                                         "DELETE /http-proxies/{name}/hosts/{host_id}",
                                         "GET /healthz",
                                         "GET /doctor",
                                         "GET /metrics",
                                         "GET /events",
                                         "GET /hosts/{host_id}/events",
                                         "POST /keys",
                                         "GET /keys",
                                         "DELETE /keys/{id}",
                                         "GET /audit"};
  return ops;
}

class operational : public api_test {};

TEST_F(operational, HealthzIsOkWithoutAuth) {
  const auto r = call("GET", "/healthz", {}, {}, false);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(body_json(r), json::parse(R"({"status": "ok"})")) << r;
}

TEST_F(operational, DoctorReportsEachCheckInTheDocumentedShape) {
  const auto r = get("/doctor");
  ASSERT_EQ(r.status, 200) << "always 200: " << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(j.contains("ok") && j["ok"].is_boolean()) << r;
  EXPECT_TRUE(j.contains("active_provider") && j["active_provider"].is_string()) << r;
  ASSERT_TRUE(j.contains("checks") && j["checks"].is_array()) << r;
  EXPECT_GE(j["checks"].size(), 4U) << "database, hypervisor, image store, guest kernel: " << r;
  bool database_checked = false;
  bool all_ok = true;
  for (const auto& c : j["checks"]) {
    ASSERT_TRUE(c.is_object()) << c.dump();
    EXPECT_TRUE(c.contains("name") && c["name"].is_string()) << c.dump();
    EXPECT_TRUE(c.contains("status") && c["status"].is_string()) << c.dump();
    EXPECT_TRUE(c.contains("detail") && c["detail"].is_string()) << c.dump();
    EXPECT_TRUE(c.contains("latency_ms") && c["latency_ms"].is_number()) << c.dump();
    EXPECT_TRUE(c.contains("hint") && (c["hint"].is_string() || c["hint"].is_null())) << c.dump();
    const auto name = c.value("name", "");
    if (name.find("database") != std::string::npos || name.find("postgres") != std::string::npos) {
      database_checked = true;
      EXPECT_EQ(c.value("status", ""), "ok") << "the database is up: " << c.dump();
    }
    all_ok = all_ok && c.value("status", "") == "ok";
  }
  EXPECT_TRUE(database_checked) << r;
  EXPECT_EQ(j.value("ok", !all_ok), all_ok) << "ok is true exactly when every check is: " << r;
}

TEST_F(operational, DoctorNeedsAuth) {
  EXPECT_EQ(call("GET", "/doctor", {}, {}, false).status, 401);
}

TEST_F(operational, MetricsArePrometheusTextWithRequestCountersAndHostsByStatus) {
  create_active("{}");
  ASSERT_EQ(get("/hosts").status, 200);
  const auto r = call("GET", "/metrics", {}, {}, false);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(r.header("Content-Type").value_or("").starts_with("text/plain")) << r;
  // Every sample line is `name{labels} value` or `name value`.
  static const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEInfNa]+( \d+)?$)");
  std::istringstream lines(r.body);
  std::string line;
  bool request_counter = false;
  bool hosts_by_status = false;
  std::size_t samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line.starts_with("#")) {
      if (line.starts_with("# TYPE ") && line.ends_with(" counter") &&
          line.find("request") != std::string::npos) {
        request_counter = true;
      }
      continue;
    }
    ++samples;
    EXPECT_TRUE(std::regex_match(line, sample)) << "not a Prometheus sample: " << line;
    if (line.find("host") != std::string::npos &&
        line.find("status=\"active\"") != std::string::npos) {
      hosts_by_status = true;
    }
  }
  EXPECT_GT(samples, 0U) << r;
  EXPECT_TRUE(request_counter) << "a request counter (# TYPE …request… counter): " << r;
  EXPECT_TRUE(hosts_by_status) << "a hosts gauge labelled status=\"active\": " << r;
}

TEST_F(operational, OpenApiIsJsonListingExactlyTheServedOperations) {
  const auto r = call("GET", "/openapi.json", {}, {}, false);
  ASSERT_EQ(r.status, 200) << r;
  const auto doc = body_json(r);
  ASSERT_TRUE(doc.is_object()) << r;
  EXPECT_TRUE(doc.value("openapi", "").starts_with("3.")) << r;
  ASSERT_TRUE(doc.contains("paths") && doc["paths"].is_object()) << r;
  std::set<std::string> listed;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      static const std::set<std::string> methods{"get",  "put",     "post",  "delete",
                                                 "head", "options", "patch", "trace"};
      if (methods.contains(method)) {
        std::string upper = method;
        for (auto& c : upper) {
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        listed.insert(upper + " " + path);
      }
    }
  }
  listed.erase("GET /openapi.json");
  EXPECT_EQ(listed, documented_operations());
  // Every listed operation is served: it is neither an unknown route nor a wrong method.
  for (const auto& op : listed) {
    if (op == "GET /events") {
      continue;  // a stream that never ends by itself: events_test.cpp serves it
    }
    const auto space = op.find(' ');
    auto target = op.substr(space + 1);
    if (const auto p = target.find("{host_id}"); p != std::string::npos) {
      target.replace(p, 9, k_unknown_id);
    }
    if (const auto p = target.find("{name}"); p != std::string::npos) {
      target.replace(p, 6, "no-such-proxy");
    }
    const auto resp = call(op.substr(0, space), target, op.starts_with("POST") ? "{}" : "");
    EXPECT_NE(resp.status, 405) << op << '\n' << resp;
    if (resp.status == 404) {
      EXPECT_NE(body_json(resp).value("detail", ""), "Not Found") << op << '\n' << resp;
    }
  }
}

class routing : public api_test {};

TEST_F(routing, UnknownRouteIs404NotFound) {
  for (const auto* target : {"/nope",
                             "/hosts/"
                             "01890a5d-ac96-774b-bcce-b302099a8057/nope",
                             "/hosts/a/b/c", "/HOSTS"}) {
    const auto r = call("GET", target);
    EXPECT_EQ(r.status, 404) << target << '\n' << r;
    const auto j = body_json(r);
    ASSERT_TRUE(j.is_object()) << r;
    EXPECT_EQ(j.value("detail", ""), "Not Found") << r;
    EXPECT_EQ(j.value("error_code", ""), "NOT_FOUND") << r;
  }
}

TEST_F(routing, WrongMethodOnKnownRouteIs405) {
  const std::string host = "/hosts/" + std::string(k_unknown_id);
  for (const auto& [method, target] :
       std::vector<std::pair<std::string, std::string>>{{"PUT", "/hosts"},
                                                        {"DELETE", "/hosts"},
                                                        {"PATCH", host},
                                                        {"PUT", host},
                                                        {"GET", host + "/renew"},
                                                        {"DELETE", host + "/renew"},
                                                        {"POST", "/healthz"},
                                                        {"DELETE", "/metrics"}}) {
    const auto r = call(method, target, method == "GET" || method == "DELETE" ? "" : "{}");
    EXPECT_EQ(r.status, 405) << method << ' ' << target << '\n' << r;
    const auto j = body_json(r);
    EXPECT_TRUE(j.is_object() && j.contains("detail") && j["detail"].is_string()) << r;
  }
}

TEST_F(routing, ConsoleOfUnknownHostIs404) {
  expect_error(get("/hosts/" + std::string(k_unknown_id) + "/console"), 404, "host not found",
               "NOT_FOUND");
}

TEST_F(routing, ConsoleOfAHostIsPlainText) {
  const auto id = create_active("{}")["id"].get<std::string>();
  const auto r = get("/hosts/" + id + "/console");
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_TRUE(r.header("Content-Type").value_or("").starts_with("text/plain")) << r;
  const auto limited = get("/hosts/" + id + "/console?bytes=10");
  EXPECT_EQ(limited.status, 200) << limited;
  EXPECT_LE(limited.body.size(), 10U) << limited;
}

TEST_F(routing, RequestIdDiffersBetweenRequests) {
  const auto a = call("GET", "/healthz", {}, {}, false);
  const auto b = call("GET", "/healthz", {}, {}, false);
  ASSERT_TRUE(a.header("X-Request-Id") && b.header("X-Request-Id"));
  EXPECT_NE(*a.header("X-Request-Id"), *b.header("X-Request-Id"));
}

TEST_F(routing, KeepAliveConnectionServesSeveralRequests) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")) << c.error();
    const auto r = c.read_response();
    EXPECT_EQ(r.status, 200) << r;
  }
}

}  // namespace
}  // namespace litterbox::test::api
