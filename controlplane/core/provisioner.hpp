#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace litterbox::controlplane {

class template_builder;

/// What a provision_job starts from.
enum class job_kind {
  create,       ///< a caller's new row: clone from a ready template, else boot from scratch
  pool_member,  ///< a warm-pool row: clone with no login at all, never a boot
  claim,        ///< a pool member just claimed (bootstrapping): give it the caller's login
};

/// One admitted create, from its row's insert to active or error.
struct provision_job {
  job_kind kind = job_kind::create;
  std::string id;
  std::shared_ptr<hypervisor::vm_spec> spec;
  std::optional<std::int64_t> lease_seconds;       ///< stamp expires_at = activation + this
  std::chrono::steady_clock::time_point deadline;  ///< admission + PROVISION_TIMEOUT
  /// claim: fail at once with this last_error (what the claim could not prepare).
  std::string preset_failure;
};

/// The provisioning state machine: a bounded queue of admitted creates, worker threads that
/// drive each through pulling_image → creating_vm → bootstrapping → active (or error) with
/// compare-and-set transitions, and the waiters of each. Every write whose outcome is unknown
/// is resolved by reading the row back, never by guessing. A create is restored from the ready
/// template of its image digest and size when there is one (and one is asked of `templates`
/// otherwise), else booted. Claims of warm-pool members take a lane of their own, so that a
/// claim (a fraction of a second) never waits behind boots (minutes). Thread-safe.
class provisioner {
 public:
  /// `templates` (optional, must outlive this) enables clones.
  provisioner(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
              template_builder* templates = nullptr);
  ~provisioner();
  provisioner(const provisioner&) = delete;
  provisioner& operator=(const provisioner&) = delete;

  /// A place in the queue, held from admission until submit() or until dropped unused.
  class admission {
   public:
    admission() = default;
    admission(admission&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
    admission& operator=(admission&& other) noexcept;
    admission(const admission&) = delete;
    admission& operator=(const admission&) = delete;
    ~admission();

   private:
    friend class provisioner;
    explicit admission(provisioner* owner) : owner_(owner) {}
    provisioner* owner_ = nullptr;
  };

  /// Takes a place for one more create. Errors: capacity when the creates provisioning and
  /// queued are at LITTERBOX_MAX_PROVISIONING + LITTERBOX_MAX_QUEUED; unavailable while
  /// shutting down. Nothing is reserved anywhere else, so a refusal leaves nothing behind.
  result<admission> admit();

  /// Queues `job` in the place `place` holds; from now on notify_when_settled() knows it.
  void submit(admission place, provision_job job);

  /// Provisions pool member `job` (kind pool_member) on the calling thread, outside the
  /// admission bound (refills are paced by the pool). Shutdown interrupts it as any create.
  /// False when shutting down (the row is then failed and released).
  bool provision_member(provision_job job);

  /// Runs `cb` once, on a provisioning thread, when host `id` stops provisioning in this
  /// process (active, error or gone). False, without calling `cb`, when this process is not
  /// provisioning `id`.
  bool notify_when_settled(const std::string& id, std::function<void()> cb);

  /// Creates admitted and not yet settled (queued or running).
  std::size_t in_flight() const;

  /// True while this process is creating host `id` (queued, running, or a pool member being
  /// restored).
  bool provisioning(const std::string& id) const;

  /// Stops taking creates; fails the queued ones at once (row error, key and port freed,
  /// nothing was made for them); lets running ones go on for up to `drain`, then fails
  /// those (row error, VM destroyed, port freed) and joins the workers. Idempotent.
  void shutdown(std::chrono::seconds drain);

 private:
  enum class write_outcome { applied, changed, failed, gave_up };

  /// A job under way: the status its row is in, and whether a VM may exist.
  struct attempt {
    const provision_job& job;
    schema::host_status at;
    bool vm_made = false;
  };

  void work(bool express);
  void run(const provision_job& job);
  void run_claim(const provision_job& job);
  /// Moves the row of `a` on to `to`; false when provisioning must stop (everything is
  /// released then).
  bool step(attempt& a, schema::host_status to, host_patch patch);
  /// Fails `a` when its deadline has passed.
  bool past_deadline(attempt& a);
  /// The step to active: known_hosts, activation and the caller's lease.
  bool activate(attempt& a, std::optional<std::string> known_hosts);
  /// Applies `patch` (whose status is set) from `from`, retrying while the database is
  /// unreachable until `until`, and reading the row back after every failed attempt.
  write_outcome apply(const std::string& id, const std::vector<schema::host_status>& from,
                      const host_patch& patch, std::chrono::steady_clock::time_point until,
                      error* failure);
  void fail(const provision_job& job, const std::string& last_error, bool vm_made);
  void settle(const std::string& id);
  void release_place();
  std::chrono::steady_clock::time_point write_deadline(const provision_job& job) const;

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  template_builder* templates_;

  std::mutex shutdown_mutex_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<provision_job> queue_;
  std::deque<provision_job> express_;  ///< claims
  std::condition_variable express_cv_;
  std::map<std::string, std::vector<std::function<void()>>> waiters_;
  std::set<std::string> running_;
  std::size_t places_ = 0;  ///< admissions held + queued + running
  bool stopping_ = false;
  bool stopped_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace litterbox::controlplane
