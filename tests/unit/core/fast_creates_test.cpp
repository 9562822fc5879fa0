// The three ways a create is served — a warm-pool claim, a clone of a saved template, a boot —
// and what must hold for each: the right path is taken, identities and logins are the
// caller's, the Idempotency-Key rules hold, pool members are nobody's until claimed, and
// templates are built once, replaced when their image moves and collected when unused.
#include "base/time.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "controlplane/core/templates.hpp"
#include "controlplane/core/warm_pool.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "hypervisor/ssh/keys.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <set>
#include <thread>

namespace litterbox::controlplane {
namespace {

using hypervisor::fake_phase;
using schema::host_status;
using namespace std::chrono_literals;

const timestamp k_start = timestamp(std::chrono::seconds(1'800'000'000));
constexpr std::string_view k_image = "registry.test/base:1";

class FastCreatesTest : public ::testing::Test {
 protected:
  FastCreatesTest() : clock_(k_start) {
    cfg_.default_image = std::string(k_image);
    cfg_.lease_default_ttl = std::chrono::hours(1);
    cfg_.ssh_port_min = 30000;
    cfg_.ssh_port_max = 30099;
    cfg_.provision_timeout = std::chrono::seconds(10);
    cfg_.shutdown_drain = std::chrono::seconds(0);
    cfg_.idempotency_secret = "test-secret";
    cfg_.templates = true;
    cfg_.pool_refill_per_minute = 1000;
  }

  void with_pool(int size) { cfg_.pools = {pool_spec{std::string(k_image), 1, 1024, {}, size}}; }

  host_service& service() {
    if (!service_) {
      service_ = std::make_unique<host_service>(cfg_, store_, driver_, clock_,
                                                "01900000-0000-7000-8000-00000000f001");
    }
    return *service_;
  }

  result<create_result> create(std::string_view body,
                               std::optional<std::string> key = std::nullopt) {
    auto req = schema::parse_create_host_request(body);
    EXPECT_TRUE(req);
    return service().create(*req, key);
  }

  host_record settled(const std::string& id) {
    std::promise<void> done;
    if (service().notify_when_settled(id, [&done] { done.set_value(); })) {
      done.get_future().wait();
    }
    auto h = store_.get_host(id);
    EXPECT_TRUE(h);
    return h ? *h : host_record{};
  }

  /// A settled create: its row and how it was served.
  std::pair<host_record, create_path> created(std::string_view body = "{}") {
    auto r = create(body);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    if (!r) {
      return {};
    }
    auto row = settled(r->host.id);
    EXPECT_EQ(row.host.status, host_status::active) << row.host.last_error;
    return {row, row.path.value_or(create_path::boot)};
  }

  /// Builds what creates so far asked for.
  int build_templates() { return service().templates()->build_pending(); }

  /// Fills the pool as its thread would, pass after pass.
  int fill_pool() {
    int total = 0;
    for (int pass = 0; pass < 20; ++pass) {
      const int n = service().pool()->refill_once();
      if (n == 0) {
        break;
      }
      total += n;
    }
    return total;
  }

  std::vector<host_record> members() {
    auto m = store_.list_pool_members();
    EXPECT_TRUE(m);
    return m ? *m : std::vector<host_record>{};
  }

  std::string digest_of(std::string_view image) {
    auto d = driver_.resolve_image(image);
    EXPECT_TRUE(d);
    return d ? *d : std::string();
  }

  /// The driver's apply_login hook, called at the start of each login (a claim's).
  hypervisor::fake_options hooked() {
    hypervisor::fake_options o;
    o.on_login = [this](const std::string& id) {
      if (on_login_) {
        on_login_(id);
      }
    };
    return o;
  }

  config cfg_;
  manual_clock clock_;
  testing::memory_store store_;
  std::function<void(const std::string&)> on_login_;
  hypervisor::fake_driver driver_{hooked()};
  std::unique_ptr<host_service> service_;
};

TEST_F(FastCreatesTest, FirstCreateBootsAndAsksForItsTemplateTheNextIsACloneOfIt) {
  auto [first, first_path] = created();
  EXPECT_EQ(first_path, create_path::boot);
  EXPECT_FALSE(driver_.cloned_from(first.host.id));

  EXPECT_EQ(build_templates(), 1);
  auto tpl = store_.find_template({digest_of(k_image), 1, 1024, std::nullopt, cfg_.ssh_username});
  ASSERT_TRUE(tpl && *tpl);
  EXPECT_EQ((*tpl)->status, template_status::ready);

  auto [second, second_path] = created();
  EXPECT_EQ(second_path, create_path::clone);
  EXPECT_EQ(driver_.cloned_from(second.host.id), (*tpl)->id);
  auto served = service().served_by(second.host.id);
  ASSERT_TRUE(served);
  EXPECT_EQ(*served, create_path::clone);
  // A clone is a host like any other: its own name, port and pinned key.
  EXPECT_NE(second.host.ssh_port, first.host.ssh_port);
  EXPECT_NE(second.host.known_hosts, first.host.known_hosts);
  EXPECT_EQ(driver_.vm(second.host.id)->name, second.host.name);
}

TEST_F(FastCreatesTest, CloneNeedsTheTemplateOfItsOwnSizeAnotherSizeBoots) {
  created();
  build_templates();
  auto [bigger, path] = created(R"({"cpus": 2})");
  EXPECT_EQ(path, create_path::boot);
  EXPECT_EQ(build_templates(), 1);  // the 2-cpu template is its own
  EXPECT_EQ(created(R"({"cpus": 2})").second, create_path::clone);
}

TEST_F(FastCreatesTest, TemplateIsBuiltOnceForTwoProcessesSharingTheDatabase) {
  created();
  host_service other(cfg_, store_, driver_, clock_, "01900000-0000-7000-8000-00000000f002");
  auto req = schema::parse_create_host_request("{}");
  auto r = other.create(*req, std::nullopt);
  ASSERT_TRUE(r);
  std::promise<void> done;
  if (other.notify_when_settled(r->host.id, [&done] { done.set_value(); })) {
    done.get_future().wait();
  }
  // Both want the same key; whichever builds first holds the row and the other builds nothing.
  std::thread a([&] { build_templates(); });
  std::thread b([&] { other.templates()->build_pending(); });
  a.join();
  b.join();
  EXPECT_EQ(driver_.calls(fake_phase::build_template), 1);
  auto all = store_.list_templates();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1U);
  other.shutdown();
}

TEST_F(FastCreatesTest, ImageThatCannotBeClonedKeepsBootingAndDoctorSaysWhy) {
  auto [first, path] = created(R"({"image": "registry.test/no-agent:1"})");
  EXPECT_EQ(path, create_path::boot);
  EXPECT_EQ(build_templates(), 0);
  EXPECT_EQ(created(R"({"image": "registry.test/no-agent:1"})").second, create_path::boot);
  // Never rebuilt: the image will not gain an agent.
  clock_.advance(std::chrono::hours(24));
  created(R"({"image": "registry.test/no-agent:1"})");
  EXPECT_EQ(build_templates(), 0);
  EXPECT_EQ(driver_.calls(fake_phase::build_template), 1);

  const auto report = service().doctor();
  const auto it = std::find_if(report.checks.begin(), report.checks.end(),
                               [](const auto& c) { return c.name == "templates"; });
  ASSERT_NE(it, report.checks.end());
  EXPECT_TRUE(it->ok);  // creates still work, only slower
  EXPECT_NE(it->detail.find("no-agent"), std::string::npos) << it->detail;
  EXPECT_NE(it->detail.find("qemu-guest-agent"), std::string::npos) << it->detail;
}

TEST_F(FastCreatesTest, FailedBuildIsRetriedAfterTheRetryInterval) {
  created();
  driver_.set_failure(fake_phase::build_template,
                      make_error(hypervisor::errc::boot_timeout, "template guest never booted"));
  EXPECT_EQ(build_templates(), 0);
  driver_.set_failure(fake_phase::build_template, std::nullopt);
  created();
  EXPECT_EQ(build_templates(), 0);  // not yet due
  clock_.advance(cfg_.template_retry + 1s);
  created();
  EXPECT_EQ(build_templates(), 1);
  EXPECT_EQ(created().second, create_path::clone);
}

TEST_F(FastCreatesTest, TemplateWhoseFilesAreGoneFallsBackToABootAndIsRebuilt) {
  created();
  build_templates();
  auto all = store_.list_templates();
  ASSERT_TRUE(all && all->size() == 1);
  ASSERT_TRUE(driver_.destroy_template(all->front().id));
  auto [h, path] = created();
  EXPECT_EQ(path, create_path::boot);
  EXPECT_FALSE(driver_.cloned_from(h.host.id));
  // The row went with the files, so the next want rebuilds it.
  EXPECT_EQ(build_templates(), 1);
  EXPECT_EQ(created().second, create_path::clone);
}

TEST_F(FastCreatesTest, ACloneWhosePortIsBoundBySomethingElseIsRestoredOnAnotherPort) {
  created();
  build_templates();
  // The three lowest free ports, the ones the next create is given first, are taken.
  std::set<int> busy;
  const auto leased = store_.leased_ports();
  for (int p = cfg_.ssh_port_min; busy.size() < 3; ++p) {
    if (leased.count(p) == 0) {
      busy.insert(p);
    }
  }
  driver_.set_busy_ports(busy);
  const int restores_before = driver_.calls(fake_phase::restore_clone);
  auto [h, path] = created();
  EXPECT_EQ(path, create_path::clone);
  EXPECT_EQ(busy.count(h.host.ssh_port), 0U) << h.host.ssh_port;
  EXPECT_EQ(driver_.vm(h.host.id)->ssh_port, h.host.ssh_port);
  EXPECT_NE(h.host.known_hosts.find("]:" + std::to_string(h.host.ssh_port) + " "),
            std::string::npos)
      << h.host.known_hosts;
  EXPECT_EQ(driver_.calls(fake_phase::restore_clone) - restores_before, 4)
      << "each busy port cost one restore attempt";
}

TEST_F(FastCreatesTest, ATemplateBuildOnABusyPortIsDueAgainAtOnce) {
  created();
  std::set<int> all;
  for (int p = cfg_.ssh_port_min; p <= cfg_.ssh_port_max; ++p) {
    all.insert(p);
  }
  driver_.set_busy_ports(all);
  EXPECT_EQ(build_templates(), 0);
  driver_.set_busy_ports({});
  created();
  EXPECT_EQ(build_templates(), 1) << "no template_retry wait for a port that was taken";
  EXPECT_EQ(created().second, create_path::clone);
}

TEST_F(FastCreatesTest, PoolFillsToItsSizeAndItsMembersAreNoCallersHosts) {
  with_pool(3);
  fill_pool();  // no template yet: the pool asks for one and waits
  EXPECT_TRUE(members().empty());
  EXPECT_EQ(build_templates(), 1);
  EXPECT_EQ(fill_pool(), 3);
  const auto pooled = members();
  ASSERT_EQ(pooled.size(), 3U);
  for (const auto& m : pooled) {
    EXPECT_EQ(m.host.status, host_status::active);
    EXPECT_TRUE(m.pooled);
    // Restored with no login at all: a member serves any caller's keys.
    EXPECT_TRUE(driver_.vm(m.host.id)->authorized_keys.empty());
    EXPECT_TRUE(driver_.vm(m.host.id)->env.empty());
    auto got = service().get(m.host.id);
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, errc::not_found);
    EXPECT_EQ(service().remove(m.host.id).error().code, errc::not_found);
    EXPECT_EQ(service().renew(m.host.id, {}).error().code, errc::not_found);
  }
  auto page = service().list({});
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->hosts.empty());
  auto counts = service().count_by_status();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->at(host_status::active), 0);
  EXPECT_EQ(fill_pool(), 0);  // full
}

