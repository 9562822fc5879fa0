#include "client/client.hpp"

#include "base/time.hpp"
#include "client/errc.hpp"
#include "tests/integration/client/server_fixture.hpp"
#include "tests/integration/client/stub_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>

namespace litterbox::client::test {
namespace {

using namespace std::chrono_literals;
using schema::host_status;

/// Real time, no real sleeping: backoff pauses are recorded instead of slept.
struct recorded_sleeps {
  std::vector<std::chrono::milliseconds> sleeps;
  retry_env env() {
    auto e = system_retry_env();
    e.sleep = [this](std::chrono::milliseconds d) { sleeps.push_back(d); };
    return e;
  }
};

class ClientAgainstServer : public server_suite {
 protected:
  client make(std::string token = k_token) {
    return client(config(std::move(token)), make_curl_transport());
  }
};

TEST_F(ClientAgainstServer, CreateBlocksUntilActiveAndHandsOutTheMintedKeyOnce) {
  auto c = make();
  create_options o;
  o.image = "registry.local/debian:12";
  o.env = {{"GREETING", "hello"}};
  const auto created = c.create_host(o);
  ASSERT_TRUE(created) << created.error().message;
  const auto& h = created->host;
  EXPECT_EQ(h.status, host_status::active);
  EXPECT_EQ(h.image, "registry.local/debian:12");
  EXPECT_FALSE(h.known_hosts.empty());
  ASSERT_TRUE(h.private_key);
  EXPECT_NE(h.private_key->find("PRIVATE KEY"), std::string::npos);
  const auto again = c.get_host(h.id);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->id, h.id);
  EXPECT_FALSE(again->private_key);
  EXPECT_TRUE(c.delete_host(h.id));
}

TEST_F(ClientAgainstServer, GetRenewDeleteRoundTrip) {
  auto c = make();
  create_options o;
  o.ssh_authorized_keys = std::vector<std::string>{
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test"};
  o.instance_type = "small";
  o.no_expiry = true;
  const auto created = c.create_host(o);
  ASSERT_TRUE(created) << created.error().message;
  const auto id = created->host.id;
  EXPECT_FALSE(created->host.private_key);  // we sent our own key
  EXPECT_FALSE(created->host.expires_at);
  EXPECT_EQ(created->host.instance_type, "small");
  EXPECT_EQ(created->host.cpus, 1);

  const auto before = system_clock{}.now();
  renew_options r;
  r.expires_in = 2h;
  const auto renewed = c.renew_host(id, r);
  ASSERT_TRUE(renewed) << renewed.error().message;
  ASSERT_TRUE(renewed->expires_at);
  EXPECT_GE(*renewed->expires_at, before + 2h - 1min);
  EXPECT_LE(*renewed->expires_at, before + 2h + 1min);
  const auto default_renewal = c.renew_host(id);
  ASSERT_TRUE(default_renewal) << default_renewal.error().message;
  EXPECT_TRUE(default_renewal->expires_at);

  ASSERT_TRUE(c.delete_host(id));
  const auto gone = c.get_host(id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  EXPECT_EQ(gone.error().message, "host not found");
  const auto second = c.delete_host(id);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::not_found);
  const auto renew_gone = c.renew_host(id);
  ASSERT_FALSE(renew_gone);
  EXPECT_EQ(renew_gone.error().code, errc::not_found);
}

TEST_F(ClientAgainstServer, ListFollowsNextLinksAndFiltersByStatus) {
  auto c = make();
  std::set<std::string> mine;
  for (int i = 0; i < 3; ++i) {
    const auto created = c.create_host({});
    ASSERT_TRUE(created) << created.error().message;
    mine.insert(created->host.id);
  }
  // Pages hold two hosts, so seeing all three means the client followed rel="next".
  const auto all = c.list_hosts();
  ASSERT_TRUE(all) << all.error().message;
  std::set<std::string> listed;
  for (const auto& h : *all) {
    listed.insert(h.id);
  }
  for (const auto& id : mine) {
    EXPECT_TRUE(listed.count(id)) << id;
  }
  EXPECT_EQ(listed.size(), all->size()) << "a host was listed twice";

  list_options only_errors;
  only_errors.statuses = {host_status::error};
  const auto errors = c.list_hosts(only_errors);
  ASSERT_TRUE(errors);
  for (const auto& h : *errors) {
    EXPECT_EQ(h.status, host_status::error);
    EXPECT_FALSE(mine.count(h.id));
  }
  list_options limited;
  limited.limit = 1;
  const auto one = c.list_hosts(limited);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1U);
  for (const auto& id : mine) {
    EXPECT_TRUE(c.delete_host(id));
  }
}

TEST_F(ClientAgainstServer, MissingOrWrongTokenIsAnAuthError) {
  auto anonymous = make("");
  auto r = anonymous.get_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::auth);
  EXPECT_EQ(r.error().message, "service token required");
  auto wrong = make("not-the-token");
  const auto l = wrong.list_hosts();
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, errc::auth);
  EXPECT_EQ(l.error().message, "service token rejected");
}

