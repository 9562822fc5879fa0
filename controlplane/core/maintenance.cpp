#include "controlplane/core/maintenance.hpp"

#include "base/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace litterbox::controlplane {
namespace {

// Rows claimed per statement: few locks held at once, few round trips for many rows.
constexpr std::size_t k_batch = 64;

}  // namespace

maintenance::maintenance(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
                         std::string self_instance)
    : cfg_(cfg), db_(db), driver_(driver), clock_(clk), self_(std::move(self_instance)) {}

result<int> maintenance::recover_interrupted() {
  int claimed = 0;
  for (;;) {
    auto batch = db_.claim_interrupted(
        clock_.now(), cfg_.provision_grace,
        "Interrupted: the control plane creating this host stopped during ",
        "ProvisionTimeout: the create did not finish by its deadline; it was in ", k_batch, self_);
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

result<std::int64_t> maintenance::prune_events() {
  return db_.prune_events(clock_.now() - cfg_.event_retention);
}

result<int> maintenance::maintain_templates() {
  int removed = 0;
  auto stale = db_.claim_stale_template_builds(
      clock_.now(), "Interrupted: the control plane building this template stopped", self_);
  if (!stale) {
    return stale.error();
  }
  for (const auto& t : *stale) {
    spdlog::warn("template {}: build interrupted; its leftovers are removed", t.id);
    if (driver_.destroy_template(t.id)) {
      ++removed;
    }
  }

  // Collection: unused for the TTL, or superseded by a newer ready digest of the same
  // reference and size (a tag pushed anew). Clones keep running: their disks hold the
  // template's open.
  auto rows = db_.list_templates();
  if (!rows) {
    return rows.error();
  }
  const timestamp now = clock_.now();
  for (const auto& t : *rows) {
    if (t.status == template_status::building) {
      continue;
    }
    const bool unused = t.last_used_at < now - cfg_.template_ttl;
    const bool superseded =
        std::any_of(rows->begin(), rows->end(), [&](const template_record& other) {
          return other.status == template_status::ready && other.image == t.image &&
                 other.key.image_digest != t.key.image_digest && other.key.cpus == t.key.cpus &&
                 other.key.memory_mib == t.key.memory_mib && other.key.disk_gb == t.key.disk_gb &&
                 other.key.ssh_username == t.key.ssh_username && other.created_at > t.created_at;
        });
    if (!unused && !superseded) {
      continue;
    }
    // Row first: from now on no create picks it; then its files.
    auto gone = db_.remove_template(t.id, {template_status::ready, template_status::failed});
    if (!gone || !*gone) {
      continue;
    }
    spdlog::info("template {}: collected ({})", t.id, unused ? "unused" : "superseded");
    if (auto d = driver_.destroy_template(t.id); d) {
      ++removed;
    } else {
      spdlog::error("template {}: removing its files failed: {}", t.id,
                    log_escape(d.error().message));
    }
  }

  // Files without a row: listed before the rows are read, as for hosts (a build inserts its
  // row before it makes anything).
  auto owned = driver_.list_templates();
  if (!owned) {
    return removed;
  }
  auto now_rows = db_.list_templates();
  if (!now_rows) {
    return now_rows.error();
  }
  std::set<std::string> live;
  for (const auto& t : *now_rows) {
    if (t.status != template_status::failed) {
      live.insert(t.id);
    }
  }
  for (const auto& id : *owned) {
    if (live.count(id) != 0) {
      continue;
    }
    if (driver_.destroy_template(id)) {
      spdlog::warn("template {}: leftovers without a live row removed", id);
      ++removed;
    }
  }
  return removed;
}

}  // namespace litterbox::controlplane