TEST_F(FastCreatesTest, CreateClaimsAPoolMemberWithTheCallersOwnKeysAndEnv) {
  with_pool(2);
  fill_pool();
  build_templates();
  fill_pool();
  ASSERT_EQ(members().size(), 2U);
  const auto caller = hypervisor::generate_ed25519("caller");
  ASSERT_TRUE(caller);
  const std::string k_login_key = caller->public_line;
  const std::string body =
      R"json({"env": {"A": "1 'two' \"3\" $(x) `y` ;|&", "B": ""}, "ssh_authorized_keys": [")json" +
      k_login_key + R"json("]})json";
  auto r = create(body);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->path, create_path::pool);
  EXPECT_FALSE(r->host.private_key);  // the caller brought its own key
  const auto row = settled(r->host.id);
  EXPECT_EQ(row.host.status, host_status::active) << row.host.last_error;
  EXPECT_FALSE(row.pooled);
  EXPECT_EQ(row.path, create_path::pool);
  const auto vm = driver_.vm(r->host.id);
  ASSERT_TRUE(vm);
  EXPECT_EQ(vm->authorized_keys, std::vector<std::string>{k_login_key});
  EXPECT_EQ(vm->env,
            (std::map<std::string, std::string>{{"A", "1 'two' \"3\" $(x) `y` ;|&"}, {"B", ""}}));
  // The caller's lease, counted from the claim.
  ASSERT_TRUE(row.host.expires_at);
  EXPECT_EQ(*row.host.expires_at, clock_.now() + cfg_.lease_default_ttl);
  EXPECT_EQ(members().size(), 1U);

  // Minted keys are handed out by a claim as by a boot.
  auto minted = create("{}");
  ASSERT_TRUE(minted);
  EXPECT_EQ(minted->path, create_path::pool);
  EXPECT_TRUE(minted->host.private_key);
  settled(minted->host.id);
  ASSERT_EQ(driver_.vm(minted->host.id)->authorized_keys.size(), 1U);
  // Once the pool is empty a create is a clone.
  EXPECT_EQ(created().second, create_path::clone);
}

