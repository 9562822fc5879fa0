#include "controlplane/core/host_service.hpp"

#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/instance_heartbeat.hpp"
#include "controlplane/core/provisioner.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace litterbox::controlplane {

using schema::host_status;

namespace {

// Every token in SERVICE_TOKENS shares one namespace (API.md), so rotating a token keeps keys.
constexpr std::string_view k_key_namespace = "default";

}  // namespace

host_service::host_service(const config& cfg, store& db, hypervisor::driver& driver,
                           const clock& clk, std::string instance_id, lifecycle_observer* observer)
    : cfg_(cfg), db_(db), driver_(driver), clock_(clk), observer_(observer) {
  // The probe key is the control plane's own identity towards guests; it lives only in
  // memory and is regenerated per process, so nothing on disk can leak it.
  auto probe = hypervisor::generate_ed25519("litterbox-probe");
  if (!probe) {
    throw error_exception(probe.error());
  }
  probe_key_ = std::move(*probe);
  heartbeat_ = std::make_unique<instance_heartbeat>(db_, clock_, std::move(instance_id),
                                                    cfg_.heartbeat_interval);
  provisioner_ = std::make_unique<provisioner>(cfg_, db_, driver_, clock_);
}

host_service::~host_service() {
  shutdown();
}

void host_service::shutdown() {
  provisioner_->shutdown(cfg_.shutdown_drain);
  heartbeat_->stop();
}

std::string_view host_service::provider() const {
  return driver_.provider();
}

result<void> host_service::heartbeat() {
  return heartbeat_->beat();
}

