// The nodes part of the store contract (issue 14): registration, placement refused on a full,
// cordoned or draining node in the insert's own transaction, and drains. Run against the
// in-memory fake and pg_store.
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/store.hpp"
#include "tests/contract/store_backends.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace litterbox::controlplane {
namespace {

using contract::make_host;
using namespace std::chrono_literals;
using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));
const port_range k_ports{20000, 29999};

template <class Backend>
class node_store_contract : public ::testing::Test {
 protected:
  Backend backend_;
  store& store_ = backend_.store;

  /// A node of exactly `cpus` vCPUs and `memory_mib` MiB for guests (no overcommit, no
  /// reservation).
  node_record node(std::string uri, int cpus, std::int64_t memory_mib) {
    auto n = store_.register_node({uri, "192.0.2.1", cpus, memory_mib}, t0);
    EXPECT_TRUE(n) << (n ? "" : n.error().message);
    node_settings exact;
    exact.reserved_cpus = 0;
    exact.reserved_memory_mib = 0;
    exact.cpu_overcommit = 1;
    exact.memory_overcommit = 1;
    auto set = store_.configure_node(uri, exact, t0);
    EXPECT_TRUE(set) << (set ? "" : set.error().message);
    return set ? *set : node_record{};
  }

  host_record on(const node_record& n, int cpus = 1, int memory_mib = 512) {
    auto h = make_host(t0);
    h.host.cpus = cpus;
    h.host.memory_mib = memory_mib;
    h.node_id = n.id;
    return h;
  }

  /// A host that any of `nodes` may take (the store places it).
  host_record anywhere(const std::vector<node_record>& nodes) {
    auto h = on(nodes.front());
    h.node_id.reset();
    for (const auto& n : nodes) {
      h.node_choices.push_back(n.id);
    }
    return h;
  }

  /// Inserts `count` hosts made by `make`, each from a thread of its own, all at once;
  /// returns how many were placed and how many refused with capacity.
  template <class Make>
  std::pair<int, int> insert_at_once(int count, Make make) {
    std::latch go(count);
    std::atomic<int> placed{0};
    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < count; ++i) {
      threads.emplace_back([&, h = make()] {
        go.arrive_and_wait();
        const auto out = store_.insert_host(h, std::nullopt, k_ports, t0);
        if (out) {
          ++placed;
        } else if (out.error().code == errc::capacity) {
          ++refused;
        }
      });
    }
    for (auto& t : threads) {
      t.join();
    }
    return {placed.load(), refused.load()};
  }

  node_record reread(const node_record& n) {
    for (const auto& each : store_.list_nodes().value()) {
      if (each.id == n.id) {
        return each;
      }
    }
    ADD_FAILURE() << "node " << n.uri << " is gone";
    return {};
  }
};

TYPED_TEST_SUITE(node_store_contract, contract::store_backends, contract::backend_names);

TYPED_TEST(node_store_contract, RegisteringAgainRefreshesWhatTheNodeReportsAndKeepsTheOperators) {
  const auto first = this->store_.register_node({"qemu:///system", "127.0.0.1", 2, 24000}, t0);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->state, node_state::active);
  EXPECT_EQ(first->reserved_memory_mib, 1024) << "the default reservation";
  EXPECT_EQ(first->cpu_overcommit, 16);
  EXPECT_EQ(first->cpu_capacity(), 32);
  EXPECT_EQ(first->memory_capacity(), 36000 - 1024);
  node_settings s;
  s.cpu_overcommit = 4;
  ASSERT_TRUE(this->store_.configure_node("qemu:///system", s, t0));
  ASSERT_TRUE(this->store_.set_node_state(first->id, node_state::cordoned, t0));

  const auto again =
      this->store_.register_node({"qemu:///system", "198.51.100.7", 4, 32000}, t0 + 1h);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(again->ssh_host, "198.51.100.7");
  EXPECT_EQ(again->cpus, 4);
  EXPECT_EQ(again->memory_mib, 32000);
  EXPECT_EQ(again->last_seen_at, t0 + 1h);
  EXPECT_EQ(again->cpu_overcommit, 4) << "the operator's setting survives a restart";
  EXPECT_EQ(again->state, node_state::cordoned) << "and so does a cordon";
  EXPECT_EQ(this->store_.list_nodes().value().size(), 1U);
}

TYPED_TEST(node_store_contract, TheFirstNodeToRegisterTakesTheHostsFromBeforeNodes) {
  const auto old = make_host(t0);
  ASSERT_TRUE(this->store_.insert_host(old, std::nullopt, k_ports, t0));
  const auto n = this->store_.register_node({"qemu:///system", "127.0.0.1", 2, 24000}, t0);
  ASSERT_TRUE(n);
  EXPECT_EQ(this->store_.get_host(old.host.id)->node_id, n->id);
  EXPECT_EQ(n->hosts, 1);
  EXPECT_EQ(n->used_cpus, 1);
  EXPECT_EQ(n->used_memory_mib, 512);
}

