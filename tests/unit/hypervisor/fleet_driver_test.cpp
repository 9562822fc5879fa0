// fleet_driver: calls reach the node that holds what they are about, and one node that does
// not answer is told apart from "nothing there" (the driver contract runs it too).
#include "hypervisor/fleet_driver.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>

namespace litterbox::hypervisor {
namespace {

using namespace std::chrono_literals;

class fleet_driver_test : public ::testing::Test {
 protected:
  fleet_driver_test() {
    fake_options b;
    b.node = {"fake:///b", 8, 8192};
    node_b = std::make_shared<fake_driver>(b);
    fleet.add_node("node-b", "fake:///b", node_b);
  }

  vm_spec spec(const std::string& id, const std::string& node) {
    vm_spec s;
    s.host_id = id;
    s.name = "sb-" + id.substr(0, 8);
    s.image = "registry.test/debian:12";
    s.image_digest = "sha256:" + std::string(64, '1');
    s.ssh_host = "127.0.0.1";
    s.ssh_port = 22022;
    s.node_id = node;
    return s;
  }

  std::shared_ptr<fake_driver> node_a = std::make_shared<fake_driver>();
  std::shared_ptr<fake_driver> node_b;
  std::map<std::string, std::string> rows;  // what the database would say: id -> node
  bool database_down = false;
  fleet_driver fleet{"node-a", "fake:///node", node_a,
                     [this](std::string_view id) -> result<std::optional<std::string>> {
                       if (database_down) {
                         return make_error(errc::unavailable, "database unavailable");
                       }
                       const auto it = rows.find(std::string(id));
                       if (it == rows.end()) {
                         return std::optional<std::string>();
                       }
                       return std::optional<std::string>(it->second);
                     }};
};

const std::string k_id1 = "0190c0de-0000-7000-8000-000000000001";
const std::string k_id2 = "0190c0de-0000-7000-8000-000000000002";

TEST_F(fleet_driver_test, ACreateRunsOnTheNodeItsSpecNamesAndAnUnnamedOneOnTheHomeNode) {
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-b")));
  ASSERT_TRUE(fleet.create_vm(spec(k_id2, "")));
  EXPECT_EQ(node_b->live_vms(), std::set<std::string>{k_id1});
  EXPECT_EQ(node_a->live_vms(), std::set<std::string>{k_id2});
  EXPECT_TRUE(fleet.wait_ready(spec(k_id1, "node-b"), std::chrono::steady_clock::now() + 5s));
  EXPECT_EQ(fleet.node_ids(), (std::vector<std::string>{"node-a", "node-b"}));
}

TEST_F(fleet_driver_test, ASpecForANodeThisFleetDoesNotDriveIsUnavailable) {
  const auto made = fleet.create_vm(spec(k_id1, "node-z"));
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code, errc::unavailable);
  EXPECT_NE(made.error().message.find("node-z"), std::string::npos);
  EXPECT_TRUE(node_a->live_vms().empty());
  EXPECT_TRUE(node_b->live_vms().empty());
}

TEST_F(fleet_driver_test, DestroyAndConsoleGoOnlyToTheNodeTheDatabaseNames) {
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-b")));
  rows[k_id1] = "node-b";
  EXPECT_TRUE(fleet.console(k_id1, 100).has_value());
  ASSERT_TRUE(fleet.destroy(k_id1));
  EXPECT_TRUE(node_b->live_vms().empty());
  EXPECT_EQ(node_a->calls(fake_phase::destroy), 0) << "the other node is not asked";
  EXPECT_EQ(node_b->calls(fake_phase::destroy), 1);
}

TEST_F(fleet_driver_test, AnIdNoRowNamesIsDestroyedOnEveryNode) {
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-b")));  // an orphan: its row is gone
  ASSERT_TRUE(fleet.destroy(k_id1));
  EXPECT_TRUE(node_b->live_vms().empty());
  EXPECT_EQ(node_a->calls(fake_phase::destroy), 1);
  EXPECT_EQ(node_b->calls(fake_phase::destroy), 1);
}

TEST_F(fleet_driver_test, WhenTheDatabaseCannotSayWhereAnIdIsNothingIsDestroyed) {
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-b")));
  database_down = true;
  const auto d = fleet.destroy(k_id1);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::unavailable);
  EXPECT_EQ(node_b->live_vms(), std::set<std::string>{k_id1});
}

