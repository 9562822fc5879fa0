#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/tenancy.hpp"
#include "schema/host.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// How a create was served (API.md "How a create was served"), fastest first.
enum class create_path { pool, clone, boot };

/// "pool", "clone", "boot".
std::string_view to_string(create_path p);
/// The inverse of to_string; nullopt for anything else.
std::optional<create_path> create_path_from(std::string_view text);

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
  /// A warm-pool member: restored and kept ready for a claim, not any caller's. Pooled rows
  /// are hidden from list_hosts and count_by_status; the service answers 404 for them.
  bool pooled = false;
  /// How the create is being served; unset until the provisioner chose (or the claim).
  std::optional<create_path> path;
  /// The namespace the host belongs to (API.md "Tenants: scoped keys").
  std::string ns = std::string(k_admin_namespace);
  /// The node the host is placed on (a node id). Set by the service before insert_host or
  /// insert_pool_member, which then admit the row only when that node takes new hosts and
  /// has room for its cpus and memory_mib (errc::capacity otherwise), under a lock on the
  /// node row in the same transaction, so that concurrent creates never overfill it. Unset:
  /// no placement (rows from before nodes, and tests of other things).
  std::optional<std::string> node_id;
  /// Admission only, never stored: when node_id is unset, the nodes that may take the host
  /// (those the creating process drives). insert_host then places it in its transaction, under
  /// the locks of every candidate (taken in id order): on `prefer_node` when that one is a
  /// candidate and takes it (the node holding its template), otherwise on the one with the
  /// most free memory (choose_node). The row it returns has node_id set and ssh_host the
  /// node's. errc::capacity, naming why each node refused, when none takes it.
  std::vector<std::string> node_choices;
  std::optional<std::string> prefer_node;
  /// Admission only, never stored: insert_host and claim_pool_member refuse the row with
  /// errc::quota ("quota exceeded: max_hosts=5") when `ns` would then hold more than this,
  /// counted under a lock on the namespace in the same transaction, so that concurrent
  /// creates never overshoot it.
  namespace_quota quota;
};

/// Whether a node takes new hosts: active does; cordoned and draining (being emptied) do not.
enum class node_state { active, cordoned, draining };
std::string_view to_string(node_state s);
std::optional<node_state> node_state_from(std::string_view text);

/// A hypervisor node (issue 14). Capacity for guests: floor(cpus × cpu_overcommit) −
/// reserved_cpus vCPUs and floor(memory_mib × memory_overcommit) − reserved_memory_mib MiB,
/// of which the node's hosts that are not in error hold their cpus and memory_mib.
struct node_record {
  std::string id;
  std::string uri;       ///< the libvirt URI that drives it
  std::string ssh_host;  ///< where callers reach its SSH forwards
  int cpus = 0;          ///< as the node reports them
  std::int64_t memory_mib = 0;
  int reserved_cpus = 0;
  std::int64_t reserved_memory_mib = 1024;
  double cpu_overcommit = 16;
  double memory_overcommit = 1.5;
  node_state state = node_state::active;
  timestamp created_at{};
  timestamp updated_at{};
  timestamp last_seen_at{};
  // Read by list_nodes: what its hosts hold now.
  std::int64_t hosts = 0;
  std::int64_t used_cpus = 0;
  std::int64_t used_memory_mib = 0;

  std::int64_t cpu_capacity() const;
  std::int64_t memory_capacity() const;
};

/// Why node `n` (its used_* filled in) cannot take one more host of `cpus` and `memory_mib`
/// (errc::capacity: it is cordoned or draining, or it says what is free), or nullopt when it
/// takes the host.
std::optional<error> node_refusal(const node_record& n, int cpus, int memory_mib);

/// The node of `candidates` (their used_* filled in) that takes one more host of `cpus` and
/// `memory_mib`: `prefer` when it is among them and takes it, otherwise the one with the most
/// free memory (then the most free vCPUs, then the lowest id), so that hosts spread by
/// capacity. errc::capacity, with each node's refusal, when none takes it.
result<node_record> choose_node(const std::vector<node_record>& candidates,
                                const std::optional<std::string>& prefer, int cpus, int memory_mib);

/// The operator's settings of a node (`litterboxd node set`); unset fields are kept.
struct node_settings {
  std::optional<int> reserved_cpus;
  std::optional<std::int64_t> reserved_memory_mib;
  std::optional<double> cpu_overcommit;
  std::optional<double> memory_overcommit;
};