TYPED_TEST(node_store_contract, AHostThatDoesNotFitIsCapacityAndKeepsNoRowPortOrKey) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 2, 1024);
  ASSERT_TRUE(this->store_.insert_host(this->on(n, 1, 512), std::nullopt, k_ports, t0));
  auto key = idempotency_claim{"default", "k", "f", "", t0 + 24h};
  const auto too_big = this->on(n, 1, 1024);
  const auto refused = this->store_.insert_host(too_big, key, k_ports, t0);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::capacity);
  EXPECT_EQ(refused.error().message,
            "node qemu+tcp://10.0.0.2/system has no room for 1 vCPUs and 1024 MiB (1 vCPUs and "
            "512 MiB free)");
  EXPECT_FALSE(this->store_.get_host(too_big.host.id));
  // The key is free: the same key with a host that fits is a fresh create.
  const auto fits = this->store_.insert_host(this->on(n, 1, 512), key, k_ports, t0);
  ASSERT_TRUE(fits) << fits.error().message;
  EXPECT_TRUE(fits->created);
  const auto now_full = this->store_.insert_host(this->on(n, 1, 1), std::nullopt, k_ports, t0);
  ASSERT_FALSE(now_full);
  EXPECT_EQ(now_full.error().code, errc::capacity) << "two vCPUs are held";
}

TYPED_TEST(node_store_contract, HostsInErrorHoldNothingOnTheirNode) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 1, 512);
  const auto a = this->on(n);
  ASSERT_TRUE(this->store_.insert_host(a, std::nullopt, k_ports, t0));
  ASSERT_FALSE(this->store_.insert_host(this->on(n), std::nullopt, k_ports, t0));
  host_patch failed;
  failed.status = host_status::error;
  ASSERT_TRUE(this->store_.transition(a.host.id, {host_status::provisioning}, failed, t0));
  EXPECT_EQ(this->reread(n).hosts, 0);
  EXPECT_TRUE(this->store_.insert_host(this->on(n), std::nullopt, k_ports, t0));
}

TYPED_TEST(node_store_contract, ACordonedOrDrainingNodeTakesNoHostsAndAnActiveOneDoes) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 8, 8192);
  for (const auto state : {node_state::cordoned, node_state::draining}) {
    ASSERT_TRUE(this->store_.set_node_state(n.uri, state, t0));
    const auto refused = this->store_.insert_host(this->on(n), std::nullopt, k_ports, t0);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, errc::capacity);
    EXPECT_EQ(refused.error().message, "node qemu+tcp://10.0.0.2/system is " +
                                           std::string(to_string(state)) +
                                           ": it takes no new hosts");
    const template_key_row key{"sha256:d", 1, 512, std::nullopt, "agent"};
    const auto member = this->store_.insert_pool_member(this->on(n), key, 4, k_ports, t0);
    ASSERT_FALSE(member) << "nor pool members";
    EXPECT_EQ(member.error().code, errc::capacity);
  }
  ASSERT_TRUE(this->store_.set_node_state(n.id, node_state::active, t0));
  EXPECT_TRUE(this->store_.insert_host(this->on(n), std::nullopt, k_ports, t0));
  EXPECT_EQ(this->store_.set_node_state("qemu:///nowhere", node_state::active, t0).error().code,
            errc::not_found);
}

TYPED_TEST(node_store_contract, PoolMembersHoldCapacityAndAreRefusedOnAFullNode) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 2, 1024);
  const template_key_row key{"sha256:d", 1, 512, std::nullopt, "agent"};
  for (int i = 0; i < 2; ++i) {
    const auto m = this->store_.insert_pool_member(this->on(n), key, 4, k_ports, t0);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_TRUE(m->created);
  }
  const auto third = this->store_.insert_pool_member(this->on(n), key, 4, k_ports, t0);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, errc::capacity);
  EXPECT_EQ(this->reread(n).used_memory_mib, 1024);
}

TYPED_TEST(node_store_contract, SixteenConcurrentInsertsNeverOverfillANode) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 5, 5 * 512);
  const auto [placed, refused] = this->insert_at_once(16, [&] { return this->on(n); });
  EXPECT_EQ(placed, 5);
  EXPECT_EQ(refused, 11);
  const auto after = this->reread(n);
  EXPECT_EQ(after.hosts, 5);
  EXPECT_EQ(after.used_cpus, 5);
}

