#include "tests/integration/api/api_fixture.hpp"

#include <chrono>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr int k_idle_timeout_s = 2;
// Far beyond the idle timeout: only guards against a server that never closes.
constexpr auto k_close_guard = 30s;

class slow_client : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--http-idle-timeout", std::to_string(k_idle_timeout_s));
    start_server(std::move(args));
  }
};

TEST_F(slow_client, HalfABodyThenSilenceIsClosedByTheServer) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                      std::string(k_token) + "\r\nContent-Length: 100\r\n\r\n{\"ima"));
  std::string received;
  EXPECT_TRUE(c.wait_closed(k_close_guard, &received))
      << "the server must close a stalled connection; got: " << received;
  EXPECT_EQ(client().get("/healthz").status, 200);
}

TEST_F(slow_client, HalfAHeadThenSilenceIsClosedByTheServer) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("GET /hosts HTTP/1.1\r\nHost: t\r\nAuthori"));
  EXPECT_TRUE(c.wait_closed(k_close_guard)) << "the server must close a stalled connection";
  EXPECT_EQ(client().get("/healthz").status, 200);
}

TEST_F(slow_client, IdleKeepAliveConnectionIsClosedByTheServer) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_EQ(c.read_response().status, 200);
  EXPECT_TRUE(c.wait_closed(k_close_guard)) << "an idle keep-alive connection is closed";
}

TEST_F(slow_client, StalledConnectionDoesNotBlockOthers) {
  http_connection stalled("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(stalled.connected()) << stalled.error();
  ASSERT_TRUE(stalled.write("POST /hosts HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{"));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(client().get("/healthz").status, 200);
  }
}

}  // namespace
}  // namespace litterbox::test::api
