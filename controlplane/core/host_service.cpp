#include "controlplane/core/host_service.hpp"

#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/task_pool.hpp"
#include "controlplane/core/validation.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

namespace litterbox::controlplane {

using schema::host_status;

namespace {

// Every token in SERVICE_TOKENS shares one namespace (API.md), so rotating a token keeps keys.
constexpr std::string_view k_key_namespace = "default";

const std::vector<host_status> k_provisioning_states{
    host_status::provisioning, host_status::pulling_image, host_status::creating_vm,
    host_status::bootstrapping};

std::string local_hostname() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) {
    return "unknown";
  }
  return buf.data();
}

/// "<Kind>: <message>" for last_error (API.md), from any module's error.
std::string last_error_text(const error& e) {
  std::string_view kind = hypervisor::kind_name(e.code);
  if (e.code == errc::capacity) {
    kind = "NoCapacity";
  } else if (e.code == errc::unavailable) {
    kind = "DatabaseUnavailable";
  } else if (e.code == errc::internal && e.code.category() == category()) {
    kind = "InternalError";
  }
  return std::string(kind) + ": " + e.message;
}

/// The row change that ends a create in `error`: the key and port are released at once so a
/// retry can start afresh, and the host no longer has an owner or an activation lease.
host_patch failure_patch(std::string last_error) {
  host_patch patch;
  patch.status = host_status::error;
  patch.last_error = std::move(last_error);
  patch.release_idempotency_key = true;
  patch.release_port = true;
  patch.clear_owner = true;
  patch.clear_lease = true;
  return patch;
}

}  // namespace

/// Hosts this process is provisioning, and who waits for each to settle.
struct host_service::in_flight {
  std::mutex mutex;
  std::map<std::string, std::vector<std::function<void()>>> waiters;
  bool stopping = false;
};

struct host_service::heartbeat_state {
  std::mutex mutex;
  std::condition_variable cv;
  bool stop = false;
  bool registered = false;
  std::thread thread;
};

host_service::host_service(const config& cfg, store& db, hypervisor::driver& driver,
                           const clock& clk, std::string instance_id, lifecycle_observer* observer)
    : cfg_(cfg),
      db_(db),
      driver_(driver),
      clock_(clk),
      instance_id_(std::move(instance_id)),
      observer_(observer),
      in_flight_(std::make_unique<in_flight>()),
      workers_(std::make_unique<task_pool>(
          static_cast<std::size_t>(std::max(1, cfg.max_concurrent_provisions)))),
      heartbeat_(std::make_unique<heartbeat_state>()) {
  // The probe key is the control plane's own identity towards guests; it lives only in
  // memory and is regenerated per process, so nothing on disk can leak it.
  auto probe = hypervisor::generate_ed25519("litterbox-probe");
  if (!probe) {
    throw error_exception(probe.error());
  }
  probe_key_ = std::move(*probe);
  if (!heartbeat()) {
    spdlog::warn("database unavailable at start-up; heartbeats will retry");
  }
  heartbeat_->thread = std::thread([this] { heartbeat_loop(); });
}

host_service::~host_service() {
  shutdown();
}

void host_service::shutdown() {
  {
    const std::lock_guard lock(in_flight_->mutex);
    in_flight_->stopping = true;
  }
  workers_->stop();
  {
    const std::lock_guard lock(heartbeat_->mutex);
    heartbeat_->stop = true;
  }
  heartbeat_->cv.notify_all();
  if (heartbeat_->thread.joinable()) {
    heartbeat_->thread.join();
  }
}

std::string_view host_service::provider() const {
  return driver_.provider();
}

result<void> host_service::heartbeat() {
  auto r = db_.heartbeat(instance_id_, local_hostname(), getpid(), clock_.now());
  if (r) {
    const std::lock_guard lock(heartbeat_->mutex);
    heartbeat_->registered = true;
  }
  return r;
}