TYPED_TEST(node_store_contract, ExpiringANodesHostsTouchesOnlyItsLiveHostsAndDropsTheirLease) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 8, 8192);
  const auto other = this->node("qemu+tcp://10.0.0.3/system", 8, 8192);
  auto bootstrapping = this->on(n);
  bootstrapping.lease_seconds = 3600;
  const auto active = this->on(n);
  const auto provisioning = this->on(n);
  const auto elsewhere = this->on(other);
  for (const auto& h : std::vector<host_record>{bootstrapping, active, provisioning, elsewhere}) {
    ASSERT_TRUE(this->store_.insert_host(h, std::nullopt, k_ports, t0));
  }
  host_patch to;
  to.status = host_status::bootstrapping;
  ASSERT_TRUE(this->store_.transition(bootstrapping.host.id, {host_status::provisioning}, to, t0));
  to.status = host_status::active;
  to.expires_at = std::optional<timestamp>(t0 + 24h);
  ASSERT_TRUE(this->store_.transition(active.host.id, {host_status::provisioning}, to, t0));
  ASSERT_TRUE(this->store_.transition(elsewhere.host.id, {host_status::provisioning}, to, t0));

  EXPECT_EQ(this->store_.expire_node_hosts(n.id, t0 + 1s).value(), 2);
  EXPECT_EQ(this->store_.get_host(active.host.id)->host.expires_at, t0 + 1s);
  const auto b = this->store_.get_host(bootstrapping.host.id).value();
  EXPECT_EQ(b.host.expires_at, t0 + 1s);
  EXPECT_FALSE(b.lease_seconds) << "activation must not stamp a new expiry over it";
  EXPECT_FALSE(this->store_.get_host(provisioning.host.id)->host.expires_at);
  EXPECT_EQ(this->store_.get_host(elsewhere.host.id)->host.expires_at, t0 + 24h);
  EXPECT_EQ(this->store_.expire_node_hosts(n.id, t0 + 2s).value(), 0) << "already due";
}

TYPED_TEST(node_store_contract, NodeSettingsAreValidated) {
  const auto n = this->node("qemu+tcp://10.0.0.2/system", 2, 1024);
  node_settings bad;
  bad.cpu_overcommit = 0;
  EXPECT_EQ(this->store_.configure_node(n.id, bad, t0).error().code, errc::validation);
  bad = {};
  bad.reserved_memory_mib = -1;
  EXPECT_EQ(this->store_.configure_node(n.id, bad, t0).error().code, errc::validation);
  node_settings fine;
  fine.memory_overcommit = 1.5;
  const auto set = this->store_.configure_node(n.uri, fine, t0);
  ASSERT_TRUE(set);
  EXPECT_EQ(set->memory_capacity(), 1536);
  EXPECT_EQ(set->cpu_overcommit, 1) << "unset fields are kept";
  EXPECT_EQ(this->store_.configure_node("nope", fine, t0).error().code, errc::not_found);
}

// --- several nodes: placement among the ones the creating process drives ---

TYPED_TEST(node_store_contract, AHostGoesToTheCandidateWithMostFreeMemoryAndTakesItsAddress) {
  const auto small = this->node("fake:///small", 8, 2048);
  const auto big = this->node("fake:///big", 8, 4096);
  ASSERT_TRUE(this->store_.register_node({"fake:///big", "198.51.100.7", 8, 4096}, t0));
  std::map<std::string, int> on;
  // 4096 vs 2048 free: big, big (3072 vs 2048), big (2048 vs 2048 is a tie: the lower id),
  // and so on; the nodes fill evenly by what is left, never beyond their room.
  for (int i = 0; i < 12; ++i) {
    const auto out =
        this->store_.insert_host(this->anywhere({small, big}), std::nullopt, k_ports, t0);
    ASSERT_TRUE(out) << i << ": " << out.error().message;
    ASSERT_TRUE(out->existing.node_id);
    ++on[*out->existing.node_id];
    if (*out->existing.node_id == big.id) {
      EXPECT_EQ(out->existing.host.ssh_host, "198.51.100.7") << "the node's own address";
    } else {
      EXPECT_EQ(out->existing.host.ssh_host, "192.0.2.1");
    }
    const auto read = this->store_.get_host(out->existing.host.id);
    ASSERT_TRUE(read);
    EXPECT_EQ(read->node_id, out->existing.node_id) << "stored as placed";
  }
  EXPECT_EQ(on[big.id], 8) << "4096 MiB of 512";
  EXPECT_EQ(on[small.id], 4) << "2048 MiB of 512";
  const auto full =
      this->store_.insert_host(this->anywhere({small, big}), std::nullopt, k_ports, t0);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, errc::capacity);
  EXPECT_NE(full.error().message.find("fake:///small"), std::string::npos)
      << "each node's refusal: " << full.error().message;
  EXPECT_NE(full.error().message.find("fake:///big"), std::string::npos);
}

