#pragma once

#include "base/clock.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/observer.hpp"
#include "controlplane/core/store.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace litterbox::controlplane {

class host_service;
class maintenance;

/// The outcome of one maintenance pass.
struct reap_report {
  int reaped = 0;             ///< expired or retained-error hosts torn down and removed
  int failed = 0;             ///< teardowns that failed (rows kept in `deleting`)
  int recovered = 0;          ///< interrupted or overdue creates failed and released
  int orphans_removed = 0;    ///< hosts whose leftover resources had no row
  int images_collected = 0;   ///< cached base images no host used, removed over budget
  int templates_removed = 0;  ///< templates collected, interrupted builds and leftovers removed
  bool database_ok = true;    ///< false when the pass could not reach the database
  std::vector<std::string> reaped_ids;  ///< the hosts this pass tore down and removed
};

/// Honours `expires_at`: claims due hosts in batches (FOR UPDATE SKIP LOCKED, so any number
/// of reapers — cron overlapping the in-process loop, several replicas — never tear one down
/// twice and never wait on each other), tears them down and removes them. Each pass also runs
/// maintenance: interrupted creates, orphaned resources, unused images, dead instance rows.
/// Blocking; thread-safe.
class reaper {
 public:
  reaper(const config& cfg, store& db, host_service& hosts, maintenance& upkeep, const clock& clk,
         lifecycle_observer& observer);
  ~reaper();
  reaper(const reaper&) = delete;
  reaper& operator=(const reaper&) = delete;

  /// One full pass. Logs one line per host reaped or failed and a summary line.
  reap_report run_once();

  /// Runs run_once() every cfg.reap_interval on a background thread until stop().
  void start_loop();
  void stop();

 private:
  const config& cfg_;
  store& db_;
  host_service& hosts_;
  maintenance& upkeep_;
  const clock& clock_;
  lifecycle_observer& observer_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread loop_;
};

}  // namespace litterbox::controlplane
