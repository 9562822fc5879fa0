#include "tests/integration/api/api_fixture.hpp"

#include <sys/wait.h>

namespace litterbox::test::api {
namespace {

class restart : public api_test {};

TEST_F(restart, KilledServerRestartedOnTheSameDatabaseServesTheSameHosts) {
  const auto created = create_active(R"({"expires_at": null})");
  ASSERT_TRUE(created.is_object());
  const auto id = created["id"].get<std::string>();
  const auto status = process().kill();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);

  start_server_on(database_url(), default_args());
  const auto r = get("/hosts/" + id);
  ASSERT_EQ(r.status, 200) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  for (const char* k : {"id", "status", "image", "ssh_port", "known_hosts", "created_at",
                        "activated_at", "expires_at"}) {
    EXPECT_EQ(h[k], created[k]) << k;
  }
  EXPECT_TRUE(h["private_key"].is_null());
}

TEST_F(restart, TerminatedServerExitsCleanly) {
  const auto status = process().stop();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status)) << process().state();
  EXPECT_EQ(WEXITSTATUS(*status), 0) << process().output_tail();
  start_server_on(database_url(), default_args());
  EXPECT_EQ(get("/healthz").status, 200);
}

}  // namespace
}  // namespace litterbox::test::api
