#include "client/cli/render.hpp"
#include "client/client.hpp"
#include "client/errc.hpp"
#include "tests/unit/client/fake_transport.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace litterbox::client::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* k_created = R"({"id": "0190aaaa-0000-7000-8000-000000000001",
  "namespace": "acme", "name": "acme agents",
  "quota": {"max_hosts": 5, "max_cpus": 8, "max_memory_mib": null},
  "created_at": "2026-12-02T04:00:00.000000Z", "key": "lbk_s3cr3t"})";

std::string audit_page(const std::vector<int>& ids) {
  auto page = nlohmann::json::array();
  for (const int id : ids) {
    page.push_back({{"id", id},
                    {"at", "2026-12-02T04:00:0" + std::to_string(id % 10) + "Z"},
                    {"key_id", id % 2 == 0 ? nlohmann::json("0190aaaa") : nlohmann::json()},
                    {"namespace", "acme"},
                    {"action", "host.create"},
                    {"host_id", "0190bbbb"},
                    {"request_id", "req-" + std::to_string(id)},
                    {"status", 201}});
  }
  return page.dump();
}

class Tenants : public ::testing::Test {
 protected:
  client make() {
    auto t = std::make_unique<fake_transport>(time_);
    transport_ = t.get();
    client_config cfg{"http://svc", "admin", 300s, 30s};
    return client(cfg, std::move(t), {}, time_.env(),
                  [] { return timestamp(std::chrono::seconds(1800000000)); });
  }
  fake_time time_;
  fake_transport* transport_ = nullptr;
};

TEST_F(Tenants, CreateKeyPostsTheContractBodyAndGetsTheSecretOnce) {
  auto c = make();
  transport_->answers.emplace_back(response(201, k_created));
  key_request req;
  req.namespace_name = "acme";
  req.name = "acme agents";
  req.quota.max_hosts = 5;
  req.quota.max_cpus = 8;
  const auto k = c.create_key(req);
  ASSERT_TRUE(k) << k.error().message;
  ASSERT_EQ(transport_->seen.size(), 1U);
  EXPECT_EQ(transport_->seen[0].method, "POST");
  EXPECT_EQ(transport_->seen[0].url, "http://svc/keys");
  EXPECT_EQ(nlohmann::json::parse(transport_->seen[0].body),
            nlohmann::json::parse(R"({"namespace": "acme", "name": "acme agents",
                                      "quota": {"max_hosts": 5, "max_cpus": 8}})"));
  EXPECT_EQ(k->key, "lbk_s3cr3t");
  EXPECT_EQ(k->info.id, "0190aaaa-0000-7000-8000-000000000001");
  EXPECT_EQ(k->info.namespace_name, "acme");
  EXPECT_EQ(k->info.name, "acme agents");
  EXPECT_EQ(k->info.quota.max_hosts, 5);
  EXPECT_EQ(k->info.quota.max_cpus, 8);
  EXPECT_FALSE(k->info.quota.max_memory_mib);
  EXPECT_EQ(k->info.json.find("lbk_"), std::string::npos);  // only `key` carries the secret
  EXPECT_EQ(nlohmann::json::parse(k->json), nlohmann::json::parse(k_created));
  // Printed as the server sent it: field order kept.
  EXPECT_TRUE(k->json.starts_with(R"({"id":)")) << k->json;
}

TEST_F(Tenants, CreateKeyWithoutNameOrQuotaSendsOnlyTheNamespace) {
  auto c = make();
  transport_->answers.emplace_back(
      response(201, R"({"id": "k1", "namespace": "acme", "name": null, "quota": null,
               "created_at": "2026-12-02T04:00:00Z", "key": "lbk_x"})"));
  const auto k = c.create_key(key_request{"acme", std::nullopt, {}});
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(transport_->seen[0].body, R"({"namespace":"acme"})");
  EXPECT_FALSE(k->info.name);
  EXPECT_EQ(cli::render_quota(k->info.quota), "none");
}

TEST_F(Tenants, CreateKeyNeedsANamespaceAndAKeyInTheAnswer) {
  auto c = make();
  auto k = c.create_key(key_request{});
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().code, errc::invalid_argument);
  EXPECT_TRUE(transport_->seen.empty());
  transport_->answers.emplace_back(
      response(201, R"({"id": "k1", "namespace": "acme", "created_at": "2026-12-02T04:00:00Z"})"));
  k = c.create_key(key_request{"acme", std::nullopt, {}});
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().code, errc::bad_response);
}

TEST_F(Tenants, CreateKeyIsNotResentAfterAnAttemptThatGotNoAnswer) {
  auto c = make();
  transport_->answers.emplace_back(make_error(errc::unavailable, "connection reset"));
  transport_->answers.emplace_back(response(201, k_created));
  const auto k = c.create_key(key_request{"acme", std::nullopt, {}});
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().code, errc::unavailable);
  EXPECT_NE(k.error().message.find("litterbox keys ls"), std::string::npos) << k.error().message;
  EXPECT_EQ(transport_->seen.size(), 1U);  // a second POST could mint a second key
}

