#include "tests/integration/api/api_fixture.hpp"

namespace litterbox::test::api {
namespace {

class validation : public api_test {
 protected:
  /// POST /hosts with `body`, expecting a 422 item at `loc` and no new host.
  json expect_rejected(const std::string& body, const std::vector<std::string>& loc) const {
    const auto before = list_all().size();
    const auto r = create(body);
    auto item = expect_validation(r, loc);
    EXPECT_EQ(list_all().size(), before) << "a rejected create leaves no host";
    return item;
  }
};

TEST_F(validation, ReservedEnvKeysAreListedSortedWithDocumentedMessage) {
  const auto item = expect_rejected(
      R"({"env": {"TAILSCALE_AUTHKEY": "tskey", "LITTERBOX_X": "1", "OK": "fine"}})",
      {"body", "env"});
  EXPECT_EQ(item.value("msg", ""),
            "Value error, reserved env keys are not allowed: LITTERBOX_X, TAILSCALE_AUTHKEY");
  EXPECT_EQ(item.value("type", ""), "value_error");
}

TEST_F(validation, SingleReservedEnvKey) {
  const auto item = expect_rejected(R"({"env": {"TAILSCALE_AUTHKEY": "tskey"}})", {"body", "env"});
  EXPECT_EQ(item.value("msg", ""),
            "Value error, reserved env keys are not allowed: TAILSCALE_AUTHKEY");
}

TEST_F(validation, ReservedEnvValuesAreNotEchoed) {
  const auto r = create(R"({"env": {"LITTERBOX_TOKEN": "do-not-echo-this-value"}})");
  EXPECT_EQ(r.status, 422) << r;
  EXPECT_EQ(r.body.find("do-not-echo-this-value"), std::string::npos) << r;
}

class env_key : public validation, public ::testing::WithParamInterface<std::string> {};

TEST_P(env_key, KeyNotMatchingThePatternIs422AtEnv) {
  expect_rejected(json{{"env", json{{GetParam(), "v"}}}}.dump(), {"body", "env"});
}

INSTANTIATE_TEST_SUITE_P(bad_keys, env_key,
                         ::testing::Values("", "1LEADING_DIGIT", "HAS-DASH", "HAS SPACE", "A=B",
                                           "DOT.TED", "\xc3\xa9T\xc3\xa9"),
                         [](const auto& p) { return "case" + std::to_string(p.index); });

class env_value : public validation, public ::testing::WithParamInterface<std::string> {};

TEST_P(env_value, ValueWithNulCrOrLfIs422AtEnv) {
  expect_rejected(json{{"env", json{{"KEY", GetParam()}}}}.dump(), {"body", "env"});
}

INSTANTIATE_TEST_SUITE_P(bad_values, env_value,
                         ::testing::Values(std::string("a\0b", 3), std::string("a\rb"),
                                           std::string("a\nb"), std::string("\n")),
                         [](const auto& p) { return "case" + std::to_string(p.index); });

TEST_F(validation, EnvOverTheTotalSizeLimitIs422AtEnv) {
  json env = json::object();
  // 70 KiB in total, every entry valid on its own.
  for (int i = 0; i < 70; ++i) {
    env["K" + std::to_string(i)] = std::string(1024, 'v');
  }
  expect_rejected(json{{"env", env}}.dump(), {"body", "env"});
}

TEST_F(validation, EnvJustUnderTheLimitIsAccepted) {
  json env = json::object();
  for (int i = 0; i < 60; ++i) {
    env["K" + std::to_string(i)] = std::string(1000, 'v');
  }
  const auto h = create_active(json{{"env", env}}.dump());
  EXPECT_EQ(h.value("status", ""), "active");
}

TEST_F(validation, EnvOfWrongTypeIs422UnderEnv) {
  for (const auto* body : {R"({"env": "A=B"})", R"({"env": ["A"]})", R"({"env": {"A": 1}})",
                           R"({"env": {"A": null}})"}) {
    const auto r = create(body);
    ASSERT_EQ(r.status, 422) << body << '\n' << r;
    const auto j = body_json(r);
    ASSERT_TRUE(j["detail"].is_array() && !j["detail"].empty()) << r;
    const auto loc = j["detail"][0]["loc"];
    ASSERT_TRUE(loc.is_array() && loc.size() >= 2) << r;
    EXPECT_EQ(loc[0], "body") << r;
    EXPECT_EQ(loc[1], "env") << r;
  }
}

TEST_F(validation, ExpiresAtInThePastIs422) {
  expect_rejected(R"({"expires_at": "2001-01-01T00:00:00Z"})", {"body", "expires_at"});
}

TEST_F(validation, ExpiresAtWithoutOffsetIs422) {
  expect_rejected(R"({"expires_at": "2099-01-01T00:00:00"})", {"body", "expires_at"});
}

TEST_F(validation, ExpiresAtOfWrongTypeIs422) {
  expect_rejected(R"({"expires_at": 4102444800})", {"body", "expires_at"});
  expect_rejected(R"({"expires_at": true})", {"body", "expires_at"});
  expect_rejected(R"({"expires_at": "tomorrow"})", {"body", "expires_at"});
}

class int_field : public validation,
                  public ::testing::WithParamInterface<std::pair<std::string, std::string>> {};

TEST_P(int_field, OutOfDomainIs422AtTheField) {
  const auto& [field, value] = GetParam();
  expect_rejected("{\"" + field + "\": " + value + "}", {"body", field});
}

INSTANTIATE_TEST_SUITE_P(
    sizes, int_field,
    ::testing::Values(
        std::pair<std::string, std::string>{"cpus", "0"},
        std::pair<std::string, std::string>{"cpus", "-1"},
        std::pair<std::string, std::string>{"cpus", std::to_string(k_max_cpus + 1)},
        std::pair<std::string, std::string>{"cpus", "\"2\""},
        std::pair<std::string, std::string>{"cpus", "1.5"},
        std::pair<std::string, std::string>{"cpus", "true"},
        std::pair<std::string, std::string>{"cpus", "99999999999999999999999"},
        std::pair<std::string, std::string>{"cpus", "1e300"},
        std::pair<std::string, std::string>{"cpus", "[]"},
        std::pair<std::string, std::string>{"memory_mib", "0"},
        std::pair<std::string, std::string>{"memory_mib", std::to_string(k_max_memory_mib + 1)},
        std::pair<std::string, std::string>{"memory_mib", "\"lots\""},
        std::pair<std::string, std::string>{"disk_gb", "0"},
        std::pair<std::string, std::string>{"disk_gb", "-5"},
        std::pair<std::string, std::string>{"disk_gb", std::to_string(k_max_disk_gb + 1)},
        std::pair<std::string, std::string>{"disk_gb", "{}"}),
    [](const auto& p) { return p.param.first + std::to_string(p.index); });

TEST_F(validation, BlankImageIs422) {
  expect_rejected(R"({"image": ""})", {"body", "image"});
  expect_rejected(R"({"image": "   "})", {"body", "image"});
}

TEST_F(validation, ImageOfWrongTypeIs422) {
  expect_rejected(R"({"image": 7})", {"body", "image"});
}

TEST_F(validation, AuthorizedKeysThatAreNotKeysAre422) {
  const auto r = create(R"({"ssh_authorized_keys": ["not a key at all"]})");
  ASSERT_EQ(r.status, 422) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j["detail"].is_array() && !j["detail"].empty()) << r;
  const auto loc = j["detail"][0]["loc"];
  ASSERT_TRUE(loc.is_array() && loc.size() >= 2) << r;
  EXPECT_EQ(loc[0], "body");
  EXPECT_EQ(loc[1], "ssh_authorized_keys");
}

TEST_F(validation, ImagesTheImagePipelineWouldRefuseAre422AtOnce) {
  // One grammar: what admission accepts, the image parser accepts too (no create that fails
  // later with ImageNotFound for a malformed name).
  for (const char* image :
       {"Alpine", "reg.test/Team/tool:1", "reg.test/a+b:1", "reg.test/a:1+x", "-reg.test/a:1"}) {
    SCOPED_TRACE(image);
    expect_rejected(json{{"image", image}}.dump(), {"body", "image"});
  }
}

TEST_F(validation, AuthorizedKeyCommentsCloudInitWouldRejectAre422AtOnce) {
  // cloud-init refuses the whole user-data over one of these, and the create would then
  // hold a slot until its boot timeout.
  const std::string key =
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ";
  for (const std::string& comment :
       {std::string("me\xef\xbf\xbe"), std::string("me\xef\xbf\xbf"), std::string("me\xef\xb7\x90"),
        std::string("me\x1b[2J"), std::string("me\xc2\x9b")}) {
    SCOPED_TRACE(comment);
    expect_rejected(json{{"ssh_authorized_keys", json::array({key + comment})}}.dump(),
                    {"body", "ssh_authorized_keys", "0"});
  }
}

TEST_F(validation, AuthorizedKeysOfWrongTypeAre422) {
  for (const auto* body :
       {R"({"ssh_authorized_keys": "ssh-ed25519 AAAA"})", R"({"ssh_authorized_keys": [1]})",
        R"({"ssh_authorized_keys": ["ssh-ed25519 AAAA\nssh-rsa AAAA"]})"}) {
    const auto r = create(body);
    ASSERT_EQ(r.status, 422) << body << '\n' << r;
    const auto j = body_json(r);
    ASSERT_TRUE(j["detail"].is_array() && !j["detail"].empty()) << r;
    EXPECT_EQ(j["detail"][0]["loc"][1], "ssh_authorized_keys") << r;
  }
}

TEST_F(validation, EveryProblemIsListed) {
  const auto r = create(R"({"cpus": 0, "image": "", "env": {"LITTERBOX_A": "x"}})");
  expect_validation(r, {"body", "cpus"});
  expect_validation(r, {"body", "image"});
  expect_validation(r, {"body", "env"});
}

}  // namespace
}  // namespace litterbox::test::api