void host_service::heartbeat_loop() {
  std::unique_lock lock(heartbeat_->mutex);
  while (!heartbeat_->stop) {
    heartbeat_->cv.wait_for(lock, cfg_.heartbeat_interval, [this] { return heartbeat_->stop; });
    if (heartbeat_->stop) {
      return;
    }
    lock.unlock();
    if (auto r = heartbeat(); !r) {
      spdlog::warn("heartbeat failed: {}", r.error().message);
    }
    lock.lock();
  }
}

result<std::string> host_service::checked_id(std::string_view id) const {
  auto parsed = parse_uuid(id);
  if (!parsed) {
    error e = make_error(errc::validation, "malformed host id");
    e.issues.push_back({{"path", "host_id"}, "Input should be a valid UUID", "uuid_parsing"});
    return e;
  }
  return *parsed;
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
  auto resolved = validate_create(req, cfg_, now, driver_.provider());
  if (!resolved) {
    return resolved.error();
  }
  bool registered = false;
  {
    const std::lock_guard lock(heartbeat_->mutex);
    registered = heartbeat_->registered;
  }
  if (!registered) {
    // The row names this instance as its owner, so the instance row must exist first.
    if (auto r = heartbeat(); !r) {
      return r.error();
    }
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
  rec.owner_id = instance_id_;
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
    claim =
        idempotency_claim{std::string(k_key_namespace), *idempotency_key,
                          sha256_hex(schema::canonical_text(req)), now + cfg_.idempotency_key_ttl};
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

  auto inserted = db_.insert_host(rec, claim, now);
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

  // The SSH port is leased now rather than in creating_vm so that running out of ports is
  // the caller's 503 CAPACITY (retry later), not a host in `error` minutes later.
  if (auto port = db_.allocate_port(id, cfg_.ssh_port_min, cfg_.ssh_port_max, now); !port) {
    (void)db_.remove_host(id);  // takes its key with it: a retry is a fresh create
    return port.error();
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

  bool accepted = false;
  {
    const std::lock_guard lock(in_flight_->mutex);
    if (!in_flight_->stopping) {
      in_flight_->waiters.emplace(id, std::vector<std::function<void()>>{});
      accepted = true;
    }
  }
  const auto lease = rec.lease_seconds;
  if (!accepted || !workers_->post([this, id, spec, lease] { provision(id, spec, lease); })) {
    fail(id, make_error(errc::unavailable, "the control plane is shutting down"),
         host_status::provisioning);
    auto now_row = db_.get_host(id);
    return create_result{now_row ? now_row->host : rec.host, true};
  }

  create_result out{rec.host, true};
  if (minted) {
    out.host.private_key = std::move(minted->private_openssh);
  }
  return out;
}

bool host_service::notify_when_settled(const std::string& id, std::function<void()> cb) {
  const std::lock_guard lock(in_flight_->mutex);
  const auto it = in_flight_->waiters.find(id);
  if (it == in_flight_->waiters.end()) {
    return false;
  }
  it->second.push_back(std::move(cb));
  return true;
}

void host_service::settle(const std::string& id) {
  std::vector<std::function<void()>> callbacks;
  {
    const std::lock_guard lock(in_flight_->mutex);
    const auto it = in_flight_->waiters.find(id);
    if (it == in_flight_->waiters.end()) {
      return;
    }
    callbacks = std::move(it->second);
    in_flight_->waiters.erase(it);
  }
  for (auto& cb : callbacks) {
    cb();
  }
}

void host_service::provision(const std::string& id, std::shared_ptr<hypervisor::vm_spec> spec,
                             std::optional<std::int64_t> lease_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + cfg_.provision_timeout;
  host_status at = host_status::provisioning;

  // Moves the row on; false when the row changed under us (deleted, failed by recovery), in
  // which case everything made so far is released and provisioning stops.
  auto step = [&](host_status to, host_patch patch) -> bool {
    patch.status = to;
    auto r = db_.transition(id, {at}, patch, clock_.now());
    for (int attempt = 0; !r && r.error().code == errc::unavailable && attempt < 30; ++attempt) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      r = db_.transition(id, {at}, patch, clock_.now());
    }
    if (!r) {
      if (r.error().code == errc::unavailable) {
        fail(id, r.error(), at);
      } else {
        spdlog::warn("host {}: row changed while provisioning ({}); releasing", id,
                     r.error().message);
        (void)driver_.destroy(id);
        settle(id);
      }
      return false;
    }
    at = to;
    return true;
  };
  auto past_deadline = [&] {
    if (std::chrono::steady_clock::now() < deadline) {
      return false;
    }
    fail(id,
         make_error(hypervisor::errc::boot_timeout,
                    "provisioning did not finish within " +
                        std::to_string(cfg_.provision_timeout.count()) + " s"),
         at);
    return true;
  };

  spdlog::info("host {}: provisioning image={}", id, spec->image);
  if (!step(host_status::pulling_image, {})) {
    return;
  }
  auto digest = driver_.prepare_image(spec->image);
  if (!digest) {
    fail(id, digest.error(), at);
    return;
  }
  spec->image_digest = *digest;
  host_patch to_creating;
  to_creating.image_digest = *digest;
  if (past_deadline() || !step(host_status::creating_vm, to_creating)) {
    return;
  }
  auto port = db_.allocate_port(id, cfg_.ssh_port_min, cfg_.ssh_port_max, clock_.now());
  if (!port) {
    fail(id, port.error(), at);
    return;
  }
  spec->ssh_host = cfg_.ssh_host;
  spec->ssh_port = *port;
  if (auto made = driver_.create_vm(*spec); !made) {
    fail(id, made.error(), at);
    return;
  }
  host_patch to_boot;
  to_boot.ssh_host = spec->ssh_host;
  to_boot.ssh_port = spec->ssh_port;
  if (!step(host_status::bootstrapping, to_boot)) {
    return;
  }
  if (auto ready = driver_.wait_ready(*spec, deadline); !ready) {
    fail(id, ready.error(), at);
    return;
  }
  const timestamp now = clock_.now();
  host_patch to_active;
  to_active.known_hosts =
      hypervisor::known_hosts_line(spec->ssh_host, spec->ssh_port, spec->host_key.public_line);
  to_active.activated_at = now;
  to_active.clear_owner = true;
  if (lease_seconds) {
    to_active.expires_at = std::optional<timestamp>(now + std::chrono::seconds(*lease_seconds));
    to_active.clear_lease = true;
  }
  if (!step(host_status::active, to_active)) {
    return;
  }
  spdlog::info("host {}: active on {}:{}", id, spec->ssh_host, spec->ssh_port);
  settle(id);
}

void host_service::fail(const std::string& id, const error& e, host_status from) {
  const std::string text = last_error_text(e);
  spdlog::warn("host {}: provisioning failed in {}: {}", id, schema::to_string(from), text);
  if (auto d = driver_.destroy(id); !d) {
    // The orphan sweep retries; the row below still becomes `error` so callers learn why.
    spdlog::error("host {}: releasing the VM failed: {}", id, d.error().message);
  }
  const host_patch patch = failure_patch(text);
  auto r = db_.transition(id, k_provisioning_states, patch, clock_.now());
  for (int attempt = 0; !r && r.error().code == errc::unavailable && attempt < 30; ++attempt) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    r = db_.transition(id, k_provisioning_states, patch, clock_.now());
  }
  if (!r && r.error().code != errc::not_found) {
    spdlog::error("host {}: could not record the failure: {}", id, r.error().message);
  }
  settle(id);
}