TEST_F(fleet_driver_test, VmStatesFailWhenOneNodeDoesNotAnswerWhileListsKeepTheOthers) {
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-a")));
  ASSERT_TRUE(fleet.create_vm(spec(k_id2, "node-b")));
  const auto both = fleet.vm_states();
  ASSERT_TRUE(both) << both.error().message;
  EXPECT_EQ(both->size(), 2U);

  node_b->set_failure(fake_phase::vm_states, make_error(errc::unavailable, "libvirtd away"));
  const auto states = fleet.vm_states();
  ASSERT_FALSE(states) << "a VM missing from the answer would be taken for gone";
  EXPECT_NE(states.error().message.find("fake:///b"), std::string::npos);
  const auto owned = fleet.list_owned();
  ASSERT_TRUE(owned) << owned.error().message;
  EXPECT_EQ(owned->size(), 2U);
}

TEST_F(fleet_driver_test, ANodeAddedLaterIsWatchedLikeTheFirst) {
  std::atomic<int> wakes{0};
  fleet.watch_vms([&wakes] { ++wakes; });
  auto node_c = std::make_shared<fake_driver>();
  fleet.add_node("node-c", "fake:///c", node_c);
  ASSERT_TRUE(fleet.create_vm(spec(k_id1, "node-c")));
  ASSERT_TRUE(node_c->kill_vm(k_id1, fake_driver::vm_fate::crashed));
  EXPECT_GE(wakes.load(), 1);
  EXPECT_TRUE(fleet.drives("node-c"));
  fleet.add_node("node-c", "fake:///c2", std::make_shared<fake_driver>());
  EXPECT_EQ(fleet.node_ids().size(), 3U) << "a node already driven keeps its driver";
}

TEST_F(fleet_driver_test, ANodeThatDoesNotAnswerIsLeftOutOfPlacementUntilItAnswersAgain) {
  EXPECT_EQ(fleet.node_ids(), (std::vector<std::string>{"node-a", "node-b"}));
  node_b->set_failure(fake_phase::node, make_error(errc::unavailable, "libvirtd away"));
  fleet.check_nodes();
  EXPECT_EQ(fleet.node_ids(), std::vector<std::string>{"node-a"});
  // Its hosts are still its own: a spec for it still goes there.
  EXPECT_TRUE(fleet.create_vm(spec(k_id1, "node-b")));
  EXPECT_EQ(node_b->live_vms(), std::set<std::string>{k_id1});
  node_b->set_failure(fake_phase::node, std::nullopt);
  fleet.check_nodes();
  EXPECT_EQ(fleet.node_ids(), (std::vector<std::string>{"node-a", "node-b"}));
}

TEST_F(fleet_driver_test, DoctorNamesTheChecksOfFurtherNodesByTheirUri) {
  const auto checks = fleet.doctor();
  const auto home = node_a->doctor().size();
  ASSERT_EQ(checks.size(), home + node_b->doctor().size());
  for (std::size_t i = 0; i < checks.size(); ++i) {
    const bool further = checks[i].detail.rfind("fake:///b: ", 0) == 0;
    EXPECT_EQ(further, i >= home) << checks[i].name;
    if (further) {
      EXPECT_EQ(checks[i].name.substr(checks[i].name.size() - 6), "_nodeb") << checks[i].name;
    }
  }
}

}  // namespace
}  // namespace litterbox::hypervisor
