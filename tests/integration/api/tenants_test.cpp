#include "tests/integration/api/api_fixture.hpp"
#include "tests/integration/api/sse_client.hpp"

#include <pqxx/pqxx>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

// API.md "Tenants: scoped keys": keys minted by an admin, namespaces that never see each
// other in either profile, quotas that hold under concurrency, revocation across replicas,
// the per-key rate limit and an audit log without secrets.

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

// An env value no other part of the system could produce: if it shows up in the audit log
// or a dump, a secret leaked.
constexpr std::string_view k_env_secret = "env-secret-5c0ffee-93d1a7";

struct minted {
  std::string id;
  std::string key;
};

class tenants : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    // Room for the quota race: every one of its creates is admitted to the queue first.
    set_arg(args, "--max-queued", "256");
    set_arg(args, "--key-rate-limit", "0");
    set_arg(args, "--http-proxy-allow", "127.0.0.2/32");
    start_server(args);
  }

  /// POST /keys as the admin; the key and its id.
  minted mint(std::string_view ns, json quota = nullptr) const {
    json body{{"namespace", ns}, {"name", "key of " + std::string(ns)}};
    if (!quota.is_null()) {
      body["quota"] = std::move(quota);
    }
    const auto r = call("POST", "/keys", body.dump(), {{"Content-Type", "application/json"}});
    EXPECT_EQ(r.status, 201) << r;
    const auto j = body_json(r);
    minted out;
    out.id = j.value("id", "");
    out.key = j.value("key", "");
    return out;
  }

  /// A request with `key` as the bearer token.
  http_response as(const std::string& key, std::string method, std::string target,
                   std::string body = {}, std::vector<http_header> headers = {}) const {
    headers.insert(headers.begin(), bearer(key));
    if (!body.empty()) {
      headers.emplace_back("Content-Type", "application/json");
    }
    return call(std::move(method), std::move(target), std::move(body), std::move(headers), false);
  }

  json create_as(const std::string& key, std::string_view prefix = "",
                 std::vector<http_header> headers = {}, std::string body = "{}") const {
    const auto r =
        as(key, "POST", std::string(prefix) + "/hosts", std::move(body), std::move(headers));
    EXPECT_EQ(r.status, 201) << r;
    return body_json(r);
  }

  static std::set<std::string> ids_of(const json& hosts) {
    std::set<std::string> out;
    for (const auto& h : hosts) {
      out.insert(h.value("id", ""));
    }
    return out;
  }
};

TEST_F(tenants, AMintedKeyIsShownOnceStoredOnlyAsAKeyedHashAndListedWithoutIt) {
  const auto r = call("POST", "/keys",
                      R"({"namespace": "shown-once", "name": "ci", "quota": {"max_hosts": 3}})",
                      {{"Content-Type", "application/json"}});
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.header("Cache-Control").value_or(""), "no-store");
  const auto j = body_json(r);
  EXPECT_EQ(j["namespace"], "shown-once");
  EXPECT_EQ(j["name"], "ci");
  EXPECT_EQ(j["quota"],
            json({{"max_hosts", 3}, {"max_cpus", nullptr}, {"max_memory_mib", nullptr}}));
  EXPECT_TRUE(is_utc_timestamp(j.value("created_at", "")));
  const std::string key = j.value("key", "");
  ASSERT_EQ(key.rfind("lbk_", 0), 0U) << key;
  EXPECT_EQ(key.size(), 4U + 64U);

  const auto listed = get("/keys");
  ASSERT_EQ(listed.status, 200) << listed;
  EXPECT_EQ(listed.body.find(key), std::string::npos) << "the key is never shown again";
  bool found = false;
  for (const auto& k : body_json(listed)) {
    EXPECT_FALSE(k.contains("key"));
    found = found || k["id"] == j["id"];
  }
  EXPECT_TRUE(found);

  pqxx::connection conn(database_url());
  pqxx::nontransaction tx(conn);
  const auto row = tx.exec_params1("SELECT key_hash FROM api_keys WHERE id = $1::uuid",
                                   j["id"].get<std::string>());
  const auto hash = row[0].as<std::string>();
  EXPECT_EQ(hash.rfind("hmac:", 0), 0U) << hash;
  EXPECT_EQ(hash.find(key.substr(4)), std::string::npos);
}

