#include "controlplane/core/key_service.hpp"

#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace litterbox::controlplane {
namespace {

constexpr std::string_view k_key_prefix = "lbk_";
// Domain separation: the deployment secret also keys Idempotency-Key fingerprints.
constexpr std::string_view k_key_domain = "litterbox api key\n";
constexpr std::string_view k_admin_domain = "litterbox admin token\n";
// The cache holds at most this many answers; past it, it starts again (a flood of made-up
// tokens costs database lookups, never unbounded memory).
constexpr std::size_t k_cache_max = 10000;

}  // namespace

key_service::key_service(std::vector<std::string> admin_tokens, std::string secret,
                         tenant_store& db, const clock& clk, rate_limit limit)
    : admin_tokens_(std::move(admin_tokens)),
      secret_(std::move(secret)),
      db_(db),
      clock_(clk),
      limit_(limit) {
  if (limit_.per_second > 0) {
    limit_.burst = std::max(1.0, limit_.burst);
  }
  // Which admin token acted, without the token: a keyed hash prefix tells rotated tokens
  // apart in the audit log and reveals nothing to whoever reads it. Fixed per token, so
  // computed once here rather than on every request.
  admin_ids_.reserve(admin_tokens_.size());
  for (const auto& t : admin_tokens_) {
    admin_ids_.push_back("admin:" +
                         hmac_sha256_hex(secret_, std::string(k_admin_domain) + t).substr(0, 12));
  }
}

std::string key_service::hash_of(std::string_view token) const {
  return "hmac:" + hmac_sha256_hex(secret_, std::string(k_key_domain) + std::string(token));
}

auth_answer key_service::check_cached(std::string_view token) {
  std::string hash;
  return check_memory(token, hash);
}

auth_answer key_service::check_memory(std::string_view token, std::string& hash) {
  std::size_t matched = admin_tokens_.size();
  for (std::size_t i = 0; i < admin_tokens_.size(); ++i) {
    // No early exit: every configured token is compared, each in constant time.
    if (constant_time_equal(token, admin_tokens_[i])) {
      matched = i;
    }
  }
  if (matched < admin_tokens_.size()) {
    auth_answer a{auth_kind::admin, admin_caller()};
    a.who.key_id = admin_ids_[matched];
    return a;
  }
  if (!token.starts_with(k_key_prefix)) {
    return auth_answer{auth_kind::rejected, {}};
  }
  hash = hash_of(token);
  const std::lock_guard lock(mutex_);
  if (trusted_) {
    if (const auto it = cache_.find(hash); it != cache_.end()) {
      return it->second;
    }
  }
  return auth_answer{auth_kind::unknown, {}};
}

result<auth_answer> key_service::check(std::string_view token) {
  std::string hash;
  auto quick = check_memory(token, hash);
  if (quick.kind != auth_kind::unknown) {
    return quick;
  }
  std::uint64_t generation = 0;
  {
    const std::lock_guard lock(mutex_);
    generation = generation_;
  }
  auto found = db_.find_key(hash);
  if (!found) {
    return found.error();
  }
  auth_answer a{auth_kind::rejected, {}};
  // The lookup was by the keyed hash (an index lookup cannot leak the key); the match is
  // confirmed in constant time all the same.
  if (*found && constant_time_equal((*found)->key_hash, hash)) {
    a.kind = auth_kind::scoped;
    a.who.admin = false;
    a.who.key_id = (*found)->id;
    a.who.ns = (*found)->ns;
    a.who.quota = (*found)->quota;
  }
  const std::lock_guard lock(mutex_);
  // Only an answer read after the last change may be cached: one read before a revocation
  // that landed meanwhile would otherwise outlive it.
  if (trusted_ && generation == generation_) {
    if (cache_.size() >= k_cache_max) {
      cache_.clear();
    }
    cache_.emplace(hash, a);
  }
  return a;
}

result<minted_key> key_service::create(const schema::create_key_request& req) {
  minted_key out;
  out.key = std::string(k_key_prefix) + random_hex(32);
  auto& k = out.record;
  k.created_at = clock_.now();
  k.id = new_uuid_v7(k.created_at);
  k.ns = req.ns;
  k.name = req.name;
  k.key_hash = hash_of(out.key);
  k.quota = namespace_quota{req.max_hosts, req.max_cpus, req.max_memory_mib};
  if (auto inserted = db_.insert_key(k); !inserted) {
    return inserted.error();
  }
  return out;
}

result<std::vector<api_key_record>> key_service::list() {
  return db_.list_keys();
}

result<void> key_service::revoke(std::string_view id) {
  auto revoked = db_.revoke_key(id, clock_.now());
  if (!revoked) {
    return revoked.error();
  }
  if (!*revoked) {
    return make_error(errc::not_found, "key not found");
  }
  // This process need not wait for its own notification.
  keys_changed();
  return {};
}

std::optional<std::chrono::seconds> key_service::throttle(const caller& who) {
  if (who.admin || limit_.per_second <= 0) {
    return std::nullopt;
  }
  const auto now = std::chrono::steady_clock::now();
  const std::lock_guard lock(mutex_);
  auto [it, fresh] = buckets_.try_emplace(who.key_id, bucket{limit_.burst, now});
  auto& b = it->second;
  if (!fresh) {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(limit_.burst, b.tokens + elapsed * limit_.per_second);
    b.at = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - b.tokens) / limit_.per_second;
  return std::chrono::seconds(
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(wait))));
}

void key_service::audit(audit_entry e) {
  e.at = clock_.now();
  if (auto appended = db_.append_audit(e); !appended) {
    spdlog::error("audit: could not record {} by {} (request {}): {}", e.action, e.key_id,
                  e.request_id, log_escape(appended.error().message));
  }
}

result<std::vector<audit_entry>> key_service::list_audit(const audit_query& q) {
  return db_.list_audit(q);
}

void key_service::keys_changed() {
  const std::lock_guard lock(mutex_);
  cache_.clear();
  ++generation_;
  trusted_ = true;
}

void key_service::listener_lost() {
  const std::lock_guard lock(mutex_);
  cache_.clear();
  ++generation_;
  trusted_ = false;
}

}  // namespace litterbox::controlplane
