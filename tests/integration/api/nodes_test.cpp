// Nodes (issue 14) through a real litterboxd: the serving process registers the machine it
// drives (the fake node here) and places every host on it in the insert's transaction;
// `litterboxd node` lists nodes, cordons, uncordons, drains and sizes them, and creates get
// 503 CAPACITY with nothing kept while the node takes no new host or has no room for it.
#include "base/process.hpp"
#include "tests/integration/api/api_fixture.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace litterbox::test::api {
namespace {

constexpr const char* k_node = "fake:///node";  // what the fake driver reports itself as

class nodes : public api_test {
 protected:
  // Each case gets a database and a server of its own: cordons and sizes do not leak.
  static void SetUpTestSuite() {}
  void SetUp() override {
    auto args = default_args();
    set_arg(args, "--reap-interval", "1");
    start_server(args);
    api_test::SetUp();
  }

  /// `litterboxd node <args> --database-url <the suite's database>`.
  static process_output node_cli(std::vector<std::string> args) {
    std::vector<std::string> argv{LB_LITTERBOXD_PATH, "node"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.emplace_back("--database-url");
    argv.push_back(database_url());
    auto r = run_process(argv, std::chrono::seconds(60));
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : process_output{};
  }

  /// The doctor check `name`, or null.
  json doctor_check(const std::string& name) const {
    const auto report = body_json(get("/doctor"));
    for (const auto& c : report["checks"]) {
      if (c.value("name", "") == name) {
        return c;
      }
    }
    return nullptr;
  }
};

TEST_F(nodes, NodeLsShowsTheServersOwnNodeWithWhatItsHostsHold) {
  ASSERT_FALSE(create_active(R"({"cpus": 2, "memory_mib": 2048})").is_null());
  const auto ls = node_cli({"ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find(k_node), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("active"), std::string::npos) << ls.out;
  // 64 CPUs × 16, no CPU reserved; 262144 MiB × 1.5 less the default 1024 reserved.
  EXPECT_NE(ls.out.find(" 2/1024 "), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find(" 2048/392192 "), std::string::npos) << ls.out;
  const auto check = doctor_check("node");
  ASSERT_FALSE(check.is_null());
  EXPECT_EQ(check.value("status", ""), "ok") << check.dump();
  EXPECT_EQ(check.value("detail", ""),
            std::string(k_node) + " active: 1 hosts, 2/1024 vCPUs, 2048/392192 MiB");
}

TEST_F(nodes, ACordonedNodeRefusesCreatesWith503AndKeepsNothingUntilUncordoned) {
  const auto cordon = node_cli({"cordon", k_node});
  ASSERT_EQ(cordon.exit_code, 0) << cordon.err;
  EXPECT_NE(cordon.out.find("cordoned"), std::string::npos) << cordon.out;
  const auto refused = create("{}", {{"Idempotency-Key", "cordoned-1"}});
  expect_error(refused, 503, "node fake:///node is cordoned: it takes no new hosts", "CAPACITY");
  EXPECT_EQ(list_all().size(), 0U) << "no row";
  const auto check = doctor_check("node");
  EXPECT_NE(check.value("status", ""), "ok") << check.dump();
  EXPECT_NE(check.value("hint", "").find("litterboxd node uncordon fake:///node"),
            std::string::npos)
      << check.dump();

  ASSERT_EQ(node_cli({"uncordon", k_node}).exit_code, 0);
  const auto served = create("{}", {{"Idempotency-Key", "cordoned-1"}});
  EXPECT_EQ(served.status, 201) << "the key was kept free: " << served;
  EXPECT_EQ(doctor_check("node").value("status", ""), "ok");
}

TEST_F(nodes, CreatesBeyondTheNodesRoomAre503AndADeletedHostFreesItsShare) {
  // Leave 2048 MiB for guests.
  const auto set = node_cli({"set", k_node, "--memory-overcommit", "1", "--reserved-memory-mib",
                             std::to_string(262144 - 2048)});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  const auto first = create_active(R"({"memory_mib": 1024})");
  ASSERT_FALSE(first.is_null());
  ASSERT_FALSE(create_active(R"({"memory_mib": 1024})").is_null());
  expect_error(create(R"({"memory_mib": 1024})"), 503,
               "node fake:///node has no room for 1 vCPUs and 1024 MiB (1022 vCPUs and 0 MiB "
               "free)",
               "CAPACITY");
  ASSERT_EQ(call("DELETE", "/hosts/" + first.value("id", "")).status, 204);
  EXPECT_FALSE(create_active(R"({"memory_mib": 1024})").is_null());

  const auto bad = node_cli({"set", k_node, "--cpu-overcommit", "0"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("overcommit must be a positive number"), std::string::npos) << bad.err;
  const auto unknown = node_cli({"cordon", "qemu+tcp://nowhere/system"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no node qemu+tcp://nowhere/system"), std::string::npos)
      << unknown.err;
}

TEST_F(nodes, DrainWithDeleteHostsHasTheReaperDeleteEveryHostAndWaitsUntilTheNodeIsEmpty) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const auto h = create_active();
    ASSERT_FALSE(h.is_null());
    ids.push_back(h.value("id", ""));
  }
  const auto drain = node_cli({"drain", k_node, "--delete-hosts", "--wait", "30"});
  ASSERT_EQ(drain.exit_code, 0) << drain.out << drain.err;
  EXPECT_NE(drain.out.find("3 hosts expire now"), std::string::npos) << drain.out;
  EXPECT_NE(drain.out.find("the node holds no hosts"), std::string::npos) << drain.out;
  for (const auto& id : ids) {
    EXPECT_EQ(get("/hosts/" + id).status, 404) << id;
  }
  expect_error(create(), 503, "node fake:///node is draining: it takes no new hosts", "CAPACITY");
}

}  // namespace
}  // namespace litterbox::test::api
