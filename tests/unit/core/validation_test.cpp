#include "controlplane/core/validation.hpp"

#include "controlplane/core/errc.hpp"
#include "schema/requests.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace litterbox::controlplane {
namespace {

using json = nlohmann::json;

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

TEST(Validation, ImagesFollowTheImageParsersGrammarNotALooserOne) {
  // Accepted here but refused by the image pipeline before: uppercase repositories and '+'.
  for (const char* bad : {"Alpine", "reg.io/Team/tool:1", "reg.io/a+b:1", "reg.io/a:1+x",
                          "-x.io/a:1", "a//b", "alpine:"}) {
    SCOPED_TRACE(bad);
    const json body = {{"image", bad}};
    auto r = validate_body(body.dump());
    ASSERT_FALSE(r);
    ASSERT_EQ(r.error().issues.size(), 1U);
    EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"body", "image"}));
  }
  // Tags may use uppercase; registries are host names.
  EXPECT_TRUE(validate_body(R"({"image": "reg.io/team/tool:V1.2_rc-3"})"));
  EXPECT_TRUE(validate_body(R"({"image": "alpine"})"));
  EXPECT_TRUE(validate_body(R"({"image": "localhost/a/b:1"})"));
}

// A real ed25519 public key line with `comment` after it.
std::string key_with_comment(const std::string& comment) {
  return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl " +
         comment;
}

TEST(Validation, KeyCommentsCloudInitWouldRejectAre422AtOnce) {
  ASSERT_TRUE(validate_body(
      json{{"ssh_authorized_keys", json::array({key_with_comment("me@host")})}}.dump()));
  ASSERT_TRUE(validate_body(
      json{{"ssh_authorized_keys", json::array({key_with_comment("J\u00f6rg \u2603")})}}.dump()));
  for (const std::string& comment : {std::string("a\xef\xbf\xbe"),      // U+FFFE
                                     std::string("a\xef\xbf\xbf"),      // U+FFFF
                                     std::string("a\xf0\x9f\xbf\xbf"),  // U+1FFFF
                                     std::string("a\xef\xb7\x90"),      // U+FDD0
                                     std::string("a\xc2\x85"),          // U+0085, a C1 control
                                     std::string("a\x1b[31m"),          // ESC, a C0 control
                                     std::string("a\x7f"),              // DEL
                                     std::string("a\ttab")}) {
    SCOPED_TRACE(comment);
    schema::create_host_request req;
    req.ssh_authorized_keys =
        std::vector<std::string>{key_with_comment("ok"), key_with_comment(comment)};
    auto r = validate_create(req, config{}, k_now, "fake");
    ASSERT_FALSE(r);
    ASSERT_EQ(r.error().issues.size(), 1U);
    EXPECT_EQ(r.error().issues[0].loc,
              (std::vector<std::string>{"body", "ssh_authorized_keys", "1"}));
  }
}

TEST(Validation, KeyLinesThatAreNotUtf8AreRejected) {
  for (const std::string& text : {std::string("a\xff"), std::string("a\xc0\xaf"),  // overlong '/'
                                  std::string("a\xed\xa0\x80"),                    // a surrogate
                                  std::string("a\xe2\x82")}) {                     // cut short
    SCOPED_TRACE(text);
    EXPECT_FALSE(is_clean_key_text(key_with_comment(text)));
  }
  EXPECT_TRUE(is_clean_key_text(key_with_comment("plain ascii")));
}

TEST(Validation, DiskSmallerThanAKnownImageSizeIsRefusedAtDiskGb) {
  const auto three_gib = [](std::string_view image) -> std::optional<std::uint64_t> {
    if (image == "reg.io/a/b:1") {
      return (std::uint64_t{5} << 29);  // 2.5 GiB: needs 3
    }
    return std::nullopt;
  };
  auto req = schema::parse_create_host_request(R"({"image": "reg.io/a/b:1", "disk_gb": 2})");
  ASSERT_TRUE(req);
  auto r = validate_create(*req, config{}, k_now, "fake", three_gib);
  ASSERT_FALSE(r);
  ASSERT_EQ(r.error().issues.size(), 1U);
  EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"body", "disk_gb"}));
  EXPECT_EQ(r.error().issues[0].msg,
            "Value error, disk_gb must be at least 3 for image reg.io/a/b:1");

  req->disk_gb = 3;
  EXPECT_TRUE(validate_create(*req, config{}, k_now, "fake", three_gib));
  // Unknown size (not cached, or a tag): left to the pipeline.
  req->image = "reg.io/other:1";
  req->disk_gb = 1;
  EXPECT_TRUE(validate_create(*req, config{}, k_now, "fake", three_gib));
  // An instance type's disk is held to the same rule.
  config cfg;
  cfg.instance_types.push_back({"tiny", 1, 512, 1});
  auto typed =
      schema::parse_create_host_request(R"({"image": "reg.io/a/b:1", "instance_type": "tiny"})");
  ASSERT_TRUE(typed);
  auto t = validate_create(*typed, cfg, k_now, "fake", three_gib);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().issues[0].loc, (std::vector<std::string>{"body", "disk_gb"}));
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
