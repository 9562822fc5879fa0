#include "controlplane/core/host_service.hpp"

#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/instance_heartbeat.hpp"
#include "controlplane/core/provisioner.hpp"
#include "controlplane/core/templates.hpp"
#include "controlplane/core/warm_pool.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace litterbox::controlplane {

using schema::host_status;

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
  if (cfg_.templates) {
    templates_ = std::make_unique<template_builder>(cfg_, db_, driver_, clock_, *heartbeat_,
                                                    probe_key_.public_line);
  }
  provisioner_ = std::make_unique<provisioner>(cfg_, db_, driver_, clock_, templates_.get());
  events_ = std::make_unique<event_hub>(db_, cfg_.event_poll_interval);
  if (templates_ && !cfg_.pools.empty()) {
    pool_ = std::make_unique<warm_pool>(cfg_, db_, driver_, *provisioner_, *templates_, *heartbeat_,
                                        clock_, probe_key_.public_line,
                                        [this](std::string_view id) { return teardown(id); });
    templates_->on_ready([this] { pool_->poke(); });
  }
}

host_service::~host_service() {
  shutdown();
}

void host_service::start_background() {
  if (templates_) {
    templates_->start();
  }
  if (pool_) {
    pool_->start();
  }
}

void host_service::shutdown() {
  // A template build is abandoned (it would outlast any drain); creates get their drain;
  // a pool refill under way is one of them.
  if (templates_) {
    templates_->stop();
  }
  provisioner_->shutdown(cfg_.shutdown_drain);
  if (pool_) {
    pool_->stop();
  }
  heartbeat_->stop();
  events_->stop();
}

std::string_view host_service::provider() const {
  return driver_.provider();
}

result<void> host_service::heartbeat() {
  return heartbeat_->beat();
}

namespace {

result<create_result> replay(const insert_outcome& found) {
  if (!found.fingerprint_matches) {
    error e = make_error(errc::idempotency_mismatch,
                         "Idempotency-Key was already used with a different request");
    e.issues.push_back({{"header", "Idempotency-Key"},
                        "Idempotency-Key was already used with a different request",
                        "value_error"});
    return e;
  }
  return create_result{found.existing.host, false, found.existing.path};
}

/// Whole milliseconds from `from` to `to`.
long long ms_since(std::chrono::steady_clock::time_point from,
                   std::chrono::steady_clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

/// "ssh-ed25519 AAAA…" of a known_hosts line "[host]:port ssh-ed25519 AAAA…".
std::string public_key_of(const std::string& known_hosts) {
  const auto first = known_hosts.find(' ');
  if (first == std::string::npos) {
    return {};
  }
  std::string rest = known_hosts.substr(first + 1);
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == ' ')) {
    rest.pop_back();
  }
  return rest;
}

}  // namespace

void host_service::place_on_nodes(host_record& rec) {
  auto nodes = driver_.node_ids();
  if (nodes.size() == 1) {
    rec.node_id = nodes.front();  // the only node that answers
    return;
  }
  if (nodes.empty()) {
    // One node, or none answering: the configured one, which says why it cannot.
    if (!cfg_.node_id.empty()) {
      rec.node_id = cfg_.node_id;
    }
    return;
  }
  rec.node_choices = std::move(nodes);
  if (templates_ == nullptr) {
    return;
  }
  // The digest is resolved only once the create runs; a ready template made for the same
  // reference and size is the best guess of where a clone can be had. Without it (or when
  // that node is full) the host goes where there is most room, and boots.
  auto all = db_.list_templates();
  if (!all) {
    return;
  }
  for (const auto& t : *all) {
    if (t.status == template_status::ready && t.node_id && t.image == rec.host.image &&
        t.key.cpus == rec.host.cpus && t.key.memory_mib == rec.host.memory_mib &&
        t.key.disk_gb == rec.host.disk_gb && t.key.ssh_username == cfg_.ssh_username) {
      rec.prefer_node = t.node_id;
      return;
    }
  }
}

