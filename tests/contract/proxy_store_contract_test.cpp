#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/proxy_store.hpp"
#include "controlplane/core/store.hpp"
#include "tests/contract/store_backends.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

// The proxy store contract (controlplane/core/proxy_store.hpp), run against the in-memory
// fake and pg_store alike.

namespace litterbox::controlplane {
namespace {

using contract::make_host;

using schema::host_status;

constexpr timestamp t0 = timestamp(std::chrono::microseconds(1'790'000'000'123'456));
const port_range k_ports{20000, 29999};
constexpr const char* k_ns = "default";

http_proxy_record make_proxy(std::string name, std::string ns = k_ns) {
  http_proxy_record p;
  p.ns = std::move(ns);
  p.name = std::move(name);
  p.target = "https://api.example.com";
  p.headers = {{"Authorization", "Bearer sk-secret-1"}, {"X-Api-Key", "k2"}};
  p.created_at = t0;
  return p;
}

template <class Backend>
class proxy_store_contract : public ::testing::Test {
 protected:
  Backend backend_;
  store& hosts_ = backend_.store;
  proxy_store& proxies_ = backend_.store;

  std::string insert_host(host_status status, timestamp at = t0) {
    const auto r = make_host(at, status);
    auto out = hosts_.insert_host(r, std::nullopt, k_ports, at);
    EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message);
    return r.host.id;
  }

  void insert_proxy(const http_proxy_record& p) {
    const auto out = proxies_.insert_proxy(p);
    ASSERT_TRUE(out.has_value()) << out.error().message;
    ASSERT_TRUE(*out);
  }

  std::vector<http_proxy_record> list() {
    auto out = proxies_.list_proxies(k_ns);
    EXPECT_TRUE(out.has_value());
    return out ? *out : std::vector<http_proxy_record>{};
  }
};

TYPED_TEST_SUITE(proxy_store_contract, contract::store_backends, contract::backend_names);

TYPED_TEST(proxy_store_contract, InsertedProxyIsListedByNameWithoutItsHeaders) {
  this->insert_proxy(make_proxy("zeta"));
  this->insert_proxy(make_proxy("alpha"));
  this->insert_proxy(make_proxy("other-ns", "tenant-b"));
  const auto listed = this->list();
  ASSERT_EQ(listed.size(), 2U);
  EXPECT_EQ(listed[0].name, "alpha");
  EXPECT_EQ(listed[1].name, "zeta");
  EXPECT_EQ(listed[0].target, "https://api.example.com");
  EXPECT_EQ(listed[0].created_at, t0);
  EXPECT_TRUE(listed[0].headers.empty());
  EXPECT_TRUE(listed[0].host_ids.empty());
}

TYPED_TEST(proxy_store_contract, InsertingATakenNameChangesNothingAndReportsFalse) {
  this->insert_proxy(make_proxy("dup"));
  auto second = make_proxy("dup");
  second.target = "https://elsewhere.example.com";
  const auto out = this->proxies_.insert_proxy(second);
  ASSERT_TRUE(out.has_value());
  EXPECT_FALSE(*out);
  EXPECT_EQ(this->list().at(0).target, "https://api.example.com");
  // The same name in another namespace is another proxy.
  const auto other = this->proxies_.insert_proxy(make_proxy("dup", "tenant-b"));
  ASSERT_TRUE(other.has_value());
  EXPECT_TRUE(*other);
}

TYPED_TEST(proxy_store_contract, AttachedProxyIsFoundForItsHostWithItsHeaders) {
  this->insert_proxy(make_proxy("openai"));
  const auto host = this->insert_host(host_status::active);
  const auto attached = this->proxies_.attach_proxy(k_ns, "openai", host, t0);
  ASSERT_TRUE(attached.has_value());
  EXPECT_EQ(*attached, attach_outcome::attached);
  const auto found = this->proxies_.find_attached_proxy(host, "openai");
  ASSERT_TRUE(found.has_value());
  ASSERT_TRUE(found->has_value());
  const auto& p = **found;
  EXPECT_EQ(p.target, "https://api.example.com");
  auto headers = p.headers;
  std::sort(headers.begin(), headers.end());
  EXPECT_EQ(headers, (header_list{{"Authorization", "Bearer sk-secret-1"}, {"X-Api-Key", "k2"}}));
  EXPECT_EQ(this->list().at(0).host_ids, std::vector<std::string>{host});
}

TYPED_TEST(proxy_store_contract, AttachingTwiceKeepsOneAttachment) {
  this->insert_proxy(make_proxy("twice"));
  const auto host = this->insert_host(host_status::bootstrapping);
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "twice", host, t0).value(), attach_outcome::attached);
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "twice", host, t0).value(), attach_outcome::attached);
  EXPECT_EQ(this->list().at(0).host_ids.size(), 1U);
}