TEST_F(tenants, KeyManagementAndTheAuditLogAreForAdminsOnly) {
  const auto k = mint("not-admin");
  EXPECT_EQ(as(k.key, "GET", "/keys").status, 403);
  EXPECT_EQ(as(k.key, "POST", "/keys", R"({"namespace": "not-admin"})").status, 403);
  EXPECT_EQ(as(k.key, "DELETE", "/keys/" + k.id).status, 403);
  const auto audit = as(k.key, "GET", "/audit");
  EXPECT_EQ(audit.status, 403) << audit;
  EXPECT_EQ(body_json(audit), json({{"detail", "admin token required"}}));
  // Neither route exists in the drukbox profile.
  EXPECT_EQ(get("/drukbox/keys").status, 404);
  EXPECT_EQ(get("/drukbox/audit").status, 404);
}

TEST_F(tenants, BadKeyRequestsAre422AndAnUnknownKeyIs404) {
  for (const auto* body : {R"({})", R"({"namespace": "Upper"})", R"({"namespace": "-x"})",
                           R"({"namespace": 7})", R"([1])"}) {
    const auto r = call("POST", "/keys", body, {{"Content-Type", "application/json"}});
    EXPECT_EQ(r.status, 422) << body << "\n" << r;
  }
  expect_validation(call("POST", "/keys", R"({"namespace": "q", "quota": {"max_hosts": -1}})",
                         {{"Content-Type", "application/json"}}),
                    {"body", "quota", "max_hosts"});
  expect_error(call("DELETE", "/keys/01890a5d-ac96-774b-bcce-b302099a8057"), 404, "key not found",
               "NOT_FOUND");
  expect_error(call("DELETE", "/keys/not-a-uuid"), 404, "key not found", "NOT_FOUND");
}

