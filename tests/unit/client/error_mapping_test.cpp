#include "client/client.hpp"
#include "client/errc.hpp"

#include <gtest/gtest.h>

namespace litterbox::client {
namespace {

TEST(ErrorMapping, AuthStatusesAreAuthErrors) {
  auto e = error_from_response(401, R"({"detail": "service token required"})");
  EXPECT_EQ(e.code, errc::auth);
  EXPECT_EQ(e.message, "service token required");
  e = error_from_response(403, R"({"detail": "service token rejected"})");
  EXPECT_EQ(e.code, errc::auth);
  EXPECT_EQ(e.message, "service token rejected");
}

TEST(ErrorMapping, NotFoundConflictUnavailable) {
  auto e = error_from_response(404, R"({"detail": "host not found", "error_code": "NOT_FOUND"})");
  EXPECT_EQ(e.code, errc::not_found);
  EXPECT_EQ(e.message, "host not found");
  e = error_from_response(409, R"({"detail": "host is provisioning", "error_code": "HOST_STATE"})");
  EXPECT_EQ(e.code, errc::conflict);
  EXPECT_EQ(e.message, "host is provisioning");
  e = error_from_response(503,
                          R"({"detail": "database unreachable", "error_code": "UNAVAILABLE"})");
  EXPECT_EQ(e.code, errc::unavailable);
}

TEST(ErrorMapping, ProvisioningFailedCarriesTheLastError) {
  const auto e = error_from_response(
      502, R"({"detail": "ImageNotFound: no such image", "error_code": "PROVISIONING_FAILED"})");
  EXPECT_EQ(e.code, errc::provisioning_failed);
  EXPECT_EQ(e.message, "ImageNotFound: no such image");
}

TEST(ErrorMapping, OtherStatusesAreApiErrorsNamingTheStatus) {
  auto e = error_from_response(
      400, R"({"detail": "unknown instance_type", "error_code": "BAD_REQUEST"})");
  EXPECT_EQ(e.code, errc::api_error);
  EXPECT_EQ(e.message, "HTTP 400: unknown instance_type");
  e = error_from_response(500, "<html>oops</html>");
  EXPECT_EQ(e.code, errc::api_error);
  EXPECT_EQ(e.message, "HTTP 500: <html>oops</html>");
  e = error_from_response(418, "");
  EXPECT_EQ(e.code, errc::api_error);
  EXPECT_EQ(e.message, "the service answered HTTP 418");
}

TEST(ErrorMapping, ValidationListFillsIssues) {
  const auto e = error_from_response(422, R"({"detail": [
      {"type": "value_error", "loc": ["body", "env"], "msg": "Value error, reserved env keys are not allowed: TAILSCALE_AUTHKEY"},
      {"type": "int_type", "loc": ["body", "cpus"], "msg": "Input should be a valid integer"}]})");
  EXPECT_EQ(e.code, errc::api_error);
  EXPECT_EQ(e.message,
            "HTTP 422: Value error, reserved env keys are not allowed: TAILSCALE_AUTHKEY; Input "
            "should be a valid integer");
  ASSERT_EQ(e.issues.size(), 2U);
  EXPECT_EQ(e.issues[0].loc, (std::vector<std::string>{"body", "env"}));
  EXPECT_EQ(e.issues[1].type, "int_type");
  EXPECT_EQ(e.issues[1].msg, "Input should be a valid integer");
}

TEST(ErrorMapping, TooManyRequestsIsQuotaAndSaysWhenToRetry) {
  EXPECT_EQ(error_from_response(429, R"({"detail": "quota exceeded: max_hosts=5"})").code,
            errc::quota);
  http_response r{429,
                  {{"retry-after", "30"}},
                  R"({"detail": "quota exceeded: max_hosts=5", "error_code": "QUOTA"})"};
  auto e = error_from_response(r);
  EXPECT_EQ(e.code, errc::quota);
  EXPECT_EQ(e.message, "quota exceeded: max_hosts=5 (retry after 30 s)");
  r.headers["retry-after"] = "Wed, 02 Dec 2026 05:00:00 GMT";
  e = error_from_response(r);
  EXPECT_EQ(e.message, "quota exceeded: max_hosts=5 (retry after Wed, 02 Dec 2026 05:00:00 GMT)");
  r.headers.clear();
  EXPECT_EQ(error_from_response(r).message, "quota exceeded: max_hosts=5");
  r.status = 503;
  r.headers["retry-after"] = "5";
  EXPECT_EQ(error_from_response(r).message, "quota exceeded: max_hosts=5");
}

TEST(NextCursor, FindsTheAfterParameterOfRelNext) {
  EXPECT_EQ(next_cursor(R"(</hosts?limit=2&after=0190-ab>; rel="next")"), "0190-ab");
  EXPECT_EQ(next_cursor(R"(<http://h:1/hosts?status=active&after=x%2Dy&limit=5>; rel="next")"),
            "x-y");
  EXPECT_EQ(next_cursor(R"(</hosts?after=p>; rel="prev", </hosts?after=n>; rel="next")"), "n");
}

TEST(NextCursor, NoNextLinkMeansNoCursor) {
  EXPECT_FALSE(next_cursor(""));
  EXPECT_FALSE(next_cursor(R"(</hosts?after=p>; rel="prev")"));
  EXPECT_FALSE(next_cursor(R"(</hosts?limit=2>; rel="next")"));
  EXPECT_FALSE(next_cursor("garbage"));
}

}  // namespace
}  // namespace litterbox::client
