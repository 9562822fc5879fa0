#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "hypervisor/driver.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace litterbox::controlplane {

class instance_heartbeat;
class provisioner;
class template_builder;

/// What one configured pool looks like now (metrics, /doctor).
struct pool_state {
  pool_spec spec;
  std::string image_digest;  ///< what the image resolved to last; empty: not yet
  std::int64_t ready = 0;    ///< members waiting for a claim
  std::int64_t filling = 0;  ///< members being restored
  std::string problem;       ///< why the pool is not filling, when it is not
};

/// The warm pool: for each LITTERBOX_POOL entry, restored clones of its image and size kept
/// ready so that a create claims one (store::claim_pool_member) instead of waiting for a
/// restore. Members are host rows (pooled) that no caller sees. Refills run on one thread per
/// process, one member at a time and at most LITTERBOX_POOL_REFILL_PER_MINUTE, and several
/// processes never overfill a pool (store::insert_pool_member). A member unclaimed for
/// LITTERBOX_POOL_MAX_AGE expires (the reaper removes it like any expired host) and is
/// replaced; members of a digest the image no longer names are retired. Thread-safe.
class warm_pool {
 public:
  /// Tears a host down and removes its row (host_service::teardown).
  using teardown_fn = std::function<result<void>(std::string_view id)>;

  warm_pool(const config& cfg, store& db, hypervisor::driver& driver, provisioner& provisioning,
            template_builder& templates, instance_heartbeat& instance, const clock& clk,
            std::string probe_public_key, teardown_fn teardown);
  ~warm_pool();
  warm_pool(const warm_pool&) = delete;
  warm_pool& operator=(const warm_pool&) = delete;

  /// True when some pool holds members of this size: a claim is worth resolving the digest.
  bool serves(int cpus, int memory_mib, std::optional<int> disk_gb) const;

  /// One pass over every pool: resolve its image, retire members of other digests, ask for
  /// its template, restore members while it is below its size and the refill rate allows.
  /// Blocks for each restore. Returns how many members were restored.
  int refill_once();

  /// What each pool looks like now (reads the database).
  std::vector<pool_state> states();

  /// Runs refill_once() on a background thread every few seconds, and at once after poke().
  void start();
  /// Wakes the refill thread (a claim settled, a template became ready).
  void poke();
  /// How many times poke() was called: when the refill was asked for, for tests.
  std::uint64_t pokes() const;
  /// Stops the refill thread; a restore under way is interrupted by the provisioner's
  /// shutdown. Idempotent.
  void stop();

 private:
  int refill(std::size_t index);
  void loop();
  bool take_token();

  const config& cfg_;
  store& db_;
  hypervisor::driver& driver_;
  provisioner& provisioning_;
  template_builder& templates_;
  instance_heartbeat& instance_;
  const clock& clock_;
  const std::string probe_public_key_;
  teardown_fn teardown_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> digests_;   ///< per pool: last resolution
  std::vector<std::string> problems_;  ///< per pool: why it is not filling
  std::vector<int> failures_;          ///< per pool: member restores failed in a row
  std::vector<std::chrono::steady_clock::time_point> paused_until_;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point tokens_at_{};
  bool poked_ = false;
  std::uint64_t pokes_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace litterbox::controlplane