// The isolation matrix: for every endpoint of both profiles, A's key never sees, changes,
// deletes, renews, reads the console of, streams or proxies into B's hosts; existence is
// never revealed (404, as for an unknown id).
TEST_F(tenants, ANamespaceNeverSeesOrTouchesAnothersHostsOrProxiesInEitherProfile) {
  const auto a = mint("iso-a");
  const auto b = mint("iso-b");
  const auto hb = create_as(b.key);
  const auto hb_drukbox = create_as(b.key, "/drukbox");
  const auto ha = create_as(a.key);
  ASSERT_TRUE(hb.contains("id") && hb_drukbox.contains("id") && ha.contains("id"));
  const std::string b_id = hb["id"];
  const std::string a_id = ha["id"];
  ASSERT_EQ(as(b.key, "POST", "/http-proxies",
               json{{"name", "b-proxy"},
                    {"target", "http://127.0.0.2:9"},
                    {"headers", {{"X-Key", "b-value"}}}}
                   .dump())
                .status,
            201);
  ASSERT_EQ(as(a.key, "POST", "/http-proxies",
               json{{"name", "a-proxy"},
                    {"target", "http://127.0.0.2:9"},
                    {"headers", {{"X-Key", "a-value"}}}}
                   .dump())
                .status,
            201);

  for (const std::string& prefix : std::vector<std::string>{"", "/drukbox"}) {
    SCOPED_TRACE("profile " + (prefix.empty() ? std::string("litterbox") : prefix));
    for (const auto& id : {b_id, hb_drukbox["id"].get<std::string>()}) {
      const auto host = prefix + "/hosts/" + id;
      expect_error(as(a.key, "GET", host), 404, "host not found", "NOT_FOUND");
      expect_error(as(a.key, "POST", host + "/renew", "{}"), 404, "host not found", "NOT_FOUND");
      expect_error(as(a.key, "DELETE", host), 404, "host not found", "NOT_FOUND");
      // A's proxy cannot be attached to B's host, nor B's proxy to A's host.
      EXPECT_EQ(as(a.key, "POST", prefix + "/http-proxies/a-proxy/hosts/" + id).status, 404);
    }
    EXPECT_EQ(as(a.key, "POST", prefix + "/http-proxies/b-proxy/hosts/" + a_id).status, 404);
    EXPECT_EQ(as(a.key, "DELETE", prefix + "/http-proxies/b-proxy/hosts/" + b_id).status, 404);
    EXPECT_EQ(as(a.key, "DELETE", prefix + "/http-proxies/b-proxy").status, 404);
    const auto listed = as(a.key, "GET", prefix + "/hosts");
    ASSERT_EQ(listed.status, 200) << listed;
    const auto seen = ids_of(body_json(listed));
    EXPECT_TRUE(seen.contains(a_id));
    EXPECT_FALSE(seen.contains(b_id));
    EXPECT_FALSE(seen.contains(hb_drukbox["id"].get<std::string>()));
  }
  // The litterbox profile's own routes: console and the event streams.
  expect_error(as(a.key, "GET", "/hosts/" + b_id + "/console"), 404, "host not found", "NOT_FOUND");
  {
    sse_client one(process().port(), "/hosts/" + b_id + "/events?after=0", {}, a.key);
    EXPECT_EQ(one.head().rfind("HTTP/1.1 404", 0), 0U);
  }
  {
    sse_client all(process().port(), "/events?after=0", {}, a.key);
    ASSERT_EQ(all.head().rfind("HTTP/1.1 200", 0), 0U);
    const auto events = all.until([&](const std::vector<sse_event>& seen) {
      for (const auto& e : seen) {
        if (e.data["host_id"] == a_id && e.data["status"] == "active") {
          return true;
        }
      }
      return false;
    });
    bool saw_own = false;
    for (const auto& e : events) {
      EXPECT_NE(e.data["host_id"], b_id) << "another namespace's event reached the stream";
      EXPECT_NE(e.data["host_id"], hb_drukbox["id"]);
      saw_own = saw_own || e.data["host_id"] == a_id;
    }
    EXPECT_TRUE(saw_own);
  }
  // A's proxy list holds only A's proxy.
  const auto proxies = as(a.key, "GET", "/http-proxies");
  ASSERT_EQ(proxies.status, 200) << proxies;
  ASSERT_EQ(body_json(proxies).size(), 1U) << proxies;
  EXPECT_EQ(body_json(proxies)[0]["name"], "a-proxy");

  // B's host is untouched by all of it, and the admin sees every namespace.
  const auto still = as(b.key, "GET", "/hosts/" + b_id);
  ASSERT_EQ(still.status, 200) << still;
  EXPECT_EQ(body_json(still)["status"], "active");
  const auto everyone = ids_of(list_all());
  EXPECT_TRUE(everyone.contains(a_id) && everyone.contains(b_id));
  // B's own proxy does attach to B's host.
  EXPECT_EQ(as(b.key, "POST", "/http-proxies/b-proxy/hosts/" + b_id).status, 200);
}

TEST_F(tenants, IdempotencyKeysArePerNamespaceSoAReplayOfAnothersKeyCreatesYourOwnHost) {
  const auto a = mint("idem-a");
  const auto b = mint("idem-b");
  const std::vector<http_header> key{{"Idempotency-Key", "shared-key-1"}};
  const auto hb = create_as(b.key, "", key);
  const auto ha = create_as(a.key, "", key);
  ASSERT_TRUE(hb.contains("id") && ha.contains("id"));
  EXPECT_NE(ha["id"], hb["id"]) << "A's replay of B's key must create A's own host";
  EXPECT_EQ(as(a.key, "GET", "/hosts/" + hb["id"].get<std::string>()).status, 404);
  // Each namespace's replay returns its own original.
  EXPECT_EQ(create_as(b.key, "", key)["id"], hb["id"]);
  EXPECT_EQ(create_as(a.key, "", key)["id"], ha["id"]);
  // The admin namespace's key of the same name is a third, separate one.
  const auto admin = create_active("{}", key);
  ASSERT_TRUE(admin.contains("id"));
  EXPECT_NE(admin["id"], ha["id"]);
  EXPECT_NE(admin["id"], hb["id"]);
}

