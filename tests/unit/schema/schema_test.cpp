#include "schema/doctor.hpp"
#include "schema/errc.hpp"
#include "schema/errors.hpp"
#include "schema/host.hpp"
#include "schema/requests.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace litterbox::schema {
namespace {

host sample_host() {
  host h;
  h.id = "0192f3a4-0000-7000-8000-00000000abcd";
  h.name = host_name_for(h.id);
  h.status = host_status::active;
  h.provider = "libvirt";
  h.image = "127.0.0.1:5000/litterbox/debian:12";
  h.image_digest = "sha256:00";
  h.cpus = 2;
  h.memory_mib = 2048;
  h.ssh_host = "127.0.0.1";
  h.ssh_port = 22001;
  h.ssh_username = "agent";
  h.known_hosts = "[127.0.0.1]:22001 ssh-ed25519 AAAA";
  h.created_at = timestamp(std::chrono::seconds(1'800'000'000));
  h.updated_at = h.created_at;
  h.activated_at = h.created_at;
  return h;
}

TEST(HostJson, FieldsAppearInTheDocumentedOrderWithTheDocumentedTypes) {
  const auto j = to_json(sample_host());
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) {
    keys.push_back(k);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"id",
                                            "name",
                                            "status",
                                            "provider",
                                            "image",
                                            "image_digest",
                                            "instance_type",
                                            "cpus",
                                            "memory_mib",
                                            "disk_gb",
                                            "ssh_host",
                                            "ssh_port",
                                            "external_ssh_host",
                                            "external_ssh_port",
                                            "internal_ssh_host",
                                            "ssh_username",
                                            "known_hosts",
                                            "tailscale_device_id",
                                            "private_key",
                                            "last_error",
                                            "created_at",
                                            "updated_at",
                                            "activated_at",
                                            "expires_at"}));
  EXPECT_EQ(j["name"], "sb-00000000abcd");
  EXPECT_EQ(j["external_ssh_port"], 22001);
  EXPECT_TRUE(j["tailscale_device_id"].is_null());
  EXPECT_TRUE(j["expires_at"].is_null());
  EXPECT_EQ(j["created_at"], "2027-01-15T08:00:00.000000Z");
}

TEST(HostJson, RoundTripsThroughTheClientParser) {
  auto h = sample_host();
  h.expires_at = h.created_at + std::chrono::hours(24);
  h.private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  const auto back = host_from_json(to_json(h));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, h);
}

TEST(CreateRequest, EmptyBodyNullAndEmptyObjectAllMeanDefaults) {
  for (const char* body : {"", "  \n", "{}", "null"}) {
    const auto r = parse_create_host_request(body);
    ASSERT_TRUE(r) << body;
    EXPECT_FALSE(r->image);
    EXPECT_EQ(r->expiry, expiry_kind::omitted);
  }
}

TEST(CreateRequest, MalformedJsonIsOneJsonInvalidIssue) {
  for (const char* body : {"{", "{\"image\": }", "[1,2", "\xff\xfe", "{} {}"}) {
    const auto r = parse_create_host_request(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().code, errc::invalid_json);
    ASSERT_EQ(r.error().issues.size(), 1U);
    EXPECT_EQ(r.error().issues[0].type, "json_invalid");
  }
}

TEST(CreateRequest, DeeplyNestedJsonIsRejectedWithoutRecursionTrouble) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const auto r = parse_create_host_request(deep);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().issues[0].type, "json_invalid");
  const std::string nested_env = R"({"env": )" + std::string(50, '[') + std::string(50, ']') + "}";
  EXPECT_FALSE(parse_create_host_request(nested_env));
}

TEST(CreateRequest, WrongTypesAreReportedPerField) {
  const auto r = parse_create_host_request(
      R"({"image": 5, "cpus": "2", "memory_mib": 1.5, "disk_gb": true, "env": [],
          "ssh_authorized_keys": "k", "expires_at": 17, "unknown": {"ignored": 1}})");
  ASSERT_FALSE(r);
  std::set<std::string> fields;
  for (const auto& i : r.error().issues) {
    ASSERT_EQ(i.loc.size(), 2U);
    EXPECT_EQ(i.loc[0], "body");
    fields.insert(i.loc[1]);
  }
  EXPECT_EQ(fields, (std::set<std::string>{"image", "cpus", "memory_mib", "disk_gb", "env",
                                           "ssh_authorized_keys", "expires_at"}));
}

