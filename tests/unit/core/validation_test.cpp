#include "controlplane/core/validation.hpp"

#include "controlplane/core/errc.hpp"
#include "schema/requests.hpp"

#include <gtest/gtest.h>

namespace litterbox::controlplane {
namespace {

const timestamp k_now = timestamp(std::chrono::seconds(1'800'000'000));

result<resolved_create> validate_body(std::string_view body, const config& cfg = {}) {
  auto req = schema::parse_create_host_request(body);
  EXPECT_TRUE(req) << body;
  return validate_create(*req, cfg, k_now, "fake");
}

std::string only_msg(const result<resolved_create>& r) {
  EXPECT_FALSE(r);
  EXPECT_EQ(r.error().issues.size(), 1U);
  return r.error().issues.empty() ? "" : r.error().issues[0].msg;
}

TEST(Validation, EmptyBodyResolvesToConfiguredDefaults) {
  config cfg;
  cfg.default_image = "registry.test/base:1";
  auto r = validate_body("", cfg);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->image, "registry.test/base:1");
  EXPECT_EQ(r->cpus, cfg.default_cpus);
  EXPECT_EQ(r->memory_mib, cfg.default_memory_mib);
  EXPECT_EQ(r->expiry, schema::expiry_kind::omitted);
  EXPECT_TRUE(r->authorized_keys.empty());
}

TEST(Validation, ReservedEnvKeysAreListedSortedWithTheDocumentedMessage) {
  auto r = validate_body(R"({"env": {"TAILSCALE_AUTHKEY": "x", "LITTERBOX_B": "1", "OK": "y"}})");
  EXPECT_EQ(only_msg(r),
            "Value error, reserved env keys are not allowed: LITTERBOX_B, TAILSCALE_AUTHKEY");
  EXPECT_EQ(r.error().code, errc::validation);
  EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"body", "env"}));
}

TEST(Validation, EnvValuesWithNulCrOrLfAreRejectedWithoutEchoingTheValue) {
  for (const char* body : {R"({"env": {"K": "a\u0000b"}})", R"({"env": {"K": "a\rb"}})",
                           R"({"env": {"K": "secret\nvalue"}})"}) {
    auto r = validate_body(body);
    const auto msg = only_msg(r);
    EXPECT_NE(msg.find("NUL, CR or LF"), std::string::npos) << body;
    EXPECT_EQ(msg.find("secret"), std::string::npos);
  }
}

TEST(Validation, EnvKeysMustMatchThePosixPattern) {
  for (const char* body : {R"({"env": {"1A": "x"}})", R"({"env": {"A-B": "x"}})",
                           R"({"env": {"": "x"}})", R"({"env": {"A B": "x"}})"}) {
    EXPECT_NE(only_msg(validate_body(body)).find("env keys must match"), std::string::npos) << body;
  }
  EXPECT_TRUE(validate_body(R"({"env": {"_a1": "x", "Z": ""}})"));
}

TEST(Validation, EnvOverTheSizeLimitIsRejected) {
  config cfg;
  cfg.max_env_bytes = 16;
  EXPECT_NE(only_msg(validate_body(R"({"env": {"KEY": "0123456789abcdef"}})", cfg))
                .find("env is too large"),
            std::string::npos);
}

TEST(Validation, SizesMustBePositiveAndWithinMaxima) {
  config cfg;
  cfg.max_cpus = 4;
  EXPECT_EQ(only_msg(validate_body(R"({"cpus": 0})", cfg)), "Input should be greater than 0");
  EXPECT_EQ(only_msg(validate_body(R"({"cpus": -3})", cfg)), "Input should be greater than 0");
  EXPECT_EQ(only_msg(validate_body(R"({"cpus": 5})", cfg)),
            "Input should be less than or equal to 4");
  EXPECT_FALSE(validate_body(R"({"memory_mib": 99999999999})", cfg));
  auto ok = validate_body(R"({"cpus": 2, "memory_mib": 2048, "disk_gb": 20})", cfg);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->cpus, 2);
  EXPECT_EQ(ok->disk_gb, 20);
}

TEST(Validation, UnknownInstanceTypeIsABadRequestAndKnownOnesSetSizes) {
  config cfg;
  cfg.instance_types = default_instance_types();
  auto bad = validate_body(R"({"instance_type": "huge"})", cfg);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::bad_request);
  auto ok = validate_body(R"({"instance_type": "medium", "cpus": 3})", cfg);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->cpus, 3);  // an explicit size overrides the named one
  EXPECT_EQ(ok->memory_mib, 2048);
}

TEST(Validation, UnknownProviderIsABadRequest) {
  auto r = validate_body(R"({"provider": "aws"})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_request);
  EXPECT_TRUE(validate_body(R"({"provider": "fake"})"));
}

TEST(Validation, ExpiresAtMustBeInTheFuture) {
  EXPECT_EQ(only_msg(validate_body(R"({"expires_at": "2020-01-01T00:00:00Z"})")),
            "Value error, expires_at must be in the future");
  auto ok = validate_body(R"({"expires_at": "2030-01-01T02:00:00+02:00"})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->expiry, schema::expiry_kind::at);
  auto never = validate_body(R"({"expires_at": null})");
  ASSERT_TRUE(never);
  EXPECT_EQ(never->expiry, schema::expiry_kind::never);
}

TEST(Validation, BlankOrOptionLikeImagesAreRejected) {
  EXPECT_EQ(only_msg(validate_body(R"({"image": "  "})")), "Value error, image must not be blank");
  EXPECT_FALSE(validate_body(R"({"image": "--help"})"));
  EXPECT_FALSE(validate_body(R"({"image": "a b"})"));
  EXPECT_FALSE(validate_body(R"({"image": "x;rm -rf /"})"));
  EXPECT_TRUE(validate_body(R"({"image": "127.0.0.1:5000/litterbox/debian:12"})"));
  EXPECT_TRUE(validate_body(
      R"({"image": "reg.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"})"));
}

TEST(Validation, AuthorizedKeysMustBeOpenSshPublicKeysEachWithItsIndex) {
  auto r = validate_body(R"({"ssh_authorized_keys": ["not a key", "ssh-ed25519 AAAA"]})");
  ASSERT_FALSE(r);
  ASSERT_EQ(r.error().issues.size(), 2U);
  EXPECT_EQ(r.error().issues[1].loc,
            (std::vector<std::string>{"body", "ssh_authorized_keys", "1"}));
}

TEST(Validation, IdempotencyKeysFollowTheDocumentedAlphabetAndLength) {
  EXPECT_TRUE(is_valid_idempotency_key("abc-DEF_123:x.y"));
  EXPECT_TRUE(is_valid_idempotency_key(std::string(255, 'k')));
  EXPECT_FALSE(is_valid_idempotency_key(""));
  EXPECT_FALSE(is_valid_idempotency_key(std::string(256, 'k')));
  EXPECT_FALSE(is_valid_idempotency_key("a b"));
  EXPECT_FALSE(is_valid_idempotency_key("caf\xc3\xa9"));
  EXPECT_FALSE(is_valid_idempotency_key("a/b"));
}

}  // namespace
}  // namespace litterbox::controlplane