result<std::optional<insert_outcome>> host_service::claim_from_pool(
    const host_record& rec, const std::optional<idempotency_claim>& key) {
  if (!pool_ || !pool_->serves(rec.host.cpus, rec.host.memory_mib, rec.host.disk_gb)) {
    return std::optional<insert_outcome>();
  }
  // The digest the request's reference names now, never a cached one: a tag pushed anew
  // must not be served by members of the old image. A registry that does not answer leaves
  // the create to the provisioner, which reports it.
  const auto t_started = std::chrono::steady_clock::now();
  auto digest = driver_.resolve_image(rec.host.image);
  if (!digest) {
    return std::optional<insert_outcome>();
  }
  const auto t_resolved = std::chrono::steady_clock::now();
  pool_claim c;
  c.key = {*digest, rec.host.cpus, rec.host.memory_mib, rec.host.disk_gb, rec.host.ssh_username};
  c.as = rec;
  auto out = db_.claim_pool_member(c, key, clock_.now());
  if (out && *out && (*out)->created) {
    // Where a claim's time goes, for the benchmark's breakdown (bench/fast).
    spdlog::debug("host {}: pool claim: image resolved in {} ms, member claimed in {} ms",
                  (*out)->existing.host.id, ms_since(t_started, t_resolved),
                  ms_since(t_resolved, std::chrono::steady_clock::now()));
  }
  if (!out && out.error().code == errc::outcome_unknown) {
    // A claim that did land is bootstrapping under this live process with no job behind it:
    // the deadline sweep fails and releases it, and the key is free again then.
    return make_error(errc::unavailable, "database unavailable while claiming a pooled host");
  }
  return out;
}

namespace {

/// Hands a claimed pool member to the provisioner's claim lane (or answers the replay the
/// claim found instead).
result<create_result> finish_claim(const config& cfg, provisioner& provisioning, warm_pool& pool,
                                   insert_outcome claimed, resolved_create& req,
                                   provisioner::admission place) {
  if (!claimed.created) {
    return replay(claimed);
  }
  const host_record& row = claimed.existing;
  provision_job job;
  job.kind = job_kind::claim;
  job.id = row.host.id;
  job.lease_seconds = row.lease_seconds;
  job.deadline = std::chrono::steady_clock::now() + cfg.provision_timeout;
  auto spec = std::make_shared<hypervisor::vm_spec>();
  spec->host_id = row.host.id;
  spec->name = row.host.name;
  spec->image = row.host.image;
  spec->image_digest = row.host.image_digest.value_or("");
  spec->cpus = row.host.cpus;
  spec->memory_mib = row.host.memory_mib;
  spec->disk_gb = row.host.disk_gb;
  spec->ssh_username = row.host.ssh_username;
  spec->ssh_host = row.host.ssh_host;
  spec->ssh_port = row.host.ssh_port;
  spec->node_id = row.node_id.value_or("");
  // The member's own host key, pinned when it was restored; only its public half is needed
  // (and kept) to prove the claim ready.
  spec->host_key.public_line = public_key_of(row.host.known_hosts);
  spec->env = std::move(req.env);
  std::optional<hypervisor::ssh_key_pair> minted;
  if (req.authorized_keys.empty()) {
    auto pair = hypervisor::generate_ed25519(row.host.ssh_username + "@" + row.host.name);
    if (pair) {
      minted = std::move(*pair);
      spec->authorized_keys = {minted->public_line};
    } else {
      job.preset_failure = "Internal: could not generate a login key";
    }
  } else {
    spec->authorized_keys = req.authorized_keys;
  }
  job.spec = std::move(spec);
  const std::string id = job.id;
  provisioning.submit(std::move(place), std::move(job));
  // The refill starts once this claim has settled, not beside it: under TCG a restore takes
  // both cores for a second or more, and a claim's login and SSH proof run on the guest's
  // emulated CPU (bench/fast: every claim that ran beside its replacement's restore paid
  // for it in its p99). The member is gone from the pool either way; it is replaced a claim
  // later, never less often.
  if (!provisioning.notify_when_settled(id, [&pool] { pool.poke(); })) {
    pool.poke();  // it settled already
  }
  create_result out{row.host, true, create_path::pool};
  if (minted) {
    out.host.private_key = std::move(minted->private_openssh);
  }
  return out;
}

}  // namespace

