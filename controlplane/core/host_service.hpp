#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/event_hub.hpp"
#include "controlplane/core/observer.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/core/tenancy.hpp"
#include "controlplane/core/validation.hpp"
#include "hypervisor/driver.hpp"
#include "schema/doctor.hpp"
#include "schema/host.hpp"
#include "schema/requests.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

class instance_heartbeat;
class provisioner;
class template_builder;
class warm_pool;
struct pool_state;

/// What POST /hosts got.
struct create_result {
  /// The host as it is now. `private_key` is set only in the result of the call that
  /// created the host with a minted key — it is never stored and never returned again.
  schema::host host;
  /// True when this call inserted the row; false for an idempotent replay.
  bool created = false;
  /// pool when a warm-pool member was claimed; otherwise the provisioner decides (served_by).
  std::optional<create_path> path;
};

/// One page of GET /hosts.
struct host_page {
  std::vector<schema::host> hosts;
  std::optional<std::string> next_after;  ///< cursor for the next page when rows remain
};

/// The operations of API.md on hosts: admission (validation, idempotency, the row), reads,
/// leases and teardown. Provisioning itself is the provisioner's; liveness the instance
/// heartbeat's. Talks to a `store` and a hypervisor `driver`; knows nothing of HTTP. Every
/// method blocks (database, hypervisor) and is thread-safe.
///
/// Every caller-facing method acts as `who` (API.md "Tenants: scoped keys"): a scoped key's
/// creates go to its namespace under its quota, and a host of another namespace is
/// not_found to it, exactly as one that does not exist. The default is an admin.
class host_service {
 public:
  /// `observer` (optional, must outlive the service) hears of teardown failures.
  host_service(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
               std::string instance_id, lifecycle_observer* observer = nullptr);
  ~host_service();
  host_service(const host_service&) = delete;
  host_service& operator=(const host_service&) = delete;

  /// POST /hosts. Validates, takes a provisioning place, then either claims a warm-pool
  /// member of the request's image digest and size or inserts a new row (either reserving
  /// `idempotency_key` and the SSH port in the same transaction), and starts provisioning in
  /// the background; returns at once with the host in its current state. A replayed key
  /// returns the original host (created = false). Errors: validation (incl. a malformed key),
  /// idempotency_mismatch, bad_request, capacity (no provisioning place or no port: nothing
  /// was kept), quota (likewise), unavailable.
  result<create_result> create(const schema::create_host_request& req,
                               const std::optional<std::string>& idempotency_key,
                               const caller& who = admin_caller());

  /// Runs `cb` once, on a service thread, when host `id` stops provisioning in this process
  /// (active, error or gone). Returns false, without calling `cb`, when this process is not
  /// provisioning `id` (another process is, or it has settled): the caller polls get().
  bool notify_when_settled(const std::string& id, std::function<void()> cb);

  /// The follower of the events table every event stream of this process reads.
  event_hub& events() { return *events_; }

  /// True while this process is creating host `id` (for the reconciler).
  bool provisioning_here(const std::string& id) const;

  /// GET /hosts/{id}. Errors: validation (malformed UUID, loc path/host_id), not_found.
  result<schema::host> get(std::string_view id, const caller& who = admin_caller());

  /// How host `id` was served (X-Litterbox-Create-Path); boot for rows that predate the
  /// column. Errors: as get().
  result<create_path> served_by(std::string_view id);

  /// GET /hosts. Errors: validation (loc query/status|limit|after).
  result<host_page> list(const list_params& params, const caller& who = admin_caller());

  /// POST /hosts/{id}/renew. No timestamp → now + LEASE_DEFAULT_TTL. Errors: validation
  /// (timestamp not in the future), not_found, host_state.
  result<schema::host> renew(std::string_view id, const schema::renew_request& req,
                             const caller& who = admin_caller());

  /// DELETE /hosts/{id}: tears down the VM and every resource, then removes the row.
  /// Errors: not_found; host_state while a create is still provisioning; teardown_failed
  /// (the row is kept in `deleting`; a retry tears down again).
  result<void> remove(std::string_view id, const caller& who = admin_caller());

  /// GET /hosts/{id}/console. Errors: validation, not_found.
  result<std::string> console(std::string_view id, std::size_t max_bytes,
                              const caller& who = admin_caller());

  /// GET /doctor: the database and every driver check.
  schema::doctor_report doctor();

  /// Hosts per status, for metrics.
  result<std::map<schema::host_status, std::int64_t>> count_by_status();

  /// Each configured warm pool as it is now, for metrics (empty without pools).
  std::vector<pool_state> pool_states();

  /// Template rows per status, for metrics. Errors: unavailable.
  result<std::map<template_status, std::int64_t>> count_templates();

  /// Starts the background work of a serving process: template builds and pool refills.
  void start_background();

  /// The provider name hosts are created with.
  std::string_view provider() const;

  /// Tears down the VM and every resource of a host already in `deleting`, then removes the
  /// row. Used by DELETE and the reaper. Errors: teardown_failed (row kept), unavailable.
  result<void> teardown(std::string_view id);

  /// Refreshes this process's heartbeat row; hosts it provisions stay owned while it beats.
  result<void> heartbeat();

  /// Stops template builds and pool refills, stops taking creates, fails queued ones, gives
  /// running ones LITTERBOX_SHUTDOWN_DRAIN to finish (then fails and releases them), and stops
  /// the heartbeat. Idempotent.
  void shutdown();

  /// The template builder (null when LITTERBOX_TEMPLATES is off), for maintenance and tests.
  template_builder* templates() { return templates_.get(); }
  /// The warm pool (null without LITTERBOX_POOL), for tests.
  warm_pool* pool() { return pool_.get(); }

 private:
  /// The caller's row of `raw_id`: pool members are no caller's (not_found).
  result<host_record> find_host(std::string_view raw_id, const caller& who);
  schema::doctor_check templates_check();
  schema::doctor_check pool_check();
  schema::doctor_check node_check();
  /// Claims a warm-pool member for the create `rec` when a pool serves its size and a member
  /// of its image's digest is free (or finds the host its key already names); nullopt to go
  /// on with a new row.
  result<std::optional<insert_outcome>> claim_from_pool(
      const host_record& rec, const std::optional<idempotency_claim>& key);
  /// Says where `rec` may go: config::node_id when the driver runs one node; otherwise every
  /// node it drives that answers, preferring the one that holds a ready template of the create's
  /// image and size (the store's insert decides among them).
  void place_on_nodes(host_record& rec);

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  lifecycle_observer* observer_;
  hypervisor::ssh_key_pair probe_key_;
  std::unique_ptr<instance_heartbeat> heartbeat_;
  std::unique_ptr<template_builder> templates_;
  std::unique_ptr<provisioner> provisioner_;
  std::unique_ptr<warm_pool> pool_;
  std::unique_ptr<event_hub> events_;
};

}  // namespace litterbox::controlplane
