#include "tests/integration/api/api_fixture.hpp"

namespace litterbox::test::api {
namespace {

class hostile_input : public api_test {
 protected:
  void TearDown() override {
    // Whatever the input did, the server is still there.
    const auto r = client().get("/healthz");
    EXPECT_EQ(r.status, 200) << "server stopped answering after hostile input:\n" << r;
    EXPECT_TRUE(process().running()) << process().output_tail();
    api_test::TearDown();
  }

  std::string raw_post(std::string_view body, std::string_view extra_headers = {}) const {
    return "POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + std::string(k_token) +
           "\r\nContent-Type: application/json\r\nConnection: close\r\n" +
           std::string(extra_headers) + "Content-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + std::string(body);
  }
};

/// A 4xx JSON error of the documented shape (never a 5xx, never plain text).
void expect_client_error(const http_response& r, int status) {
  EXPECT_EQ(r.status, status) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  ASSERT_TRUE(j.contains("detail")) << r;
  if (status == 422) {
    EXPECT_TRUE(j["detail"].is_array() && !j["detail"].empty()) << r;
  } else {
    EXPECT_TRUE(j["detail"].is_string()) << r;
  }
}

class bad_json : public hostile_input, public ::testing::WithParamInterface<std::string> {};

TEST_P(bad_json, BodyIs422NotAServerError) {
  expect_client_error(create(GetParam()), 422);
}

INSTANTIATE_TEST_SUITE_P(bodies, bad_json,
                         ::testing::Values("{", "{\"image\": \"x", "{\"image\": }",
                                           "{'image': 'x'}", "{\"a\":1,}", "nul", "[]", "\"text\"",
                                           "42", "true", "[{}]", "{\"image\": \"a\"} trailing",
                                           "\xef\xbb\xbf{}x", std::string(1, '\0')),
                         [](const auto& p) { return "case" + std::to_string(p.index); });

TEST_F(hostile_input, DeeplyNestedArrayIs422) {
  const std::string body = std::string(10000, '[') + std::string(10000, ']');
  expect_client_error(create(body), 422);
}

TEST_F(hostile_input, DeeplyNestedValueInsideAFieldIs422) {
  std::string nested;
  for (int i = 0; i < 10000; ++i) {
    nested += "{\"a\":";
  }
  nested += "1" + std::string(10000, '}');
  expect_client_error(create("{\"env\": " + nested + "}"), 422);
}

TEST_F(hostile_input, BodyOverTheLimitIs413TooLarge) {
  const std::string big = "{\"image\": \"" + std::string(2 * 1024 * 1024, 'a') + "\"}";
  const auto r = create(big);
  EXPECT_EQ(r.status, 413) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(j["detail"].is_string()) << r;
  EXPECT_EQ(j.value("error_code", ""), "TOO_LARGE") << r;
}

TEST_F(hostile_input, ContentLengthOverTheLimitIsRejectedBeforeTheBodyArrives) {
  // Only the head is sent: the answer must come from the declared length alone.
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                      std::string(k_token) + "\r\nContent-Length: 2097152\r\n\r\n"));
  const auto r = c.read_response();
  EXPECT_EQ(r.status, 413) << r;
}

TEST_F(hostile_input, ContentLengthLargerThanTheBytesSentThenCloseDoesNotHurtTheServer) {
  {
    http_connection c("127.0.0.1", client().port(), client().timeout());
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                        std::string(k_token) + "\r\nContent-Length: 500\r\n\r\n{\"image\":"));
    c.close();
  }
  // The healthz check in TearDown shows the server survived; a create still works.
  EXPECT_EQ(create("{}").status, 201);
}

TEST_F(hostile_input, TruncatedHeadThenCloseDoesNotHurtTheServer) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthoriz"));
  c.close();
  EXPECT_EQ(get("/hosts").status, 200);
}

TEST_F(hostile_input, GarbageRequestLineGetsA4xxOrAClose) {
  const auto r = client().send_raw("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n");
  if (r.status != 0) {
    EXPECT_GE(r.status, 400) << r;
    EXPECT_LT(r.status, 500) << r;
  }
}

TEST_F(hostile_input, NonUtf8BytesInAStringAre422) {
  expect_client_error(create("{\"image\": \"reg.test/\xff\xfe:1\"}"), 422);
  expect_client_error(create("{\"env\": {\"KEY\": \"\xc3\x28\"}}"), 422);
  expect_client_error(create("{\"env\": {\"K\xe9Y\": \"v\"}}"), 422);
}

TEST_F(hostile_input, EnvValueControlCharactersAre422) {
  expect_client_error(create(R"({"env": {"K": "a\u0000b"}})"), 422);
  expect_client_error(create(R"({"env": {"K": "a\rb"}})"), 422);
  expect_client_error(create(R"({"env": {"K": "a\nb"}})"), 422);
}

TEST_F(hostile_input, RawRequestWithDuplicateContentLengthIsRejected) {
  const auto r = client().send_raw(raw_post("{}", "Content-Length: 7\r\n"));
  if (r.status != 0) {
    EXPECT_GE(r.status, 400) << r;
    EXPECT_LT(r.status, 500) << r;
  }
}

TEST_F(hostile_input, InvalidUuidsInPathAre422) {
  for (const auto* id : {"..%2F..%2Fetc%2Fpasswd", "' OR 1=1 --", "%FF%FE",
                         "01890a5d-ac96-774b-bcce-b302099a8057'"}) {
    std::string target = "/hosts/";
    for (const char* p = id; *p != '\0'; ++p) {
      // Spaces and quotes are percent-encoded so the request line stays valid.
      if (*p == ' ') {
        target += "%20";
      } else if (*p == '\'') {
        target += "%27";
      } else {
        target += *p;
      }
    }
    expect_validation(get(target), {"path", "host_id"});
  }
}

TEST_F(hostile_input, HugeHeaderIsA4xxOrAClose) {
  const auto r = client().send_raw(
      "GET /hosts HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(200 * 1024, 'b') + "\r\n\r\n");
  if (r.status != 0) {
    EXPECT_GE(r.status, 400) << r;
    EXPECT_LT(r.status, 500) << r;
  }
}

TEST_F(hostile_input, ChunkedBodyIsUnderstood) {
  const auto r = client().send_raw("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                                   std::string(k_token) +
                                   "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                   "2\r\n{}\r\n0\r\n\r\n");
  EXPECT_EQ(r.status, 201) << r;
}

}  // namespace
}  // namespace litterbox::test::api