/// Why `s` cannot be applied (errc::validation), or nullopt.
std::optional<error> invalid_node_settings(const node_settings& s);

/// What a node reports of itself when it registers.
struct node_report {
  std::string uri;
  std::string ssh_host;
  int cpus = 0;
  std::int64_t memory_mib = 0;
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
  std::optional<create_path> path;
  /// The change is the guest's VM dying behind the control plane's back: its event is
  /// `died`, not `status` (API.md "Events").
  bool died = false;
};

/// What a host event records (API.md "Events").
enum class event_type { created, status, deleted, died };

/// "created", "status", "deleted", "died".
std::string_view to_string(event_type t);
/// The inverse of to_string; nullopt for anything else.
std::optional<event_type> event_type_from(std::string_view text);

/// One state change of a caller's host, as the events table keeps it. `status` is the status
/// the host is in after the change (deleted: the one it was deleted in).
struct host_event {
  std::int64_t id = 0;  ///< monotonically increasing; readers see ids in commit order
  std::string host_id;
  event_type type = event_type::status;
  schema::host_status status{};
  timestamp at{};
  std::string last_error;
  std::string ns = std::string(k_admin_namespace);  ///< the host's namespace

  friend bool operator==(const host_event&, const host_event&) = default;
};

/// Which events list_events returns.
struct event_query {
  std::int64_t after = 0;                     ///< only ids greater than this
  std::optional<std::string> host_id;         ///< one host's events only
  std::vector<schema::host_status> statuses;  ///< empty: any status
  std::size_t limit = 0;                      ///< 0: no limit
  std::optional<std::string> ns;              ///< one namespace's hosts only
};

/// What a template serves: a clone of it can be the host of any create with this key.
/// disk_gb null: the image's default size.
struct template_key_row {
  std::string image_digest;
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;
  std::string ssh_username;

  friend bool operator==(const template_key_row&, const template_key_row&) = default;
  friend auto operator<=>(const template_key_row&, const template_key_row&) = default;
};

enum class template_status { building, ready, failed };

/// "building", "ready", "failed".
std::string_view to_string(template_status s);

/// A template row: one per key, whatever its status. The template id names the driver's
/// files; a rebuild reuses it.
struct template_record {
  std::string id;
  template_key_row key;
  std::string image;  ///< the reference of the create that first wanted it (for GC)
  template_status status = template_status::building;
  std::optional<std::string> owner_id;  ///< the instance building it; NULL otherwise
  std::string last_error;               ///< why the last build failed ("<Kind>: …")
  /// failed: not rebuilt before this (NULL: never — the image cannot be cloned).
  std::optional<timestamp> retry_after;
  int ssh_port = 0;  ///< while building: the port of the template guest's own boot
  timestamp created_at{};
  timestamp updated_at{};
  std::optional<timestamp> ready_at;
  timestamp last_used_at{};  ///< the last clone or pool refill from it
  /// The node it is built and saved on: only hosts on that node are cloned from it. Unset
  /// for rows from before nodes (the only node's).
  std::optional<std::string> node_id;
};

/// What a warm-pool claim asks for: a ready member of this key, handed to the caller with
/// the caller's columns.
struct pool_claim {
  template_key_row key;
  /// The claimer's row as it will be: image (as requested), instance_type, expires_at,
  /// lease_seconds, owner_id, provision_deadline and created_at are copied onto the member;
  /// its id, name, port and identity stay the member's; `ns` becomes its namespace. activated_at is
  /// cleared: the claimer's host activates once it is re-identified.
  host_record as;
};

/// Members of one pool key in one status (metrics, /doctor, refills).
struct pool_count {
  template_key_row key;
  schema::host_status status{};
  std::int64_t count = 0;
};

/// GET /hosts filters.
struct list_query {
  std::vector<schema::host_status> statuses;  ///< empty: all
  std::size_t limit = 0;                      ///< 0: no limit
  std::optional<std::string> after;           ///< id cursor: rows older than this id
  std::optional<std::string> ns;              ///< one namespace only; nullopt: all
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
  /// capacity when no port is free (nothing is inserted, the key stays free); quota when
  /// `h.quota` would be exceeded (likewise; a held key still replays); unavailable;
  /// outcome_unknown when the commit's fate is unknown (read the row back to learn it).
  virtual result<insert_outcome> insert_host(const host_record& h,
                                             const std::optional<idempotency_claim>& key,
                                             port_range ports, timestamp now) = 0;

