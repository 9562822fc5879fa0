#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "schema/host.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// A host row: the wire Host (private_key always empty: it is never stored) plus the columns
/// only the control plane sees.
struct host_record {
  schema::host host;
  /// Set when expires_at is to be stamped as activated_at + lease at activation.
  std::optional<std::int64_t> lease_seconds;
  /// The litterboxd instance driving the create; empty once active or failed.
  std::optional<std::string> owner_id;
  /// While the host is being created: when the create must have reached active or error.
  /// Every process enforces it, whoever owns the create (DESIGN.md "Host lifecycle").
  std::optional<timestamp> provision_deadline;
};

/// An Idempotency-Key to reserve together with a new host.
struct idempotency_claim {
  std::string ns;  ///< caller namespace (all SERVICE_TOKENS share one)
  std::string key;
  std::string fingerprint;  ///< keyed hash of the canonical request body
  /// Also accepted as a match (the unkeyed hash older versions stored); empty: none.
  std::string legacy_fingerprint;
  timestamp expires_at;
};

/// What insert_host did.
struct insert_outcome {
  bool created = false;             ///< false: the key was taken; `existing` names its host
  host_record existing;             ///< the row inserted, or the one the key names
  bool fingerprint_matches = true;  ///< when !created: same request body as the original
  int port = 0;                     ///< when created: the SSH port leased with the row
};

/// An inclusive range of SSH forward ports.
struct port_range {
  int lo = 0;
  int hi = 0;
};

/// A create that crash recovery or the deadline sweep took over (store::claim_interrupted).
struct interrupted_host {
  host_record host;           ///< the row as it is now: status error, no owner
  schema::host_status was{};  ///< the status it was stuck in
  bool overdue = false;       ///< true: past its deadline; false: its owner is gone
};

/// Columns a transition may set; unset fields are left alone.
struct host_patch {
  std::optional<schema::host_status> status;
  std::optional<std::string> image_digest;
  std::optional<std::string> ssh_host;
  std::optional<int> ssh_port;
  std::optional<std::string> known_hosts;
  std::optional<std::string> last_error;
  std::optional<timestamp> activated_at;
  std::optional<std::optional<timestamp>> expires_at;  ///< set (possibly to NULL)
  bool clear_lease = false;                            ///< lease_seconds := NULL
  bool clear_owner = false;                            ///< owner_id := NULL
  bool release_idempotency_key = false;  ///< delete keys naming this host (after failure)
  bool release_port = false;             ///< delete this host's ssh_ports row
};

/// GET /hosts filters.
struct list_query {
  std::vector<schema::host_status> statuses;  ///< empty: all
  std::size_t limit = 0;                      ///< 0: no limit
  std::optional<std::string> after;           ///< id cursor: rows older than this id
};

/// Persistent state of the control plane. Every method blocks on the database and is
/// thread-safe. Errors: controlplane::errc::unavailable when the database cannot be reached
/// (the store reconnects by itself on later calls), not_found, host_state, capacity, internal.
class store {
 public:
  virtual ~store() = default;

  /// Inserts `h` and leases it a free port of `ports`, in one transaction; when `key` is set,
  /// reserves it in the same transaction. A key already held (and not expired at `now`)
  /// inserts nothing and returns the host it names; an expired key is replaced. Errors:
  /// capacity when no port is free (nothing is inserted, the key stays free); unavailable;
  /// outcome_unknown when the commit's fate is unknown (read the row back to learn it).
  virtual result<insert_outcome> insert_host(const host_record& h,
                                             const std::optional<idempotency_claim>& key,
                                             port_range ports, timestamp now) = 0;

  /// One host. Errors: not_found.
  virtual result<host_record> get_host(std::string_view id) = 0;

  /// Hosts newest first (by id), filtered and paged by `q`.
  virtual result<std::vector<host_record>> list_hosts(const list_query& q) = 0;

  /// Applies `patch` if the host's status is one of `from` (compare-and-set), stamping
  /// updated_at = now. Errors: not_found; host_state when the status is not in `from`;
  /// unavailable (not applied); outcome_unknown (maybe applied: read the row back).
  virtual result<host_record> transition(std::string_view id,
                                         const std::vector<schema::host_status>& from,
                                         const host_patch& patch, timestamp now) = 0;

  /// Sets expires_at (and clears the activation lease) if the host is bootstrapping or
  /// active. Errors: not_found, host_state.
  virtual result<host_record> renew(std::string_view id, timestamp expires_at, timestamp now) = 0;

  /// Deletes the row (its key and port go with it). Missing is success.
  virtual result<void> remove_host(std::string_view id) = 0;

  /// Leases a free port in [lo, hi] to `host_id` (unique constraint; safe across
  /// processes). Returns the port it already holds if any. Errors: capacity when none is free.
  virtual result<int> allocate_port(std::string_view host_id, int lo, int hi, timestamp now) = 0;

  /// Number of hosts per status (for metrics).
  virtual result<std::map<schema::host_status, std::int64_t>> count_by_status() = 0;

  /// Claims up to `limit` hosts that are due for reaping at `now` — active/bootstrapping
  /// hosts whose expires_at has passed; error hosts, and deleting hosts whose teardown failed
  /// or whose process died, last changed strictly before `error_cutoff` — with
  /// `FOR UPDATE SKIP LOCKED`, re-checking under the lock, and moves them to `deleting`
  /// (stamping updated_at). Concurrent callers never claim the same host.
  virtual result<std::vector<host_record>> claim_expired(timestamp now, timestamp error_cutoff,
                                                         std::size_t limit) = 0;

  /// Records (or refreshes) this process as a live instance that beats every `interval`;
  /// others judge it gone after three intervals without a beat.
  virtual result<void> heartbeat(std::string_view instance_id, std::string_view hostname, int pid,
                                 std::chrono::seconds interval, timestamp now) = 0;

  /// Claim first, then destroy: moves up to `limit` hosts still being created that nobody
  /// will finish to `error`, in one statement (FOR UPDATE SKIP LOCKED; concurrent callers
  /// never claim the same host) — those whose owner is gone (no owner, or no beat within
  /// three of the owner's own intervals), and those whose provision_deadline + `grace` has
  /// passed, whoever owns them. Sets last_error to `interrupted_prefix` or `overdue_prefix`
  /// followed by the status it was in, clears owner and lease, releases the Idempotency-Key;
  /// the port stays leased until the caller has destroyed the VM.
  virtual result<std::vector<interrupted_host>> claim_interrupted(
      timestamp now, std::chrono::seconds grace, const std::string& interrupted_prefix,
      const std::string& overdue_prefix, std::size_t limit) = 0;

  /// Removes instance rows that have not beaten for three of their intervals and an hour.
  /// Returns how many went.
  virtual result<int> prune_instances(timestamp now) = 0;

  /// Ids of all rows (any status): what an orphan sweep compares driver resources against.
  virtual result<std::vector<std::string>> all_host_ids() = 0;

  /// Every image digest a row references (any status): bases the image cache must keep.
  virtual result<std::vector<std::string>> image_digests_in_use() = 0;

  /// Cheap round trip for /doctor and readiness. Errors: unavailable.
  virtual result<void> ping() = 0;
};

}  // namespace litterbox::controlplane