result<host_record> host_service::find_host(std::string_view raw_id) {
  auto id = checked_id(raw_id);
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
  list_query q;
  std::vector<field_issue> issues;
  for (const auto& s : params.statuses) {
    if (auto st = schema::parse_host_status(s)) {
      q.statuses.push_back(*st);
    } else {
      issues.push_back({{"query", "status"},
                        "Input should be 'provisioning', 'pulling_image', 'creating_vm', "
                        "'bootstrapping', 'active', 'deleting' or 'error'",
                        "enum"});
    }
  }
  q.limit = cfg_.list_default_limit;
  if (params.limit) {
    const auto& text = *params.limit;
    std::size_t value = 0;
    const bool digits =
        !text.empty() && text.size() <= 9 &&
        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
      value = std::stoul(text);
    }
    if (!digits) {
      issues.push_back({{"query", "limit"}, "Input should be a valid integer", "int_parsing"});
    } else if (value < 1) {
      issues.push_back({{"query", "limit"}, "Input should be greater than 0", "greater_than"});
    } else if (value > cfg_.list_max_limit) {
      issues.push_back(
          {{"query", "limit"},
           "Input should be less than or equal to " + std::to_string(cfg_.list_max_limit),
           "less_than_equal"});
    } else {
      q.limit = value;
    }
  }
  if (params.after) {
    if (auto a = parse_uuid(*params.after)) {
      q.after = *a;
    } else {
      issues.push_back({{"query", "after"}, "Input should be a valid UUID", "uuid_parsing"});
    }
  }
  if (!issues.empty()) {
    error e = make_error(errc::validation, "invalid query");
    e.issues = std::move(issues);
    return e;
  }
  const std::size_t page = q.limit;
  if (page > 0) {
    q.limit = page + 1;  // one extra row tells whether another page exists
  }
  auto rows = db_.list_hosts(q);
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
  auto id = checked_id(raw_id);
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
  auto id = checked_id(raw_id);
  if (!id) {
    return id.error();
  }
  // DELETE of a host that is still being created is refused (API.md allows 409 or
  // cancellation): a create owns its resources until it settles, so a concurrent teardown
  // could race it and leak. The caller retries once the host is active or error.
  host_patch to_deleting;
  to_deleting.status = host_status::deleting;
  auto moved = db_.transition(*id, {host_status::active, host_status::error, host_status::deleting},
                              to_deleting, clock_.now());
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
    spdlog::error("host {}: teardown failed: {}", id, d.error().message);
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

