#include "tests/integration/api/api_fixture.hpp"

#include <chrono>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view k_public_key =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIISS+aqm15VDgQsA3QJ9CZ8FkGnxcGEiEwZApdBRiNTO "
    "test@litterbox";

class create_host : public api_test {};

TEST_F(create_host, BlockingCreateReturns201ActiveHostOfTheDocumentedShape) {
  const auto r = create(R"({"image": "registry.test/team/base:1"})");
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.header("Content-Type").value_or("").substr(0, 16), "application/json");
  const auto h = body_json(r);
  expect_host_shape(h);
  EXPECT_EQ(h["status"], "active");
  EXPECT_EQ(h["image"], "registry.test/team/base:1");
  EXPECT_TRUE(h["activated_at"].is_string());
  EXPECT_NE(h["ssh_username"], "");
}

TEST_F(create_host, A201AndItsReplaySayHowTheCreateWasServed) {
  const auto r = create("{}", {{"Idempotency-Key", "served-how"}});
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.header("X-Litterbox-Create-Path").value_or(""), "boot") << r;
  const auto replay = create("{}", {{"Idempotency-Key", "served-how"}});
  ASSERT_EQ(replay.status, 201) << replay;
  EXPECT_EQ(replay.header("X-Litterbox-Create-Path").value_or(""), "boot") << replay;
  EXPECT_TRUE(body_json(replay)["private_key"].is_null()) << replay;
}

TEST_F(create_host, EmptyBodyMeansAllDefaults) {
  const auto r = call("POST", "/hosts", "");
  ASSERT_EQ(r.status, 201) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  EXPECT_EQ(h["status"], "active");
  EXPECT_NE(h["image"], "") << "the configured default image is used";
  EXPECT_GT(h["cpus"].get<int>(), 0);
  EXPECT_GT(h["memory_mib"].get<int>(), 0);
  EXPECT_TRUE(h["instance_type"].is_null());
  EXPECT_TRUE(h["disk_gb"].is_null());
}

TEST_F(create_host, EmptyObjectMeansAllDefaults) {
  const auto h = create_active("{}");
  expect_host_shape(h);
  EXPECT_NE(h.value("image", ""), "");
  EXPECT_TRUE(h["instance_type"].is_null());
}

TEST_F(create_host, UnknownFieldsAreIgnored) {
  const auto h = create_active(R"({"flavor": "x", "nested": {"a": [1, 2]}, "cpus": 2})");
  expect_host_shape(h);
  EXPECT_EQ(h["cpus"], 2);
}

TEST_F(create_host, RequestedSizesAreReturned) {
  const auto h = create_active(R"({"cpus": 2, "memory_mib": 2048, "disk_gb": 10})");
  expect_host_shape(h);
  EXPECT_EQ(h["cpus"], 2);
  EXPECT_EQ(h["memory_mib"], 2048);
  EXPECT_EQ(h["disk_gb"], 10);
}

TEST_F(create_host, SizesAtTheConfiguredMaximaAreAccepted) {
  const auto h = create_active(json{
      {"cpus", k_max_cpus},
      {"memory_mib", k_max_memory_mib},
      {"disk_gb", k_max_disk_gb}}.dump());
  EXPECT_EQ(h["cpus"], k_max_cpus);
  EXPECT_EQ(h["memory_mib"], k_max_memory_mib);
  EXPECT_EQ(h["disk_gb"], k_max_disk_gb);
}

TEST_F(create_host, InstanceTypeSetsItsSize) {
  const auto h = create_active(R"({"instance_type": "medium"})");
  expect_host_shape(h);
  EXPECT_EQ(h["instance_type"], "medium");
  EXPECT_EQ(h["cpus"], 2);
  EXPECT_EQ(h["memory_mib"], 2048);
  EXPECT_EQ(h["disk_gb"], 20);
}

TEST_F(create_host, UnknownInstanceTypeIs400BadRequest) {
  const auto r = create(R"({"instance_type": "gigantic"})");
  EXPECT_EQ(r.status, 400) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(j["detail"].is_string()) << r;
  EXPECT_EQ(j.value("error_code", ""), "BAD_REQUEST") << r;
}