TEST(CreateRequest, NonStringEnvValuesAreReportedAtBodyEnv) {
  const auto r = parse_create_host_request(R"({"env": {"A": 1}})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().issues[0].loc, (std::vector<std::string>{"body", "env"}));
}

TEST(CreateRequest, ExpiresAtDistinguishesOmittedNullAndNaive) {
  EXPECT_EQ(parse_create_host_request(R"({"expires_at": null})")->expiry, expiry_kind::never);
  const auto at = parse_create_host_request(R"({"expires_at": "2030-01-01T00:00:00+01:00"})");
  ASSERT_TRUE(at);
  EXPECT_EQ(at->expiry, expiry_kind::at);
  const auto naive = parse_create_host_request(R"({"expires_at": "2030-01-01T00:00:00"})");
  ASSERT_FALSE(naive);
  EXPECT_EQ(naive.error().issues[0].type, "timezone_aware");
}

TEST(CreateRequest, HugeIntegersAreTypeErrorsNotOverflow) {
  const auto r = parse_create_host_request(R"({"cpus": 99999999999999999999999})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().issues[0].type, "int_type");
  EXPECT_EQ(parse_create_host_request(R"({"cpus": 2.0})")->cpus, 2);
}

TEST(CreateRequest, CanonicalTextIgnoresKeyOrderAndWhitespace) {
  const auto a = parse_create_host_request(R"({"cpus": 2, "env": {"B": "2", "A": "1"}})");
  const auto b = parse_create_host_request("{\"env\":{\"A\":\"1\",\"B\":\"2\"},\n \"cpus\":2}");
  const auto c = parse_create_host_request(R"({"cpus": 3, "env": {"B": "2", "A": "1"}})");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(canonical_text(*a), canonical_text(*b));
  EXPECT_NE(canonical_text(*a), canonical_text(*c));
  EXPECT_NE(canonical_text(*parse_create_host_request("{}")),
            canonical_text(*parse_create_host_request(R"({"expires_at": null})")));
}

TEST(RenewRequest, EmptyNullAndNullTimestampMeanTheDefaultLease) {
  for (const char* body : {"", "{}", "null", R"({"expires_at": null})"}) {
    const auto r = parse_renew_request(body);
    ASSERT_TRUE(r) << body;
    EXPECT_FALSE(r->expires_at);
  }
  EXPECT_TRUE(parse_renew_request(R"({"expires_at": "2030-01-01T00:00:00Z"})")->expires_at);
  EXPECT_FALSE(parse_renew_request("[]"));
}

TEST(ErrorBodies, HaveTheDocumentedShapes) {
  EXPECT_EQ(error_body("host not found", "NOT_FOUND"),
            R"({"detail":"host not found","error_code":"NOT_FOUND"})");
  EXPECT_EQ(detail_body("service token required"), R"({"detail":"service token required"})");
  EXPECT_EQ(validation_body({{{"body", "env"}, "Value error, x", "value_error"}}),
            R"({"detail":[{"type":"value_error","loc":["body","env"],"msg":"Value error, x"}]})");
  const auto info = parse_error_body(R"({"detail":[{"msg":"a"},{"msg":"b"}]})");
  EXPECT_EQ(info.detail, "a; b");
}

TEST(Doctor, ReportRoundTripsThroughTheWireShapeServerAndClientShare) {
  doctor_report r;
  r.ok = false;
  r.active_provider = "libvirt";
  r.checks = {{"database", true, "connected", 1.5, ""},
              {"libvirt", false, "cannot reach qemu:///system", 0.25, "start libvirtd"}};
  const auto text = doctor_json(r);
  EXPECT_EQ(text.rfind(R"({"ok":false,"active_provider":"libvirt","checks":[{"name":"database",)"
                       R"("status":"ok","detail":"connected","latency_ms":1.5,"hint":""})",
                       0),
            0U)
      << text;
  const auto back = doctor_from_json(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, r);
  EXPECT_FALSE(doctor_from_json("[]"));
  EXPECT_FALSE(doctor_from_json(R"({"checks": 3})"));
}

}  // namespace
}  // namespace litterbox::schema
