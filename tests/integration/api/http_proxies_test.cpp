#include "tests/integration/api/api_fixture.hpp"

#include <set>
#include <string>
#include <vector>

// API.md "HTTP proxies": every status and validation rule of the five operations, in both
// profiles, and the write-only headers: no response, log line or error ever carries them.

namespace litterbox::test::api {
namespace {

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";
// A value no other part of the system could produce: if it shows up, a header leaked.
constexpr std::string_view k_secret = "sk-live-7d1e0c9b4a2f6e83-never-shown";
// A public address, literal so that nothing resolves through DNS (never connected to).
constexpr std::string_view k_public_target = "https://1.1.1.1";

std::set<std::string> keys_of(const json& j) {
  std::set<std::string> out;
  for (const auto& [k, v] : j.items()) {
    out.insert(k);
  }
  return out;
}

json proxy_body(std::string_view name, std::string_view target = k_public_target) {
  return json{{"name", name},
              {"target", target},
              {"headers", {{"Authorization", "Bearer " + std::string(k_secret)}}}};
}

class http_proxies : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    // The tests' own loopback target is allowed; everything else local stays refused.
    set_arg(args, "--http-proxy-allow", "127.0.0.2/32, localhost:9");
    start_server(args);
  }

  void TearDown() override {
    // Whatever a test did, the secret never reached the server's log.
    EXPECT_EQ(process().output().find(k_secret), std::string::npos) << "a header value was logged";
    api_test::TearDown();
  }

  /// A call whose response must not carry the secret anywhere.
  http_response send(std::string method, std::string target, std::string body = {}) const {
    auto r = call(std::move(method), std::move(target), std::move(body));
    EXPECT_EQ(r.body.find(k_secret), std::string::npos) << r;
    for (const auto& h : r.headers) {
      EXPECT_EQ(h.second.find(k_secret), std::string::npos) << h.first;
    }
    return r;
  }

  json create_proxy(std::string_view name, std::string_view prefix = "") const {
    const auto r = send("POST", std::string(prefix) + "/http-proxies", proxy_body(name).dump());
    EXPECT_EQ(r.status, 201) << r;
    return body_json(r);
  }

  json listed(std::string_view name) const {
    const auto r = send("GET", "/http-proxies");
    EXPECT_EQ(r.status, 200) << r;
    for (const auto& p : body_json(r)) {
      if (p.value("name", "") == name) {
        return p;
      }
    }
    return nullptr;
  }
};

TEST_F(http_proxies, CreateIs201WithNameAndStatusOnly) {
  const auto body = create_proxy("create-ok");
  EXPECT_EQ(keys_of(body), (std::set<std::string>{"name", "status"}));
  EXPECT_EQ(body["name"], "create-ok");
  EXPECT_EQ(body["status"], "created");
}

TEST_F(http_proxies, ListShowsNameTargetHostsAndCreationButNeverHeaders) {
  create_proxy("list-me");
  const auto p = listed("list-me");
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(keys_of(p), (std::set<std::string>{"name", "target", "host_ids", "created_at"}));
  EXPECT_EQ(p["target"], k_public_target);
  EXPECT_EQ(p["host_ids"], json::array());
  EXPECT_TRUE(is_utc_timestamp(p["created_at"].get<std::string>())) << p;
}

TEST_F(http_proxies, ATakenNameIs409AndKeepsTheFirst) {
  create_proxy("taken");
  const auto r = send("POST", "/http-proxies", proxy_body("taken", "https://1.0.0.1").dump());
  expect_error(r, 409, "http proxy already exists", "HOST_STATE");
  EXPECT_EQ(listed("taken")["target"], k_public_target);
}