TEST_F(create_host, MintedPrivateKeyIsReturnedOnlyInTheCreatingResponse) {
  const auto h = create_active("{}");
  ASSERT_TRUE(h["private_key"].is_string()) << h.dump();
  EXPECT_TRUE(
      h["private_key"].get<std::string>().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
      << h["private_key"];
  const auto again = get("/hosts/" + h["id"].get<std::string>());
  ASSERT_EQ(again.status, 200) << again;
  const auto g = body_json(again);
  expect_host_shape(g);
  EXPECT_TRUE(g["private_key"].is_null()) << "never returned again: " << again;
  for (const auto& listed : list_all()) {
    EXPECT_TRUE(listed["private_key"].is_null()) << listed.dump();
  }
}

TEST_F(create_host, CallerKeysMeanNoMintedPrivateKey) {
  const auto h = create_active(json{{"ssh_authorized_keys", json::array({k_public_key})}}.dump());
  expect_host_shape(h);
  EXPECT_TRUE(h["private_key"].is_null()) << h.dump();
}

TEST_F(create_host, EnvIsNeverReturned) {
  const auto h = create_active(R"({"env": {"GREETING": "secret-value-42", "_X1": ""}})");
  expect_host_shape(h);
  const auto id = h["id"].get<std::string>();
  const auto g = get("/hosts/" + id);
  EXPECT_EQ(g.body.find("secret-value-42"), std::string::npos) << g;
  EXPECT_EQ(g.body.find("\"env\""), std::string::npos) << g;
  const auto l = get("/hosts");
  EXPECT_EQ(l.body.find("secret-value-42"), std::string::npos) << l;
}

TEST_F(create_host, RespondAsyncReturns202ThenPollingReachesActive) {
  const auto r = create(R"({"image": "registry.test/async:1"})", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  const auto id = h["id"].get<std::string>();
  const auto done = poll_host(id, [](const json& x) {
    return x.value("status", "") == "active" || x.value("status", "") == "error";
  });
  expect_host_shape(done);
  EXPECT_EQ(done["status"], "active") << done.dump();
  EXPECT_EQ(done["id"], id);
  EXPECT_TRUE(done["private_key"].is_null()) << "GET never returns the private key";
}

TEST_F(create_host, RespondAsyncFailureEndsInErrorWithLastError) {
  const auto r =
      create(R"({"image": "registry.test/fail-create:1"})", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto id = body_json(r)["id"].get<std::string>();
  const auto done = poll_host(id, [](const json& x) { return x.value("status", "") == "error"; });
  expect_host_shape(done);
  EXPECT_TRUE(done.value("last_error", "").starts_with("VmCreateFailed: ")) << done.dump();
}

struct failure_case {
  std::string image;
  std::string kind;
};

class create_failure : public api_test, public ::testing::WithParamInterface<failure_case> {};

TEST_P(create_failure, Is502WithKindAndHostInError) {
  const auto& c = GetParam();
  const auto r = create(json{{"image", c.image}}.dump());
  ASSERT_EQ(r.status, 502) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j.value("error_code", ""), "PROVISIONING_FAILED") << r;
  ASSERT_TRUE(j["detail"].is_string()) << r;
  const auto detail = j["detail"].get<std::string>();
  EXPECT_TRUE(detail.starts_with(c.kind + ": ")) << r;
  EXPECT_GT(detail.size(), c.kind.size() + 2) << "a message follows the kind";
  EXPECT_EQ(detail.find("    at "), std::string::npos) << "never a stack trace";
  const auto failed = find_failed(detail);
  ASSERT_TRUE(failed.is_object());
  expect_host_shape(failed);
  EXPECT_EQ(failed["image"], c.image);
  EXPECT_EQ(failed["status"], "error");
  EXPECT_EQ(failed["known_hosts"], "");
}

INSTANTIATE_TEST_SUITE_P(
    fake_failures, create_failure,
    ::testing::Values(failure_case{"registry.test/missing:1", "ImageNotFound"},
                      failure_case{"registry.test/corrupt:1", "ImageCorrupt"},
                      failure_case{"registry.test/fail-create:1", "VmCreateFailed"},
                      failure_case{"registry.test/fail-boot:1", "BootTimeout"}),
    [](const auto& p) {
      std::string name = p.param.kind;
      return name;
    });

class expiry : public api_test {};

TEST_F(expiry, OmittedExpiresAtIsActivationPlusDefaultLease) {
  const auto h = create_active("{}");
  ASSERT_TRUE(h["activated_at"].is_string() && h["expires_at"].is_string()) << h.dump();
  const auto lease = parse_time(h["expires_at"]) - parse_time(h["activated_at"]);
  // The lease is stamped from the same activation instant; allow for two clock reads.
  EXPECT_GE(lease, std::chrono::seconds(k_lease_seconds) - 2s) << h.dump();
  EXPECT_LE(lease, std::chrono::seconds(k_lease_seconds) + 2s) << h.dump();
}

TEST_F(expiry, ExplicitNullNeverExpires) {
  const auto h = create_active(R"({"expires_at": null})");
  expect_host_shape(h);
  EXPECT_TRUE(h["expires_at"].is_null()) << h.dump();
  const auto g = body_json(get("/hosts/" + h["id"].get<std::string>()));
  EXPECT_TRUE(g["expires_at"].is_null()) << g.dump();
}

TEST_F(expiry, TimestampWithOffsetIsStoredInUtc) {
  const auto h = create_active(R"({"expires_at": "2099-06-01T12:30:00+02:00"})");
  expect_host_shape(h);
  ASSERT_TRUE(h["expires_at"].is_string()) << h.dump();
  const auto text = h["expires_at"].get<std::string>();
  EXPECT_TRUE(text.starts_with("2099-06-01T10:30:00")) << text;
  EXPECT_TRUE(text.ends_with("Z")) << text;
  EXPECT_EQ(parse_time(h["expires_at"]), parse_time(json("2099-06-01T10:30:00Z")));
}

TEST_F(expiry, FractionalSecondsSurviveToMicroseconds) {
  const auto h = create_active(R"({"expires_at": "2099-01-02T03:04:05.123456Z"})");
  EXPECT_EQ(parse_time(h["expires_at"]), parse_time(json("2099-01-02T03:04:05.123456Z")))
      << h.dump();
}

}  // namespace
}  // namespace litterbox::test::api