TEST_F(tenants, HundredConcurrentCreatesAgainstMaxHostsFiveGiveExactlyFiveAndNothingLeaked) {
  const auto k = mint("race", json{{"max_hosts", 5}});
  constexpr int k_creates = 100;
  std::vector<int> statuses(k_creates, 0);
  std::vector<std::string> details(k_creates);
  {
    std::atomic<bool> go = false;
    std::vector<std::thread> threads;
    threads.reserve(k_creates);
    for (int i = 0; i < k_creates; ++i) {
      threads.emplace_back([&, i] {
        const http_client c("127.0.0.1", process().port(), 60s);
        while (!go.load()) {
          std::this_thread::yield();
        }
        const auto r =
            c.send({"POST", "/hosts", {bearer(k.key), {"Content-Type", "application/json"}}, "{}"});
        statuses[static_cast<std::size_t>(i)] = r.status;
        details[static_cast<std::size_t>(i)] = body_json(r).value("detail", json("")).dump();
        if (r.status == 429) {
          EXPECT_TRUE(r.header("Retry-After").has_value()) << r;
        }
      });
    }
    go = true;
    for (auto& t : threads) {
      t.join();
    }
  }
  std::map<int, int> by_status;
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    ++by_status[statuses[i]];
    if (statuses[i] == 429) {
      EXPECT_EQ(details[i], "\"quota exceeded: max_hosts=5\"");
    }
  }
  EXPECT_EQ(by_status[201], 5) << json(by_status).dump();
  EXPECT_EQ(by_status[429], k_creates - 5) << json(by_status).dump();

  const auto listed = as(k.key, "GET", "/hosts");
  ASSERT_EQ(listed.status, 200);
  const auto hosts = body_json(listed);
  EXPECT_EQ(hosts.size(), 5U);
  // Nothing leaked: the refused creates hold no row, port or Idempotency-Key.
  pqxx::connection conn(database_url());
  pqxx::nontransaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM hosts WHERE namespace = 'race'")[0].as<int>(), 5);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM ssh_ports s JOIN hosts h ON h.id = s.host_id WHERE "
                     "h.namespace = 'race'")[0]
                .as<int>(),
            5);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM ssh_ports s WHERE s.host_id IS NOT NULL AND NOT "
                     "EXISTS (SELECT 1 FROM hosts h WHERE h.id = s.host_id)")[0]
                .as<int>(),
            0);
  // A deleted host frees its place in the quota.
  ASSERT_EQ(as(k.key, "DELETE", "/hosts/" + hosts[0]["id"].get<std::string>()).status, 204);
  EXPECT_TRUE(create_as(k.key).contains("id"));
  expect_error(as(k.key, "POST", "/hosts", "{}"), 429, "quota exceeded: max_hosts=5", "QUOTA");
}

TEST_F(tenants, CpuAndMemoryQuotasNameTheLimitTheyWouldExceed) {
  const auto k = mint("sized", json{{"max_cpus", 3}, {"max_memory_mib", 4096}});
  ASSERT_TRUE(create_as(k.key, "", {}, R"({"cpus": 2, "memory_mib": 2048})").contains("id"));
  expect_error(as(k.key, "POST", "/hosts", R"({"cpus": 2, "memory_mib": 1024})"), 429,
               "quota exceeded: max_cpus=3", "QUOTA");
  expect_error(as(k.key, "POST", "/hosts", R"({"cpus": 1, "memory_mib": 4096})"), 429,
               "quota exceeded: max_memory_mib=4096", "QUOTA");
  EXPECT_TRUE(create_as(k.key, "", {}, R"({"cpus": 1, "memory_mib": 2048})").contains("id"));
}

TEST_F(tenants, ARevokedKeyIsRefusedAtOnceAndTheAdminTokensKeepWorking) {
  const auto k = mint("revoked");
  ASSERT_EQ(as(k.key, "GET", "/hosts").status, 200);
  ASSERT_EQ(call("DELETE", "/keys/" + k.id).status, 204);
  EXPECT_EQ(body_json(as(k.key, "GET", "/hosts")), json({{"detail", "service token rejected"}}));
  EXPECT_EQ(as(k.key, "GET", "/hosts").status, 403);
  EXPECT_EQ(call("DELETE", "/keys/" + k.id).status, 404) << "revoking twice";
  EXPECT_EQ(get("/hosts").status, 200);
  EXPECT_EQ(as(std::string(k_token2), "GET", "/hosts").status, 200);
}