TEST_F(FastCreatesTest, APoolClaimCountsAgainstTheClaimersQuotaAndBecomesItsNamespaces) {
  with_pool(3);
  fill_pool();
  build_templates();
  fill_pool();
  ASSERT_EQ(members().size(), 3U);
  caller tenant;
  tenant.admin = false;
  tenant.key_id = "key-1";
  tenant.ns = "team-a";
  tenant.quota.max_hosts = 1;
  auto req = schema::parse_create_host_request("{}");
  ASSERT_TRUE(req);
  auto first = service().create(*req, std::nullopt, tenant);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->path, create_path::pool);
  EXPECT_EQ(settled(first->host.id).ns, "team-a");
  // The namespace is full: the next claim is refused and leaves the pool as it was.
  auto second = service().create(*req, std::string("quota-key"), tenant);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::quota);
  EXPECT_EQ(second.error().message, "quota exceeded: max_hosts=1");
  EXPECT_EQ(members().size(), 2U);
  for (const auto& m : members()) {
    EXPECT_TRUE(m.pooled);
    EXPECT_EQ(m.ns, k_admin_namespace);
  }
  EXPECT_EQ(store_.key_count(), 0U) << "the refused create's key stays free";
  // Another namespace's claim is its own, and invisible to the first.
  caller other = tenant;
  other.ns = "team-b";
  auto theirs = service().create(*req, std::nullopt, other);
  ASSERT_TRUE(theirs) << theirs.error().message;
  EXPECT_EQ(service().get(theirs->host.id, tenant).error().code, errc::not_found);
}

