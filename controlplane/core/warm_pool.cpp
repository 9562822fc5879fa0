#include "controlplane/core/warm_pool.hpp"

#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/instance_heartbeat.hpp"
#include "controlplane/core/lifecycle.hpp"
#include "controlplane/core/provisioner.hpp"
#include "controlplane/core/templates.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace litterbox::controlplane {

using schema::host_status;
using std::chrono::steady_clock;

namespace {

// How often the pools are looked at without a poke: a tag pushed anew is noticed this fast.
constexpr auto k_tick = std::chrono::seconds(10);

bool live(host_status s) {
  return s != host_status::error && s != host_status::deleting;
}

bool same_size(const template_key_row& k, const pool_spec& p) {
  return k.cpus == p.cpus && k.memory_mib == p.memory_mib && k.disk_gb == p.disk_gb;
}

}  // namespace

warm_pool::warm_pool(const config& cfg, store& db, hypervisor::driver& driver,
                     provisioner& provisioning, template_builder& templates,
                     instance_heartbeat& instance, const clock& clk, std::string probe_public_key,
                     teardown_fn teardown)
    : cfg_(cfg),
      db_(db),
      driver_(driver),
      provisioning_(provisioning),
      templates_(templates),
      instance_(instance),
      clock_(clk),
      probe_public_key_(std::move(probe_public_key)),
      teardown_(std::move(teardown)),
      digests_(cfg.pools.size()),
      problems_(cfg.pools.size()),
      failures_(cfg.pools.size(), 0),
      paused_until_(cfg.pools.size()),
      tokens_(std::max(1, cfg.pool_refill_per_minute)),
      tokens_at_(steady_clock::now()) {}

warm_pool::~warm_pool() {
  stop();
}

bool warm_pool::serves(int cpus, int memory_mib, std::optional<int> disk_gb) const {
  return std::any_of(cfg_.pools.begin(), cfg_.pools.end(), [&](const pool_spec& p) {
    return p.cpus == cpus && p.memory_mib == memory_mib && p.disk_gb == disk_gb;
  });
}

bool warm_pool::take_token() {
  // A token bucket: LITTERBOX_POOL_REFILL_PER_MINUTE restores a minute at most, in bursts of
  // at most that many.
  const std::lock_guard lock(mutex_);
  const double rate = std::max(1, cfg_.pool_refill_per_minute);
  const auto now = steady_clock::now();
  tokens_ = std::min(
      rate, tokens_ + rate * std::chrono::duration<double>(now - tokens_at_).count() / 60.0);
  tokens_at_ = now;
  if (tokens_ < 1) {
    return false;
  }
  tokens_ -= 1;
  return true;
}

int warm_pool::refill_once() {
  int restored = 0;
  for (std::size_t i = 0; i < cfg_.pools.size(); ++i) {
    {
      const std::lock_guard lock(mutex_);
      if (stopping_) {
        break;
      }
    }
    restored += refill(i);
  }
  return restored;
}