result<create_result> host_service::create(const schema::create_host_request& req,
                                           const std::optional<std::string>& idempotency_key) {
  if (idempotency_key && !is_valid_idempotency_key(*idempotency_key)) {
    error e = make_error(errc::validation, "malformed Idempotency-Key");
    e.issues.push_back({{"header", "Idempotency-Key"},
                        "Value error, Idempotency-Key must be 1-255 characters of "
                        "A-Z a-z 0-9 _ - : .",
                        "value_error"});
    return e;
  }
  const timestamp now = clock_.now();
  // A disk_gb below the size of an image the driver already holds is refused here, at once.
  auto resolved =
      validate_create(req, cfg_, now, driver_.provider(),
                      [this](std::string_view image) { return driver_.known_image_bytes(image); });
  if (!resolved) {
    return resolved.error();
  }
  // A place in the provisioning queue first: a refusal then leaves nothing anywhere. A replay
  // below gives its place back unused.
  auto place = provisioner_->admit();
  if (!place) {
    return place.error();
  }
  // The row names this instance as its owner, so the instance row must exist first.
  if (auto r = heartbeat_->ensure_registered(); !r) {
    return r.error();
  }

  const std::string id = new_uuid_v7(now);
  host_record rec;
  rec.host.id = id;
  rec.host.name = schema::host_name_for(id);
  rec.host.status = host_status::provisioning;
  rec.host.provider = std::string(driver_.provider());
  rec.host.image = resolved->image;
  rec.host.instance_type = resolved->instance_type;
  rec.host.cpus = resolved->cpus;
  rec.host.memory_mib = resolved->memory_mib;
  rec.host.disk_gb = resolved->disk_gb;
  rec.host.ssh_username = cfg_.ssh_username;
  rec.host.created_at = now;
  rec.host.updated_at = now;
  rec.owner_id = heartbeat_->id();
  rec.provision_deadline = now + cfg_.provision_timeout;
  switch (resolved->expiry) {
    case schema::expiry_kind::omitted:
      // Counted from activation; until then a provisional lease so a stuck row still expires.
      rec.lease_seconds = cfg_.lease_default_ttl.count();
      rec.host.expires_at = now + cfg_.lease_default_ttl;
      break;
    case schema::expiry_kind::never:
      break;
    case schema::expiry_kind::at:
      rec.host.expires_at = resolved->expires_at;
      break;
  }

  std::optional<idempotency_claim> claim;
  if (idempotency_key) {
    // Keyed, so that the stored fingerprint of a body (which holds env values) cannot be
    // tested against guesses by whoever reads the database.
    const std::string canonical = schema::canonical_text(req);
    claim = idempotency_claim{std::string(k_key_namespace), *idempotency_key,
                              "hmac:" + hmac_sha256_hex(cfg_.idempotency_secret, canonical),
                              sha256_hex(canonical), now + cfg_.idempotency_key_ttl};
  }

  // Keys are made before the row exists so that nothing after the insert can fail for want of
  // them; ed25519 generation costs microseconds.
  auto host_key = hypervisor::generate_ed25519(rec.host.name);
  if (!host_key) {
    return make_error(errc::internal, "could not generate a host key");
  }
  std::optional<hypervisor::ssh_key_pair> minted;
  if (resolved->authorized_keys.empty()) {
    auto pair = hypervisor::generate_ed25519(cfg_.ssh_username + "@" + rec.host.name);
    if (!pair) {
      return make_error(errc::internal, "could not generate a login key");
    }
    minted = std::move(*pair);
  }

  // The SSH port is leased in the insert's transaction: running out of ports is the caller's
  // 503 CAPACITY with nothing kept, and a row never exists without its port.
  auto inserted = db_.insert_host(rec, claim, {cfg_.ssh_port_min, cfg_.ssh_port_max}, now);
  if (!inserted && inserted.error().code == errc::outcome_unknown) {
    // The commit may have landed: the row says. Found, it is ours to provision; not found,
    // nothing was kept. Unreadable, the caller gets 503 and, if the row exists after all, the
    // deadline sweep fails it (a retry with the same key then waits at most that long).
    auto row = db_.get_host(id);
    if (row) {
      insert_outcome out;
      out.created = true;
      out.existing = std::move(*row);
      inserted = std::move(out);
    } else if (row.error().code == errc::not_found) {
      return make_error(errc::unavailable, "database unavailable");
    }
  }
  if (!inserted) {
    return inserted.error();
  }
  if (!inserted->created) {
    if (!inserted->fingerprint_matches) {
      error e = make_error(errc::idempotency_mismatch,
                           "Idempotency-Key was already used with a different request");
      e.issues.push_back({{"header", "Idempotency-Key"},
                          "Idempotency-Key was already used with a different request",
                          "value_error"});
      return e;
    }
    return create_result{inserted->existing.host, false};
  }

  auto spec = std::make_shared<hypervisor::vm_spec>();
  spec->host_id = id;
  spec->name = rec.host.name;
  spec->image = rec.host.image;
  spec->cpus = rec.host.cpus;
  spec->memory_mib = rec.host.memory_mib;
  spec->disk_gb = rec.host.disk_gb;
  spec->ssh_username = cfg_.ssh_username;
  spec->authorized_keys =
      minted ? std::vector<std::string>{minted->public_line} : resolved->authorized_keys;
  spec->env = std::move(resolved->env);
  spec->host_key = std::move(*host_key);
  spec->probe_public_key = probe_key_.public_line;
  spec->ready_token = random_hex(16);

  provision_job job;
  job.id = id;
  job.spec = std::move(spec);
  job.lease_seconds = rec.lease_seconds;
  job.deadline = std::chrono::steady_clock::now() + cfg_.provision_timeout;
  provisioner_->submit(std::move(*place), std::move(job));

  create_result out{inserted->existing.host, true};
  if (minted) {
    out.host.private_key = std::move(minted->private_openssh);
  }
  return out;
}

bool host_service::notify_when_settled(const std::string& id, std::function<void()> cb) {
  return provisioner_->notify_when_settled(id, std::move(cb));
}

result<host_record> host_service::find_host(std::string_view raw_id) {
  auto id = validate_host_id(raw_id);
  if (!id) {
    return id.error();
  }
  return db_.get_host(*id);
}

result<schema::host> host_service::get(std::string_view raw_id) {
  auto rec = find_host(raw_id);
  if (!rec) {
    return rec.error();
  }
  return std::move(rec->host);
}

result<host_page> host_service::list(const list_params& params) {
  auto q = validate_list(params, cfg_);
  if (!q) {
    return q.error();
  }
  const std::size_t page = q->limit;
  if (page > 0) {
    q->limit = page + 1;  // one extra row tells whether another page exists
  }
  auto rows = db_.list_hosts(*q);
  if (!rows) {
    return rows.error();
  }
  host_page out;
  if (page > 0 && rows->size() > page) {
    rows->resize(page);
    out.next_after = rows->back().host.id;
  }
  out.hosts.reserve(rows->size());
  for (auto& r : *rows) {
    out.hosts.push_back(std::move(r.host));
  }
  return out;
}