TYPED_TEST(proxy_store_contract, AttachReportsUnknownProxyUnknownHostAndHostWithoutVm) {
  this->insert_proxy(make_proxy("p"));
  const auto live = this->insert_host(host_status::active);
  EXPECT_EQ(this->proxies_.attach_proxy(k_ns, "nope", live, t0).value(), attach_outcome::no_proxy);
  EXPECT_EQ(this->proxies_.attach_proxy("tenant-b", "p", live, t0).value(),
            attach_outcome::no_proxy);
  EXPECT_EQ(this->proxies_.attach_proxy(k_ns, "p", new_uuid_v7(t0), t0).value(),
            attach_outcome::no_host);
  EXPECT_EQ(this->proxies_.attach_proxy(k_ns, "p", "not-a-uuid", t0).value(),
            attach_outcome::no_host);
  for (const auto status : {host_status::provisioning, host_status::creating_vm,
                            host_status::deleting, host_status::error}) {
    const auto h = this->insert_host(status);
    EXPECT_EQ(this->proxies_.attach_proxy(k_ns, "p", h, t0).value(), attach_outcome::host_not_live)
        << schema::to_string(status);
  }
  EXPECT_TRUE(this->list().at(0).host_ids.empty());
}

TYPED_TEST(proxy_store_contract, AnotherHostDoesNotFindAProxyAttachedElsewhere) {
  this->insert_proxy(make_proxy("mine"));
  const auto a = this->insert_host(host_status::active);
  const auto b = this->insert_host(host_status::active, t0 + std::chrono::seconds(1));
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "mine", a, t0).value(), attach_outcome::attached);
  const auto other = this->proxies_.find_attached_proxy(b, "mine");
  ASSERT_TRUE(other.has_value());
  EXPECT_FALSE(other->has_value());
  const auto wrong_name = this->proxies_.find_attached_proxy(a, "theirs");
  ASSERT_TRUE(wrong_name.has_value());
  EXPECT_FALSE(wrong_name->has_value());
}

TYPED_TEST(proxy_store_contract, DetachRemovesOnlyThatAttachmentAndReportsAMissingOne) {
  this->insert_proxy(make_proxy("d"));
  const auto a = this->insert_host(host_status::active);
  const auto b = this->insert_host(host_status::active, t0 + std::chrono::seconds(1));
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "d", a, t0).value(), attach_outcome::attached);
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "d", b, t0).value(), attach_outcome::attached);
  EXPECT_TRUE(this->proxies_.detach_proxy(k_ns, "d", a).value());
  EXPECT_FALSE(this->proxies_.detach_proxy(k_ns, "d", a).value());
  EXPECT_FALSE(this->proxies_.detach_proxy(k_ns, "other", b).value());
  EXPECT_FALSE(this->proxies_.detach_proxy(k_ns, "d", "not-a-uuid").value());
  EXPECT_FALSE(this->proxies_.find_attached_proxy(a, "d").value().has_value());
  EXPECT_TRUE(this->proxies_.find_attached_proxy(b, "d").value().has_value());
}

TYPED_TEST(proxy_store_contract, RemovingAProxyDetachesItAndFreesItsName) {
  this->insert_proxy(make_proxy("gone"));
  const auto host = this->insert_host(host_status::active);
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "gone", host, t0).value(), attach_outcome::attached);
  EXPECT_TRUE(this->proxies_.remove_proxy(k_ns, "gone").value());
  EXPECT_FALSE(this->proxies_.remove_proxy(k_ns, "gone").value());
  EXPECT_FALSE(this->proxies_.find_attached_proxy(host, "gone").value().has_value());
  EXPECT_TRUE(this->list().empty());
  this->insert_proxy(make_proxy("gone"));
  EXPECT_FALSE(this->proxies_.find_attached_proxy(host, "gone").value().has_value());
}

TYPED_TEST(proxy_store_contract, RemovingAHostDetachesItsProxiesAndKeepsThem) {
  this->insert_proxy(make_proxy("keep"));
  const auto host = this->insert_host(host_status::active);
  ASSERT_EQ(this->proxies_.attach_proxy(k_ns, "keep", host, t0).value(), attach_outcome::attached);
  ASSERT_TRUE(this->hosts_.remove_host(host).has_value());
  const auto listed = this->list();
  ASSERT_EQ(listed.size(), 1U);
  EXPECT_TRUE(listed[0].host_ids.empty());
  EXPECT_FALSE(this->proxies_.find_attached_proxy(host, "keep").value().has_value());
}

}  // namespace
}  // namespace litterbox::controlplane
