#include "client/retry.hpp"

#include "base/uuid.hpp"
#include "client/client.hpp"
#include "client/errc.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <deque>

namespace litterbox::client {
namespace {

using namespace std::chrono_literals;

TEST(Backoff, FullJitterDoublesUpToTheCap) {
  const retry_policy p;  // 200 ms base, 5 s cap
  EXPECT_EQ(backoff_delay(p, 1, 0.999999, std::nullopt), 199ms);
  EXPECT_EQ(backoff_delay(p, 2, 0.5, std::nullopt), 200ms);
  EXPECT_EQ(backoff_delay(p, 3, 0.5, std::nullopt), 400ms);
  EXPECT_EQ(backoff_delay(p, 6, 0.5, std::nullopt), 2500ms);
  EXPECT_EQ(backoff_delay(p, 60, 0.5, std::nullopt), 2500ms);
  EXPECT_EQ(backoff_delay(p, 3, 0.0, std::nullopt), 0ms);
}

TEST(Backoff, RetryAfterIsAFloorButCapped) {
  const retry_policy p;
  EXPECT_EQ(backoff_delay(p, 1, 0.5, 2000ms), 2000ms);
  EXPECT_EQ(backoff_delay(p, 1, 0.5, 3600000ms), 30000ms);
}

/// A transport that answers from a script and records what it was asked.
class scripted_transport final : public transport {
 public:
  std::deque<result<http_response>> answers;
  std::vector<http_request> seen;

  result<http_response> send(const http_request& request) override {
    seen.push_back(request);
    if (answers.empty()) {
      return make_error(errc::unavailable, "script exhausted");
    }
    auto r = std::move(answers.front());
    answers.pop_front();
    return r;
  }
};

/// Time that moves only when the client sleeps.
struct fake_time {
  std::chrono::steady_clock::time_point now{};
  std::vector<std::chrono::milliseconds> sleeps;
  retry_env env() {
    return retry_env{[this] { return now; },
                     [this](std::chrono::milliseconds d) {
                       sleeps.push_back(d);
                       now += d;
                     },
                     [] { return 0.5; }};
  }
};

http_response response(int status, std::string body = {},
                       std::map<std::string, std::string> headers = {}) {
  return http_response{status, std::move(headers), std::move(body)};
}

schema::host sample_host(std::string id, schema::host_status status) {
  schema::host h;
  h.id = std::move(id);
  h.name = schema::host_name_for(h.id);
  h.status = status;
  h.provider = "fake";
  h.image = "img";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = timestamp(std::chrono::seconds(1800000000));
  h.updated_at = h.created_at;
  return h;
}

std::string host_body(const schema::host& h) {
  return schema::to_json(h).dump();
}

const std::string k_id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

class ClientRetry : public ::testing::Test {
 protected:
  client make(retry_policy policy = {}) {
    auto t = std::make_unique<scripted_transport>();
    transport_ = t.get();
    client_config cfg{"http://svc", "tok", 300s, 30s};
    return client(cfg, std::move(t), policy, time_.env(),
                  [] { return timestamp(std::chrono::seconds(1800000000)); });
  }
  scripted_transport* transport_ = nullptr;
  fake_time time_;
};

TEST_F(ClientRetry, GetRetries503ThenSucceeds) {
  auto c = make();
  transport_->answers.emplace_back(response(503, R"({"detail":"db down"})"));
  transport_->answers.emplace_back(response(503, R"({"detail":"db down"})"));
  transport_->answers.emplace_back(
      response(200, host_body(sample_host(k_id, schema::host_status::active))));
  const auto h = c.get_host(k_id);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->id, k_id);
  EXPECT_EQ(transport_->seen.size(), 3U);
  EXPECT_EQ(time_.sleeps, (std::vector<std::chrono::milliseconds>{100ms, 200ms}));
  EXPECT_EQ(transport_->seen[0].url, "http://svc/hosts/" + k_id);
  EXPECT_EQ(transport_->seen[0].method, "GET");
}

TEST_F(ClientRetry, TransportFailuresAreRetried) {
  auto c = make();
  transport_->answers.emplace_back(make_error(errc::unavailable, "connection refused"));
  transport_->answers.emplace_back(response(204));
  EXPECT_TRUE(c.delete_host(k_id));
  EXPECT_EQ(transport_->seen.size(), 2U);
  EXPECT_EQ(transport_->seen[1].method, "DELETE");
}

TEST_F(ClientRetry, GivesUpAfterMaxAttemptsAsUnavailable) {
  auto c = make(retry_policy{3, 200ms, 5000ms, 30000ms});
  for (int i = 0; i < 5; ++i) {
    transport_->answers.emplace_back(
        response(503, R"({"detail":"no capacity","error_code":"CAPACITY"})"));
  }
  const auto h = c.get_host(k_id);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::unavailable);
  EXPECT_EQ(h.error().message, "no capacity");
  EXPECT_EQ(transport_->seen.size(), 3U);
}

