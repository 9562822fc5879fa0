#include "controlplane/core/reaper.hpp"

#include "base/log.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/maintenance.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace litterbox::controlplane {
namespace {

// Small enough that a pass holds few row locks at once, large enough that 10 000 expired
// hosts take a few hundred round trips rather than ten thousand.
constexpr std::size_t k_batch = 64;

}  // namespace

reaper::reaper(const config& cfg, store& db, host_service& hosts, maintenance& upkeep,
               const clock& clk, lifecycle_observer& observer)
    : cfg_(cfg), db_(db), hosts_(hosts), upkeep_(upkeep), clock_(clk), observer_(observer) {}

reaper::~reaper() {
  stop();
}

reap_report reaper::run_once() {
  const auto started = std::chrono::steady_clock::now();
  const timestamp pass_start = clock_.now();
  reap_report report;

  if (auto recovered = upkeep_.recover_interrupted()) {
    report.recovered = *recovered;
    for (int i = 0; i < *recovered; ++i) {
      observer_.create_recovered();
    }
  } else {
    report.database_ok = false;
  }

  for (;;) {
    const timestamp now = clock_.now();
    // Never later than the pass's own start: a host this pass claimed (updated_at = now) and
    // failed to tear down must wait for the next pass, even with a retention of zero.
    const timestamp cutoff = std::min(now - cfg_.error_retention, pass_start);
    auto batch = db_.claim_expired(now, cutoff, k_batch);
    if (!batch) {
      spdlog::error("reap: cannot claim hosts: {}", log_escape(batch.error().message));
      report.database_ok = false;
      break;
    }
    // Teardowns are I/O bound (libvirt, disks, a commit each), so a batch is torn down by
    // several threads at once; every host of the batch is claimed by this pass alone.
    std::mutex report_mutex;
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t i = next++; i < batch->size(); i = next++) {
        const auto& h = (*batch)[i].host;
        auto r = hosts_.teardown(h.id);
        const std::lock_guard lock(report_mutex);
        if (r) {
          ++report.reaped;
          report.reaped_ids.push_back(h.id);
          observer_.host_reaped();
          spdlog::info("reap: host {} ({}) reaped", h.id, h.name);
        } else {
          ++report.failed;  // host_service reports the teardown failure to the observer
          spdlog::error("reap: host {} ({}) not reaped: {}", h.id, h.name,
                        log_escape(r.error().message));
        }
      }
    };
    const auto workers = std::min<std::size_t>(
        batch->size(), static_cast<std::size_t>(std::max(1, cfg_.reap_concurrency)));
    std::vector<std::thread> threads;
    for (std::size_t t = 1; t < workers; ++t) {
      threads.emplace_back(work);
    }
    work();
    for (auto& t : threads) {
      t.join();
    }
    if (batch->size() < k_batch) {
      break;
    }
  }

  if (auto swept = upkeep_.sweep_orphans()) {
    report.orphans_removed = *swept;
    if (*swept > 0) {
      observer_.orphans_removed(*swept);
    }
  } else {
    spdlog::error("reap: orphan sweep failed: {}", log_escape(swept.error().message));
  }

  // Templates before images: a template collected here frees its digest for the image GC.
  if (auto t = upkeep_.maintain_templates()) {
    report.templates_removed = *t;
  } else {
    spdlog::error("reap: template upkeep failed: {}", log_escape(t.error().message));
  }

  if (auto images = upkeep_.collect_images()) {
    report.images_collected = *images;
  } else {
    spdlog::error("reap: image cache collection failed: {}", log_escape(images.error().message));
  }

  if (auto pruned = upkeep_.prune_instances(); !pruned) {
    spdlog::error("reap: pruning instance rows failed: {}", log_escape(pruned.error().message));
  }

  if (auto pruned = upkeep_.prune_events(); !pruned) {
    spdlog::error("reap: pruning host events failed: {}", log_escape(pruned.error().message));
  }

  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  observer_.reap_pass(took);
  spdlog::info(
      "reap: pass done in {:.3f} s: {} reaped, {} failed, {} recovered, {} orphans removed",
      took.count(), report.reaped, report.failed, report.recovered, report.orphans_removed);
  return report;
}

void reaper::start_loop() {
  loop_ = std::thread([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      run_once();
      lock.lock();
      cv_.wait_for(lock, cfg_.reap_interval, [this] { return stopping_; });
    }
  });
}

void reaper::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) {
    loop_.join();
  }
}

}  // namespace litterbox::controlplane