TEST_F(FastCreatesTest, RefillIsAskedForOnceTheClaimHasSettledNotWhileItLogsIn) {
  with_pool(1);
  fill_pool();
  build_templates();
  fill_pool();
  ASSERT_EQ(members().size(), 1U);
  std::promise<void> in_login;
  std::promise<void> release;
  auto logging_in = in_login.get_future();
  auto released = release.get_future().share();
  on_login_ = [&](const std::string&) {
    in_login.set_value();
    released.wait();
  };
  const auto before = service().pool()->pokes();
  auto r = create("{}");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->path, create_path::pool);
  logging_in.wait();
  // The caller's login is being written: a refill now would restore beside it.
  EXPECT_EQ(service().pool()->pokes(), before);
  release.set_value();
  EXPECT_EQ(settled(r->host.id).host.status, host_status::active);
  EXPECT_EQ(service().pool()->pokes(), before + 1);
}

TEST_F(FastCreatesTest, ClaimReplayIsTheSameHostAndSaysPool) {
  with_pool(1);
  fill_pool();
  build_templates();
  fill_pool();
  auto a = create("{}", "claim-key");
  ASSERT_TRUE(a);
  settled(a->host.id);
  auto b = create("{}", "claim-key");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->created);
  EXPECT_EQ(b->host.id, a->host.id);
  EXPECT_EQ(b->path, create_path::pool);
  EXPECT_FALSE(b->host.private_key);
  auto c = create(R"({"cpus": 1, "env": {"X": "y"}})", "claim-key");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::idempotency_mismatch);
}