TEST_F(ClientRetry, HonoursRetryAfter) {
  auto c = make();
  transport_->answers.emplace_back(response(503, "{}", {{"retry-after", "3"}}));
  transport_->answers.emplace_back(
      response(200, host_body(sample_host(k_id, schema::host_status::active))));
  ASSERT_TRUE(c.get_host(k_id));
  EXPECT_EQ(time_.sleeps, (std::vector<std::chrono::milliseconds>{3000ms}));
}

TEST_F(ClientRetry, HonoursRetryAfterAsAnHttpDate) {
  auto c = make();  // the wall clock says 2027-01-15T08:00:00Z
  transport_->answers.emplace_back(
      response(503, "{}", {{"retry-after", "Fri, 15 Jan 2027 08:00:03 GMT"}}));
  transport_->answers.emplace_back(
      response(200, host_body(sample_host(k_id, schema::host_status::active))));
  ASSERT_TRUE(c.get_host(k_id));
  EXPECT_EQ(time_.sleeps, (std::vector<std::chrono::milliseconds>{3000ms}));
}

TEST(RetryAfter, ParsesDelaySecondsAndAllThreeHttpDateForms) {
  const timestamp now(std::chrono::seconds(1800000000));  // Fri, 15 Jan 2027 08:00:00 GMT
  EXPECT_EQ(parse_retry_after("120", now), 120000ms);
  EXPECT_EQ(parse_retry_after(" 0 ", now), 0ms);
  EXPECT_EQ(parse_retry_after("Fri, 15 Jan 2027 08:01:00 GMT", now), 60000ms);
  EXPECT_EQ(parse_retry_after("Friday, 15-Jan-27 08:00:10 GMT", now), 10000ms);
  EXPECT_EQ(parse_retry_after("Fri Jan 15 08:00:05 2027", now), 5000ms);
  EXPECT_EQ(parse_retry_after("Thu, 14 Jan 2027 08:00:00 GMT", now), 0ms);  // already past
}

