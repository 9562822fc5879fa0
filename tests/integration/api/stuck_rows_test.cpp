// A create must reach active or error within PROVISION_TIMEOUT plus a bounded grace, whatever
// happens to the database meanwhile (issue: rows stuck forever with a live owner).
#include "tests/integration/api/private_cluster.hpp"

#include <chrono>
#include <thread>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr int k_timeout_s = 3;
constexpr int k_grace_s = 2;

class stuck_rows : public private_cluster_test<stuck_rows> {
 public:
  static std::vector<std::string> server_args() {
    auto args = default_args();
    set_arg(args, "--provision-timeout", std::to_string(k_timeout_s));
    set_arg(args, "--provision-grace", std::to_string(k_grace_s));
    set_arg(args, "--reap-interval", "1");
    set_arg(args, "--heartbeat-interval", "1");
    // The guest "boots" for 2 s: the create sits in bootstrapping when the database goes.
    set_arg(args, "--fake-boot-delay-ms", "2000");
    return args;
  }
};

TEST_F(stuck_rows, DatabaseAwayLongerThanTheRetryWindowStillEndsTheCreateInErrorOnceItReturns) {
  const auto accepted = create("{}", {{"Prefer", "respond-async"}, {"Idempotency-Key", "stuck"}});
  ASSERT_EQ(accepted.status, 202) << accepted;
  const auto id = body_json(accepted)["id"].get<std::string>();
  const auto started = std::chrono::steady_clock::now();

  // Away from before the guest is ready until well past the create's deadline and the
  // provisioner's write window: no process can write, so the row stays bootstrapping.
  cluster_->stop();
  std::this_thread::sleep_for(std::chrono::seconds(k_timeout_s + k_grace_s + 1));
  cluster_->start();

  // Once the database is back the deadline sweep fails it, although its owner is alive.
  const auto bound = started + std::chrono::seconds(k_timeout_s + k_grace_s) + 30s;
  json host;
  while (std::chrono::steady_clock::now() < bound) {
    const auto r = client().get("/hosts/" + id, {bearer()});
    if (r.status == 200) {
      host = body_json(r);
      if (host.value("status", "") == "error") {
        break;
      }
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(host.value("status", ""), "error") << host.dump();
  EXPECT_TRUE(host.value("last_error", "").starts_with("ProvisionTimeout: ")) << host.dump();
  EXPECT_TRUE(process().running()) << process().output_tail();

  // Its key is free: the same request provisions afresh, and the failed host can be deleted.
  const auto retry = create("{}", {{"Idempotency-Key", "stuck"}});
  EXPECT_EQ(retry.status, 201) << retry;
  EXPECT_NE(body_json(retry).value("id", ""), id);
  EXPECT_EQ(call("DELETE", "/hosts/" + id).status, 204);
}

}  // namespace
}  // namespace litterbox::test::api
