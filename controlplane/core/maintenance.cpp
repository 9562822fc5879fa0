#include "controlplane/core/maintenance.hpp"

#include "base/log.hpp"

#include <spdlog/spdlog.h>

#include <set>

namespace litterbox::controlplane {
namespace {

// Rows claimed per statement: few locks held at once, few round trips for many rows.
constexpr std::size_t k_batch = 64;

}  // namespace

maintenance::maintenance(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk)
    : cfg_(cfg), db_(db), driver_(driver), clock_(clk) {}

result<int> maintenance::recover_interrupted() {
  int claimed = 0;
  for (;;) {
    auto batch = db_.claim_interrupted(
        clock_.now(), cfg_.provision_grace,
        "Interrupted: the control plane creating this host stopped during ",
        "ProvisionTimeout: the create did not finish by its deadline; it was in ", k_batch);
    if (!batch) {
      return batch.error();
    }
    for (const auto& h : *batch) {
      const auto& id = h.host.host.id;
      ++claimed;
      spdlog::warn("host {}: {} create in {} failed", id, h.overdue ? "overdue" : "interrupted",
                   schema::to_string(h.was));
      if (auto d = driver_.destroy(id); !d) {
        // The row is `error` already; the reaper's teardown retries after the retention.
        spdlog::error("host {}: releasing an interrupted create failed: {}", id,
                      log_escape(d.error().message));
        continue;
      }
      host_patch free_port;
      free_port.release_port = true;
      (void)db_.transition(id, {schema::host_status::error}, free_port, clock_.now());
    }
    if (batch->size() < k_batch) {
      return claimed;
    }
  }
}

result<int> maintenance::sweep_orphans() {
  // Order matters: resources are listed before rows. A create inserts its row before it
  // makes any resource, so a resource listed here whose row exists has it in the id list
  // read afterwards; anything missing from that list has no row and never will.
  auto owned = driver_.list_owned();
  if (!owned) {
    return owned.error();
  }
  auto ids = db_.all_host_ids();
  if (!ids) {
    return ids.error();
  }
  const std::set<std::string> live(ids->begin(), ids->end());
  int removed = 0;
  for (const auto& id : *owned) {
    if (live.count(id) != 0) {
      continue;
    }
    if (auto d = driver_.destroy(id); d) {
      spdlog::warn("host {}: orphaned resources removed", id);
      ++removed;
    } else {
      spdlog::error("host {}: removing orphaned resources failed: {}", id,
                    log_escape(d.error().message));
    }
  }
  return removed;
}

result<int> maintenance::collect_images() {
  auto digests = db_.image_digests_in_use();
  if (!digests) {
    return digests.error();
  }
  return driver_.collect_images(std::set<std::string>(digests->begin(), digests->end()));
}

result<int> maintenance::prune_instances() {
  return db_.prune_instances(clock_.now());
}

}  // namespace litterbox::controlplane
