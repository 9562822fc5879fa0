#include "controlplane/core/provisioner.hpp"

#include "base/log.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/lifecycle.hpp"
#include "controlplane/core/templates.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

namespace litterbox::controlplane {

using schema::host_status;
using std::chrono::steady_clock;

namespace {

bool contains(const std::vector<host_status>& states, host_status s) {
  return std::find(states.begin(), states.end(), s) != states.end();
}

}  // namespace

provisioner::admission& provisioner::admission::operator=(admission&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) {
      owner_->release_place();
    }
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

provisioner::admission::~admission() {
  if (owner_ != nullptr) {
    owner_->release_place();
  }
}

namespace {

// Claims are a few guest-agent writes and an SSH handshake each; a handful at once keeps
// their latency flat without competing with the boots for the CPU.
constexpr int k_claim_workers = 4;

// Ports a create tries when the ones it is given are found bound by something else.
constexpr std::size_t k_port_tries = 4;

}  // namespace

provisioner::provisioner(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
                         template_builder* templates)
    : cfg_(cfg), db_(db), driver_(driver), clock_(clk), templates_(templates) {
  const auto workers = static_cast<std::size_t>(std::max(1, cfg.max_concurrent_provisions));
  for (std::size_t i = 0; i < workers; ++i) {
    threads_.emplace_back([this] { work(false); });
  }
  for (int i = 0; i < k_claim_workers; ++i) {
    threads_.emplace_back([this] { work(true); });
  }
}

provisioner::~provisioner() {
  shutdown(std::chrono::seconds(0));
}

result<provisioner::admission> provisioner::admit() {
  const std::lock_guard lock(mutex_);
  if (stopping_) {
    return make_error(errc::unavailable, "the control plane is shutting down");
  }
  const auto bound = static_cast<std::size_t>(std::max(1, cfg_.max_concurrent_provisions) +
                                              std::max(0, cfg_.max_queued_provisions));
  if (places_ >= bound) {
    return make_error(errc::capacity,
                      "too many creates in progress (" + std::to_string(bound) + "); retry later");
  }
  ++places_;
  return admission(this);
}

void provisioner::release_place() {
  {
    const std::lock_guard lock(mutex_);
    --places_;
  }
  idle_cv_.notify_all();
}

void provisioner::submit(admission place, provision_job job) {
  // The place now belongs to the job and is given back when it settles.
  place.owner_ = nullptr;
  bool refused = false;
  {
    const std::lock_guard lock(mutex_);
    waiters_.emplace(job.id, std::vector<std::function<void()>>{});
    refused = stopping_;
    if (!refused) {
      (job.kind == job_kind::claim ? express_ : queue_).push_back(job);
    }
  }
  if (refused) {
    fail(job, "ShuttingDown: the control plane stopped before this create started",
         job.kind == job_kind::claim);
    settle(job.id);
    return;
  }
  (job.kind == job_kind::claim ? express_cv_ : work_cv_).notify_one();
}

bool provisioner::provision_member(provision_job job) {
  bool refused = false;
  {
    const std::lock_guard lock(mutex_);
    refused = stopping_;
    if (!refused) {
      running_.insert(job.id);
    }
  }
  if (refused) {
    fail(job, "ShuttingDown: the control plane stopped before this create started", false);
    return false;
  }
  run(job);
  {
    const std::lock_guard lock(mutex_);
    running_.erase(job.id);
  }
  idle_cv_.notify_all();
  return true;
}

bool provisioner::notify_when_settled(const std::string& id, std::function<void()> cb) {
  const std::lock_guard lock(mutex_);
  const auto it = waiters_.find(id);
  if (it == waiters_.end()) {
    return false;
  }
  it->second.push_back(std::move(cb));
  return true;
}

bool provisioner::provisioning(const std::string& id) const {
  const std::lock_guard lock(mutex_);
  return waiters_.count(id) != 0 || running_.count(id) != 0;
}

std::size_t provisioner::in_flight() const {
  const std::lock_guard lock(mutex_);
  return places_;
}

void provisioner::settle(const std::string& id) {
  std::vector<std::function<void()>> callbacks;
  {
    const std::lock_guard lock(mutex_);
    const auto it = waiters_.find(id);
    if (it != waiters_.end()) {
      callbacks = std::move(it->second);
      waiters_.erase(it);
    }
    --places_;
  }
  idle_cv_.notify_all();
  for (auto& cb : callbacks) {
    cb();
  }
}

void provisioner::work(bool express) {
  auto& queue = express ? express_ : queue_;
  auto& cv = express ? express_cv_ : work_cv_;
  for (;;) {
    provision_job job;
    {
      std::unique_lock lock(mutex_);
      cv.wait(lock, [&] { return stopping_ || !queue.empty(); });
      if (queue.empty()) {
        return;
      }
      job = std::move(queue.front());
      queue.pop_front();
      running_.insert(job.id);
    }
    run(job);
    {
      const std::lock_guard lock(mutex_);
      running_.erase(job.id);
    }
    settle(job.id);
  }
}

steady_clock::time_point provisioner::write_deadline(const provision_job& job) const {
  // Past deadline + grace every process may fail the row (maintenance); stop retrying well
  // before that so that this process has released the VM by the time another one looks.
  return job.deadline + cfg_.provision_grace / 2;
}

provisioner::write_outcome provisioner::apply(const std::string& id,
                                              const std::vector<host_status>& from,
                                              const host_patch& patch,
                                              steady_clock::time_point until, error* failure) {
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    auto r = db_.transition(id, from, patch, clock_.now());
    if (r) {
      return write_outcome::applied;
    }
    const auto code = r.error().code;
    const bool retryable = code == errc::unavailable || code == errc::outcome_unknown;
    if (!retryable && code != errc::host_state && code != errc::not_found) {
      if (failure != nullptr) {
        *failure = r.error();
      }
      return write_outcome::failed;
    }
    // Whatever the error, the row says what happened: an attempt whose commit was lost may
    // have landed (then the row already has the target status — only the owner moves a row
    // forward, and `error` is reached whoever wrote it), or the row moved on without us.
    auto row = db_.get_host(id);
    if (row) {
      if (row->host.status == *patch.status) {
        return write_outcome::applied;
      }
      if (!contains(from, row->host.status)) {
        return write_outcome::changed;
      }
    } else if (row.error().code == errc::not_found) {
      return write_outcome::changed;
    }
    if (steady_clock::now() + backoff >= until) {
      if (failure != nullptr) {
        *failure = r.error();
      }
      return write_outcome::gave_up;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

bool provisioner::step(attempt& a, host_status to, host_patch patch) {
  const std::string& id = a.job.id;
  patch.status = to;
  error why;
  switch (apply(id, {a.at}, patch, write_deadline(a.job), &why)) {
    case write_outcome::applied:
      a.at = to;
      return true;
    case write_outcome::changed:
      spdlog::warn("host {}: row changed while provisioning; releasing", id);
      (void)driver_.destroy(id);
      return false;
    case write_outcome::failed:
      fail(a.job, last_error_text(why), a.vm_made);
      return false;
    case write_outcome::gave_up:
      // The database stayed away for the whole window: release the VM now; the deadline
      // sweep of whichever process reaches the database first records the failure.
      spdlog::error("host {}: database unreachable until the create's deadline: {}", id,
                    log_escape(why.message));
      (void)driver_.destroy(id);
      return false;
  }
  return false;
}

bool provisioner::past_deadline(attempt& a) {
  if (steady_clock::now() < a.job.deadline) {
    return false;
  }
  fail(a.job,
       last_error_text(make_error(hypervisor::errc::boot_timeout,
                                  "provisioning did not finish within " +
                                      std::to_string(cfg_.provision_timeout.count()) + " s")),
       a.vm_made);
  return true;
}

bool provisioner::activate(attempt& a, std::optional<std::string> known_hosts) {
  const timestamp now = clock_.now();
  host_patch to_active;
  to_active.known_hosts = std::move(known_hosts);
  to_active.activated_at = now;
  to_active.clear_owner = true;
  if (a.job.lease_seconds) {
    to_active.expires_at =
        std::optional<timestamp>(now + std::chrono::seconds(*a.job.lease_seconds));
    to_active.clear_lease = true;
  }
  return step(a, host_status::active, to_active);
}

void provisioner::run(const provision_job& job) {
  if (job.kind == job_kind::claim) {
    run_claim(job);
    return;
  }
  const std::string& id = job.id;
  hypervisor::vm_spec& spec = *job.spec;
  const bool member = job.kind == job_kind::pool_member;
  attempt a{job, host_status::provisioning};

  spdlog::info("host {}: provisioning image={}{}", id, spec.image, member ? " (pool)" : "");
  if (past_deadline(a) || !step(a, host_status::pulling_image, {})) {
    return;
  }
  auto digest = driver_.prepare_image(spec.image, job.deadline);
  if (!digest) {
    fail(job, last_error_text(digest.error()), a.vm_made);
    return;
  }
  spec.image_digest = *digest;

  // A clone when the template of this digest and size is ready; otherwise a boot, and the
  // template is asked for so that the next create of this kind is fast.
  std::optional<std::string> template_id;
  if (templates_ != nullptr) {
    const auto key = template_key_for(spec);
    // Only a template saved on the host's own node serves it.
    auto ready = templates_->ready(key, spec.node_id);
    if (ready && *ready) {
      template_id = **ready;
    } else if (ready) {
      templates_->want(key, spec.image, spec.node_id);
    }
  }
  if (member && !template_id) {
    fail(job, "TemplateMissing: no ready template of this image and size for a pool member",
         a.vm_made);
    return;
  }
  host_patch to_creating;
  to_creating.image_digest = *digest;
  to_creating.path = template_id ? create_path::clone : create_path::boot;
  if (past_deadline(a) || !step(a, host_status::creating_vm, to_creating)) {
    return;
  }
  // The port was leased with the row; this returns it (or leases one for rows of older
  // versions that had none).
  auto port = db_.allocate_port(id, cfg_.ssh_port_min, cfg_.ssh_port_max, clock_.now());
  if (!port) {
    fail(job, last_error_text(port.error()), a.vm_made);
    return;
  }
  if (spec.ssh_host.empty()) {
    spec.ssh_host = cfg_.ssh_host;  // placement set the node's address, if it has its own
  }
  spec.ssh_port = *port;
  a.vm_made = true;  // from here on a half-made VM may exist

  host_patch to_boot;
  // A clone of the template, or a boot when there is none (or its files are gone).
  auto start_guest = [&]() -> result<void> {
    if (template_id) {
      auto restored = driver_.restore_clone(*template_id, spec, job.deadline);
      if (restored) {
        (void)db_.touch_template(*template_id, clock_.now());
        return {};
      }
      if (restored.error().code != hypervisor::errc::template_missing) {
        return restored.error();
      }
      // Its files are gone (collected, or a node without it): forget the row so that it is
      // rebuilt, and serve a caller's create the slow way.
      spdlog::warn("host {}: template {} is gone ({}){}", id, *template_id,
                   log_escape(restored.error().message), member ? "" : "; booting instead");
      (void)db_.remove_template(*template_id, {template_status::ready});
      if (member) {
        return restored.error();
      }
      template_id.reset();
      to_boot.path = create_path::boot;
      templates_->want(template_key_for(spec), spec.image, spec.node_id);
    }
    return driver_.create_vm(spec);
  };
  auto started = start_guest();
  // The lease says the port is ours among litterbox's hosts, not that nothing else on this
  // node has bound it (an outgoing connection's ephemeral port, another service): such a
  // port is given back for another one, a few times, before the create fails.
  std::vector<int> busy;
  while (!started && started.error().code == hypervisor::errc::port_busy &&
         busy.size() + 1 < k_port_tries) {
    busy.push_back(spec.ssh_port);
    auto moved = db_.move_port(id, cfg_.ssh_port_min, cfg_.ssh_port_max, busy, clock_.now());
    if (!moved) {
      break;
    }
    spdlog::warn("host {}: port {} is bound by something else on this node; trying port {}", id,
                 spec.ssh_port, *moved);
    spec.ssh_port = *moved;
    started = start_guest();
  }
  if (!started) {
    fail(job, last_error_text(started.error()), a.vm_made);
    return;
  }
  to_boot.ssh_host = spec.ssh_host;
  to_boot.ssh_port = spec.ssh_port;
  if (past_deadline(a) || !step(a, host_status::bootstrapping, to_boot)) {
    return;
  }
  if (!template_id) {
    if (auto ready = driver_.wait_ready(spec, job.deadline); !ready) {
      fail(job, last_error_text(ready.error()), a.vm_made);
      return;
    }
  }
  if (!activate(a, hypervisor::known_hosts_line(spec.ssh_host, spec.ssh_port,
                                                spec.host_key.public_line))) {
    return;
  }
  spdlog::info("host {}: {} on {}:{} ({})", id, member ? "ready in the pool" : "active",
               spec.ssh_host, spec.ssh_port, template_id ? "clone" : "boot");
}

void provisioner::run_claim(const provision_job& job) {
  // The claim moved the member to bootstrapping with this process as its owner; the VM is
  // running with its own identity and no login. The caller's login goes in now, then the
  // same readiness proof as any create.
  attempt a{job, host_status::bootstrapping, true};
  if (!job.preset_failure.empty()) {
    fail(job, job.preset_failure, a.vm_made);
    return;
  }
  if (past_deadline(a)) {
    return;
  }
  const auto t_started = steady_clock::now();
  if (auto login = driver_.apply_login(*job.spec, job.deadline); !login) {
    fail(job, last_error_text(login.error()), a.vm_made);
    return;
  }
  const auto t_login = steady_clock::now();
  if (!activate(a, std::nullopt)) {
    return;
  }
  const auto ms = [](steady_clock::time_point from, steady_clock::time_point to) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
  };
  spdlog::info("host {}: active on {}:{} (pool; login and SSH proof {} ms, activation {} ms)",
               job.id, job.spec->ssh_host, job.spec->ssh_port, ms(t_started, t_login),
               ms(t_login, steady_clock::now()));
}

void provisioner::fail(const provision_job& job, const std::string& last_error, bool vm_made) {
  const std::string& id = job.id;
  spdlog::warn("host {}: provisioning failed: {}", id, log_escape(last_error));
  bool released = true;
  if (vm_made) {
    if (auto d = driver_.destroy(id); !d) {
      // The port stays leased (QEMU may still hold it) until the reaper's teardown of the
      // `error` row succeeds.
      spdlog::error("host {}: releasing the VM failed: {}", id, log_escape(d.error().message));
      released = false;
    }
  }
  error why;
  const auto outcome = apply(id, provisioning_states(), failure_patch(last_error, released),
                             write_deadline(job), &why);
  if (outcome == write_outcome::failed || outcome == write_outcome::gave_up) {
    spdlog::error("host {}: could not record the failure ({}); the deadline sweep will", id,
                  log_escape(why.message));
  }
}

void provisioner::shutdown(std::chrono::seconds drain) {
  const std::lock_guard serial(shutdown_mutex_);  // a second caller waits for the first
  std::deque<provision_job> queued;
  {
    const std::lock_guard lock(mutex_);
    if (stopped_) {
      return;
    }
    stopping_ = true;
    queued.swap(queue_);
    for (auto& job : express_) {
      queued.push_back(std::move(job));
    }
    express_.clear();
  }
  work_cv_.notify_all();
  express_cv_.notify_all();
  for (const auto& job : queued) {
    // A queued claim holds a running pool member: it is released with the failure.
    fail(job, "ShuttingDown: the control plane stopped before this create started",
         job.kind == job_kind::claim);
    settle(job.id);
  }

  std::set<std::string> still_running;
  {
    std::unique_lock lock(mutex_);
    idle_cv_.wait_for(lock, drain, [this] { return running_.empty(); });
    still_running = running_;
  }
  for (const auto& id : still_running) {
    // Claim first, then destroy: the worker's next compare-and-set fails and it stops; a
    // guest it waits for disappears, so its wait ends at once.
    host_patch patch =
        failure_patch("Interrupted: the control plane stopped while creating this host", false);
    if (!db_.transition(id, provisioning_states(), patch, clock_.now())) {
      continue;  // it settled meanwhile, or the database is away (the deadline sweep will)
    }
    spdlog::warn("host {}: create interrupted by shutdown", id);
    if (driver_.destroy(id)) {
      host_patch free_port;
      free_port.release_port = true;
      (void)db_.transition(id, {host_status::error}, free_port, clock_.now());
    }
  }
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  const std::lock_guard lock(mutex_);
  stopped_ = true;
}

}  // namespace litterbox::controlplane