TEST_F(http_proxies, EveryShapeRuleIs422AtItsField) {
  const auto bad = [this](json body, std::vector<std::string> loc) {
    expect_validation(send("POST", "/http-proxies", body.dump()), loc);
  };
  const json headers = {{"X-Key", k_secret}};
  bad({{"target", k_public_target}, {"headers", headers}}, {"body", "name"});
  for (const auto* name : {"", "-lead", "Upper", "under_score", "dot.ted"}) {
    bad({{"name", name}, {"target", k_public_target}, {"headers", headers}}, {"body", "name"});
  }
  bad({{"name", std::string(64, 'a')}, {"target", k_public_target}, {"headers", headers}},
      {"body", "name"});
  bad({{"name", 5}, {"target", k_public_target}, {"headers", headers}}, {"body", "name"});
  for (const auto* target : {"api.example.com", "ftp://1.1.1.1", "https://1.1.1.1/v1",
                             "https://1.1.1.1?q", "https://1.1.1.1#f", "https://user:pw@1.1.1.1",
                             "https://1.1.1.1:0", "https://1.1.1.1:70000"}) {
    bad({{"name", "t"}, {"target", target}, {"headers", headers}}, {"body", "target"});
  }
  bad({{"name", "h"}, {"target", k_public_target}}, {"body", "headers"});
  bad({{"name", "h"}, {"target", k_public_target}, {"headers", json::object()}},
      {"body", "headers"});
  bad({{"name", "h"}, {"target", k_public_target}, {"headers", json::array()}},
      {"body", "headers"});
  bad({{"name", "h"}, {"target", k_public_target}, {"headers", {{"Bad Name", "v"}}}},
      {"body", "headers"});
  bad({{"name", "h"},
       {"target", k_public_target},
       {"headers", {{"X-Key", std::string(k_secret) + "\r\nInjected: 1"}}}},
      {"body", "headers", "X-Key"});
  bad({{"name", "h"},
       {"target", k_public_target},
       {"headers", {{"X-Key", std::string(k_secret) + std::string(1, '\0')}}}},
      {"body", "headers", "X-Key"});
  bad({{"name", "h"}, {"target", k_public_target}, {"headers", {{"X-Key", 7}}}},
      {"body", "headers", "X-Key"});
  bad({{"name", "h"}, {"target", k_public_target}, {"headers", {{"Host", "evil.test"}}}},
      {"body", "headers", "Host"});
  expect_validation(send("POST", "/http-proxies", "{not json " + std::string(k_secret)), {"body"});
  expect_validation(send("POST", "/http-proxies", "[]"), {"body"});
  EXPECT_TRUE(listed("h").is_null()) << "a refused create stored nothing";
}

TEST_F(http_proxies, LocalTargetsAre422UnlessAllowed) {
  for (const auto* target :
       {"http://127.0.0.1:8080", "http://10.0.0.1", "http://172.16.5.4", "http://192.168.1.1",
        "http://169.254.169.254", "http://[::1]:8080", "http://[fe80::1]", "http://0.0.0.0",
        "http://localhost:8080", "http://198.51.100.7", "http://[2001:db8::1]"}) {
    const auto r = send("POST", "/http-proxies", proxy_body("local", target).dump());
    const auto item = expect_validation(r, {"body", "target"});
    EXPECT_NE(item.value("msg", "").find("LITTERBOX_HTTP_PROXY_ALLOW"), std::string::npos)
        << target << '\n'
        << r;
  }
  // Listed in LITTERBOX_HTTP_PROXY_ALLOW: a network, and one exact host:port.
  EXPECT_EQ(send("POST", "/http-proxies", proxy_body("allowed-net", "http://127.0.0.2:8080").dump())
                .status,
            201);
  EXPECT_EQ(
      send("POST", "/http-proxies", proxy_body("allowed-hp", "http://localhost:9").dump()).status,
      201);
  expect_validation(
      send("POST", "/http-proxies", proxy_body("other-port", "http://localhost:10").dump()),
      {"body", "target"});
}

TEST_F(http_proxies, UnresolvableTargetIs422) {
  const auto r =
      send("POST", "/http-proxies", proxy_body("nxdomain", "https://no-such-host.invalid").dump());
  expect_validation(r, {"body", "target"});
}

TEST_F(http_proxies, DeleteIs204ThenUnknownIs404) {
  create_proxy("del-me");
  const auto r = send("DELETE", "/http-proxies/del-me");
  EXPECT_EQ(r.status, 204) << r;
  EXPECT_TRUE(r.body.empty());
  expect_error(send("DELETE", "/http-proxies/del-me"), 404, "http proxy not found", "NOT_FOUND");
  EXPECT_TRUE(listed("del-me").is_null());
}

TEST_F(http_proxies, AttachIs200TwiceAndListsTheHost) {
  create_proxy("att");
  const auto id = create_active()["id"].get<std::string>();
  for (int i = 0; i < 2; ++i) {
    const auto r = send("POST", "/http-proxies/att/hosts/" + id);
    ASSERT_EQ(r.status, 200) << r;
    const auto body = body_json(r);
    EXPECT_EQ(keys_of(body), (std::set<std::string>{"name", "host_id", "status"}));
    EXPECT_EQ(body["name"], "att");
    EXPECT_EQ(body["host_id"], id);
    EXPECT_EQ(body["status"], "attached");
  }
  EXPECT_EQ(listed("att")["host_ids"], json::array({id}));
}

TEST_F(http_proxies, AttachToUnknownProxyOrHostIs404) {
  create_proxy("att-404");
  const auto id = create_active()["id"].get<std::string>();
  expect_error(send("POST", "/http-proxies/nope/hosts/" + id), 404, "http proxy not found",
               "NOT_FOUND");
  expect_error(send("POST", "/http-proxies/att-404/hosts/" + std::string(k_unknown_id)), 404,
               "host not found", "NOT_FOUND");
  expect_error(send("POST", "/http-proxies/att-404/hosts/not-a-uuid"), 404, "host not found",
               "NOT_FOUND");
}