doctor_report host_service::doctor() {
  doctor_report report;
  report.provider = std::string(driver_.provider());
  const auto start = std::chrono::steady_clock::now();
  auto ping = db_.ping();
  const auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  report.checks.push_back(hypervisor::check_result{
      "database", static_cast<bool>(ping), ping ? "connected" : ping.error().message,
      ping ? "" : "check DATABASE_URL and that PostgreSQL is running", ms});
  auto driver_checks = driver_.doctor();
  report.checks.insert(report.checks.end(), driver_checks.begin(), driver_checks.end());
  report.ok =
      std::all_of(report.checks.begin(), report.checks.end(), [](const auto& c) { return c.ok; });
  return report;
}

result<std::map<host_status, std::int64_t>> host_service::count_by_status() {
  return db_.count_by_status();
}

result<int> host_service::recover_orphaned(timestamp stale_before) {
  auto rows = db_.orphaned_provisioning(stale_before);
  if (!rows) {
    return rows.error();
  }
  int recovered = 0;
  for (const auto& rec : *rows) {
    const auto& id = rec.host.id;
    {
      // A host this very process is provisioning is never an orphan.
      const std::lock_guard lock(in_flight_->mutex);
      if (in_flight_->waiters.count(id) != 0) {
        continue;
      }
    }
    if (auto d = driver_.destroy(id); !d) {
      spdlog::error("host {}: releasing an interrupted create failed: {}", id, d.error().message);
      continue;
    }
    const host_patch patch =
        failure_patch("Interrupted: the control plane creating this host stopped during " +
                      std::string(schema::to_string(rec.host.status)));
    if (db_.transition(id, {rec.host.status}, patch, clock_.now())) {
      spdlog::warn("host {}: interrupted create in {} failed and released", id,
                   schema::to_string(rec.host.status));
      ++recovered;
    }
  }
  return recovered;
}

result<int> host_service::sweep_orphans() {
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
      spdlog::error("host {}: removing orphaned resources failed: {}", id, d.error().message);
    }
  }
  return removed;
}

result<int> host_service::collect_images() {
  auto digests = db_.image_digests_in_use();
  if (!digests) {
    return digests.error();
  }
  return driver_.collect_images(std::set<std::string>(digests->begin(), digests->end()));
}

}  // namespace litterbox::controlplane