TYPED_TEST(node_store_contract, ThePreferredNodeIsChosenWhileItHasRoomThenTheOthers) {
  const auto a = this->node("fake:///a", 8, 1024);
  const auto b = this->node("fake:///b", 8, 8192);
  const auto preferring_a = [&] {
    auto h = this->anywhere({a, b});
    h.prefer_node = a.id;  // say, where the template is: less room, but chosen while it fits
    return h;
  };
  for (int i = 0; i < 2; ++i) {
    const auto out = this->store_.insert_host(preferring_a(), std::nullopt, k_ports, t0);
    ASSERT_TRUE(out) << out.error().message;
    EXPECT_EQ(out->existing.node_id, a.id);
  }
  const auto third = this->store_.insert_host(preferring_a(), std::nullopt, k_ports, t0);
  ASSERT_TRUE(third) << third.error().message;
  EXPECT_EQ(third->existing.node_id, b.id) << "the preferred node is full";
}

TYPED_TEST(node_store_contract, CordonedNodesAndNodesNotAmongTheCandidatesAreNeverChosen) {
  const auto a = this->node("fake:///a", 8, 8192);
  const auto b = this->node("fake:///b", 8, 8192);
  const auto c = this->node("fake:///c", 64, 65536);  // roomiest, but not a candidate
  ASSERT_TRUE(this->store_.set_node_state(a.id, node_state::cordoned, t0));
  for (int i = 0; i < 4; ++i) {
    const auto out = this->store_.insert_host(this->anywhere({a, b}), std::nullopt, k_ports, t0);
    ASSERT_TRUE(out) << out.error().message;
    EXPECT_EQ(out->existing.node_id, b.id);
  }
  ASSERT_TRUE(this->store_.set_node_state(b.id, node_state::draining, t0));
  const auto none = this->store_.insert_host(this->anywhere({a, b}), std::nullopt, k_ports, t0);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::capacity);
  EXPECT_EQ(this->reread(c).hosts, 0);
}

TYPED_TEST(node_store_contract, SixteenConcurrentInsertsOverTwoNodesFillBothExactly) {
  const auto a = this->node("fake:///a", 3, 3 * 512);
  const auto b = this->node("fake:///b", 2, 2 * 512);
  const auto [placed, refused] = this->insert_at_once(16, [&] { return this->anywhere({a, b}); });
  EXPECT_EQ(placed, 5);
  EXPECT_EQ(refused, 11);
  EXPECT_EQ(this->reread(a).hosts, 3);
  EXPECT_EQ(this->reread(b).hosts, 2);
}

TYPED_TEST(node_store_contract, ANodeIsRemovedOnlyWithoutHostRowsAndTakesItsTemplatesWithIt) {
  const auto a = this->node("fake:///a", 8, 8192);
  const auto b = this->node("fake:///b", 8, 8192);
  template_key_row key;
  key.image_digest = "sha256:" + std::string(64, 'a');
  key.ssh_username = "dev";
  template_record t;
  t.id = new_uuid_v7(t0);
  t.key = key;
  t.image = "registry.test/debian:12";
  t.owner_id = "0190c0de-0000-7000-8000-0000000000a1";
  ASSERT_TRUE(this->store_.heartbeat(*t.owner_id, "builder", 1, 10s, t0));
  t.created_at = t.updated_at = t.last_used_at = t0;
  t.node_id = b.id;
  const auto claimed = this->store_.claim_template_build(t, k_ports, t0);
  ASSERT_TRUE(claimed && *claimed) << (claimed ? "taken" : claimed.error().message);
  EXPECT_EQ((*claimed)->node_id, b.id) << "a template is saved on the node that built it";

  const auto h = this->store_.insert_host(this->on(b), std::nullopt, k_ports, t0);
  ASSERT_TRUE(h) << h.error().message;
  const auto busy = this->store_.remove_node("fake:///b");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, errc::host_state);
  ASSERT_TRUE(this->store_.remove_host(h->existing.host.id));

  const auto gone = this->store_.remove_node("fake:///b");
  ASSERT_TRUE(gone) << gone.error().message;
  EXPECT_EQ(gone->id, b.id);
  const auto left = this->store_.list_nodes();
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1U);
  EXPECT_EQ(left->front().id, a.id);
  const auto tpl = this->store_.find_template(key);
  ASSERT_TRUE(tpl);
  EXPECT_FALSE(*tpl) << "its template row went with it";
  const auto again = this->store_.remove_node(b.id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::not_found);
}

}  // namespace
}  // namespace litterbox::controlplane
