#include "tests/integration/api/api_fixture.hpp"

#include <set>
#include <thread>

namespace litterbox::test::api {
namespace {

constexpr std::string_view k_mismatch_msg =
    "Idempotency-Key was already used with a different request";

class idempotency : public api_test {
 protected:
  http_response create_with_key(std::string body, std::string key,
                                std::vector<http_header> extra = {}) const {
    extra.emplace_back("Idempotency-Key", std::move(key));
    return create(std::move(body), std::move(extra));
  }
  std::size_t host_count() const { return list_all().size(); }
};

TEST_F(idempotency, SameKeySameBodyReplaysTheOriginalHostWithoutANewOne) {
  const std::string body = R"({"image": "registry.test/idem:1", "cpus": 2})";
  const auto first = create_with_key(body, "replay-key-1");
  ASSERT_EQ(first.status, 201) << first;
  const auto count = host_count();
  const auto second = create_with_key(body, "replay-key-1");
  ASSERT_EQ(second.status, 201) << "a replay is 201 too: " << second;
  const auto a = body_json(first);
  const auto b = body_json(second);
  expect_host_shape(b);
  EXPECT_EQ(a["id"], b["id"]);
  EXPECT_EQ(b["status"], "active");
  EXPECT_EQ(host_count(), count) << "a replay must not create a second host";
}

TEST_F(idempotency, ReplayDoesNotReturnThePrivateKeyAgain) {
  const auto first = create_with_key("{}", "replay-key-private");
  ASSERT_EQ(first.status, 201) << first;
  EXPECT_TRUE(body_json(first)["private_key"].is_string()) << first;
  const auto second = create_with_key("{}", "replay-key-private");
  ASSERT_EQ(second.status, 201) << second;
  EXPECT_TRUE(body_json(second)["private_key"].is_null()) << second;
}

TEST_F(idempotency, EquivalentBodyWithOtherKeyOrderIsTheSameRequest) {
  const auto first = create_with_key(R"({"cpus": 2, "memory_mib": 2048})", "reorder-key");
  ASSERT_EQ(first.status, 201) << first;
  const auto second = create_with_key(R"({"memory_mib": 2048,  "cpus": 2})", "reorder-key");
  ASSERT_EQ(second.status, 201) << second;
  EXPECT_EQ(body_json(first)["id"], body_json(second)["id"]);
}

TEST_F(idempotency, SameKeyDifferentBodyIs422WithDocumentedMessage) {
  ASSERT_EQ(create_with_key(R"({"cpus": 1})", "mismatch-key").status, 201);
  const auto count = host_count();
  const auto r = create_with_key(R"({"cpus": 2})", "mismatch-key");
  ASSERT_EQ(r.status, 422) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object() && j["detail"].is_array() && !j["detail"].empty()) << r;
  EXPECT_EQ(j["detail"][0].value("msg", ""), k_mismatch_msg) << r;
  EXPECT_EQ(host_count(), count);
}

TEST_F(idempotency, KeysAreSharedByAllConfiguredTokens) {
  const auto first = create_with_key("{}", "rotation-key");
  ASSERT_EQ(first.status, 201) << first;
  auto r = client().send(
      {"POST", "/hosts", {bearer(k_token2), {"Idempotency-Key", "rotation-key"}}, "{}"});
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(body_json(r)["id"], body_json(first)["id"]);
}

TEST_F(idempotency, HundredConcurrentCreatesWithOneKeyMakeExactlyOneHost) {
  constexpr int k_callers = 100;
  const std::string body = R"({"image": "registry.test/race:1"})";
  const auto before = list_all();
  std::vector<http_response> responses(k_callers);
  {
    std::vector<std::jthread> callers;
    callers.reserve(k_callers);
    for (int i = 0; i < k_callers; ++i) {
      callers.emplace_back([&, i] {
        responses[static_cast<std::size_t>(i)] = client().send(
            {"POST", "/hosts", {bearer(), {"Idempotency-Key", "race-key-100"}}, body});
      });
    }
  }
  std::set<std::string> ids;
  for (const auto& r : responses) {
    EXPECT_EQ(r.status, 201) << r;
    const auto j = json::parse(r.body, nullptr, false);
    if (r.status == 201 && j.is_object() && j["id"].is_string()) {
      ids.insert(j["id"].get<std::string>());
      EXPECT_EQ(j["status"], "active") << r;
    }
  }
  EXPECT_EQ(ids.size(), 1U) << "every caller gets the same host";
  const auto after = list_all();
  EXPECT_EQ(after.size(), before.size() + 1) << "exactly one host was created";
  std::size_t with_image = 0;
  for (const auto& h : after) {
    with_image += h["image"] == "registry.test/race:1" ? 1U : 0U;
  }
  EXPECT_EQ(with_image, 1U);
}

TEST_F(idempotency, KeyIsFreeAgainAfterAFailedCreate) {
  const std::string body = R"({"image": "registry.test/fail-create:retry"})";
  const auto first = create_with_key(body, "retry-after-502");
  ASSERT_EQ(first.status, 502) << first;
  const auto detail = body_json(first)["detail"].get<std::string>();
  const auto failed_before = body_json(get("/hosts?status=error"));
  const auto second = create_with_key(body, "retry-after-502");
  ASSERT_EQ(second.status, 502) << "the retry provisions afresh (and fails again): " << second;
  const auto failed_after = body_json(get("/hosts?status=error"));
  ASSERT_TRUE(failed_before.is_array() && failed_after.is_array());
  EXPECT_EQ(failed_after.size(), failed_before.size() + 1)
      << "the retry made a new host, not a replay of the failed one";
  std::set<std::string> ids;
  for (const auto& h : failed_after) {
    if (h["image"] == "registry.test/fail-create:retry") {
      ids.insert(h["id"].get<std::string>());
    }
  }
  EXPECT_EQ(ids.size(), 2U) << failed_after.dump();
}

class idempotency_key_format : public idempotency,
                               public ::testing::WithParamInterface<std::string> {};

TEST_P(idempotency_key_format, MalformedKeyIs422AtTheHeader) {
  const auto count = host_count();
  const auto r = create_with_key("{}", GetParam());
  expect_validation(r, {"header", "Idempotency-Key"});
  EXPECT_EQ(host_count(), count);
}

INSTANTIATE_TEST_SUITE_P(malformed, idempotency_key_format,
                         ::testing::Values(std::string(), std::string(256, 'k'),
                                           std::string("has space"), std::string("slash/key"),
                                           std::string("k\xc3\xa9y"), std::string("semi;colon"),
                                           std::string("quote\"d")),
                         [](const auto& p) { return "case" + std::to_string(p.index); });

TEST_F(idempotency, KeyOf255AllowedCharactersIsAccepted) {
  std::string key = "AZaz09_-:.";
  key.resize(255, 'x');
  const auto r = create_with_key("{}", key);
  EXPECT_EQ(r.status, 201) << r;
  const auto replay = create_with_key("{}", key);
  EXPECT_EQ(replay.status, 201) << replay;
  EXPECT_EQ(body_json(r)["id"], body_json(replay)["id"]);
}

}  // namespace
}  // namespace litterbox::test::api