TEST(RetryAfter, IgnoresWhatIsNeitherSecondsNorADate) {
  const timestamp now(std::chrono::seconds(1800000000));
  EXPECT_EQ(parse_retry_after("", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("-5", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("soon", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("Fri, 15 Jan 2027 08:01:00 GMT trailing", now), std::nullopt);
  EXPECT_EQ(parse_retry_after("99999999999999999999", now), std::nullopt);
}

TEST_F(ClientRetry, StopsWhenTheBudgetWouldRunOut) {
  auto c = make(retry_policy{100, 10000ms, 20000ms, 30000ms});
  for (int i = 0; i < 100; ++i) {
    transport_->answers.emplace_back(response(503, "{}"));
  }
  ASSERT_FALSE(c.get_host(k_id));
  // 30 s budget, sleeps of 5 s, 10 s, … : never sleeps past the deadline.
  std::chrono::milliseconds slept{0};
  for (const auto d : time_.sleeps) {
    slept += d;
  }
  EXPECT_LT(slept, 30s);
  EXPECT_LT(transport_->seen.size(), 10U);
  for (const auto& req : transport_->seen) {
    EXPECT_GT(req.timeout.count(), 0);
  }
}

TEST_F(ClientRetry, ClientErrorsAreNotRetried) {
  auto c = make();
  transport_->answers.emplace_back(
      response(404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"));
  const auto h = c.get_host(k_id);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::not_found);
  EXPECT_EQ(transport_->seen.size(), 1U);
  EXPECT_TRUE(time_.sleeps.empty());
}

TEST_F(ClientRetry, CreateRetriesReuseOneGeneratedIdempotencyKey) {
  auto c = make();
  transport_->answers.emplace_back(make_error(errc::unavailable, "timed out"));
  transport_->answers.emplace_back(response(503, "{}"));
  transport_->answers.emplace_back(
      response(201, host_body(sample_host(k_id, schema::host_status::active))));
  const auto created = c.create_host({});
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_EQ(transport_->seen.size(), 3U);
  EXPECT_TRUE(parse_uuid(created->idempotency_key));
  for (const auto& req : transport_->seen) {
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.url, "http://svc/hosts");
    int keys = 0;
    for (const auto& [name, value] : req.headers) {
      if (name == "Idempotency-Key") {
        ++keys;
        EXPECT_EQ(value, created->idempotency_key);
      }
    }
    EXPECT_EQ(keys, 1);
    EXPECT_LE(req.timeout, 300s);  // each attempt gets what is left of the create budget
  }
  EXPECT_EQ(transport_->seen[0].timeout, 300s);
}

TEST_F(ClientRetry, CreateSendsTheCallersKeyAndBody) {
  auto c = make();
  transport_->answers.emplace_back(
      response(202, host_body(sample_host(k_id, schema::host_status::provisioning))));
  create_options o;
  o.image = "registry/x:1";
  o.env = {{"A", "1"}};
  o.expires_in = 2h;
  o.cpus = 2;
  o.ssh_authorized_keys = std::vector<std::string>{"ssh-ed25519 AAAA k"};
  o.idempotency_key = "my-key";
  o.async = true;
  const auto created = c.create_host(o);
  ASSERT_TRUE(created);
  EXPECT_EQ(created->idempotency_key, "my-key");
  EXPECT_EQ(created->host.status, schema::host_status::provisioning);
  const auto& req = transport_->seen.at(0);
  const auto body = nlohmann::json::parse(req.body);
  EXPECT_EQ(body["image"], "registry/x:1");
  EXPECT_EQ(body["env"]["A"], "1");
  EXPECT_EQ(body["cpus"], 2);
  EXPECT_EQ(body["expires_at"], "2027-01-15T10:00:00.000000Z");  // injected now + 2 h
  EXPECT_EQ(body["ssh_authorized_keys"][0], "ssh-ed25519 AAAA k");
  bool prefer = false;
  bool auth = false;
  for (const auto& [name, value] : req.headers) {
    prefer = prefer || (name == "Prefer" && value == "respond-async");
    auth = auth || (name == "Authorization" && value == "Bearer tok");
  }
  EXPECT_TRUE(prefer);
  EXPECT_TRUE(auth);
}

TEST_F(ClientRetry, NoExpirySendsExplicitNullAndConflictingLeasesAreRejected) {
  auto c = make();
  transport_->answers.emplace_back(
      response(201, host_body(sample_host(k_id, schema::host_status::active))));
  create_options o;
  o.no_expiry = true;
  ASSERT_TRUE(c.create_host(o));
  const auto body = nlohmann::json::parse(transport_->seen.at(0).body);
  ASSERT_TRUE(body.contains("expires_at"));
  EXPECT_TRUE(body["expires_at"].is_null());
  o.expires_in = 1h;
  const auto bad = c.create_host(o);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_EQ(transport_->seen.size(), 1U);
}

TEST_F(ClientRetry, ProvisioningFailureIsNotRetried) {
  auto c = make();
  transport_->answers.emplace_back(response(
      502, R"({"detail":"BootTimeout: guest silent","error_code":"PROVISIONING_FAILED"})"));
  const auto created = c.create_host({});
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, errc::provisioning_failed);
  EXPECT_EQ(created.error().message, "BootTimeout: guest silent");
  EXPECT_EQ(transport_->seen.size(), 1U);
}

TEST_F(ClientRetry, ListFollowsNextLinksAndStopsAtTheLimit) {
  auto c = make();
  const std::string a = "0190a1b2-c3d4-7e5f-8a6b-00000000000a";
  const std::string b = "0190a1b2-c3d4-7e5f-8a6b-00000000000b";
  const std::string d = "0190a1b2-c3d4-7e5f-8a6b-00000000000d";
  auto page = [](std::vector<std::string> ids) {
    auto arr = nlohmann::ordered_json::array();
    for (const auto& id : ids) {
      arr.push_back(schema::to_json(sample_host(id, schema::host_status::active)));
    }
    return arr.dump();
  };
  transport_->answers.emplace_back(
      response(200, page({a, b}), {{"link", "</hosts?limit=2&after=" + b + ">; rel=\"next\""}}));
  transport_->answers.emplace_back(response(200, page({d})));
  list_options lo;
  lo.statuses = {schema::host_status::active, schema::host_status::error};
  const auto hosts = c.list_hosts(lo);
  ASSERT_TRUE(hosts) << hosts.error().message;
  ASSERT_EQ(hosts->size(), 3U);
  EXPECT_EQ((*hosts)[2].id, d);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/hosts?status=active&status=error");
  EXPECT_EQ(transport_->seen[1].url, "http://svc/hosts?status=active&status=error&after=" + b);

  transport_->seen.clear();
  transport_->answers.emplace_back(
      response(200, page({a, b}), {{"link", "</hosts?after=" + b + ">; rel=\"next\""}}));
  lo = {};
  lo.limit = 2;
  const auto limited = c.list_hosts(lo);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->size(), 2U);
  EXPECT_EQ(transport_->seen.size(), 1U);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/hosts?limit=2");
}

TEST_F(ClientRetry, WaitForReportsEachStatusChangeUntilActive) {
  auto c = make();
  for (auto s : {schema::host_status::provisioning, schema::host_status::provisioning,
                 schema::host_status::pulling_image, schema::host_status::bootstrapping,
                 schema::host_status::active}) {
    transport_->answers.emplace_back(response(200, host_body(sample_host(k_id, s))));
  }
  std::vector<schema::host_status> seen;
  const auto h = c.wait_for(k_id, schema::host_status::active, 60s,
                            [&](const schema::host& x) { seen.push_back(x.status); });
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(seen, (std::vector<schema::host_status>{
                      schema::host_status::provisioning, schema::host_status::pulling_image,
                      schema::host_status::bootstrapping, schema::host_status::active}));
  EXPECT_EQ(time_.sleeps.size(), 4U);
}

TEST_F(ClientRetry, WaitForTurnsErrorStatusIntoProvisioningFailed) {
  auto c = make();
  auto failed = sample_host(k_id, schema::host_status::error);
  failed.last_error = "ImageNotFound: nope";
  transport_->answers.emplace_back(response(200, host_body(failed)));
  const auto h = c.wait_for(k_id, schema::host_status::active, 60s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::provisioning_failed);
  EXPECT_EQ(h.error().message, "ImageNotFound: nope");
}

TEST_F(ClientRetry, WaitForTimesOut) {
  auto c = make();
  for (int i = 0; i < 100; ++i) {
    transport_->answers.emplace_back(
        response(200, host_body(sample_host(k_id, schema::host_status::bootstrapping))));
  }
  const auto h = c.wait_for(k_id, schema::host_status::active, 5s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::timeout);
  EXPECT_LE(time_.now - std::chrono::steady_clock::time_point{}, 5s);
}

TEST_F(ClientRetry, IdsAreEscapedIntoThePath) {
  auto c = make();
  transport_->answers.emplace_back(response(
      422, R"({"detail":[{"type":"uuid_parsing","loc":["path","host_id"],"msg":"bad"}]})"));
  const auto h = c.get_host("../doctor?x=1");
  ASSERT_FALSE(h);
  EXPECT_EQ(transport_->seen[0].url, "http://svc/hosts/..%2Fdoctor%3Fx%3D1");
}

TEST_F(ClientRetry, MalformedHostIsABadResponse) {
  auto c = make();
  transport_->answers.emplace_back(response(200, R"({"id": 1})"));
  const auto h = c.get_host(k_id);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::bad_response);
}

}  // namespace
}  // namespace litterbox::client
