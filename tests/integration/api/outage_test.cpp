#include "tests/integration/api/private_cluster.hpp"

#include <chrono>
#include <thread>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

// Reconnecting after the database comes back may take the pool a few attempts; this only
// bounds how long a broken server may keep failing.
constexpr auto k_recovery_guard = 60s;
constexpr auto k_retry_interval = 100ms;

void expect_unavailable(const http_response& r) {
  EXPECT_EQ(r.status, 503) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(j.contains("detail") && j["detail"].is_string()) << r;
  EXPECT_EQ(j.value("error_code", ""), "UNAVAILABLE") << r;
  EXPECT_TRUE(r.header("Content-Type").value_or("").starts_with("application/json")) << r;
}

// The server runs against a private cluster that the test stops and starts under it.
class database_outage : public private_cluster_test<database_outage> {
 public:
  static std::vector<std::string> server_args() { return default_args(); }
};

TEST_F(database_outage, StoppedDatabaseIs503UnavailableAndRecoveryKeepsTheData) {
  const auto created = create_active(R"({"expires_at": null})");
  ASSERT_TRUE(created.is_object());
  const auto id = created["id"].get<std::string>();

  cluster_->stop();
  expect_unavailable(get("/hosts"));
  expect_unavailable(get("/hosts/" + id));
  expect_unavailable(create("{}"));
  expect_unavailable(call("DELETE", "/hosts/" + id));
  EXPECT_EQ(call("GET", "/healthz", {}, {}, false).status, 200) << "healthz checks nothing";
  const auto doctor = get("/doctor");
  EXPECT_EQ(doctor.status, 200) << "doctor is always 200: " << doctor;
  EXPECT_EQ(body_json(doctor).value("ok", true), false) << doctor;
  EXPECT_TRUE(process().running()) << process().output_tail();

  cluster_->start();
  const auto deadline = std::chrono::steady_clock::now() + k_recovery_guard;
  http_response r;
  for (;;) {
    r = client().get("/hosts/" + id, {bearer()});
    if (r.status == 200 || std::chrono::steady_clock::now() > deadline) {
      break;
    }
    std::this_thread::sleep_for(k_retry_interval);
  }
  ASSERT_EQ(r.status, 200) << "the same process serves again after the database returns: " << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  for (const char* k : {"id", "status", "image", "ssh_port", "known_hosts", "created_at",
                        "activated_at", "expires_at"}) {
    EXPECT_EQ(h[k], created[k]) << k;
  }
  EXPECT_EQ(create_active("{}").value("status", ""), "active");
}

}  // namespace
}  // namespace litterbox::test::api