TEST_F(Tenants, CreateKeyRetriesAn503) {
  auto c = make();
  transport_->answers.emplace_back(response(503, R"({"detail":"database unreachable"})"));
  transport_->answers.emplace_back(response(201, k_created));
  const auto k = c.create_key(key_request{"acme", std::nullopt, {}});
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(transport_->seen.size(), 2U);
}

TEST_F(Tenants, RejectedAndRateLimitedCallsMapToTheirErrorsAndExitCodes) {
  auto c = make();
  transport_->answers.emplace_back(response(403, R"({"detail":"service token rejected"})"));
  auto k = c.create_key(key_request{"acme", std::nullopt, {}});
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().code, errc::auth);
  EXPECT_EQ(cli::exit_code_for(k.error()), cli::exit_code::auth);
  transport_->answers.emplace_back(response(
      429, R"({"detail":"rate limit exceeded","error_code":"QUOTA"})", {{"retry-after", "30"}}));
  const auto keys = c.list_keys();
  ASSERT_FALSE(keys);
  EXPECT_EQ(keys.error().code, errc::quota);
  EXPECT_EQ(keys.error().message, "rate limit exceeded (retry after 30 s)");
  EXPECT_EQ(cli::exit_code_for(keys.error()), cli::exit_code::quota);
  EXPECT_EQ(cli::render_error(keys.error()), "litterbox: rate limit exceeded (retry after 30 s)\n");
  transport_->answers.emplace_back(
      response(429, R"({"detail":"quota exceeded: max_hosts=5","error_code":"QUOTA"})",
               {{"retry-after", "Wed, 02 Dec 2026 05:00:00 GMT"}}));
  const auto h = c.get_host("x");
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().message,
            "quota exceeded: max_hosts=5 (retry after Wed, 02 Dec 2026 05:00:00 GMT)");
}

TEST_F(Tenants, ListKeysParsesEveryKeyWithoutSecrets) {
  auto c = make();
  transport_->answers.emplace_back(response(200, R"([
      {"id": "k1", "namespace": "acme", "name": "a", "quota": {"max_hosts": 5},
       "created_at": "2026-12-02T04:00:00Z"},
      {"id": "k2", "namespace": "globex", "name": null, "quota": null,
       "created_at": "2026-12-02T04:01:00Z"}])"));
  const auto keys = c.list_keys();
  ASSERT_TRUE(keys) << keys.error().message;
  EXPECT_EQ(transport_->seen[0].method, "GET");
  EXPECT_EQ(transport_->seen[0].url, "http://svc/keys");
  ASSERT_EQ(keys->size(), 2U);
  EXPECT_EQ((*keys)[0].quota.max_hosts, 5);
  EXPECT_EQ((*keys)[1].namespace_name, "globex");
  EXPECT_EQ(cli::render_key_table(*keys),
            "ID  NAMESPACE  NAME  QUOTA        CREATED\n"
            "k1  acme       a     max_hosts=5  2026-12-02T04:00:00Z\n"
            "k2  globex     -     none         2026-12-02T04:01:00Z\n");
  const auto j = nlohmann::json::parse(cli::render_keys_json(*keys));
  ASSERT_EQ(j.size(), 2U);
  EXPECT_EQ(j[1]["id"], "k2");
}

TEST_F(Tenants, ListKeysRefusesWhatIsNotTheContract) {
  auto c = make();
  transport_->answers.emplace_back(response(200, R"({"keys": []})"));
  auto keys = c.list_keys();
  ASSERT_FALSE(keys);
  EXPECT_EQ(keys.error().code, errc::bad_response);
  transport_->answers.emplace_back(response(200, R"([{"id": 7, "namespace": "acme"}])"));
  keys = c.list_keys();
  ASSERT_FALSE(keys);
  EXPECT_EQ(keys.error().code, errc::bad_response);
}

TEST_F(Tenants, DeleteKeyRevokesByIdAndUnknownIsNotFound) {
  auto c = make();
  transport_->answers.emplace_back(response(204));
  ASSERT_TRUE(c.delete_key("k/1"));
  EXPECT_EQ(transport_->seen[0].method, "DELETE");
  EXPECT_EQ(transport_->seen[0].url, "http://svc/keys/k%2F1");
  transport_->answers.emplace_back(
      response(404, R"({"detail":"key not found","error_code":"NOT_FOUND"})"));
  const auto gone = c.delete_key("k2");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  EXPECT_EQ(cli::exit_code_for(gone.error()), cli::exit_code::not_found);
}

TEST_F(Tenants, DeleteKeyWhoseFirstAnswerWasLostTakesTheRetrys404AsDone) {
  auto c = make();
  transport_->answers.emplace_back(make_error(errc::unavailable, "connection reset"));
  transport_->answers.emplace_back(response(404, R"({"detail":"key not found"})"));
  EXPECT_TRUE(c.delete_key("k1"));
  EXPECT_EQ(transport_->seen.size(), 2U);
}