  /// One host. Errors: not_found.
  virtual result<host_record> get_host(std::string_view id) = 0;

  /// Hosts newest first (by id), filtered and paged by `q`; pool members are left out.
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

  /// Moves `host_id` off the port it holds to another free port of [lo, hi] that is not in
  /// `avoid` (ports this node found bound by something else), in one transaction: the host
  /// never holds two ports, nor none. Errors: capacity when no other port is free (the old
  /// lease is kept), not_found.
  virtual result<int> move_port(std::string_view host_id, int lo, int hi,
                                const std::vector<int>& avoid, timestamp now) = 0;

  // --- nodes (issue 14) ---

  /// Records the node `r.uri` (inserted with the default reservations and overcommit when
  /// new; its reported ssh_host, cpus and memory refreshed when known, the operator's
  /// settings kept) and gives it every host row without a node. Returns it.
  virtual result<node_record> register_node(const node_report& r, timestamp now) = 0;

  /// Every node, oldest first, with what its hosts hold.
  virtual result<std::vector<node_record>> list_nodes() = 0;

  /// Sets the state of the node whose id or URI is `node`. Errors: not_found.
  virtual result<node_record> set_node_state(std::string_view node, node_state state,
                                             timestamp now) = 0;

  /// Changes the operator's settings of the node whose id or URI is `node`. Errors:
  /// validation (a negative reservation, an overcommit that is not positive), not_found.
  virtual result<node_record> configure_node(std::string_view node, const node_settings& s,
                                             timestamp now) = 0;

  /// Deletes the node whose id or URI is `node`, and its template rows (their files are on
  /// that node). Returns it as it was. Errors: not_found; host_state while any host row (pool
  /// members and error rows included) is on it: drain it, and let the reaper finish, first.
  virtual result<node_record> remove_node(std::string_view node) = 0;

  /// Makes every host on node `node_id` that is active or bootstrapping (pool members
  /// included) expire at `now`, so that the reaper tears each down once. Returns how many.
  virtual result<int> expire_node_hosts(std::string_view node_id, timestamp now) = 0;

  /// Number of hosts per status (for metrics); pool members are left out (count_pool).
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
  /// `self` (may be empty) is the calling instance: it is alive by definition, so its own
  /// creates are never taken for its being late with a beat (its overdue ones still are).
  virtual result<std::vector<interrupted_host>> claim_interrupted(
      timestamp now, std::chrono::seconds grace, const std::string& interrupted_prefix,
      const std::string& overdue_prefix, std::size_t limit, std::string_view self) = 0;

  /// Removes instance rows that have not beaten for three of their intervals and an hour.
  /// Returns how many went.
  virtual result<int> prune_instances(timestamp now) = 0;

  /// Ids of all rows (any status): what an orphan sweep compares driver resources against.
  virtual result<std::vector<std::string>> all_host_ids() = 0;

  /// Every image digest a host row (pooled or not, any status) or a template references:
  /// bases the image cache must keep.
  virtual result<std::vector<std::string>> image_digests_in_use() = 0;

  /// Cheap round trip for /doctor and readiness. Errors: unavailable.
  virtual result<void> ping() = 0;

  // Templates (issue 9). One row per template_key_row; several processes agree through it on
  // who builds which template. Every template digest counts as in use for image GC.

  /// The template row of `key`, whatever its status; nullopt when there is none.
  virtual result<std::optional<template_record>> find_template(const template_key_row& key) = 0;

  /// Every template row (a small table: one per image digest and size).
  virtual result<std::vector<template_record>> list_templates() = 0;

  /// Takes the build of `want.key` for instance `want.owner_id`, leasing a port of `ports`
  /// for the template guest's boot in the same transaction: inserts `want` (status
  /// building) when the key has no row, or takes over the existing row (keeping its id)
  /// when it is failed with retry_after <= now, or building with an owner that is gone (no
  /// beat within three of its intervals). Returns the row now building (ssh_port set), or
  /// nullopt when someone else has it (ready, building by a live owner, failed and not yet
  /// retryable). Errors: capacity when no port is free (nothing changed), unavailable.
  virtual result<std::optional<template_record>> claim_template_build(const template_record& want,
                                                                      port_range ports,
                                                                      timestamp now) = 0;