result<create_result> host_service::create(const schema::create_host_request& req,
                                           const std::optional<std::string>& idempotency_key,
                                           const caller& who) {
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
  // The caller's namespace owns the host; a scoped key's quota is checked in the insert's
  // (or the claim's) transaction.
  rec.ns = who.ns;
  if (!who.admin) {
    rec.quota = who.quota;
  }
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
    // Keys are per namespace: every SERVICE_TOKENS token shares the admin one (so rotating
    // a token keeps them), and a scoped key's replay of another namespace's key is its own.
    claim = idempotency_claim{who.ns, *idempotency_key,
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

  // A warm-pool member of this digest and size serves any env and keys: they are applied at
  // the claim. The claim and the key are one transaction, as the insert below.
  auto claimed = claim_from_pool(rec, claim);
  if (!claimed) {
    return claimed.error();
  }
  if (*claimed) {
    return finish_claim(cfg_, *provisioner_, *pool_, std::move(**claimed), *resolved,
                        std::move(*place));
  }

  // The SSH port is leased in the insert's transaction: running out of ports is the caller's
  // 503 CAPACITY with nothing kept, and a row never exists without its port.
  place_on_nodes(rec);
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
    return replay(*inserted);
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
  spec->node_id = inserted->existing.node_id.value_or("");
  spec->ssh_host = inserted->existing.host.ssh_host;

  provision_job job;
  job.id = id;
  job.spec = std::move(spec);
  job.lease_seconds = rec.lease_seconds;
  job.deadline = std::chrono::steady_clock::now() + cfg_.provision_timeout;
  provisioner_->submit(std::move(*place), std::move(job));

  create_result out{inserted->existing.host, true, std::nullopt};
  if (minted) {
    out.host.private_key = std::move(minted->private_openssh);
  }
  return out;
}

bool host_service::provisioning_here(const std::string& id) const {
  return provisioner_->provisioning(id);
}

bool host_service::notify_when_settled(const std::string& id, std::function<void()> cb) {
  return provisioner_->notify_when_settled(id, std::move(cb));
}

result<host_record> host_service::find_host(std::string_view raw_id, const caller& who) {
  auto id = validate_host_id(raw_id);
  if (!id) {
    return id.error();
  }
  auto rec = db_.get_host(*id);
  // Another namespace's host is answered exactly as one that does not exist: existence is
  // not revealed (API.md "Tenants: scoped keys").
  if (rec && (rec->pooled || !who.sees(rec->ns))) {
    return make_error(errc::not_found, "host not found");
  }
  return rec;
}

result<create_path> host_service::served_by(std::string_view raw_id) {
  auto rec = find_host(raw_id, admin_caller());
  if (!rec) {
    return rec.error();
  }
  return rec->path.value_or(create_path::boot);
}

result<schema::host> host_service::get(std::string_view raw_id, const caller& who) {
  auto rec = find_host(raw_id, who);
  if (!rec) {
    return rec.error();
  }
  return std::move(rec->host);
}

result<host_page> host_service::list(const list_params& params, const caller& who) {
  auto q = validate_list(params, cfg_);
  if (!q) {
    return q.error();
  }
  q->ns = who.scope();
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

result<schema::host> host_service::renew(std::string_view raw_id, const schema::renew_request& req,
                                         const caller& who) {
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
  if (auto found = find_host(*id, who); !found) {
    return found.error();
  }
  auto rec = db_.renew(*id, expires, now);
  if (!rec) {
    return rec.error();
  }
  return std::move(rec->host);
}

result<void> host_service::remove(std::string_view raw_id, const caller& who) {
  auto id = validate_host_id(raw_id);
  if (!id) {
    return id.error();
  }
  // DELETE of a host that is still being created is refused (API.md allows 409 or
  // cancellation): a create owns its resources until it settles, so a concurrent teardown
  // could race it and leak. The caller retries once the host is active or error; every
  // create settles within PROVISION_TIMEOUT + LITTERBOX_PROVISION_GRACE.
  if (auto found = find_host(*id, who); !found) {
    return found.error();  // pool members are no caller's to delete
  }
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

result<std::string> host_service::console(std::string_view raw_id, std::size_t max_bytes,
                                          const caller& who) {
  auto rec = find_host(raw_id, who);
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
  if (templates_) {
    report.checks.push_back(templates_check());
  }
  if (pool_) {
    report.checks.push_back(pool_check());
  }
  if (!cfg_.node_id.empty()) {
    report.checks.push_back(node_check());
  }
  report.ok =
      std::all_of(report.checks.begin(), report.checks.end(), [](const auto& c) { return c.ok; });
  return report;
}

result<std::map<host_status, std::int64_t>> host_service::count_by_status() {
  return db_.count_by_status();
}

std::vector<pool_state> host_service::pool_states() {
  return pool_ ? pool_->states() : std::vector<pool_state>();
}

result<std::map<template_status, std::int64_t>> host_service::count_templates() {
  auto rows = db_.list_templates();
  if (!rows) {
    return rows.error();
  }
  std::map<template_status, std::int64_t> out{
      {template_status::building, 0}, {template_status::ready, 0}, {template_status::failed, 0}};
  for (const auto& t : *rows) {
    ++out[t.status];
  }
  return out;
}

schema::doctor_check host_service::templates_check() {
  const auto start = std::chrono::steady_clock::now();
  schema::doctor_check c{"templates", true, "", 0, ""};
  auto rows = db_.list_templates();
  if (!rows) {
    c.ok = false;
    c.detail = rows.error().message;
  } else {
    int ready = 0;
    int building = 0;
    std::string cold;
    for (const auto& t : *rows) {
      ready += t.status == template_status::ready ? 1 : 0;
      building += t.status == template_status::building ? 1 : 0;
      if (t.status == template_status::failed) {
        // Informational: such creates still work, only slower.
        cold += "; " + t.image + " (" + std::to_string(t.key.cpus) + " cpus, " +
                std::to_string(t.key.memory_mib) + " MiB) boots from scratch" +
                (t.retry_after ? " until a rebuild" : "") + ": " + t.last_error;
      }
    }
    c.detail = std::to_string(ready) + " ready, " + std::to_string(building) + " building" + cold;
    if (!cold.empty()) {
      c.hint =
          "images need qemu-guest-agent and util-linux-extra to be cloned (README: "
          "fast creates)";
    }
  }
  c.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return c;
}

schema::doctor_check host_service::node_check() {
  const auto start = std::chrono::steady_clock::now();
  schema::doctor_check c{"node", false, "", 0, ""};
  auto nodes = db_.list_nodes();
  if (!nodes) {
    c.detail = nodes.error().message;
  } else {
    const auto it = std::find_if(nodes->begin(), nodes->end(),
                                 [this](const node_record& n) { return n.id == cfg_.node_id; });
    if (it == nodes->end()) {
      c.detail = "node " + cfg_.node_id + " is not in the database";
      c.hint = "restart litterboxd serve: it registers its node at start-up";
    } else {
      // Creates are refused while the node takes no new hosts: not healthy, even on purpose.
      c.ok = it->state == node_state::active;
      c.detail = it->uri + " " + std::string(to_string(it->state)) + ": " +
                 std::to_string(it->hosts) + " hosts, " + std::to_string(it->used_cpus) + "/" +
                 std::to_string(it->cpu_capacity()) + " vCPUs, " +
                 std::to_string(it->used_memory_mib) + "/" + std::to_string(it->memory_capacity()) +
                 " MiB";
      if (!c.ok) {
        c.hint = "creates get 503 CAPACITY until `litterboxd node uncordon " + it->uri + "`";
      }
    }
  }
  c.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return c;
}

schema::doctor_check host_service::pool_check() {
  const auto start = std::chrono::steady_clock::now();
  schema::doctor_check c{"warm_pool", true, "", 0, ""};
  for (const auto& p : pool_->states()) {
    if (!c.detail.empty()) {
      c.detail += "; ";
    }
    c.detail += p.spec.image + " (" + std::to_string(p.spec.cpus) + " cpus, " +
                std::to_string(p.spec.memory_mib) + " MiB): " + std::to_string(p.ready) + "/" +
                std::to_string(p.spec.size) + " ready, " + std::to_string(p.filling) + " filling";
    if (!p.problem.empty()) {
      c.detail += " (" + p.problem + ")";
    }
    // Filling up (a template being built, members being restored) is healthy; a pool that
    // cannot fill is not.
    if (!p.problem.empty() && p.problem.rfind("waiting", 0) != 0) {
      c.ok = false;
      c.hint = "check LITTERBOX_POOL's image and the templates check";
    }
  }
  c.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return c;
}

}  // namespace litterbox::controlplane