// Two `litterboxd serve` on one database: a key revoked through replica 1 is refused by
// replica 2, whose cache had just vouched for it, within a second.
TEST_F(tenants, AKeyRevokedOnOneReplicaIsRefusedOnTheOtherWithinOneSecond) {
  const auto replica2 = start_replica();
  const http_client second("127.0.0.1", replica2->port());
  const auto k = mint("replicas");
  const auto on_second = [&] { return second.get("/hosts", {bearer(k.key)}).status; };
  // Used on replica 2 a few times: its cache now holds the key.
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(on_second(), 200);
  }
  ASSERT_EQ(call("DELETE", "/keys/" + k.id).status, 204);
  const auto revoked_at = std::chrono::steady_clock::now();
  int status = 0;
  while ((status = on_second()) == 200 && std::chrono::steady_clock::now() - revoked_at < 1s) {
    std::this_thread::sleep_for(10ms);
  }
  const auto took = std::chrono::steady_clock::now() - revoked_at;
  EXPECT_EQ(status, 403) << "replica 2 still accepted the key "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                         << " ms after its revocation";
  // And a key minted on replica 1 works on replica 2 at once.
  const auto fresh = mint("replicas");
  EXPECT_EQ(second.get("/hosts", {bearer(fresh.key)}).status, 200);
}