  /// Ends the build of template `id` by `owner_id`: ready (ready_at = last_used_at = now) or
  /// failed with `last_error` and `retry_after`; the build's port is released either way.
  /// Errors: not_found; host_state when the row is no longer building by `owner_id` (someone
  /// took it over: this build's result is not recorded).
  virtual result<template_record> finish_template(std::string_view id, std::string_view owner_id,
                                                  bool ready, const std::string& last_error,
                                                  std::optional<timestamp> retry_after,
                                                  timestamp now) = 0;

  /// Fails every building row whose owner is gone (last_error `last_error`, retry_after =
  /// now, port released) and returns those rows, so their leftovers can be destroyed.
  /// Builds of `self` (the calling instance; may be empty) are never stale.
  virtual result<std::vector<template_record>> claim_stale_template_builds(
      timestamp now, const std::string& last_error, std::string_view self) = 0;

  /// last_used_at := now (a clone or a refill used it). Missing is success.
  virtual result<void> touch_template(std::string_view id, timestamp now) = 0;

  /// Deletes the row of template `id` if its status is one of `from` (its port goes with it).
  /// False when there was no such row.
  virtual result<bool> remove_template(std::string_view id,
                                       const std::vector<template_status>& from) = 0;

  // The warm pool. Members are host rows with pooled = true; a claim turns one into the
  // claimer's host in one transaction.

  /// Inserts pool member `h` (pooled, status provisioning, with the image digest, sizes and
  /// user of `key` whatever `h` says) with a leased port if fewer than `target` live members
  /// (any status but error and deleting) of `key` exist, counted and inserted under a lock on
  /// the key so that several processes never overfill it. Returns the outcome with
  /// created = false when the pool is full. Errors: capacity (no port), unavailable,
  /// outcome_unknown.
  virtual result<insert_outcome> insert_pool_member(const host_record& h,
                                                    const template_key_row& key, int target,
                                                    port_range ports, timestamp now) = 0;

  /// Claims one active member of `c.key` for a create, atomically with reserving `key`:
  /// when `key` is held (and not expired) nothing is claimed and the outcome names the host
  /// the key holds (created = false, fingerprint_matches as for insert_host); otherwise a
  /// member is locked (FOR UPDATE SKIP LOCKED), reserved under `key`, and becomes the
  /// claimer's host: pooled = false, status bootstrapping, path pool, the columns of `c.as`.
  /// nullopt when no member was free (nothing changed, the key stays free). Errors:
  /// quota as for insert_host (`c.as.ns` and `c.as.quota`; nothing claimed); unavailable;
  /// outcome_unknown (the claim may have landed; it then ends by its deadline).
  virtual result<std::optional<insert_outcome>> claim_pool_member(
      const pool_claim& c, const std::optional<idempotency_claim>& key, timestamp now) = 0;

  /// Moves pool member `id` to deleting if it is still pooled and active or error (so that a
  /// member just claimed is never retired). False when it was not.
  virtual result<bool> retire_pool_member(std::string_view id, timestamp now) = 0;

  /// Pooled rows (any status), oldest first.
  virtual result<std::vector<host_record>> list_pool_members() = 0;

  /// Pooled rows counted per key and status.
  virtual result<std::vector<pool_count>> count_pool() = 0;

  // Host events (issue 15). Every method above that changes a caller's host — inserts it,
  // changes its status, deletes it, or hands a pool member to a caller (a `created`) — writes
  // its event in the same transaction; pool members have none before their claim. A
  // transition with `died` records a `died` instead of a `status`.

  /// Events with id > q.after in id order, filtered by q. Ids become visible in order: once
  /// an id is returned, no smaller one appears later. Errors: history_gone when q.after is
  /// older than what prune_events kept (events after it were pruned: the caller would miss
  /// some) — for one host's events (q.host_id), only when that host's own `created` event
  /// is gone, since pruning takes the oldest first; unavailable.
  virtual result<std::vector<host_event>> list_events(const event_query& q) = 0;

  /// The id of the newest event (0 when there is none): where a stream without a resume
  /// point starts.
  virtual result<std::int64_t> newest_event_id() = 0;

  /// Deletes events older than `before` (at < before) and remembers the newest id deleted,
  /// so that a later list_events after an older id fails instead of skipping. Returns how
  /// many went.
  virtual result<std::int64_t> prune_events(timestamp before) = 0;
};

}  // namespace litterbox::controlplane