TEST_F(FastCreatesTest, TwentyConcurrentCreatesHalfSharingAKeyAgainstAPoolOfFourGiveElevenHosts) {
  with_pool(4);
  cfg_.max_concurrent_provisions = 8;
  fill_pool();
  build_templates();
  fill_pool();
  ASSERT_EQ(members().size(), 4U);
  service().pool()->stop();  // no refill during the burst: exactly four claims are possible
  std::vector<std::future<result<create_result>>> calls;
  for (int i = 0; i < 20; ++i) {
    calls.push_back(std::async(std::launch::async, [this, i] {
      return create("{}", i % 2 == 0 ? std::optional<std::string>("shared")
                                     : std::optional<std::string>("own-" + std::to_string(i)));
    }));
  }
  std::set<std::string> ids;
  std::set<std::string> shared_ids;
  int pooled = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = calls[static_cast<std::size_t>(i)].get();
    ASSERT_TRUE(r) << r.error().message;
    ids.insert(r->host.id);
    if (i % 2 == 0) {
      shared_ids.insert(r->host.id);
    }
    pooled += r->created && r->path == create_path::pool ? 1 : 0;
  }
  EXPECT_EQ(ids.size(), 11U);
  EXPECT_EQ(shared_ids.size(), 1U);
  EXPECT_EQ(pooled, 4);
  for (const auto& id : ids) {
    EXPECT_EQ(settled(id).host.status, host_status::active) << id;
  }
  EXPECT_TRUE(members().empty());
  EXPECT_EQ(driver_.live_vms().size(), 11U);
}

TEST_F(FastCreatesTest, FailedClaimReleasesTheMemberAndItsKeyAndGivesItToNobodyElse) {
  with_pool(1);
  fill_pool();
  build_templates();
  fill_pool();
  const auto member = members().at(0).host.id;
  driver_.set_failure(fake_phase::apply_login,
                      make_error(hypervisor::errc::boot_failed, "the guest agent did not answer"));
  auto a = create("{}", "failing-claim");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host.id, member);
  const auto row = settled(member);
  EXPECT_EQ(row.host.status, host_status::error);
  EXPECT_NE(row.host.last_error.find("guest agent"), std::string::npos) << row.host.last_error;
  EXPECT_EQ(driver_.live_vms().count(member), 0U);
  driver_.set_failure(fake_phase::apply_login, std::nullopt);
  // The key is free for a retry, which gets a host of its own (a clone: the pool is empty).
  auto b = create("{}", "failing-claim");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->created);
  EXPECT_NE(b->host.id, member);
  EXPECT_EQ(settled(b->host.id).host.status, host_status::active);
}

TEST_F(FastCreatesTest, ImagePushedAnewNeverServesAMemberOrCloneOfTheOldDigest) {
  with_pool(2);
  fill_pool();
  build_templates();
  fill_pool();
  const auto old_members = members();
  ASSERT_EQ(old_members.size(), 2U);
  const std::string old_digest = *old_members[0].host.image_digest;
  driver_.retag(std::string(k_image), "sha256:" + std::string(64, 'e'));

  auto [h, path] = created();
  EXPECT_EQ(path, create_path::boot);  // no template of the new digest yet
  EXPECT_EQ(*h.host.image_digest, "sha256:" + std::string(64, 'e'));
  // The pool retires the old digest's members and asks for the new template.
  fill_pool();
  for (const auto& m : old_members) {
    auto row = store_.get_host(m.host.id);
    EXPECT_TRUE(!row || row->host.status == host_status::deleting) << m.host.id;
    EXPECT_EQ(driver_.live_vms().count(m.host.id), 0U);
  }
  EXPECT_EQ(build_templates(), 1);
  fill_pool();
  for (const auto& m : members()) {
    EXPECT_NE(*m.host.image_digest, old_digest);
  }
  EXPECT_EQ(created().second, create_path::pool);
}

