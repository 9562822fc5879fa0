#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/observer.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"
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

class task_pool;

/// What POST /hosts got.
struct create_result {
  /// The host as it is now. `private_key` is set only in the result of the call that
  /// created the host with a minted key — it is never stored and never returned again.
  schema::host host;
  /// True when this call inserted the row; false for an idempotent replay.
  bool created = false;
};

/// GET /hosts parameters as they arrived on the query string; host_service validates them.
struct list_params {
  std::vector<std::string> statuses;
  std::optional<std::string> limit;
  std::optional<std::string> after;
};

/// One page of GET /hosts.
struct host_page {
  std::vector<schema::host> hosts;
  std::optional<std::string> next_after;  ///< cursor for the next page when rows remain
};

/// GET /doctor.
struct doctor_report {
  bool ok = false;
  std::string provider;
  std::vector<hypervisor::check_result> checks;
};

/// The business rules of hosts: validation, idempotency, the provisioning state machine,
/// leases and teardown. Talks to a `store` and a hypervisor `driver`; knows nothing of HTTP.
/// Every method blocks (database, hypervisor) and is thread-safe; provisioning runs on the
/// service's own worker threads.
class host_service {
 public:
  /// `observer` (optional, must outlive the service) hears of teardown failures.
  host_service(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
               std::string instance_id, lifecycle_observer* observer = nullptr);
  ~host_service();
  host_service(const host_service&) = delete;
  host_service& operator=(const host_service&) = delete;

  /// POST /hosts. Validates, inserts the row (reserving `idempotency_key` in the same
  /// transaction) and starts provisioning in the background; returns at once with the host
  /// in its current state. A replayed key returns the original host (created = false).
  /// Errors: validation (incl. a malformed key), idempotency_mismatch, bad_request,
  /// unavailable.
  result<create_result> create(const schema::create_host_request& req,
                               const std::optional<std::string>& idempotency_key);

  /// Runs `cb` once, on a service thread, when host `id` stops provisioning in this process
  /// (active, error or gone). Returns false, without calling `cb`, when this process is not
  /// provisioning `id` (another process is, or it has settled): the caller polls get().
  bool notify_when_settled(const std::string& id, std::function<void()> cb);

  /// GET /hosts/{id}. Errors: validation (malformed UUID, loc path/host_id), not_found.
  result<schema::host> get(std::string_view id);

  /// GET /hosts. Errors: validation (loc query/status|limit|after).
  result<host_page> list(const list_params& params);

  /// POST /hosts/{id}/renew. No timestamp → now + LEASE_DEFAULT_TTL. Errors: validation
  /// (timestamp not in the future), not_found, host_state.
  result<schema::host> renew(std::string_view id, const schema::renew_request& req);

  /// DELETE /hosts/{id}: tears down the VM and every resource, then removes the row.
  /// Errors: not_found; host_state while a create is still provisioning; teardown_failed
  /// (the row is kept in `deleting`; a retry tears down again).
  result<void> remove(std::string_view id);

  /// GET /hosts/{id}/console. Errors: validation, not_found.
  result<std::string> console(std::string_view id, std::size_t max_bytes);

  /// GET /doctor: the database and every driver check.
  doctor_report doctor();

  /// Hosts per status, for metrics.
  result<std::map<schema::host_status, std::int64_t>> count_by_status();

  /// The provider name hosts are created with.
  std::string_view provider() const;

  /// Tears down the VM and every resource of a host already in `deleting`, then removes the
  /// row. Used by DELETE and the reaper. Errors: teardown_failed (row kept), unavailable.
  result<void> teardown(std::string_view id);

  /// Fails and releases hosts whose creating process is gone (no heartbeat since
  /// `stale_before`). Returns how many were recovered.
  result<int> recover_orphaned(timestamp stale_before);

  /// Destroys driver resources (domains, disks, seeds, consoles) that belong to no row.
  /// Returns how many hosts' resources were removed.
  result<int> sweep_orphans();

  /// Lets the driver drop cached images that no row references. Returns how many went.
  result<int> collect_images();

  /// Refreshes this process's heartbeat row; hosts it provisions stay owned while it beats.
  result<void> heartbeat();

  /// Stops taking new creates and waits for in-flight provisioning to finish.
  void shutdown();

 private:
  struct in_flight;
  void provision(const std::string& id, std::shared_ptr<hypervisor::vm_spec> spec,
                 std::optional<std::int64_t> lease_seconds);
  void fail(const std::string& id, const error& e, schema::host_status from);
  void settle(const std::string& id);
  result<std::string> checked_id(std::string_view id) const;
  result<host_record> find_host(std::string_view raw_id);
  void heartbeat_loop();

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  std::string instance_id_;
  lifecycle_observer* observer_;
  std::unique_ptr<in_flight> in_flight_;
  hypervisor::ssh_key_pair probe_key_;
  std::unique_ptr<task_pool> workers_;
  struct heartbeat_state;
  std::unique_ptr<heartbeat_state> heartbeat_;
};

}  // namespace litterbox::controlplane
