// Creates over several nodes (issue 14), through host_service, a fleet of two fake nodes and
// the in-memory store: hosts go where there is room, a clone only ever comes from a template
// saved on the host's own node, and a host is torn down on the node it runs on.
#include "base/time.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/templates.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "hypervisor/fleet_driver.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <string>

namespace litterbox::controlplane {
namespace {

using schema::host_status;

const timestamp k_start = timestamp(std::chrono::seconds(1'800'000'000));

class PlacementTest : public ::testing::Test {
 protected:
  PlacementTest() : clock_(k_start) {
    cfg_.default_image = "registry.test/base:1";
    cfg_.lease_default_ttl = std::chrono::hours(1);
    cfg_.ssh_port_min = 30000;
    cfg_.ssh_port_max = 30099;
    cfg_.provision_timeout = std::chrono::seconds(10);
    cfg_.shutdown_drain = std::chrono::seconds(0);
    cfg_.idempotency_secret = "test-secret";
    cfg_.templates = true;
    a_ = *store_.register_node({"fake:///a", "192.0.2.1", 64, 262144}, k_start);
    b_ = *store_.register_node({"fake:///b", "192.0.2.2", 64, 262144}, k_start);
    cfg_.node_id = a_.id;
    // Where a host or template is, as serve's locator says it from the database.
    fleet_ = std::make_unique<hypervisor::fleet_driver>(
        a_.id, a_.uri, node_a_, [this](std::string_view id) -> result<std::optional<std::string>> {
          if (auto h = store_.get_host(id)) {
            return h->node_id;
          }
          for (const auto& t : store_.list_templates().value()) {
            if (t.id == id) {
              return t.node_id;
            }
          }
          return std::optional<std::string>();
        });
    fleet_->add_node(b_.id, b_.uri, node_b_);
  }

  host_service& service() {
    if (!service_) {
      service_ = std::make_unique<host_service>(cfg_, store_, *fleet_, clock_,
                                                "01900000-0000-7000-8000-00000000f001");
    }
    return *service_;
  }

  /// A settled create: its row.
  host_record created() {
    auto req = schema::parse_create_host_request("{}");
    EXPECT_TRUE(req);
    auto r = service().create(*req, std::nullopt);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    if (!r) {
      return {};
    }
    std::promise<void> done;
    if (service().notify_when_settled(r->host.id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    auto row = store_.get_host(r->host.id);
    EXPECT_TRUE(row);
    EXPECT_EQ(row->host.status, host_status::active) << row->host.last_error;
    return *row;
  }

  void set_state(const node_record& n, node_state s) {
    ASSERT_TRUE(store_.set_node_state(n.id, s, k_start));
  }

  manual_clock clock_;
  config cfg_;
  testing::memory_store store_;
  node_record a_;
  node_record b_;
  std::shared_ptr<hypervisor::fake_driver> node_a_ = std::make_shared<hypervisor::fake_driver>();
  std::shared_ptr<hypervisor::fake_driver> node_b_ = std::make_shared<hypervisor::fake_driver>();
  std::unique_ptr<hypervisor::fleet_driver> fleet_;
  std::unique_ptr<host_service> service_;
};

TEST_F(PlacementTest, ACloneComesOnlyFromATemplateOnTheHostsOwnNodeAndPlacementPrefersIt) {
  set_state(b_, node_state::cordoned);
  const auto first = created();
  EXPECT_EQ(first.node_id, a_.id);
  EXPECT_EQ(first.path, create_path::boot);
  EXPECT_EQ(first.host.ssh_host, "192.0.2.1") << "the node's address";
  ASSERT_EQ(service().templates()->build_pending(), 1);
  const auto tpl = store_.list_templates().value();
  ASSERT_EQ(tpl.size(), 1U);
  EXPECT_EQ(tpl.front().node_id, a_.id) << "built where the create that wanted it ran";

  // Node a has the template but takes no hosts: the create goes to b, and boots there.
  set_state(b_, node_state::active);
  set_state(a_, node_state::cordoned);
  const auto elsewhere = created();
  EXPECT_EQ(elsewhere.node_id, b_.id);
  EXPECT_EQ(elsewhere.path, create_path::boot) << "no template on node b";
  EXPECT_EQ(elsewhere.host.ssh_host, "192.0.2.2");
  EXPECT_TRUE(node_b_->live_vms().count(elsewhere.host.id));
  EXPECT_FALSE(node_a_->live_vms().count(elsewhere.host.id));

  // Both take hosts again: node b has more room now, but a holds the template and wins.
  set_state(a_, node_state::active);
  const auto clone = created();
  EXPECT_EQ(clone.node_id, a_.id);
  EXPECT_EQ(clone.path, create_path::clone);
  EXPECT_EQ(node_a_->cloned_from(clone.host.id), tpl.front().id);

  // Each host is torn down on its own node only.
  const int destroys_on_a = node_a_->calls(hypervisor::fake_phase::destroy);
  ASSERT_TRUE(service().remove(elsewhere.host.id));
  EXPECT_FALSE(node_b_->live_vms().count(elsewhere.host.id));
  EXPECT_EQ(node_a_->calls(hypervisor::fake_phase::destroy), destroys_on_a);
  EXPECT_TRUE(node_a_->live_vms().count(clone.host.id));
}

TEST_F(PlacementTest, CreatesGoPastANodeThatDoesNotAnswer) {
  // Node b has more room, but it stopped answering at the last check.
  ASSERT_TRUE(store_.configure_node(a_.id, {0, 1024, 16, 0.01}, k_start));
  node_b_->set_failure(hypervisor::fake_phase::node,
                       make_error(hypervisor::errc::unavailable, "libvirtd away"));
  fleet_->check_nodes();
  const auto placed = created();
  EXPECT_EQ(placed.node_id, a_.id);
  EXPECT_TRUE(node_a_->live_vms().count(placed.host.id));

  node_b_->set_failure(hypervisor::fake_phase::node, std::nullopt);
  fleet_->check_nodes();
  EXPECT_EQ(created().node_id, b_.id) << "it answers again, with the most room";
}

}  // namespace
}  // namespace litterbox::controlplane
