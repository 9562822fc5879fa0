#include "tests/integration/api/api_fixture.hpp"

namespace litterbox::test::api {
namespace {

// A host id that exists nowhere (well-formed UUIDv7).
constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

void expect_401(const http_response& r) {
  EXPECT_EQ(r.status, 401) << r;
  EXPECT_EQ(body_json(r), json::parse(R"({"detail": "service token required"})")) << r;
}

void expect_403(const http_response& r) {
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(body_json(r), json::parse(R"({"detail": "service token rejected"})")) << r;
}

class auth : public api_test {};

TEST_F(auth, MissingAuthorizationHeaderIs401OnEveryProtectedEndpoint) {
  const std::string host = "/hosts/" + std::string(k_unknown_id);
  expect_401(call("GET", "/hosts", {}, {}, false));
  expect_401(call("POST", "/hosts", "{}", {}, false));
  expect_401(call("GET", host, {}, {}, false));
  expect_401(call("DELETE", host, {}, {}, false));
  expect_401(call("POST", host + "/renew", {}, {}, false));
  expect_401(call("GET", host + "/console", {}, {}, false));
  expect_401(call("GET", "/doctor", {}, {}, false));
}

TEST_F(auth, EmptyAuthorizationHeaderIs401) {
  expect_401(call("GET", "/hosts", {}, {{"Authorization", ""}}, false));
}

TEST_F(auth, BearerWithoutTokenIs401) {
  expect_401(call("GET", "/hosts", {}, {{"Authorization", "Bearer"}}, false));
  expect_401(call("GET", "/hosts", {}, {{"Authorization", "Bearer "}}, false));
}

TEST_F(auth, BasicSchemeIs401EvenWithAValidTokenAsPassword) {
  expect_401(call("GET", "/hosts", {}, {{"Authorization", "Basic dXNlcjpwYXNz"}}, false));
  expect_401(
      call("GET", "/hosts", {}, {{"Authorization", "Basic " + std::string(k_token)}}, false));
}

TEST_F(auth, UnknownBearerTokenIs403) {
  expect_403(call("GET", "/hosts", {}, {bearer("not-a-known-token")}, false));
}

TEST_F(auth, TokenPrefixAndSuffixOfAValidTokenAre403) {
  const std::string t(k_token);
  expect_403(call("GET", "/hosts", {}, {bearer(t.substr(0, t.size() - 1))}, false));
  expect_403(call("GET", "/hosts", {}, {bearer(t + "x")}, false));
}

TEST_F(auth, EveryConfiguredTokenIsAccepted) {
  EXPECT_EQ(call("GET", "/hosts", {}, {bearer(k_token)}, false).status, 200);
  EXPECT_EQ(call("GET", "/hosts", {}, {bearer(k_token2)}, false).status, 200);
}

TEST_F(auth, MissingTokenWithInvalidBodyIs401NotValidation) {
  expect_401(call("POST", "/hosts", R"({"cpus": "many", "env": 5})",
                  {{"Content-Type", "application/json"}}, false));
  expect_401(call("POST", "/hosts", "{not json", {}, false));
}

TEST_F(auth, MissingTokenWithBadIdempotencyKeyIs401) {
  expect_401(call("POST", "/hosts", "{}", {{"Idempotency-Key", "has spaces"}}, false));
}

TEST_F(auth, BadTokenForUnknownHostIs403NotNotFound) {
  expect_403(call("GET", "/hosts/" + std::string(k_unknown_id), {}, {bearer("wrong")}, false));
  expect_403(call("DELETE", "/hosts/" + std::string(k_unknown_id), {}, {bearer("wrong")}, false));
}

TEST_F(auth, BadTokenWithMalformedHostIdIs403NotValidation) {
  expect_403(call("GET", "/hosts/not-a-uuid", {}, {bearer("wrong")}, false));
}

TEST_F(auth, VeryLongTokenIs403Not5xx) {
  expect_403(call("GET", "/hosts", {}, {bearer(std::string(4000, 'a'))}, false));
}

TEST_F(auth, NonAsciiTokenIs403Not5xx) {
  expect_403(call("GET", "/hosts", {}, {bearer("t\xc3\xb6ken-\xe2\x9c\x93")}, false));
  expect_403(call("GET", "/hosts", {}, {bearer("\xff\xfe\x80")}, false));
}

TEST_F(auth, UnauthenticatedEndpointsNeedNoToken) {
  EXPECT_EQ(call("GET", "/healthz", {}, {}, false).status, 200);
  EXPECT_EQ(call("GET", "/metrics", {}, {}, false).status, 200);
  EXPECT_EQ(call("GET", "/openapi.json", {}, {}, false).status, 200);
}

TEST_F(auth, SchemeNameIsNotConfusedWithToken) {
  // "Bearer" is the scheme; a header carrying only the token must not be taken for it.
  expect_401(call("GET", "/hosts", {}, {{"Authorization", std::string(k_token)}}, false));
}

}  // namespace
}  // namespace litterbox::test::api