TEST_F(Tenants, AuditFollowsAfterPagesToTheEnd) {
  auto c = make();
  transport_->answers.emplace_back(response(200, audit_page({1, 2})));
  transport_->answers.emplace_back(response(200, audit_page({3})));
  transport_->answers.emplace_back(response(200, "[]"));
  audit_options o;
  o.namespace_name = "acme corp";
  const auto records = c.list_audit(o);
  ASSERT_TRUE(records) << records.error().message;
  ASSERT_EQ(records->size(), 3U);
  ASSERT_EQ(transport_->seen.size(), 3U);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/audit?namespace=acme%20corp");
  EXPECT_EQ(transport_->seen[1].url, "http://svc/audit?namespace=acme%20corp&after=2");
  EXPECT_EQ(transport_->seen[2].url, "http://svc/audit?namespace=acme%20corp&after=3");
  EXPECT_EQ((*records)[0].id, "1");
  EXPECT_FALSE((*records)[0].key_id);  // an admin token's call
  EXPECT_EQ((*records)[1].key_id, "0190aaaa");
  EXPECT_EQ((*records)[2].status, "201");
  EXPECT_EQ((*records)[2].request_id, "req-3");
}

TEST_F(Tenants, AuditFollowsTheNextLinkWhenTheServerSendsOne) {
  auto c = make();
  transport_->answers.emplace_back(
      response(200, audit_page({1, 2}), {{"link", R"(</audit?after=c2&limit=2>; rel="next")"}}));
  transport_->answers.emplace_back(response(200, audit_page({3})));
  transport_->answers.emplace_back(response(200, "[]"));
  audit_options o;
  o.after = "0";
  const auto records = c.list_audit(o);
  ASSERT_TRUE(records) << records.error().message;
  EXPECT_EQ(records->size(), 3U);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/audit?after=0");
  EXPECT_EQ(transport_->seen[1].url, "http://svc/audit?after=c2");
}

TEST_F(Tenants, AuditWithALimitAsksForWhatIsLeftAndStopsThere) {
  auto c = make();
  transport_->answers.emplace_back(response(200, audit_page({1, 2})));
  transport_->answers.emplace_back(response(200, audit_page({3})));
  audit_options o;
  o.limit = 3;
  const auto records = c.list_audit(o);
  ASSERT_TRUE(records) << records.error().message;
  EXPECT_EQ(records->size(), 3U);
  ASSERT_EQ(transport_->seen.size(), 2U);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/audit?limit=3");
  EXPECT_EQ(transport_->seen[1].url, "http://svc/audit?after=2&limit=1");
  o.limit = 0;
  const auto bad = c.list_audit(o);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
}

TEST_F(Tenants, AuditWhoseCursorDoesNotMoveStops) {
  auto c = make();
  transport_->answers.emplace_back(
      response(200, audit_page({1}), {{"link", R"(</audit?after=x>; rel="next")"}}));
  transport_->answers.emplace_back(
      response(200, audit_page({2}), {{"link", R"(</audit?after=x>; rel="next")"}}));
  const auto records = c.list_audit();
  ASSERT_TRUE(records) << records.error().message;
  EXPECT_EQ(transport_->seen.size(), 2U);
}

TEST_F(Tenants, AuditRecordsRenderAsATableAndAsTheServersJson) {
  auto c = make();
  transport_->answers.emplace_back(response(200, audit_page({1, 2})));
  transport_->answers.emplace_back(response(200, "[]"));
  const auto records = c.list_audit();
  ASSERT_TRUE(records) << records.error().message;
  EXPECT_EQ(
      cli::render_audit_table(*records),
      "ID  AT                    NAMESPACE  KEY       ACTION       HOST      STATUS  REQUEST\n"
      "1   2026-12-02T04:00:01Z  acme       admin     host.create  0190bbbb  201     req-1\n"
      "2   2026-12-02T04:00:02Z  acme       0190aaaa  host.create  0190bbbb  201     req-2\n");
  EXPECT_EQ(nlohmann::json::parse(cli::render_audit_json(*records)),
            nlohmann::json::parse(audit_page({1, 2})));
}

TEST_F(Tenants, MalformedAuditIsABadResponse) {
  auto c = make();
  transport_->answers.emplace_back(response(200, R"([{"id": 1, "at": "x"}])"));
  const auto records = c.list_audit();
  ASSERT_FALSE(records);
  EXPECT_EQ(records.error().code, errc::bad_response);
}

TEST(RenderKey, TheSecretIsOnItsOwnLine) {
  created_key k;
  k.info.id = "k1";
  k.info.namespace_name = "acme";
  k.info.quota.max_memory_mib = 4096;
  k.info.created_at = "2026-12-02T04:00:00Z";
  k.key = "lbk_s3cr3t";
  EXPECT_EQ(cli::render_created_key(k),
            "id:         k1\n"
            "namespace:  acme\n"
            "name:       -\n"
            "quota:      max_memory_mib=4096\n"
            "created_at: 2026-12-02T04:00:00Z\n"
            "key:        lbk_s3cr3t\n");
}

}  // namespace
}  // namespace litterbox::client::test