int warm_pool::refill(std::size_t index) {
  const pool_spec& pool = cfg_.pools[index];
  auto note = [&](std::string problem) {
    const std::lock_guard lock(mutex_);
    problems_[index] = std::move(problem);
  };
  // The tag is asked every pass: members of a digest it no longer names never serve again.
  auto digest = driver_.resolve_image(pool.image);
  if (!digest) {
    note("cannot resolve " + pool.image + ": " + digest.error().message);
    return 0;
  }
  {
    const std::lock_guard lock(mutex_);
    digests_[index] = *digest;
  }
  const template_key_row key{*digest, pool.cpus, pool.memory_mib, pool.disk_gb, cfg_.ssh_username};

  auto members = db_.list_pool_members();
  if (!members) {
    note("database unavailable");
    return 0;
  }
  std::int64_t alive = 0;
  for (const auto& m : *members) {
    const template_key_row of{m.host.image_digest.value_or(""), m.host.cpus, m.host.memory_mib,
                              m.host.disk_gb, m.host.ssh_username};
    if (of == key) {
      alive += live(m.host.status) ? 1 : 0;
      continue;
    }
    // Another digest of this pool's size and image: superseded, retired once restored.
    const bool superseded = same_size(of, pool) && m.host.image == pool.image &&
                            m.host.image_digest && m.host.status == host_status::active;
    if (superseded) {
      auto retired = db_.retire_pool_member(m.host.id, clock_.now());
      if (retired && *retired) {
        spdlog::info("host {}: pool member of a superseded digest of {} retired", m.host.id,
                     pool.image);
        (void)teardown_(m.host.id);
      }
    }
  }

  auto tpl = db_.find_template(key);
  if (!tpl) {
    note("database unavailable");
    return 0;
  }
  if (!*tpl || (*tpl)->status != template_status::ready) {
    if (*tpl && (*tpl)->status == template_status::failed) {
      note("no template: " + (*tpl)->last_error);
    } else {
      note("waiting for its template to be built");
    }
    templates_.want(key, pool.image);
    return 0;
  }
  if (alive >= pool.size) {
    note("");
    return 0;
  }
  {
    const std::lock_guard lock(mutex_);
    if (steady_clock::now() < paused_until_[index]) {
      return 0;
    }
  }
  if (!take_token()) {
    return 0;  // the refill rate is spent; the next pass goes on
  }
  if (auto r = instance_.ensure_registered(); !r) {
    note("database unavailable");
    return 0;
  }

  const timestamp now = clock_.now();
  host_record rec;
  rec.host.id = new_uuid_v7(now);
  rec.host.name = schema::host_name_for(rec.host.id);
  rec.host.status = host_status::provisioning;
  rec.host.provider = std::string(driver_.provider());
  rec.host.image = pool.image;
  rec.host.image_digest = *digest;
  rec.host.cpus = pool.cpus;
  rec.host.memory_mib = pool.memory_mib;
  rec.host.disk_gb = pool.disk_gb;
  rec.host.ssh_username = cfg_.ssh_username;
  rec.host.created_at = now;
  rec.host.updated_at = now;
  // The member's lease is its maximum age: the reaper retires it like any expired host.
  rec.host.expires_at = now + cfg_.pool_max_age;
  rec.owner_id = instance_.id();
  rec.provision_deadline = now + cfg_.provision_timeout;
  rec.pooled = true;
  // Members are clones: they go where their template is saved.
  if (const auto& tpl_node = (*tpl)->node_id; tpl_node && !tpl_node->empty()) {
    rec.node_id = *tpl_node;
  } else if (!cfg_.node_id.empty()) {
    rec.node_id = cfg_.node_id;
  }

  auto host_key = hypervisor::generate_ed25519(rec.host.name);
  if (!host_key) {
    note("could not generate a host key");
    return 0;
  }
  auto inserted =
      db_.insert_pool_member(rec, key, pool.size, {cfg_.ssh_port_min, cfg_.ssh_port_max}, now);
  if (!inserted) {
    // outcome_unknown included: a member row that did land is owned by this live process
    // with no job behind it, so the deadline sweep fails and releases it.
    note("cannot add a member: " + inserted.error().message);
    return 0;
  }
  if (!inserted->created) {
    return 0;  // another process filled it meanwhile
  }

  auto spec = std::make_shared<hypervisor::vm_spec>();
  spec->host_id = rec.host.id;
  spec->name = rec.host.name;
  spec->image = rec.host.image;
  spec->cpus = rec.host.cpus;
  spec->memory_mib = rec.host.memory_mib;
  spec->disk_gb = rec.host.disk_gb;
  spec->ssh_username = rec.host.ssh_username;
  spec->host_key = std::move(*host_key);
  spec->probe_public_key = probe_public_key_;
  spec->ready_token = random_hex(16);
  spec->node_id = rec.node_id.value_or("");
  provision_job job;
  job.kind = job_kind::pool_member;
  job.id = rec.host.id;
  job.spec = spec;
  job.deadline = steady_clock::now() + cfg_.provision_timeout;
  if (!provisioning_.provision_member(job)) {
    return 0;
  }
  auto row = db_.get_host(rec.host.id);
  const bool ok = row && row->host.status == host_status::active;
  const std::lock_guard lock(mutex_);
  if (ok) {
    failures_[index] = 0;
    problems_[index].clear();
    return 1;
  }
  // Back off on a pool whose members keep failing: 10 s, doubling, at most 5 minutes.
  failures_[index] = std::min(failures_[index] + 1, 10);
  const auto pause = std::min<std::chrono::seconds>(
      std::chrono::seconds(10) * (1 << (failures_[index] - 1)), std::chrono::minutes(5));
  paused_until_[index] = steady_clock::now() + pause;
  problems_[index] = "the last member failed" +
                     (row ? ": " + row->host.last_error : std::string()) + "; retrying in " +
                     std::to_string(pause.count()) + " s";
  return 0;
}

std::vector<pool_state> warm_pool::states() {
  std::vector<pool_state> out;
  auto counts = db_.count_pool();
  for (std::size_t i = 0; i < cfg_.pools.size(); ++i) {
    pool_state st;
    st.spec = cfg_.pools[i];
    {
      const std::lock_guard lock(mutex_);
      st.image_digest = digests_[i];
      st.problem = problems_[i];
    }
    const template_key_row key{st.image_digest, st.spec.cpus, st.spec.memory_mib, st.spec.disk_gb,
                               cfg_.ssh_username};
    if (counts) {
      for (const auto& c : *counts) {
        if (c.key != key) {
          continue;
        }
        if (c.status == host_status::active) {
          st.ready += c.count;
        } else if (live(c.status)) {
          st.filling += c.count;
        }
      }
    } else {
      st.problem = "database unavailable";
    }
    out.push_back(std::move(st));
  }
  return out;
}

void warm_pool::start() {
  const std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_ || cfg_.pools.empty()) {
    return;
  }
  thread_ = std::thread([this] { loop(); });
}

void warm_pool::poke() {
  {
    const std::lock_guard lock(mutex_);
    poked_ = true;
    ++pokes_;
  }
  cv_.notify_all();
}

std::uint64_t warm_pool::pokes() const {
  const std::lock_guard lock(mutex_);
  return pokes_;
}

void warm_pool::loop() {
  for (;;) {
    const int restored = refill_once();
    std::unique_lock lock(mutex_);
    if (stopping_) {
      return;
    }
    // Right after a restore there may be more to do; otherwise wait for a poke or the tick.
    if (restored == 0) {
      cv_.wait_for(lock, k_tick, [this] { return stopping_ || poked_; });
    }
    poked_ = false;
    if (stopping_) {
      return;
    }
  }
}

void warm_pool::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace litterbox::controlplane
