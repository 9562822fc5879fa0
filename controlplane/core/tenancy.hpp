#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// The namespace of the admin tokens (SERVICE_TOKENS) and of every row from before tenants.
inline constexpr std::string_view k_admin_namespace = "default";

/// Limits on what one namespace holds at once (API.md "Tenants: scoped keys"); unset: none.
/// Live hosts count: every status but error (whose resources are released) — deleting ones
/// still hold theirs.
struct namespace_quota {
  std::optional<std::int64_t> max_hosts;
  std::optional<std::int64_t> max_cpus;
  std::optional<std::int64_t> max_memory_mib;

  bool empty() const { return !max_hosts && !max_cpus && !max_memory_mib; }
  friend bool operator==(const namespace_quota&, const namespace_quota&) = default;
};

/// Who made a request: an admin token (sees every namespace, creates in the admin one) or a
/// scoped key (sees and creates only in its own, under its quota).
struct caller {
  bool admin = true;
  /// A scoped key's id, or "admin:<first 12 hex of the token's keyed hash>": who, for the
  /// audit log, without the secret.
  std::string key_id = "admin";
  std::string ns = std::string(k_admin_namespace);  ///< where its creates and proxies go
  namespace_quota quota;                            ///< scoped keys only

  /// True when this caller may see a row of namespace `row_ns`.
  bool sees(std::string_view row_ns) const { return admin || row_ns == ns; }
  /// The namespace reads are restricted to: nullopt for admins (all of them).
  std::optional<std::string> scope() const {
    return admin ? std::nullopt : std::optional<std::string>(ns);
  }
};

/// An admin caller (also what code that predates tenants acts as).
inline caller admin_caller() {
  return caller{};
}

/// A scoped key as stored: never the key itself, only its keyed hash.
struct api_key_record {
  std::string id;  ///< UUIDv7
  std::string ns;
  std::string name;
  std::string key_hash;  ///< "hmac:" + hex HMAC-SHA256 of the key under the deployment secret
  namespace_quota quota;
  timestamp created_at{};
  std::optional<timestamp> revoked_at;
};

/// One audited call (API.md "Tenants": GET /audit). Never a secret.
struct audit_entry {
  std::int64_t id = 0;  ///< assigned by the store, increasing in append order
  timestamp at{};
  std::string key_id;
  std::optional<std::string> ns;  ///< the scoped key's namespace; nullopt for admins
  std::string action;             ///< "create_host", "delete_host", … (audit_action_of)
  std::optional<std::string> host_id;
  std::string request_id;
  int status = 0;  ///< the HTTP status the call was answered with

  friend bool operator==(const audit_entry&, const audit_entry&) = default;
};

/// Which audit entries list_audit returns: ids after `after`, ascending, at most `limit`.
struct audit_query {
  std::optional<std::string> ns;
  std::int64_t after = 0;
  std::size_t limit = 100;
};

/// Persistent scoped keys and the audit log. Every method blocks on the database and is
/// thread-safe. Errors of every method: controlplane::errc::unavailable, outcome_unknown,
/// internal. Every key change also wakes the key caches of every process sharing the
/// database (pg: NOTIFY on the channel "litterbox_keys" in the same transaction).
class tenant_store {
 public:
  virtual ~tenant_store() = default;

  /// Inserts `k`. Errors as above (an id or hash collision is internal: both are random).
  virtual result<void> insert_key(const api_key_record& k) = 0;

  /// Live (not revoked) keys, oldest first.
  virtual result<std::vector<api_key_record>> list_keys() = 0;

  /// Marks key `id` revoked at `now`. False when there is no live key of that id.
  virtual result<bool> revoke_key(std::string_view id, timestamp now) = 0;

  /// The live key whose hash is `key_hash`; nullopt when none (unknown or revoked).
  virtual result<std::optional<api_key_record>> find_key(std::string_view key_hash) = 0;

  /// Appends `e` (its id ignored) and returns the id it got.
  virtual result<std::int64_t> append_audit(const audit_entry& e) = 0;

  /// Audit entries matching `q`, by id.
  virtual result<std::vector<audit_entry>> list_audit(const audit_query& q) = 0;
};

}  // namespace litterbox::controlplane
