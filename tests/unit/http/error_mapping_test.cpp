#include "controlplane/http/error_mapping.hpp"

#include "controlplane/core/errc.hpp"
#include "schema/errc.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <system_error>

namespace litterbox::controlplane::http {
namespace {

struct coded_case {
  errc code;
  int status;
  const char* error_code;
  bool retry_after;
};

class ErrorMappingCoded : public ::testing::TestWithParam<coded_case> {};

TEST_P(ErrorMappingCoded, MapsToItsStatusCodeAndMessage) {
  const auto& c = GetParam();
  const auto mapped = to_http_error(make_error(c.code, "the message"), "rid-1");
  EXPECT_EQ(mapped.status, c.status);
  const auto body = nlohmann::json::parse(mapped.body);
  EXPECT_EQ(body.at("error_code"), c.error_code);
  EXPECT_EQ(body.at("detail"), "the message");
  EXPECT_FALSE(body.contains("request_id"));
  EXPECT_EQ(mapped.retry_after.has_value(), c.retry_after);
}

INSTANTIATE_TEST_SUITE_P(
    EveryCodedErrc, ErrorMappingCoded,
    ::testing::Values(coded_case{errc::bad_request, 400, "BAD_REQUEST", false},
                      coded_case{errc::not_found, 404, "NOT_FOUND", false},
                      coded_case{errc::host_state, 409, "HOST_STATE", false},
                      coded_case{errc::quota, 429, "QUOTA", true},
                      coded_case{errc::provisioning_failed, 502, "PROVISIONING_FAILED", false},
                      coded_case{errc::unavailable, 503, "UNAVAILABLE", false},
                      coded_case{errc::capacity, 503, "CAPACITY", true},
                      coded_case{errc::teardown_failed, 503, "HOST_TEARDOWN", false}));

TEST(ErrorMapping, ValidationIsA422ListOfTheIssues) {
  error e = make_error(errc::validation, "validation failed");
  e.issues.push_back(field_issue{{"body", "env"}, "Value error, bad", "value_error"});
  e.issues.push_back(field_issue{{"query", "limit"}, "too big", "less_than_equal"});
  const auto mapped = to_http_error(e, "rid");
  EXPECT_EQ(mapped.status, 422);
  const auto body = nlohmann::json::parse(mapped.body);
  ASSERT_TRUE(body.at("detail").is_array());
  ASSERT_EQ(body["detail"].size(), 2U);
  EXPECT_EQ(body["detail"][0].at("loc"), nlohmann::json::array({"body", "env"}));
  EXPECT_EQ(body["detail"][0].at("msg"), "Value error, bad");
  EXPECT_EQ(body["detail"][0].at("type"), "value_error");
  EXPECT_EQ(body["detail"][1].at("loc"), nlohmann::json::array({"query", "limit"}));
  EXPECT_FALSE(body.contains("error_code"));
}

TEST(ErrorMapping, IdempotencyMismatchIsA422WithTheServiceIssues) {
  error e = make_error(errc::idempotency_mismatch, "mismatch");
  e.issues.push_back(field_issue{{"header", "Idempotency-Key"},
                                 "Idempotency-Key was already used with a different request"});
  const auto mapped = to_http_error(e, "rid");
  EXPECT_EQ(mapped.status, 422);
  const auto body = nlohmann::json::parse(mapped.body);
  EXPECT_EQ(body.at("detail").at(0).at("msg"),
            "Idempotency-Key was already used with a different request");
  EXPECT_EQ(body["detail"][0].at("loc"), nlohmann::json::array({"header", "Idempotency-Key"}));
}

TEST(ErrorMapping, ValidationWithoutIssuesStillHasAListBody) {
  const auto mapped = to_http_error(make_error(errc::validation, "bad input"), "rid");
  EXPECT_EQ(mapped.status, 422);
  const auto body = nlohmann::json::parse(mapped.body);
  ASSERT_TRUE(body.at("detail").is_array());
  EXPECT_EQ(body["detail"].at(0).at("msg"), "bad input");
}

TEST(ErrorMapping, SchemaErrorsAre422WithTheirIssues) {
  for (const auto code : {schema::errc::invalid_json, schema::errc::invalid_field}) {
    error e = make_error(code, "JSON decode error");
    e.issues.push_back(field_issue{{"body"}, "JSON decode error", "json_invalid"});
    const auto mapped = to_http_error(e, "rid");
    EXPECT_EQ(mapped.status, 422);
    const auto body = nlohmann::json::parse(mapped.body);
    EXPECT_EQ(body.at("detail").at(0).at("type"), "json_invalid");
  }
}

TEST(ErrorMapping, InternalHidesTheMessageAndCarriesTheRequestId) {
  const auto mapped = to_http_error(make_error(errc::internal, "secret detail"), "rid-42");
  EXPECT_EQ(mapped.status, 500);
  const auto body = nlohmann::json::parse(mapped.body);
  EXPECT_EQ(body.at("detail"), "internal error");
  EXPECT_EQ(body.at("error_code"), "INTERNAL");
  EXPECT_EQ(body.at("request_id"), "rid-42");
}

TEST(ErrorMapping, ForeignCategoriesAreInternal) {
  const auto mapped =
      to_http_error(make_error(std::make_error_code(std::errc::io_error), "disk"), "rid-7");
  EXPECT_EQ(mapped.status, 500);
  const auto body = nlohmann::json::parse(mapped.body);
  EXPECT_EQ(body.at("error_code"), "INTERNAL");
  EXPECT_EQ(body.at("request_id"), "rid-7");
}

TEST(ErrorMapping, EmptyMessageFallsBackToTheCategoryText) {
  const auto mapped = to_http_error(make_error(errc::not_found, ""), "rid");
  EXPECT_EQ(nlohmann::json::parse(mapped.body).at("detail"), "host not found");
}

}  // namespace
}  // namespace litterbox::controlplane::http