TEST_F(http_proxies, DetachIs204ThenNotAttachedIs404) {
  create_proxy("det");
  const auto id = create_active()["id"].get<std::string>();
  ASSERT_EQ(send("POST", "/http-proxies/det/hosts/" + id).status, 200);
  const auto r = send("DELETE", "/http-proxies/det/hosts/" + id);
  EXPECT_EQ(r.status, 204) << r;
  expect_error(send("DELETE", "/http-proxies/det/hosts/" + id), 404, "http proxy not attached",
               "NOT_FOUND");
  expect_error(send("DELETE", "/http-proxies/nope/hosts/" + id), 404, "http proxy not attached",
               "NOT_FOUND");
  EXPECT_EQ(listed("det")["host_ids"], json::array());
}

TEST_F(http_proxies, DeletingAHostDetachesItsProxiesWhichRemain) {
  create_proxy("survivor");
  const auto id = create_active()["id"].get<std::string>();
  ASSERT_EQ(send("POST", "/http-proxies/survivor/hosts/" + id).status, 200);
  ASSERT_EQ(send("DELETE", "/hosts/" + id).status, 204);
  const auto p = listed("survivor");
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["host_ids"], json::array());
}

TEST_F(http_proxies, DeletingAProxyDetachesItFromEveryHost) {
  create_proxy("recreated");
  const auto id = create_active()["id"].get<std::string>();
  ASSERT_EQ(send("POST", "/http-proxies/recreated/hosts/" + id).status, 200);
  ASSERT_EQ(send("DELETE", "/http-proxies/recreated").status, 204);
  create_proxy("recreated");
  EXPECT_EQ(listed("recreated")["host_ids"], json::array());
}

TEST_F(http_proxies, DrukboxProfileServesTheSameOperationsButNoList) {
  const auto body = create_proxy("druk", "/drukbox");
  EXPECT_EQ(keys_of(body), (std::set<std::string>{"name", "status"}));
  const auto id = create_active()["id"].get<std::string>();
  const auto att = send("POST", "/drukbox/http-proxies/druk/hosts/" + id);
  ASSERT_EQ(att.status, 200) << att;
  EXPECT_EQ(body_json(att)["status"], "attached");
  EXPECT_EQ(send("DELETE", "/drukbox/http-proxies/druk/hosts/" + id).status, 204);
  const auto list = send("GET", "/drukbox/http-proxies");
  EXPECT_EQ(list.status, 405) << list;
  EXPECT_EQ(list.header("Allow").value_or(""), "POST");
  EXPECT_EQ(send("DELETE", "/drukbox/http-proxies/druk").status, 204);
  expect_error(send("DELETE", "/drukbox/http-proxies/druk"), 404, "http proxy not found",
               "NOT_FOUND");
}

TEST_F(http_proxies, EveryOperationNeedsAToken) {
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/http-proxies"},
           {"POST", "/http-proxies"},
           {"DELETE", "/http-proxies/x"},
           {"POST", "/http-proxies/x/hosts/" + std::string(k_unknown_id)},
           {"DELETE", "/drukbox/http-proxies/x/hosts/" + std::string(k_unknown_id)}}) {
    EXPECT_EQ(call(method, path, {}, {}, false).status, 401) << method << ' ' << path;
  }
}

/// Creates stay in creating_vm (and fail at their deadline): hosts without a backing VM.
class http_proxies_no_vm : public http_proxies {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--fake-create-delay-ms", "600000");
    start_server(args);
  }
};

TEST_F(http_proxies_no_vm, AttachToAHostWithoutAVmIs409) {
  create_proxy("no-vm");
  const auto r = create("{}", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto id = body_json(r)["id"].get<std::string>();
  expect_error(send("POST", "/http-proxies/no-vm/hosts/" + id), 409,
               "host does not have a backing VM", "HOST_STATE");
  EXPECT_EQ(listed("no-vm")["host_ids"], json::array());
}

}  // namespace
}  // namespace litterbox::test::api

namespace litterbox::test::api {
namespace {

TEST_F(http_proxies, ABadAllowListStopsTheServerAtStartNamingTheEntry) {
  try {
    const auto p =
        start_replica(default_args(), {{"LITTERBOX_HTTP_PROXY_ALLOW", "127.0.0.1/8, 10.0.0.0/99"}});
    ADD_FAILURE() << "litterboxd started with a bad LITTERBOX_HTTP_PROXY_ALLOW";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("10.0.0.0/99"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace litterbox::test::api