TEST_F(ClientAgainstServer, MissingImageIsProvisioningFailedWithTheLastError) {
  auto c = make();
  create_options o;
  o.image = "registry.local/missing:1";
  const auto created = c.create_host(o);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, errc::provisioning_failed);
  EXPECT_TRUE(created.error().message.starts_with("ImageNotFound: ")) << created.error().message;
}

TEST_F(ClientAgainstServer, AsyncCreateThenWaitForSeesTheStatesUntilActive) {
  auto c = make();
  create_options o;
  o.async = true;
  const auto created = c.create_host(o);
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_TRUE(created->host.private_key);  // the creating request sees the key, async too
  std::vector<host_status> seen;
  const auto h = c.wait_for(created->host.id, host_status::active, 30s,
                            [&](const schema::host& x) { seen.push_back(x.status); });
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->status, host_status::active);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), host_status::active);
  EXPECT_TRUE(c.delete_host(h->id));
}

TEST_F(ClientAgainstServer, WaitForAHostThatNeverBootsEndsInProvisioningFailed) {
  auto c = make();
  create_options o;
  o.image = "registry.local/fail-boot:1";
  o.async = true;
  const auto created = c.create_host(o);
  ASSERT_TRUE(created) << created.error().message;
  const auto h = c.wait_for(created->host.id, host_status::active, 30s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::provisioning_failed);
  EXPECT_TRUE(h.error().message.starts_with("BootTimeout: ")) << h.error().message;

  // A failed host cannot be renewed: 409 HOST_STATE is a conflict.
  const auto renewed = c.renew_host(created->host.id);
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().code, errc::conflict);
}

TEST_F(ClientAgainstServer, UnknownInstanceTypeAndValidationAreApiErrors) {
  auto c = make();
  create_options o;
  o.instance_type = "enormous";
  auto created = c.create_host(o);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, errc::api_error);
  EXPECT_TRUE(created.error().message.starts_with("HTTP 400: ")) << created.error().message;

  o = {};
  o.env = {{"TAILSCALE_AUTHKEY", "x"}};
  created = c.create_host(o);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, errc::api_error);
  ASSERT_FALSE(created.error().issues.empty());
  EXPECT_EQ(created.error().issues[0].loc, (std::vector<std::string>{"body", "env"}));
  EXPECT_NE(
      created.error().issues[0].msg.find("reserved env keys are not allowed: TAILSCALE_AUTHKEY"),
      std::string::npos);

  const auto malformed = c.get_host("not-a-uuid");
  ASSERT_FALSE(malformed);
  EXPECT_EQ(malformed.error().code, errc::api_error);
}

