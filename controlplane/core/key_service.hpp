#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/tenancy.hpp"
#include "schema/api_keys.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace litterbox::controlplane {

/// What a bearer token turned out to be.
enum class auth_kind {
  admin,     ///< one of SERVICE_TOKENS
  scoped,    ///< a live scoped key
  rejected,  ///< neither (403)
  unknown,   ///< check_cached only: the cache cannot tell; ask check()
};

/// The caller a token names (meaningful for admin and scoped).
struct auth_answer {
  auth_kind kind = auth_kind::rejected;
  caller who;
};

/// A key as POST /keys answers it: the record and the key itself, shown this once.
struct minted_key {
  api_key_record record;
  std::string key;  ///< "lbk_" + 64 hex digits (256 random bits)
};

/// Limits on what one scoped key may ask of one process.
struct rate_limit {
  double per_second = 0;  ///< 0: no limit
  double burst = 0;       ///< bucket size; at least 1 when limited
};

/// Scoped keys (API.md "Tenants: scoped keys"): minting, revocation, authentication with a
/// cache that every key change empties, the per-key rate limit and the audit log. Thread-safe.
///
/// The cache is trusted only while `keys_changed` is driven by a live notification listener
/// (keys_listening): key changes on any replica then empty it within the notification's
/// latency. Until the listener has connected, and from the moment it loses its connection,
/// every scoped token is looked up in the database, so a revocation is never missed.
class key_service {
 public:
  /// `admin_tokens` are SERVICE_TOKENS; `secret` keys the stored hashes (replicas sharing a
  /// database must share it). `db` and `clk` must outlive the service.
  key_service(std::vector<std::string> admin_tokens, std::string secret, tenant_store& db,
              const clock& clk, rate_limit limit = {});

  /// Answers from memory only: admin tokens, and scoped tokens the trusted cache knows.
  auth_answer check_cached(std::string_view token);

  /// The full check: check_cached, then the database. Errors: unavailable.
  result<auth_answer> check(std::string_view token);

  /// POST /keys: a new key of `req.ns` with `req`'s name and quota. Errors: unavailable.
  result<minted_key> create(const schema::create_key_request& req);

  /// GET /keys: the live keys, oldest first.
  result<std::vector<api_key_record>> list();

  /// DELETE /keys/{id}. Errors: not_found "key not found" (unknown, malformed or revoked
  /// already); unavailable.
  result<void> revoke(std::string_view id);

  /// Takes one request from `who`'s bucket. nullopt: go on; otherwise how long until one is
  /// free (the Retry-After of the 429). Admins are never limited.
  std::optional<std::chrono::seconds> throttle(const caller& who);

  /// Appends `e` to the audit log (at = now). A failure is logged, never the caller's: the
  /// call it records has already happened.
  void audit(audit_entry e);

  /// GET /audit. Errors: unavailable.
  result<std::vector<audit_entry>> list_audit(const audit_query& q);

  /// A key changed somewhere, or the listener (re)connected: empty the cache and trust it.
  void keys_changed();
  /// The listener lost its connection: stop trusting the cache until keys_changed.
  void listener_lost();

 private:
  std::string hash_of(std::string_view token) const;
  /// check_cached's answer; sets `hash` to the token's keyed hash when it is a key's.
  auth_answer check_memory(std::string_view token, std::string& hash);

  std::vector<std::string> admin_tokens_;
  std::vector<std::string> admin_ids_;  ///< the audit id of each admin token, by index
  std::string secret_;
  tenant_store& db_;
  const clock& clock_;
  rate_limit limit_;

  struct bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mutex_;
  bool trusted_ = false;
  std::uint64_t generation_ = 0;  ///< bumped by every keys_changed / listener_lost
  /// Key hash to the answer for it (scoped or rejected), while trusted.
  std::unordered_map<std::string, auth_answer> cache_;
  std::unordered_map<std::string, bucket> buckets_;  ///< by key id
};

}  // namespace litterbox::controlplane
