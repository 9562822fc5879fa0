#include "controlplane/core/key_service.hpp"

#include "controlplane/core/errc.hpp"
#include "tests/support/memory_store.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace litterbox::controlplane {
namespace {

const timestamp k_start = timestamp(std::chrono::seconds(1'800'000'000));
const std::vector<std::string> k_admins{"alpha-token", "beta-token"};

class KeyServiceTest : public ::testing::Test {
 protected:
  KeyServiceTest() : clock_(k_start), keys_(k_admins, std::string(64, 'a'), store_, clock_) {}

  minted_key mint(std::string ns, schema::create_key_request req = {}) {
    req.ns = std::move(ns);
    auto k = keys_.create(req);
    EXPECT_TRUE(k);
    return k ? *k : minted_key{};
  }

  auth_answer check(std::string_view token) {
    auto a = keys_.check(token);
    EXPECT_TRUE(a) << (a ? "" : a.error().message);
    return a ? *a : auth_answer{};
  }

  manual_clock clock_;
  testing::memory_store store_;
  key_service keys_;
};

TEST_F(KeyServiceTest, EveryAdminTokenIsAnAdminNamedByAStableHashThatIsNotTheToken) {
  const auto a = keys_.check_cached("alpha-token");
  const auto b = keys_.check_cached("beta-token");
  ASSERT_EQ(a.kind, auth_kind::admin);
  ASSERT_EQ(b.kind, auth_kind::admin);
  EXPECT_TRUE(a.who.admin);
  EXPECT_EQ(a.who.ns, k_admin_namespace);
  EXPECT_EQ(a.who.key_id.rfind("admin:", 0), 0U);
  EXPECT_EQ(a.who.key_id.size(), 6U + 12U);
  EXPECT_NE(a.who.key_id, b.who.key_id) << "rotated tokens are told apart";
  EXPECT_EQ(keys_.check_cached("alpha-token").who.key_id, a.who.key_id);
  EXPECT_EQ(a.who.key_id.find("alpha"), std::string::npos);
}

TEST_F(KeyServiceTest, TokensThatAreNeitherAdminNorKeysAreRejectedWhateverTheirBytes) {
  for (const std::string& t :
       {std::string("alpha"), std::string("alpha-token-and-more"), std::string(100000, 'x'),
        std::string("\xff\xfe\x00z", 4), std::string("lbk_") + std::string(64, '0')}) {
    EXPECT_EQ(check(t).kind, auth_kind::rejected);
  }
  key_service none({}, std::string(64, 'a'), store_, clock_);
  EXPECT_EQ(none.check_cached("alpha-token").kind, auth_kind::rejected);
}

TEST_F(KeyServiceTest, AMintedKeyNamesItsNamespaceAndQuotaAndIsStoredOnlyAsAKeyedHash) {
  schema::create_key_request req;
  req.name = "ci";
  req.max_hosts = 5;
  const auto k = mint("team-a", req);
  ASSERT_EQ(k.key.rfind("lbk_", 0), 0U);
  EXPECT_EQ(k.key.size(), 68U);
  const auto stored = store_.list_keys().value();
  ASSERT_EQ(stored.size(), 1U);
  EXPECT_EQ(stored[0].name, "ci");
  EXPECT_EQ(stored[0].key_hash.rfind("hmac:", 0), 0U);
  EXPECT_EQ(stored[0].key_hash.find(k.key.substr(4)), std::string::npos);
  // Another secret gives another hash: the stored value is keyed.
  key_service other(k_admins, std::string(64, 'b'), store_, clock_);
  EXPECT_EQ(other.check(k.key)->kind, auth_kind::rejected);

  const auto a = check(k.key);
  ASSERT_EQ(a.kind, auth_kind::scoped);
  EXPECT_FALSE(a.who.admin);
  EXPECT_EQ(a.who.ns, "team-a");
  EXPECT_EQ(a.who.key_id, k.record.id);
  EXPECT_EQ(a.who.quota.max_hosts, 5);
  EXPECT_FALSE(a.who.quota.max_cpus);
  EXPECT_EQ(a.who.scope(), std::optional<std::string>("team-a"));
  EXPECT_TRUE(a.who.sees("team-a"));
  EXPECT_FALSE(a.who.sees("team-b"));
}

TEST_F(KeyServiceTest, ARevokedKeyIsRejectedAndRevokingTwiceIsNotFound) {
  const auto k = mint("team-a");
  ASSERT_EQ(check(k.key).kind, auth_kind::scoped);
  ASSERT_TRUE(keys_.revoke(k.record.id));
  EXPECT_EQ(check(k.key).kind, auth_kind::rejected);
  const auto again = keys_.revoke(k.record.id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::not_found);
  EXPECT_TRUE(store_.list_keys()->empty());
}

TEST_F(KeyServiceTest, TheCacheAnswersOnlyWhileTheListenerVouchesForIt) {
  const auto k = mint("team-a");
  // No listener yet: nothing is answered from memory, every check reads the database.
  ASSERT_EQ(check(k.key).kind, auth_kind::scoped);
  EXPECT_EQ(keys_.check_cached(k.key).kind, auth_kind::unknown);
  keys_.keys_changed();  // the listener connected
  ASSERT_EQ(check(k.key).kind, auth_kind::scoped);
  EXPECT_EQ(keys_.check_cached(k.key).kind, auth_kind::scoped);
  // Revoked behind this process's back (another replica): the notification empties the cache.
  ASSERT_TRUE(store_.revoke_key(k.record.id, clock_.now()).value());
  keys_.keys_changed();
  EXPECT_EQ(keys_.check_cached(k.key).kind, auth_kind::unknown);
  EXPECT_EQ(check(k.key).kind, auth_kind::rejected);
  // A lost listener makes the cache untrusted again.
  const auto fresh = mint("team-b");
  ASSERT_EQ(check(fresh.key).kind, auth_kind::scoped);
  keys_.listener_lost();
  EXPECT_EQ(keys_.check_cached(fresh.key).kind, auth_kind::unknown);
}

TEST_F(KeyServiceTest, ADeadDatabaseIsUnavailableForScopedKeysButNotForAdmins) {
  const auto k = mint("team-a");
  store_.down = true;
  const auto a = keys_.check(k.key);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, errc::unavailable);
  EXPECT_EQ(keys_.check("alpha-token")->kind, auth_kind::admin);
}

TEST_F(KeyServiceTest, TheRateLimitAllowsTheBurstThenTellsHowLongToWaitAndSparesAdmins) {
  key_service limited(k_admins, std::string(64, 'a'), store_, clock_, {1.0, 3.0});
  caller scoped;
  scoped.admin = false;
  scoped.key_id = "key-1";
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(limited.throttle(scoped)) << i;
  }
  const auto wait = limited.throttle(scoped);
  ASSERT_TRUE(wait);
  EXPECT_EQ(*wait, std::chrono::seconds(1));
  caller other = scoped;
  other.key_id = "key-2";
  EXPECT_FALSE(limited.throttle(other)) << "each key has its own bucket";
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(limited.throttle(admin_caller()));
  }
  EXPECT_FALSE(keys_.throttle(scoped)) << "no limit configured";
}

TEST_F(KeyServiceTest, AuditEntriesAreAppendedInOrderAndFilteredByNamespace) {
  audit_entry e;
  e.key_id = "admin:0123456789ab";
  e.action = "create_key";
  e.request_id = "r1";
  e.status = 201;
  keys_.audit(e);
  e.key_id = "k";
  e.ns = "team-a";
  e.action = "create_host";
  e.request_id = "r2";
  keys_.audit(e);
  const auto all = keys_.list_audit({}).value();
  ASSERT_EQ(all.size(), 2U);
  EXPECT_LT(all[0].id, all[1].id);
  EXPECT_EQ(all[0].at, k_start);
  audit_query q;
  q.ns = "team-a";
  const auto scoped = keys_.list_audit(q).value();
  ASSERT_EQ(scoped.size(), 1U);
  EXPECT_EQ(scoped[0].request_id, "r2");
  q = {};
  q.after = all[0].id;
  EXPECT_EQ(keys_.list_audit(q)->size(), 1U);
}

}  // namespace
}  // namespace litterbox::controlplane