// The audit log holds exactly the state-changing calls made, in order, with who, what, the
// request id and the outcome; no secret used anywhere in this test is in the database or
// the server's output.
TEST_F(tenants, TheAuditLogHoldsExactlyTheCallsMadeInOrderAndNoSecret) {
  const auto before = body_json(get("/audit?limit=1000"));
  std::int64_t after = 0;
  for (const auto& e : before) {
    after = std::max(after, e["id"].get<std::int64_t>());
  }
  struct expected {
    std::string action;
    int status;
    std::string request_id;
    bool admin;
  };
  std::vector<expected> made;
  const auto note = [&made](const http_response& r, std::string action, bool admin) {
    made.push_back({std::move(action), r.status, r.header("X-Request-Id").value_or(""), admin});
  };

  const auto minted_r =
      call("POST", "/keys", R"({"namespace": "audited", "quota": {"max_hosts": 1}})",
           {{"Content-Type", "application/json"}});
  ASSERT_EQ(minted_r.status, 201);
  note(minted_r, "create_key", true);
  const auto key = body_json(minted_r)["key"].get<std::string>();
  const auto key_id = body_json(minted_r)["id"].get<std::string>();
  const std::string body = json{{"env", {{"API_TOKEN", std::string(k_env_secret)}}}}.dump();
  const auto created = as(key, "POST", "/hosts", body);
  ASSERT_EQ(created.status, 201) << created;
  note(created, "create_host", false);
  const std::string host_id = body_json(created)["id"];
  EXPECT_EQ(as(key, "GET", "/hosts/" + host_id).status, 200);  // reads are not audited
  const auto over = as(key, "POST", "/hosts", body);
  EXPECT_EQ(over.status, 429);
  note(over, "create_host", false);
  const auto renewed = as(key, "POST", "/hosts/" + host_id + "/renew", "{}");
  EXPECT_EQ(renewed.status, 200);
  note(renewed, "renew_host", false);
  const auto proxy = as(key, "POST", "/http-proxies",
                        json{{"name", "audited-proxy"},
                             {"target", "http://127.0.0.2:9"},
                             {"headers", {{"Authorization", std::string(k_env_secret) + "-h"}}}}
                            .dump());
  EXPECT_EQ(proxy.status, 201) << proxy;
  note(proxy, "create_http_proxy", false);
  const auto attached = as(key, "POST", "/http-proxies/audited-proxy/hosts/" + host_id);
  note(attached, "attach_http_proxy", false);
  const auto forbidden = as(key, "POST", "/keys", R"({"namespace": "audited"})");
  EXPECT_EQ(forbidden.status, 403);
  note(forbidden, "create_key", false);
  const auto deleted = as(key, "DELETE", "/hosts/" + host_id);
  EXPECT_EQ(deleted.status, 204);
  note(deleted, "delete_host", false);
  const auto revoked = call("DELETE", "/keys/" + key_id);
  EXPECT_EQ(revoked.status, 204);
  note(revoked, "delete_key", true);
  // A refused token is no caller: not audited.
  EXPECT_EQ(as(key, "DELETE", "/hosts/" + host_id).status, 403);

  const auto page = get("/audit?after=" + std::to_string(after) + "&limit=1000");
  ASSERT_EQ(page.status, 200) << page;
  const auto entries = body_json(page);
  ASSERT_EQ(entries.size(), made.size()) << entries.dump(2);
  std::int64_t last_id = after;
  for (std::size_t i = 0; i < made.size(); ++i) {
    const auto& e = entries[i];
    SCOPED_TRACE(e.dump());
    EXPECT_GT(e["id"].get<std::int64_t>(), last_id);
    last_id = e["id"].get<std::int64_t>();
    EXPECT_EQ(e["action"], made[i].action);
    EXPECT_EQ(e["status"], made[i].status);
    EXPECT_EQ(e["request_id"], made[i].request_id);
    EXPECT_TRUE(is_utc_timestamp(e.value("at", "")));
    if (made[i].admin) {
      EXPECT_EQ(e["key_id"].get<std::string>().rfind("admin:", 0), 0U);
      EXPECT_TRUE(e["namespace"].is_null());
    } else {
      EXPECT_EQ(e["key_id"], key_id);
      EXPECT_EQ(e["namespace"], "audited");
    }
    if (made[i].action.ends_with("_host") && made[i].status < 400) {
      EXPECT_EQ(e["host_id"], host_id);
    }
  }
  // ?namespace= is one namespace's calls only.
  const auto scoped = body_json(get("/audit?namespace=audited&after=" + std::to_string(after)));
  EXPECT_EQ(scoped.size(), made.size() - 2);

  // No secret anywhere: not the key, the admin tokens, the env value or the header value.
  std::string dump;
  {
    pqxx::connection conn(database_url());
    pqxx::nontransaction tx(conn);
    for (const auto& table :
         tx.exec("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")) {
      const auto name = table[0].as<std::string>();
      if (name == "http_proxies") {
        continue;  // holds the header values by design: the guest-facing proxy reads them
      }
      for (const auto& row :
           tx.exec("SELECT row_to_json(t)::text FROM " + tx.quote_name(name) + " t")) {
        dump += row[0].as<std::string>() + "\n";
      }
    }
  }
  const auto output = process().output();
  for (const std::string& secret :
       std::vector<std::string>{key, key.substr(4), std::string(k_token), std::string(k_token2),
                                std::string(k_env_secret)}) {
    EXPECT_EQ(dump.find(secret), std::string::npos) << "the database holds a secret";
    EXPECT_EQ(output.find(secret), std::string::npos) << "the server's log holds a secret";
    EXPECT_EQ(entries.dump().find(secret), std::string::npos);
  }
}

class tenant_rate_limit : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--key-rate-limit", "0.5");
    set_arg(args, "--key-rate-burst", "3");
    start_server(args);
  }
};

TEST_F(tenant_rate_limit, AKeyOverItsRateGets429WithRetryAfterAndAdminsAndOtherKeysDoNot) {
  const auto mint = [this](std::string_view ns) {
    const auto r = call("POST", "/keys", json{{"namespace", ns}}.dump(),
                        {{"Content-Type", "application/json"}});
    EXPECT_EQ(r.status, 201) << r;
    return body_json(r).value("key", "");
  };
  const auto busy = mint("busy");
  const auto quiet = mint("quiet");
  const auto as = [this](const std::string& key) {
    return call("GET", "/hosts", {}, {bearer(key)}, false);
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(as(busy).status, 200) << "within the burst";
  }
  const auto limited = as(busy);
  expect_error(limited, 429, "rate limit exceeded for this key", "QUOTA");
  const auto retry = std::stoi(limited.header("Retry-After").value_or("0"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 2);
  EXPECT_EQ(as(quiet).status, 200) << "another key has its own bucket";
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(get("/hosts").status, 200) << "admin tokens are never limited";
  }
}

}  // namespace
}  // namespace litterbox::test::api
