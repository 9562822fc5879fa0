#include "schema/api_keys.hpp"

#include "schema/errc.hpp"

#include <gtest/gtest.h>

#include <string>

namespace litterbox::schema {
namespace {

std::vector<std::vector<std::string>> locs_of(const error& e) {
  std::vector<std::vector<std::string>> out;
  for (const auto& i : e.issues) {
    out.push_back(i.loc);
  }
  return out;
}

TEST(CreateKeyRequest, ANamespaceAloneIsAKeyWithoutNameOrLimits) {
  const auto r = parse_create_key_request(R"({"namespace": "team-a"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->ns, "team-a");
  EXPECT_EQ(r->name, "");
  EXPECT_FALSE(r->max_hosts || r->max_cpus || r->max_memory_mib);
}

TEST(CreateKeyRequest, NameAndEveryQuotaLimitAreRead) {
  const auto r = parse_create_key_request(
      R"({"namespace": "a1", "name": "ci runner", "quota": {"max_hosts": 5, "max_cpus": 0,
          "max_memory_mib": 65536}, "unknown": true})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->name, "ci runner");
  EXPECT_EQ(r->max_hosts, 5);
  EXPECT_EQ(r->max_cpus, 0);
  EXPECT_EQ(r->max_memory_mib, 65536);
  const auto nulls = parse_create_key_request(
      R"({"namespace": "a1", "name": null, "quota": {"max_hosts": null}})");
  ASSERT_TRUE(nulls);
  EXPECT_FALSE(nulls->max_hosts);
}

TEST(CreateKeyRequest, EveryProblemIsReportedWithItsLocation) {
  const auto r = parse_create_key_request(
      R"({"namespace": "Team_A", "name": 3, "quota": {"max_hosts": -1, "max_cpus": 1.5,
          "max_memory_mib": 99999999999}})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_field);
  const std::vector<std::vector<std::string>> want{{"body", "namespace"},
                                                   {"body", "name"},
                                                   {"body", "quota", "max_hosts"},
                                                   {"body", "quota", "max_cpus"},
                                                   {"body", "quota", "max_memory_mib"}};
  EXPECT_EQ(locs_of(r.error()), want);
}

TEST(CreateKeyRequest, AMissingNamespaceBadJsonOrANonObjectIsRefused) {
  EXPECT_EQ(locs_of(parse_create_key_request("{}").error()),
            (std::vector<std::vector<std::string>>{{"body", "namespace"}}));
  EXPECT_EQ(parse_create_key_request("{").error().code, errc::invalid_json);
  EXPECT_EQ(locs_of(parse_create_key_request("[]").error()),
            (std::vector<std::vector<std::string>>{{"body"}}));
  EXPECT_EQ(locs_of(parse_create_key_request(R"({"namespace": "a", "quota": 3})").error()),
            (std::vector<std::vector<std::string>>{{"body", "quota"}}));
}

TEST(Namespace, IsALowerCaseDnsLabel) {
  for (const auto* ok : {"a", "team-a", "0", "a-b-c", "abcdefghijklmnopqrstuvwxyz0123456789"}) {
    EXPECT_TRUE(valid_namespace(ok)) << ok;
  }
  for (const std::string& bad :
       {std::string(), std::string("-a"), std::string("a-"), std::string("A"), std::string("a_b"),
        std::string("a.b"), std::string(64, 'a'), std::string("a\nb")}) {
    EXPECT_FALSE(valid_namespace(bad)) << bad;
  }
}

}  // namespace
}  // namespace litterbox::schema
