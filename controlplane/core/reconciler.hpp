#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace litterbox::controlplane {

/// Makes host state follow the VM: every host the database calls active or bootstrapping
/// (and every active warm-pool member) must have a running VM. One whose VM stopped, crashed
/// or vanished becomes `error` with a last_error saying which (`VMStopped: …`, `VMCrashed: …`
/// with the console tail, `VMGone: …`) and a `died` event, then is released like any failed
/// create: VM destroyed, then port freed; the row stays for its caller until the error
/// retention ends. The change is a compare-and-set from the status read, so when several
/// processes see the same death exactly one acts. Hosts this process is still creating are
/// left to their provisioner. Blocking; thread-safe.
class reconciler {
 public:
  /// `provisioning_here(id)`: true while this process is creating host `id`.
  reconciler(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
             std::function<bool(const std::string&)> provisioning_here);
  ~reconciler();
  reconciler(const reconciler&) = delete;
  reconciler& operator=(const reconciler&) = delete;

  /// One pass: rows first, then the hypervisor's VMs (a VM started before its row was read
  /// is in the listing, so a create in flight elsewhere is never taken for dead). Returns
  /// how many hosts it failed. Errors: unavailable (database or hypervisor unreachable;
  /// nothing changed).
  result<int> run_once();

  /// Runs a pass at once (drift from before start-up), then after every driver wake-up
  /// (a VM stopped; a reconnect) and at least every LITTERBOX_RECONCILE_INTERVAL, on a
  /// background thread until stop().
  void start_loop();
  void stop();

  /// Called on the loop's thread after each of its passes with the pass's outcome (metrics,
  /// tests). Set before start_loop().
  void on_pass(std::function<void(const result<int>&)> cb) { on_pass_ = std::move(cb); }

 private:
  /// Fails and releases `h`, whose VM is `vm` (nullptr: none). False when another process
  /// or request changed the host first.
  bool fail(const host_record& h, const hypervisor::vm_status* vm);

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  std::function<bool(const std::string&)> provisioning_here_;
  std::function<void(const result<int>&)> on_pass_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread loop_;
};

}  // namespace litterbox::controlplane
