// Nodes (issue 14) through a real litterboxd: the serving process registers the machine it
// drives (the fake node here) and places every host on it in the insert's transaction;
// `litterboxd node` adds, lists, cordons, uncordons, drains, sizes and removes nodes; creates
// get 503 CAPACITY with nothing kept while no node takes a new host or has room for it; a
// node added while the server runs is driven without a restart and takes its share.
#include "base/process.hpp"
#include "tests/integration/api/api_fixture.hpp"
#include "tests/support/litterboxd_process.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
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

  /// The id `node ls` shows for `uri` (the first column of its row).
  static std::string node_id_of(const std::string& uri) {
    const auto ls = node_cli({"ls"});
    std::size_t at = ls.out.find(uri);
    if (at == std::string::npos) {
      return "";
    }
    const std::size_t line = ls.out.rfind('\n', at);
    const std::size_t from = line == std::string::npos ? 0 : line + 1;
    return ls.out.substr(from, ls.out.find(' ', from) - from);
  }

  /// Waits until the server drives `uri` (its /doctor shows that node's checks).
  bool await_driven(const std::string& uri) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < until) {
      const auto report = body_json(get("/doctor"));
      for (const auto& c : report["checks"]) {
        if (c.value("detail", "").rfind(uri + ": ", 0) == 0) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
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

TEST_F(nodes, AnAddedNodeIsDrivenWithoutARestartAndCreatesSpreadOverBothByRoom) {
  const auto add = node_cli({"add", "fake:///second", "--ssh-host", "198.51.100.9"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_NE(add.out.find("fake:///second"), std::string::npos) << add.out;
  // Room for three 1-GiB hosts on each node.
  for (const char* uri : {k_node, "fake:///second"}) {
    ASSERT_EQ(node_cli({"set", uri, "--memory-overcommit", "1", "--reserved-memory-mib",
                        std::to_string(262144 - 3072)})
                  .exit_code,
              0);
  }
  ASSERT_TRUE(await_driven("fake:///second")) << "the server picks the new node up by itself";
  const auto second = node_id_of("fake:///second");
  ASSERT_FALSE(second.empty());

  std::map<std::string, std::vector<std::string>> by_address;
  for (int i = 0; i < 6; ++i) {
    const auto h = create_active(R"({"memory_mib": 1024})");
    ASSERT_FALSE(h.is_null()) << i;
    by_address[h.value("ssh_host", "")].push_back(h.value("id", ""));
  }
  ASSERT_EQ(by_address["198.51.100.9"].size(), 3U) << "the second node's own SSH address";
  ASSERT_EQ(by_address.size(), 2U);
  // The guests are where the rows say: on the second node's own fake hypervisor.
  const auto second_dir = fake_node_dir(database_url()) / "nodes" / second;
  for (const auto& id : by_address["198.51.100.9"]) {
    EXPECT_TRUE(std::filesystem::exists(second_dir / (id + ".vm"))) << id;
    EXPECT_FALSE(std::filesystem::exists(fake_node_dir(database_url()) / (id + ".vm"))) << id;
  }
  const auto full = create(R"({"memory_mib": 1024})");
  EXPECT_EQ(full.status, 503) << full;
  const auto why = body_json(full).value("detail", "");
  EXPECT_NE(why.find("node fake:///node has no room"), std::string::npos) << why;
  EXPECT_NE(why.find("node fake:///second has no room"), std::string::npos) << why;

  // Removing a node that holds hosts is refused; once they are deleted (each where it runs)
  // it goes, and creates only go to the first node.
  const auto busy = node_cli({"rm", "fake:///second"});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("still has 3 host row(s)"), std::string::npos) << busy.err;
  for (const auto& id : by_address["198.51.100.9"]) {
    ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204) << id;
    EXPECT_FALSE(std::filesystem::exists(second_dir / (id + ".vm"))) << id;
  }
  const auto rm = node_cli({"rm", "fake:///second"});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(node_cli({"ls"}).out.find("fake:///second"), std::string::npos);
}

TEST_F(nodes, AddingANodeThisVersionCannotDriveIsRefusedAndRecordsNothing) {
  const auto add = node_cli({"add", "qemu+tcp://10.0.0.2/system", "--ssh-host", "10.0.0.2"});
  EXPECT_EQ(add.exit_code, 1);
  EXPECT_NE(add.err.find("remote libvirt nodes are not supported yet"), std::string::npos)
      << add.err;
  EXPECT_EQ(node_cli({"ls"}).out.find("10.0.0.2"), std::string::npos);
  const auto no_address = node_cli({"add", "fake:///x"});
  EXPECT_NE(no_address.exit_code, 0) << "--ssh-host is required";
}

}  // namespace
}  // namespace litterbox::test::api
