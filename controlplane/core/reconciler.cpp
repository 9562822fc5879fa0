#include "controlplane/core/reconciler.hpp"

#include "base/log.hpp"
#include "controlplane/core/errc.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace litterbox::controlplane {
namespace {

using schema::host_status;

// How much of the serial console a crash's last_error carries.
constexpr std::size_t k_console_tail = 1024;

}  // namespace

reconciler::reconciler(const config& cfg, store& db, hypervisor::driver& driver, const clock& clk,
                       std::function<bool(const std::string&)> provisioning_here)
    : cfg_(cfg),
      db_(db),
      driver_(driver),
      clock_(clk),
      provisioning_here_(std::move(provisioning_here)) {}

reconciler::~reconciler() {
  stop();
}

result<int> reconciler::run_once() {
  // Rows first, then VMs: see the header.
  list_query q;
  q.statuses = {host_status::bootstrapping, host_status::active};
  auto rows = db_.list_hosts(q);
  if (!rows) {
    return rows.error();
  }
  auto members = db_.list_pool_members();
  if (!members) {
    return members.error();
  }
  for (auto& m : *members) {
    // Members still being restored belong to their refill; only ready ones must run.
    if (m.host.status == host_status::active) {
      rows->push_back(std::move(m));
    }
  }
  auto vms = driver_.vm_states();
  if (!vms) {
    return vms.error();
  }
  int failed = 0;
  for (const auto& h : *rows) {
    const auto vm = vms->find(h.host.id);
    if (vm != vms->end() && vm->second.state == hypervisor::vm_state::running) {
      continue;
    }
    if (provisioning_here_ && provisioning_here_(h.host.id)) {
      continue;  // its provisioner sees the failure itself and fails the create
    }
    if (fail(h, vm == vms->end() ? nullptr : &vm->second)) {
      ++failed;
    }
  }
  return failed;
}

bool reconciler::fail(const host_record& h, const hypervisor::vm_status* vm) {
  const std::string& id = h.host.id;
  std::string why;
  if (vm == nullptr) {
    why = "VMGone: the VM no longer exists";
  } else if (vm->state == hypervisor::vm_state::crashed) {
    why = "VMCrashed: " + vm->detail;
    if (auto tail = driver_.console(id, k_console_tail); tail && !tail->empty()) {
      why += "; console: " + *tail;
    }
  } else {
    why = "VMStopped: " + vm->detail;
  }
  host_patch died;
  died.status = host_status::error;
  died.last_error = why;
  died.died = true;
  died.clear_owner = true;
  died.clear_lease = true;
  died.release_idempotency_key = true;
  // Fenced on the status read: a DELETE, an expiry or another process that got there first
  // makes this a no-op.
  auto changed = db_.transition(id, {h.host.status}, died, clock_.now());
  if (!changed) {
    if (changed.error().code != errc::host_state && changed.error().code != errc::not_found) {
      spdlog::warn("host {}: recording that its VM died failed: {}", id,
                   log_escape(changed.error().message));
    }
    return false;
  }
  spdlog::warn("host {}: {} -> error: {}", id, schema::to_string(h.host.status), log_escape(why));
  if (auto d = driver_.destroy(id); !d) {
    // The row is error: the reaper's teardown retries after the error retention.
    spdlog::error("host {}: releasing the VM that died failed: {}", id,
                  log_escape(d.error().message));
    return true;
  }
  host_patch free_port;
  free_port.release_port = true;
  (void)db_.transition(id, {host_status::error}, free_port, clock_.now());
  return true;
}

void reconciler::start_loop() {
  driver_.watch_vms([this] {
    {
      const std::lock_guard lock(mutex_);
      woken_ = true;
    }
    cv_.notify_all();
  });
  loop_ = std::thread([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      woken_ = false;
      lock.unlock();
      const auto n = run_once();
      if (!n) {
        spdlog::warn("reconcile: pass failed: {}", log_escape(n.error().message));
      }
      if (on_pass_) {
        on_pass_(n);
      }
      lock.lock();
      cv_.wait_for(lock, cfg_.reconcile_interval, [this] { return stopping_ || woken_; });
    }
  });
}

void reconciler::stop() {
  driver_.watch_vms({});
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