TEST_F(ClientAgainstServer, ConsoleAndDoctorAnswer) {
  auto c = make();
  const auto created = c.create_host({});
  ASSERT_TRUE(created) << created.error().message;
  const auto text = c.console(created->host.id, 1024);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_LE(text->size(), 1024U);
  const auto missing = c.console("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
  const auto report = c.doctor();
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_FALSE(report->checks.empty());
  for (const auto& check : report->checks) {
    EXPECT_FALSE(check.name.empty());
    // The fake hypervisor's checks and a reachable database all pass.
    EXPECT_TRUE(check.ok) << check.name << ": " << check.detail;
  }
  EXPECT_TRUE(c.delete_host(created->host.id));
}

/// Forwards to the real server but loses the first response of a POST, as a network failure
/// after the server acted would.
class lossy_transport final : public transport {
 public:
  std::unique_ptr<transport> inner = make_curl_transport();
  std::optional<http_response> lost;
  std::vector<std::string> keys;

  result<http_response> send(const http_request& request) override {
    for (const auto& [name, value] : request.headers) {
      if (name == "Idempotency-Key") {
        keys.push_back(value);
      }
    }
    auto r = inner->send(request);
    if (request.method == "POST" && !lost && r) {
      lost = *r;
      return make_error(errc::unavailable, "connection reset (simulated)");
    }
    return r;
  }
};

TEST_F(ClientAgainstServer, RetriedCreateReusesItsIdempotencyKeyAndGetsTheSameHost) {
  auto t = std::make_unique<lossy_transport>();
  auto* lossy = t.get();
  recorded_sleeps sleeps;
  client c(config(), std::move(t), retry_policy{}, sleeps.env());
  const auto created = c.create_host({});
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_TRUE(lossy->lost);
  ASSERT_EQ(lossy->lost->status, 201);
  const auto first = nlohmann::json::parse(lossy->lost->body);
  EXPECT_EQ(created->host.id, first["id"].get<std::string>()) << "a second VM was created";
  ASSERT_EQ(lossy->keys.size(), 2U);
  EXPECT_EQ(lossy->keys[0], lossy->keys[1]);
  EXPECT_EQ(lossy->keys[0], created->idempotency_key);
  EXPECT_EQ(sleeps.sleeps.size(), 1U);
  EXPECT_TRUE(c.delete_host(created->host.id));
}

std::string stub_host_body() {
  schema::host h;
  h.id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
  h.name = schema::host_name_for(h.id);
  h.status = host_status::active;
  h.provider = "fake";
  h.image = "img";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = system_clock{}.now();
  h.updated_at = h.created_at;
  return schema::to_json(h).dump();
}

TEST(ClientAgainstStub, RetriesTwo503sThenSucceeds) {
  stub_server stub({{503, R"({"detail":"database unreachable","error_code":"UNAVAILABLE"})"},
                    {503, R"({"detail":"database unreachable","error_code":"UNAVAILABLE"})"},
                    {200, stub_host_body()}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "t", 10s, 10s}, make_curl_transport(), retry_policy{},
           sleeps.env());
  const auto h = c.get_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->id, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  EXPECT_EQ(stub.requests().size(), 3U);
  EXPECT_EQ(sleeps.sleeps.size(), 2U);
  for (const auto& req : stub.requests()) {
    EXPECT_EQ(req.at("authorization"), "Bearer t");
  }
}

TEST(ClientAgainstStub, CreateRetried503KeepsOneIdempotencyKey) {
  stub_server stub({{503, R"({"detail":"no capacity","error_code":"CAPACITY"})"},
                    {stub_answer{0, "", true}},
                    {201, stub_host_body()}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "t", 10s, 10s}, make_curl_transport(), retry_policy{},
           sleeps.env());
  const auto created = c.create_host({});
  ASSERT_TRUE(created) << created.error().message;
  const auto requests = stub.requests();
  ASSERT_EQ(requests.size(), 3U);
  for (const auto& req : requests) {
    EXPECT_EQ(req.at("idempotency-key"), created->idempotency_key);
  }
}

TEST(ClientAgainstStub, DeleteRetriedAfterALostAnswerTreatsTheSecond404AsDeleted) {
  // The first DELETE reaches the server, which deletes the host, but the answer is lost;
  // the retry then finds no host.
  stub_server stub({{stub_answer{0, "", true}},
                    {404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "t", 10s, 10s}, make_curl_transport(), retry_policy{},
           sleeps.env());
  const auto r = c.delete_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  EXPECT_TRUE(r) << r.error().message;
  EXPECT_EQ(stub.requests().size(), 2U);
}

TEST(ClientAgainstStub, DeleteAnswered404AtFirstIsNotFound) {
  stub_server stub({{404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "t", 10s, 10s}, make_curl_transport(), retry_policy{},
           sleeps.env());
  const auto r = c.delete_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST(ClientAgainstStub, Delete404AfterOnly503sIsNotFound) {
  // A 503 says the server did not act, so the 404 that follows is a real "no such host".
  stub_server stub({{503, R"({"detail":"database unreachable","error_code":"UNAVAILABLE"})"},
                    {404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "t", 10s, 10s}, make_curl_transport(), retry_policy{},
           sleeps.env());
  const auto r = c.delete_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST(ClientAgainstStub, PersistentOutageIsUnavailable) {
  stub_server stub({{stub_answer{0, "", true}},
                    {stub_answer{0, "", true}},
                    {stub_answer{0, "", true}},
                    {stub_answer{0, "", true}},
                    {stub_answer{0, "", true}}});
  recorded_sleeps sleeps;
  client c(client_config{stub.url(), "secret-token-value", 10s, 10s}, make_curl_transport(),
           retry_policy{}, sleeps.env());
  const auto r = c.delete_host("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unavailable);
  EXPECT_EQ(r.error().message.find("secret-token-value"), std::string::npos);
  EXPECT_EQ(stub.requests().size(), 5U);
}

}  // namespace
}  // namespace litterbox::client::test
