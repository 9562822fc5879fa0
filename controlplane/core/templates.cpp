#include "controlplane/core/templates.hpp"

#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/instance_heartbeat.hpp"
#include "controlplane/core/lifecycle.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

namespace litterbox::controlplane {

template_key_row template_key_for(const hypervisor::vm_spec& spec) {
  return {spec.image_digest, spec.cpus, spec.memory_mib, spec.disk_gb, spec.ssh_username};
}

template_builder::template_builder(const config& cfg, store& db, hypervisor::driver& driver,
                                   const clock& clk, instance_heartbeat& instance,
                                   std::string probe_public_key)
    : cfg_(cfg),
      db_(db),
      driver_(driver),
      clock_(clk),
      instance_(instance),
      probe_public_key_(std::move(probe_public_key)) {}

template_builder::~template_builder() {
  stop();
}

void template_builder::want(const template_key_row& key, const std::string& image,
                            const std::string& node_id) {
  {
    const std::lock_guard lock(mutex_);
    if (stopping_ || !wanted_.emplace(key, wanted{image, node_id}).second) {
      return;
    }
  }
  cv_.notify_all();
}

result<std::optional<std::string>> template_builder::ready(const template_key_row& key,
                                                           const std::string& node_id) {
  auto row = db_.find_template(key);
  if (!row) {
    return row.error();
  }
  if (!*row || (*row)->status != template_status::ready) {
    return std::optional<std::string>();
  }
  if (!node_id.empty() && (*row)->node_id && *(*row)->node_id != node_id) {
    return std::optional<std::string>();  // saved on another node: no clone here
  }
  return std::optional<std::string>((*row)->id);
}

int template_builder::build_pending() {
  int built = 0;
  for (;;) {
    std::pair<template_key_row, wanted> next;
    {
      const std::lock_guard lock(mutex_);
      if (stopping_ || wanted_.empty()) {
        return built;
      }
      next = *wanted_.begin();
    }
    if (build(next.first, next.second)) {
      ++built;
    }
    const std::lock_guard lock(mutex_);
    wanted_.erase(next.first);
  }
}

bool template_builder::build(const template_key_row& key, const wanted& w) {
  const std::string& image = w.image;
  if (auto r = instance_.ensure_registered(); !r) {
    spdlog::warn("template for {}: cannot register this instance: {}", key.image_digest,
                 log_escape(r.error().message));
    return false;
  }
  const timestamp now = clock_.now();
  template_record want;
  want.id = new_uuid_v7(now);
  want.key = key;
  want.image = image;
  want.status = template_status::building;
  want.owner_id = instance_.id();
  want.created_at = now;
  want.updated_at = now;
  want.last_used_at = now;
  const std::string& node = w.node_id.empty() ? cfg_.node_id : w.node_id;
  if (!node.empty()) {
    want.node_id = node;
  }
  auto claimed = db_.claim_template_build(want, {cfg_.ssh_port_min, cfg_.ssh_port_max}, now);
  if (!claimed) {
    spdlog::warn("template for {}: cannot claim its build: {}", key.image_digest,
                 log_escape(claimed.error().message));
    return false;
  }
  if (!*claimed) {
    return false;  // ready, building elsewhere, or failed and not yet due for a retry
  }
  const template_record row = **claimed;
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) {
      (void)db_.finish_template(row.id, instance_.id(), false,
                                "Interrupted: the control plane stopped before the build began",
                                clock_.now(), clock_.now());
      return false;
    }
    building_id_ = row.id;
  }
  struct clear_building {
    template_builder& b;
    ~clear_building() {
      const std::lock_guard lock(b.mutex_);
      b.building_id_.reset();
    }
  } const clear{*this};

  spdlog::info("template {}: building for {} ({} cpus, {} MiB)", row.id, key.image_digest, key.cpus,
               key.memory_mib);
  const auto started = std::chrono::steady_clock::now();
  // A build boots a guest exactly as a cold create does, then saves it: it gets twice the
  // create's budget.
  const auto deadline = started + 2 * cfg_.provision_timeout;
  auto finish = [&](bool ok, const std::string& why, std::optional<timestamp> retry_after) {
    auto done = db_.finish_template(row.id, instance_.id(), ok, why, retry_after, clock_.now());
    if (!done) {
      // Taken over (this process was judged gone) or the database is away: the saved state
      // is not recorded, so it must not outlive this build.
      spdlog::warn("template {}: the build's result was not recorded: {}", row.id,
                   log_escape(done.error().message));
      if (ok) {
        (void)driver_.destroy_template(row.id);
      }
      return false;
    }
    return ok;
  };

  // The digest of the key is what a create resolved; pulling by the create's reference again
  // must give the same one, or the tag has moved and this template is already stale.
  auto digest = driver_.prepare_image(image, deadline);
  if (!digest || *digest != key.image_digest) {
    const std::string why = digest ? "Superseded: " + image + " names another image now"
                                   : last_error_text(digest.error());
    spdlog::warn("template {}: not built: {}", row.id, log_escape(why));
    finish(false, why, clock_.now() + cfg_.template_retry);
    return false;
  }

  auto host_key = hypervisor::generate_ed25519("template");
  if (!host_key) {
    finish(false, "Internal: could not generate a host key", clock_.now() + cfg_.template_retry);
    return false;
  }
  hypervisor::template_spec spec;
  spec.template_id = row.id;
  spec.guest.host_id = row.id;
  spec.guest.name = schema::host_name_for(row.id);
  spec.guest.image = image;
  spec.guest.image_digest = key.image_digest;
  spec.guest.cpus = key.cpus;
  spec.guest.memory_mib = key.memory_mib;
  spec.guest.disk_gb = key.disk_gb;
  spec.guest.ssh_username = key.ssh_username;
  spec.guest.host_key = std::move(*host_key);
  spec.guest.probe_public_key = probe_public_key_;
  spec.guest.ready_token = random_hex(16);
  spec.guest.ssh_host = cfg_.ssh_host;
  spec.guest.ssh_port = row.ssh_port;
  spec.guest.node_id = row.node_id.value_or("");

  auto built = driver_.build_template(spec, deadline);
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  if (!built) {
    bool interrupted = false;
    {
      const std::lock_guard lock(mutex_);
      interrupted = stopping_;
    }
    if (interrupted) {
      finish(false, "Interrupted: the control plane stopped during the build", clock_.now());
      return false;
    }
    const std::string why = last_error_text(built.error());
    // An image without what cloning needs will not gain it: its creates take the cold path
    // for good, and the row says why (the log now, /doctor for as long as the row lives).
    const bool for_good = built.error().code == hypervisor::errc::clone_unsupported;
    // A port something else had bound says nothing about the image: the next build (which
    // leases its port afresh, most likely another one) is due at once.
    const bool port_busy = built.error().code == hypervisor::errc::port_busy;
    const auto retry_in = port_busy ? std::chrono::seconds(0) : cfg_.template_retry;
    if (for_good) {
      spdlog::warn("template {}: {} cannot be cloned; its creates boot from scratch: {}", row.id,
                   image, log_escape(why));
    } else {
      spdlog::warn("template {}: build failed after {} s (retried in {} s): {}", row.id, seconds,
                   retry_in.count(), log_escape(why));
    }
    finish(false, why, for_good ? std::nullopt : std::optional<timestamp>(clock_.now() + retry_in));
    return false;
  }
  if (!finish(true, "", std::nullopt)) {
    return false;
  }
  spdlog::info("template {}: ready after {} s", row.id, seconds);
  if (on_ready_) {
    on_ready_();
  }
  return true;
}

void template_builder::start() {
  const std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) {
    return;
  }
  thread_ = std::thread([this] { loop(); });
}

void template_builder::loop() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !wanted_.empty(); });
      if (stopping_) {
        return;
      }
    }
    build_pending();
  }
}

void template_builder::stop() {
  std::optional<std::string> abandoned;
  {
    const std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) {
      return;
    }
    stopping_ = true;
    wanted_.clear();
    abandoned = building_id_;
  }
  cv_.notify_all();
  if (abandoned) {
    // Destroying the template guest ends the build's wait at once (the guest is gone); the
    // build then records itself failed and due for a retry by whichever process comes next.
    spdlog::info("template {}: build abandoned by shutdown", *abandoned);
    (void)driver_.destroy_template(*abandoned);
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace litterbox::controlplane