TEST_F(FastCreatesTest, MaintenanceCollectsUnusedAndSupersededTemplatesAndDeadBuilds) {
  maintenance upkeep(cfg_, store_, driver_, clock_);
  created();
  build_templates();
  auto first = store_.list_templates();
  ASSERT_TRUE(first && first->size() == 1);
  const auto old_id = first->front().id;

  // Superseded: the tag now names another digest whose template is ready.
  driver_.retag(std::string(k_image), "sha256:" + std::string(64, 'f'));
  clock_.advance(1s);
  created();
  build_templates();
  ASSERT_TRUE(upkeep.maintain_templates());
  auto after = store_.list_templates();
  ASSERT_TRUE(after);
  ASSERT_EQ(after->size(), 1U);
  EXPECT_NE(after->front().id, old_id);
  auto files = driver_.list_templates();
  ASSERT_TRUE(files);
  EXPECT_EQ(*files, std::vector<std::string>{after->front().id});

  // Unused for the TTL.
  clock_.advance(cfg_.template_ttl + 1s);
  ASSERT_TRUE(upkeep.maintain_templates());
  EXPECT_TRUE(store_.list_templates()->empty());
  EXPECT_TRUE(driver_.list_templates()->empty());

  // A build whose process is gone is failed, and its leftovers removed.
  template_record dead;
  dead.id = "01900000-0000-7000-8000-0000000000aa";
  dead.key = {"sha256:" + std::string(64, 'a'), 1, 1024, std::nullopt, cfg_.ssh_username};
  dead.image = "registry.test/other:1";
  dead.owner_id = "01900000-0000-7000-8000-0000000000bb";  // never beat
  dead.created_at = dead.updated_at = dead.last_used_at = clock_.now();
  auto claimed =
      store_.claim_template_build(dead, {cfg_.ssh_port_min, cfg_.ssh_port_max}, clock_.now());
  ASSERT_TRUE(claimed && *claimed);
  ASSERT_TRUE(upkeep.maintain_templates());
  auto row = store_.find_template(dead.key);
  ASSERT_TRUE(row && *row);
  EXPECT_EQ((*row)->status, template_status::failed);
}

TEST_F(FastCreatesTest, ExpiredPoolMemberIsReapedLikeAnyExpiredHostAndReplaced) {
  with_pool(1);
  cfg_.pool_max_age = std::chrono::seconds(60);
  fill_pool();
  build_templates();
  fill_pool();
  const auto member = members().at(0).host.id;
  clock_.advance(61s);
  auto due = store_.claim_expired(clock_.now(), clock_.now() - cfg_.error_retention, 10);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1U);
  EXPECT_EQ(due->front().host.id, member);
  ASSERT_TRUE(service().teardown(member));
  EXPECT_EQ(fill_pool(), 1);
  EXPECT_NE(members().at(0).host.id, member);
}

TEST_F(FastCreatesTest, PoolNeedsTemplatesAndParsesItsEntries) {
  cfg_.instance_types = default_instance_types();
  auto pools = parse_pools(
      "2, 3:medium@registry.test/x:2,1@registry.test/y@sha256:" + std::string(64, '0'), cfg_);
  ASSERT_TRUE(pools) << pools.error().message;
  ASSERT_EQ(pools->size(), 3U);
  EXPECT_EQ((*pools)[0].image, std::string(k_image));
  EXPECT_EQ((*pools)[0].size, 2);
  EXPECT_EQ((*pools)[1].cpus, 2);
  EXPECT_EQ((*pools)[1].memory_mib, 2048);
  EXPECT_EQ((*pools)[1].image, "registry.test/x:2");
  EXPECT_EQ((*pools)[2].image, "registry.test/y@sha256:" + std::string(64, '0'));
  for (const char* bad : {"x", "2:huge", "-1", "2@", "1001"}) {
    EXPECT_FALSE(parse_pools(bad, cfg_)) << bad;
  }
  EXPECT_TRUE(parse_pools("", cfg_)->empty());
}

}  // namespace
}  // namespace litterbox::controlplane
