#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"

#include <string>

namespace litterbox::controlplane {

/// What no request asks for but every deployment needs: creates nobody will finish are
/// failed and released, resources without a row are destroyed, unused images collected,
/// dead instance rows pruned. Every step is safe to run in several processes at once.
/// Blocking; thread-safe.
class maintenance {
 public:
  /// `self_instance`: the id of the calling process's instance row (empty: none). Work it owns
  /// is never taken for its late heartbeat (a loaded machine can delay a beat past three
  /// intervals while the process is very much alive); only deadlines apply to it.
  maintenance(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
              std::string self_instance = {});

  /// Claims, then releases, every create whose owner is gone or that is past its deadline
  /// plus LITTERBOX_PROVISION_GRACE whoever owns it: row to `error` first (so a slow owner's
  /// next step fails instead of racing the teardown), then the VM, then the port. Returns
  /// how many were claimed. Errors: unavailable.
  result<int> recover_interrupted();

  /// Destroys driver resources (domains, disks, seeds, consoles) that belong to no row.
  /// Returns how many hosts' resources were removed.
  result<int> sweep_orphans();

  /// Lets the driver drop cached images that no row references. Returns how many went.
  result<int> collect_images();

  /// Removes instance rows long dead. Returns how many went.
  result<int> prune_instances();

  /// Removes host events older than LITTERBOX_EVENT_RETENTION. Returns how many went.
  result<std::int64_t> prune_events();

  /// Templates: builds whose process is gone are failed (and rebuilt by whoever wants them
  /// next); templates nothing cloned for LITTERBOX_TEMPLATE_TTL, and those superseded by a
  /// newer digest of the same image and size, are removed; driver templates without a row
  /// are destroyed. Returns how many templates' files were removed. Errors: unavailable.
  result<int> maintain_templates();

 private:
  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  const clock& clock_;
  const std::string self_;
};

}  // namespace litterbox::controlplane