result<schema::host> host_service::renew(std::string_view raw_id,
                                         const schema::renew_request& req) {
  auto id = validate_host_id(raw_id);
  if (!id) {
    return id.error();
  }
  const timestamp now = clock_.now();
  const timestamp expires = req.expires_at.value_or(now + cfg_.lease_default_ttl);
  if (expires <= now) {
    error e = make_error(errc::validation, "expires_at must be in the future");
    e.issues.push_back(
        {{"body", "expires_at"}, "Value error, expires_at must be in the future", "value_error"});
    return e;
  }
  auto rec = db_.renew(*id, expires, now);
  if (!rec) {
    return rec.error();
  }
  return std::move(rec->host);
}

result<void> host_service::remove(std::string_view raw_id) {
  auto id = validate_host_id(raw_id);
  if (!id) {
    return id.error();
  }
  // DELETE of a host that is still being created is refused (API.md allows 409 or
  // cancellation): a create owns its resources until it settles, so a concurrent teardown
  // could race it and leak. The caller retries once the host is active or error; every
  // create settles within PROVISION_TIMEOUT + LITTERBOX_PROVISION_GRACE.
  host_patch to_deleting;
  to_deleting.status = host_status::deleting;
  auto moved = db_.transition(*id, {host_status::active, host_status::error, host_status::deleting},
                              to_deleting, clock_.now());
  if (!moved && moved.error().code == errc::outcome_unknown) {
    // Whether the move landed or not, `deleting` is where a retry starts from.
    moved = db_.transition(*id, {host_status::active, host_status::error, host_status::deleting},
                           to_deleting, clock_.now());
  }
  if (!moved) {
    if (moved.error().code == errc::host_state) {
      auto now_row = db_.get_host(*id);
      const auto status = now_row ? schema::to_string(now_row->host.status) : "unknown";
      return make_error(errc::host_state,
                        "host is still being created (status: " + std::string(status) +
                            "); retry once it is active or error");
    }
    return moved.error();
  }
  return teardown(*id);
}

result<void> host_service::teardown(std::string_view id) {
  if (auto d = driver_.destroy(id); !d) {
    spdlog::error("host {}: teardown failed: {}", id, log_escape(d.error().message));
    if (observer_ != nullptr) {
      observer_->teardown_failed();
    }
    return make_error(errc::teardown_failed,
                      "teardown failed (" + std::string(hypervisor::kind_name(d.error().code)) +
                          ": " + d.error().message + "); the host is kept, retry the DELETE");
  }
  if (auto r = db_.remove_host(id); !r) {
    return r.error();
  }
  spdlog::info("host {}: deleted", id);
  return {};
}

result<std::string> host_service::console(std::string_view raw_id, std::size_t max_bytes) {
  auto rec = find_host(raw_id);
  if (!rec) {
    return rec.error();
  }
  auto text = driver_.console(rec->host.id, max_bytes);
  if (!text) {
    if (text.error().code == hypervisor::errc::not_found) {
      return std::string();  // the VM is gone or not yet made: nothing was printed
    }
    return make_error(errc::unavailable, "console unavailable");
  }
  return std::move(*text);
}

schema::doctor_report host_service::doctor() {
  schema::doctor_report report;
  report.active_provider = std::string(driver_.provider());
  const auto start = std::chrono::steady_clock::now();
  auto ping = db_.ping();
  const auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  report.checks.push_back(schema::doctor_check{
      "database", static_cast<bool>(ping), ping ? "connected" : ping.error().message, ms,
      ping ? "" : "check DATABASE_URL and that PostgreSQL is running"});
  for (auto& c : driver_.doctor()) {
    report.checks.push_back(schema::doctor_check{std::move(c.name), c.ok, std::move(c.detail),
                                                 c.latency_ms, std::move(c.hint)});
  }
  report.ok =
      std::all_of(report.checks.begin(), report.checks.end(), [](const auto& c) { return c.ok; });
  return report;
}

result<std::map<host_status, std::int64_t>> host_service::count_by_status() {
  return db_.count_by_status();
}

}  // namespace litterbox::controlplane
