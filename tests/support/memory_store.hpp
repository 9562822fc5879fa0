#pragma once

#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/proxy_store.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/core/tenancy.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <utility>

namespace litterbox::controlplane::testing {

/// An in-memory store with the semantics of the store contract (tests/contract runs it next to
/// pg_store), for unit tests of the rules above it. Host ids are UUIDs in any letter case, as
/// the database's uuid type takes them. `down` makes every call fail as a dead database would. The
/// `lose_…` knobs make one write apply and then report outcome_unknown, as a connection lost during
/// COMMIT does.
class memory_store final : public store, public proxy_store, public tenant_store {
 public:
  std::atomic<bool> down = false;
  /// The next insert_host lands but reports outcome_unknown.
  bool lose_insert_commit = false;
  /// The next transition to this status lands but reports outcome_unknown.
  std::optional<schema::host_status> lose_commit_to;
  /// The next insert_pool_member that inserts lands but reports outcome_unknown.
  bool lose_pool_insert_commit = false;
  /// The next claim_pool_member that claims lands but reports outcome_unknown.
  bool lose_pool_claim_commit = false;
  /// Called (without the lock) at the start of claim_interrupted: lets a test act as an owner
  /// that wins the race against recovery.
  std::function<void()> before_claim;

  result<insert_outcome> insert_host(const host_record& h,
                                     const std::optional<idempotency_claim>& key, port_range ports,
                                     timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto id = parse_uuid(h.host.id);
    if (!id)
      return make_error(errc::internal, "host id is not a UUID");
    if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi)
      return make_error(errc::capacity, "no SSH port left");
    if (key) {
      auto it = keys_.find(key->ns + "\n" + key->key);
      if (it != keys_.end() && it->second.claim.expires_at > now &&
          hosts_.count(it->second.host_id) != 0) {
        const auto& stored = it->second.claim.fingerprint;
        return insert_outcome{false, hosts_.at(it->second.host_id),
                              stored == key->fingerprint || (!key->legacy_fingerprint.empty() &&
                                                             stored == key->legacy_fingerprint)};
      }
    }
    if (hosts_.count(*id) != 0)
      return make_error(errc::internal, "database error");  // the primary key refuses it
    if (auto over = over_quota(h.ns, h.quota, h.host.cpus, h.host.memory_mib))
      return *over;
    auto row = h;
    if (auto full = place_on_node(row))
      return *full;
    const auto port = free_port(ports.lo, ports.hi);
    if (!port)
      return make_error(errc::capacity, "no SSH port left");
    row.host.id = *id;
    row.node_choices.clear();
    row.prefer_node.reset();
    if (key)
      keys_[key->ns + "\n" + key->key] = key_row{*key, *id};
    hosts_[*id] = row;
    ports_[*id] = *port;
    record(row, event_type::created, row.host.updated_at);
    insert_outcome out{true, row, true, *port};
    if (std::exchange(lose_insert_commit, false))
      return make_error(errc::outcome_unknown, "commit outcome unknown");
    return out;
  }

  /// Stores `key` with `fingerprint` for host `host_id` as an older version would have.
  void put_key(const idempotency_claim& key, const std::string& host_id) {
    const std::lock_guard lock(mutex_);
    keys_[key.ns + "\n" + key.key] = key_row{key, host_id};
  }

  result<host_record> get_host(std::string_view id) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto it = find(id);
    if (it == hosts_.end())
      return make_error(errc::not_found, "host not found");
    return it->second;
  }

  result<std::vector<host_record>> list_hosts(const list_query& q) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::optional<std::string> after;
    if (q.after) {
      after = parse_uuid(*q.after);
      if (!after) {
        error e = make_error(errc::validation, "validation failed");
        e.issues.push_back(field_issue{{"query", "after"}, "invalid cursor", "value_error"});
        return e;
      }
    }
    std::vector<host_record> out;
    for (auto it = hosts_.rbegin(); it != hosts_.rend(); ++it) {
      const auto& h = it->second.host;
      if (it->second.pooled || (after && h.id >= *after) || (q.ns && it->second.ns != *q.ns))
        continue;
      if (!q.statuses.empty() &&
          std::find(q.statuses.begin(), q.statuses.end(), h.status) == q.statuses.end())
        continue;
      out.push_back(it->second);
      if (q.limit != 0 && out.size() == q.limit)
        break;
    }
    return out;
  }

  result<host_record> transition(std::string_view id, const std::vector<schema::host_status>& from,
                                 const host_patch& p, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto it = find(id);
    if (it == hosts_.end())
      return make_error(errc::not_found, "host not found");
    auto& r = it->second;
    if (std::find(from.begin(), from.end(), r.host.status) == from.end())
      return make_error(errc::host_state, "state changed");
    const auto was = r.host.status;
    if (p.status)
      r.host.status = *p.status;
    if (p.image_digest)
      r.host.image_digest = p.image_digest;
    if (p.ssh_host)
      r.host.ssh_host = *p.ssh_host;
    if (p.ssh_port)
      r.host.ssh_port = *p.ssh_port;
    if (p.known_hosts)
      r.host.known_hosts = *p.known_hosts;
    if (p.last_error)
      r.host.last_error = *p.last_error;
    if (p.activated_at)
      r.host.activated_at = p.activated_at;
    if (p.expires_at)
      r.host.expires_at = *p.expires_at;
    if (p.clear_lease)
      r.lease_seconds.reset();
    if (p.clear_owner)
      r.owner_id.reset();
    if (p.release_idempotency_key) {
      for (auto k = keys_.begin(); k != keys_.end();) {
        k = k->second.host_id == r.host.id ? keys_.erase(k) : std::next(k);
      }
    }
    if (p.release_port)
      ports_.erase(r.host.id);
    if (p.path)
      r.path = p.path;
    r.host.updated_at = now;
    if (r.host.status != was)
      record(r, p.died ? event_type::died : event_type::status, now);
    if (lose_commit_to && p.status == lose_commit_to) {
      lose_commit_to.reset();
      return make_error(errc::outcome_unknown, "commit outcome unknown");
    }
    return r;
  }

  result<host_record> renew(std::string_view id, timestamp expires_at, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto it = find(id);
    if (it == hosts_.end())
      return make_error(errc::not_found, "host not found");
    auto& r = it->second;
    if (r.host.status != schema::host_status::active &&
        r.host.status != schema::host_status::bootstrapping)
      return make_error(errc::host_state, "host is not active");
    r.host.expires_at = expires_at;
    r.lease_seconds.reset();
    r.host.updated_at = now;
    return r;
  }

  result<void> remove_host(std::string_view id) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(id);
    if (!canonical)
      return {};
    if (const auto h = hosts_.find(*canonical); h != hosts_.end()) {
      record(h->second, event_type::deleted,
             std::chrono::time_point_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now()));
    }
    hosts_.erase(*canonical);
    ports_.erase(*canonical);
    for (auto k = keys_.begin(); k != keys_.end();) {
      k = k->second.host_id == *canonical ? keys_.erase(k) : std::next(k);
    }
    for (auto& [key, p] : proxies_) {
      std::erase(p.host_ids, *canonical);
    }
    return {};
  }

  result<int> allocate_port(std::string_view host_id, int lo, int hi, timestamp) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    // The order of the checks is pg_store's: a full range is capacity even for an unknown host.
    const auto id = parse_uuid(host_id);
    if (!id)
      return make_error(errc::not_found, "host not found");
    if (lo < 1 || hi > 65535 || lo > hi)
      return make_error(errc::capacity, "no SSH port left");
    if (auto held = ports_.find(*id); held != ports_.end())
      return held->second;
    const auto p = free_port(lo, hi);
    if (!p)
      return make_error(errc::capacity, "no SSH port left");
    if (hosts_.count(*id) == 0)
      return make_error(errc::not_found, "host not found");
    ports_[*id] = *p;
    return *p;
  }

  result<int> move_port(std::string_view host_id, int lo, int hi, const std::vector<int>& avoid,
                        timestamp) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto id = parse_uuid(host_id);
    if (!id || hosts_.count(*id) == 0)
      return make_error(errc::not_found, "host not found");
    if (lo < 1 || hi > 65535 || lo > hi)
      return make_error(errc::capacity, "no SSH port left");
    const auto held = ports_.find(*id);
    const std::optional<int> old =
        held == ports_.end() ? std::nullopt : std::optional<int>(held->second);
    if (old)
      ports_.erase(*id);
    const auto p = free_port(lo, hi, {}, avoid);
    if (!p) {
      if (old)
        ports_[*id] = *old;
      return make_error(errc::capacity, "no SSH port left");
    }
    ports_[*id] = *p;
    return *p;
  }

  result<node_record> register_node(const node_report& r, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    if (r.uri.empty() || r.cpus < 0 || r.memory_mib < 0)
      return make_error(errc::validation, "a node needs a URI and what it reports of itself");
    node_record* n = find_node(r.uri);
    if (n == nullptr) {
      node_record fresh;
      fresh.id = new_uuid_v7(now);
      fresh.uri = r.uri;
      fresh.created_at = now;
      nodes_.push_back(fresh);
      n = &nodes_.back();
    }
    n->ssh_host = r.ssh_host;
    n->cpus = r.cpus;
    n->memory_mib = r.memory_mib;
    n->updated_at = n->last_seen_at = now;
    for (auto& [id, h] : hosts_) {
      if (!h.node_id)
        h.node_id = n->id;
    }
    for (auto& [id, t] : templates_) {
      if (!t.node_id)
        t.node_id = n->id;
    }
    return with_usage(*n);
  }

  result<std::vector<node_record>> list_nodes() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<node_record> out;
    for (const auto& n : nodes_)
      out.push_back(with_usage(n));
    return out;
  }

  result<node_record> set_node_state(std::string_view node, node_state state,
                                     timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    node_record* n = find_node(node);
    if (n == nullptr)
      return make_error(errc::not_found, "no node " + std::string(node));
    n->state = state;
    n->updated_at = now;
    return with_usage(*n);
  }

  result<node_record> remove_node(std::string_view node) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    node_record* n = find_node(node);
    if (n == nullptr)
      return make_error(errc::not_found, "no node " + std::string(node));
    const auto rows = std::count_if(hosts_.begin(), hosts_.end(),
                                    [&](const auto& e) { return e.second.node_id == n->id; });
    if (rows > 0)
      return make_error(errc::host_state,
                        "node " + n->uri + " still has " + std::to_string(rows) + " host row(s)");
    auto gone = with_usage(*n);
    for (auto it = templates_.begin(); it != templates_.end();) {
      if (it->second.node_id == gone.id) {
        ports_.erase(template_port_key(it->first));
        it = templates_.erase(it);
      } else {
        ++it;
      }
    }
    nodes_.erase(nodes_.begin() + (n - nodes_.data()));
    return gone;
  }

  result<int> expire_node_hosts(std::string_view node_id, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    int n = 0;
    for (auto& [id, h] : hosts_) {
      const auto s = h.host.status;
      if (h.node_id != node_id ||
          (s != schema::host_status::active && s != schema::host_status::bootstrapping) ||
          (h.host.expires_at && *h.host.expires_at <= now))
        continue;
      h.host.expires_at = now;
      h.lease_seconds.reset();
      ++n;
    }
    return n;
  }

  result<node_record> configure_node(std::string_view node, const node_settings& s,
                                     timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    if (auto bad = invalid_node_settings(s))
      return *bad;
    node_record* n = find_node(node);
    if (n == nullptr)
      return make_error(errc::not_found, "no node " + std::string(node));
    n->reserved_cpus = s.reserved_cpus.value_or(n->reserved_cpus);
    n->reserved_memory_mib = s.reserved_memory_mib.value_or(n->reserved_memory_mib);
    n->cpu_overcommit = s.cpu_overcommit.value_or(n->cpu_overcommit);
    n->memory_overcommit = s.memory_overcommit.value_or(n->memory_overcommit);
    n->updated_at = now;
    return with_usage(*n);
  }

  result<std::map<schema::host_status, std::int64_t>> count_by_status() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::map<schema::host_status, std::int64_t> out;
    for (auto s :
         {schema::host_status::provisioning, schema::host_status::pulling_image,
          schema::host_status::creating_vm, schema::host_status::bootstrapping,
          schema::host_status::active, schema::host_status::deleting, schema::host_status::error})
      out[s] = 0;
    for (const auto& [id, r] : hosts_) {
      if (!r.pooled)
        ++out[r.host.status];
    }
    return out;
  }

  result<std::vector<host_record>> claim_expired(timestamp now, timestamp error_cutoff,
                                                 std::size_t limit) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<host_record> out;
    for (auto& [id, r] : hosts_) {
      if (out.size() == limit)
        break;
      const auto s = r.host.status;
      const bool due =
          ((s == schema::host_status::active || s == schema::host_status::bootstrapping) &&
           r.host.expires_at && *r.host.expires_at <= now) ||
          ((s == schema::host_status::error || s == schema::host_status::deleting) &&
           r.host.updated_at < error_cutoff);
      if (due) {
        r.host.status = schema::host_status::deleting;
        r.host.updated_at = now;
        if (s != schema::host_status::deleting)
          record(r, event_type::status, now);
        out.push_back(r);
      }
    }
    return out;
  }

  result<void> heartbeat(std::string_view instance_id, std::string_view, int,
                         std::chrono::seconds interval, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    beats_[parse_uuid(instance_id).value_or(std::string(instance_id))] =
        beat{now, std::max(interval, std::chrono::seconds(1))};
    return {};
  }

  result<std::vector<interrupted_host>> claim_interrupted(timestamp now, std::chrono::seconds grace,
                                                          const std::string& interrupted_prefix,
                                                          const std::string& overdue_prefix,
                                                          std::size_t limit,
                                                          std::string_view self) override {
    if (before_claim)
      before_claim();
    const auto me = parse_uuid(self);
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<interrupted_host> out;
    for (auto& [id, r] : hosts_) {
      if (out.size() == limit)
        break;
      if (!schema::is_provisioning(r.host.status))
        continue;
      const bool overdue = r.provision_deadline && *r.provision_deadline + grace < now;
      const bool mine = me && r.owner_id && parse_uuid(*r.owner_id) == me;
      if ((mine || !gone(r.owner_id, now)) && !overdue)
        continue;
      interrupted_host h;
      h.was = r.host.status;
      h.overdue = overdue;
      r.host.status = schema::host_status::error;
      r.host.last_error =
          (overdue ? overdue_prefix : interrupted_prefix) + std::string(schema::to_string(h.was));
      r.owner_id.reset();
      r.lease_seconds.reset();
      r.host.updated_at = now;
      for (auto k = keys_.begin(); k != keys_.end();)
        k = k->second.host_id == id ? keys_.erase(k) : std::next(k);
      record(r, event_type::status, now);
      h.host = r;
      out.push_back(std::move(h));
    }
    return out;
  }

  result<int> prune_instances(timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    int pruned = 0;
    for (auto b = beats_.begin(); b != beats_.end();) {
      const auto dead_after =
          std::max<std::chrono::seconds>(3 * b->second.interval, std::chrono::hours(1));
      if (b->second.at < now - dead_after) {
        for (auto& [id, r] : hosts_)
          if (r.owner_id && parse_uuid(*r.owner_id).value_or(*r.owner_id) == b->first)
            r.owner_id.reset();
        for (auto& [id, t] : templates_)
          if (t.owner_id == b->first)
            t.owner_id.reset();
        b = beats_.erase(b);
        ++pruned;
      } else {
        ++b;
      }
    }
    return pruned;
  }

  std::size_t instance_count() {
    const std::lock_guard lock(mutex_);
    return beats_.size();
  }

  result<std::vector<std::string>> all_host_ids() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<std::string> out;
    for (const auto& [id, r] : hosts_)
      out.push_back(id);
    return out;
  }

  result<std::vector<std::string>> image_digests_in_use() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::set<std::string> out;
    for (const auto& [id, r] : hosts_) {
      if (r.host.image_digest)
        out.insert(*r.host.image_digest);
    }
    for (const auto& [id, t] : templates_)
      out.insert(t.key.image_digest);
    return std::vector<std::string>(out.begin(), out.end());
  }

  result<void> ping() override {
    if (down)
      return unavailable();
    return {};
  }

  result<std::optional<template_record>> find_template(const template_key_row& key) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    for (const auto& [id, t] : templates_) {
      if (t.key == key)
        return std::optional<template_record>(with_port(t));
    }
    return std::optional<template_record>();
  }

  result<std::vector<template_record>> list_templates() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<template_record> out;
    for (const auto& [id, t] : templates_)
      out.push_back(with_port(t));
    return out;
  }

  result<std::optional<template_record>> claim_template_build(const template_record& want,
                                                              port_range ports,
                                                              timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto id = parse_uuid(want.id);
    if (!id)
      return make_error(errc::internal, "template id is not a UUID");
    const auto owner = want.owner_id ? parse_uuid(*want.owner_id) : std::nullopt;
    if (!owner)
      return make_error(errc::internal, "owner id is not a UUID");
    if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi)
      return make_error(errc::capacity, "no SSH port left");
    auto it = std::find_if(templates_.begin(), templates_.end(),
                           [&](const auto& e) { return e.second.key == want.key; });
    if (it != templates_.end()) {
      const auto& t = it->second;
      const bool retryable =
          t.status == template_status::failed && t.retry_after && *t.retry_after <= now;
      const bool abandoned = t.status == template_status::building && gone(t.owner_id, now);
      if (!retryable && !abandoned)
        return std::optional<template_record>();
    } else if (templates_.count(*id) != 0) {
      return make_error(errc::internal, "database error");  // the primary key refuses it
    }
    const std::string row_id = it != templates_.end() ? it->first : *id;
    const auto port = free_port(ports.lo, ports.hi, template_port_key(row_id));
    if (!port)
      return make_error(errc::capacity, "no SSH port left");
    template_record row;
    if (it != templates_.end()) {
      row = it->second;  // a takeover keeps the id, the key, the image and the history
    } else {
      row = want;
      row.id = *id;
      row.last_error.clear();
      row.created_at = now;
      row.ready_at.reset();
      row.last_used_at = now;
    }
    row.status = template_status::building;
    row.owner_id = *owner;
    row.node_id = want.node_id;
    row.retry_after.reset();
    row.updated_at = now;
    row.ssh_port = 0;
    templates_[row_id] = row;
    ports_[template_port_key(row_id)] = *port;
    return std::optional<template_record>(with_port(row));
  }

  result<template_record> finish_template(std::string_view id, std::string_view owner_id,
                                          bool ready, const std::string& last_error,
                                          std::optional<timestamp> retry_after,
                                          timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(id);
    auto it = canonical ? templates_.find(*canonical) : templates_.end();
    if (it == templates_.end())
      return make_error(errc::not_found, "template not found");
    auto& t = it->second;
    const auto owner = parse_uuid(owner_id);
    if (t.status != template_status::building || !owner || t.owner_id != owner)
      return make_error(errc::host_state, "template is " + std::string(to_string(t.status)) +
                                              " and no longer built by this instance");
    if (ready) {
      t.status = template_status::ready;
      t.last_error.clear();
      t.retry_after.reset();
      t.ready_at = now;
      t.last_used_at = now;
    } else {
      t.status = template_status::failed;
      t.last_error = last_error;
      t.retry_after = retry_after;
    }
    t.owner_id.reset();
    t.updated_at = now;
    ports_.erase(template_port_key(t.id));
    return with_port(t);
  }

  result<std::vector<template_record>> claim_stale_template_builds(timestamp now,
                                                                   const std::string& last_error,
                                                                   std::string_view self) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto me = parse_uuid(self);
    std::vector<template_record> out;
    for (auto& [id, t] : templates_) {
      const bool mine = me && t.owner_id && parse_uuid(*t.owner_id) == me;
      if (t.status != template_status::building || mine || !gone(t.owner_id, now))
        continue;
      t.status = template_status::failed;
      t.last_error = last_error;
      t.retry_after = now;
      t.owner_id.reset();
      t.updated_at = now;
      ports_.erase(template_port_key(id));
      out.push_back(with_port(t));
    }
    return out;
  }

  result<void> touch_template(std::string_view id, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(id);
    if (auto it = canonical ? templates_.find(*canonical) : templates_.end();
        it != templates_.end())
      it->second.last_used_at = now;
    return {};
  }

  result<bool> remove_template(std::string_view id,
                               const std::vector<template_status>& from) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(id);
    auto it = canonical ? templates_.find(*canonical) : templates_.end();
    if (it == templates_.end() ||
        std::find(from.begin(), from.end(), it->second.status) == from.end())
      return false;
    ports_.erase(template_port_key(it->first));
    templates_.erase(it);
    return true;
  }

  result<insert_outcome> insert_pool_member(const host_record& h, const template_key_row& key,
                                            int target, port_range ports, timestamp) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto id = parse_uuid(h.host.id);
    if (!id)
      return make_error(errc::internal, "host id is not a UUID");
    if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi)
      return make_error(errc::capacity, "no SSH port left");
    const auto live = std::count_if(hosts_.begin(), hosts_.end(), [&](const auto& e) {
      const auto s = e.second.host.status;
      return e.second.pooled && key_of(e.second) == key && s != schema::host_status::error &&
             s != schema::host_status::deleting;
    });
    if (live >= target)
      return insert_outcome{false, {}, true, 0};
    if (hosts_.count(*id) != 0)
      return make_error(errc::internal, "database error");  // the primary key refuses it
    if (auto full = refused_by_node(member_row(h, key)))
      return *full;
    const auto port = free_port(ports.lo, ports.hi);
    if (!port)
      return make_error(errc::capacity, "no SSH port left");
    auto row = member_row(h, key);
    row.host.id = *id;
    hosts_[*id] = row;
    ports_[*id] = *port;
    insert_outcome out{true, row, true, *port};
    if (std::exchange(lose_pool_insert_commit, false))
      return make_error(errc::outcome_unknown, "commit outcome unknown");
    return out;
  }

  result<std::optional<insert_outcome>> claim_pool_member(
      const pool_claim& c, const std::optional<idempotency_claim>& key, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    if (key) {
      auto it = keys_.find(key->ns + "\n" + key->key);
      if (it != keys_.end() && it->second.claim.expires_at > now &&
          hosts_.count(it->second.host_id) != 0) {
        const auto& stored = it->second.claim.fingerprint;
        return std::optional<insert_outcome>(insert_outcome{
            false, hosts_.at(it->second.host_id),
            stored == key->fingerprint ||
                (!key->legacy_fingerprint.empty() && stored == key->legacy_fingerprint)});
      }
    }
    auto m = std::find_if(hosts_.begin(), hosts_.end(), [&](const auto& e) {
      return e.second.pooled && e.second.host.status == schema::host_status::active &&
             key_of(e.second) == c.key;
    });
    if (m == hosts_.end())
      return std::optional<insert_outcome>();
    if (auto over = over_quota(c.as.ns, c.as.quota, c.as.host.cpus, c.as.host.memory_mib))
      return *over;
    auto& r = m->second;
    r.ns = c.as.ns;
    r.pooled = false;
    r.path = create_path::pool;
    r.host.status = schema::host_status::bootstrapping;
    r.host.image = c.as.host.image;
    r.host.instance_type = c.as.host.instance_type;
    r.host.expires_at = c.as.host.expires_at;
    r.host.activated_at.reset();
    r.host.created_at = c.as.host.created_at;
    r.host.updated_at = now;
    r.lease_seconds = c.as.lease_seconds;
    r.owner_id = c.as.owner_id;
    r.provision_deadline = c.as.provision_deadline;
    if (key)
      keys_[key->ns + "\n" + key->key] = key_row{*key, m->first};
    record(r, event_type::created, now);
    const auto port = ports_.find(m->first);
    insert_outcome out{true, r, true, port == ports_.end() ? 0 : port->second};
    if (std::exchange(lose_pool_claim_commit, false))
      return make_error(errc::outcome_unknown, "commit outcome unknown");
    return std::optional<insert_outcome>(out);
  }

  result<bool> retire_pool_member(std::string_view id, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto it = find(id);
    if (it == hosts_.end())
      return false;
    auto& r = it->second;
    if (!r.pooled || (r.host.status != schema::host_status::active &&
                      r.host.status != schema::host_status::error))
      return false;
    r.host.status = schema::host_status::deleting;
    r.host.updated_at = now;
    return true;
  }

  result<std::vector<host_record>> list_pool_members() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<host_record> out;
    for (const auto& [id, r] : hosts_) {
      if (r.pooled)
        out.push_back(r);
    }
    return out;
  }

  result<std::vector<pool_count>> count_pool() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::map<std::pair<template_key_row, schema::host_status>, std::int64_t> counts;
    for (const auto& [id, r] : hosts_) {
      if (r.pooled)
        ++counts[{key_of(r), r.host.status}];
    }
    std::vector<pool_count> out;
    for (const auto& [k, n] : counts)
      out.push_back(pool_count{k.first, k.second, n});
    return out;
  }

  result<std::vector<host_event>> list_events(const event_query& q) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::optional<std::string> host;
    if (q.host_id) {
      host = parse_uuid(*q.host_id);
      if (!host)
        return std::vector<host_event>{};
    }
    const bool whole_host_history =
        host && std::any_of(events_.begin(), events_.end(), [&](const host_event& e) {
          return e.host_id == *host && e.type == event_type::created;
        });
    if (q.after < pruned_through_ && !whole_host_history)
      return make_error(errc::history_gone, "event history no longer available");
    std::vector<host_event> out;
    for (const auto& e : events_) {
      if (e.id <= q.after || (host && e.host_id != *host) || (q.ns && e.ns != *q.ns))
        continue;
      if (!q.statuses.empty() &&
          std::find(q.statuses.begin(), q.statuses.end(), e.status) == q.statuses.end())
        continue;
      out.push_back(e);
      if (q.limit != 0 && out.size() == q.limit)
        break;
    }
    return out;
  }

  result<std::int64_t> newest_event_id() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    return events_.empty() ? pruned_through_ : std::max(pruned_through_, events_.back().id);
  }

  result<std::int64_t> prune_events(timestamp before) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::int64_t pruned = 0;
    for (auto e = events_.begin(); e != events_.end();) {
      if (e->at < before) {
        pruned_through_ = std::max(pruned_through_, e->id);
        ++pruned;
        e = events_.erase(e);
      } else {
        ++e;
      }
    }
    return pruned;
  }

  std::size_t key_count() {
    const std::lock_guard lock(mutex_);
    return keys_.size();
  }
  std::size_t port_count() {
    const std::lock_guard lock(mutex_);
    return ports_.size();
  }
  /// The ports leased now, to hosts and template builds.
  std::set<int> leased_ports() {
    const std::lock_guard lock(mutex_);
    std::set<int> out;
    for (const auto& [holder, port] : ports_)
      out.insert(port);
    return out;
  }

  // proxy_store

  result<bool> insert_proxy(const http_proxy_record& p) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto row = p;
    row.host_ids.clear();
    return proxies_.emplace(proxy_key(p.ns, p.name), std::move(row)).second;
  }

  result<bool> remove_proxy(std::string_view ns, std::string_view name) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    return proxies_.erase(proxy_key(ns, name)) != 0;
  }

  result<attach_outcome> attach_proxy(std::string_view ns, std::string_view name,
                                      std::string_view host_id, timestamp) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto p = proxies_.find(proxy_key(ns, name));
    if (p == proxies_.end())
      return attach_outcome::no_proxy;
    const auto h = find(host_id);
    if (h == hosts_.end() || h->second.pooled || h->second.ns != ns)
      return attach_outcome::no_host;
    const auto status = h->second.host.status;
    if (status != schema::host_status::bootstrapping && status != schema::host_status::active)
      return attach_outcome::host_not_live;
    auto& ids = p->second.host_ids;
    if (std::find(ids.begin(), ids.end(), h->first) == ids.end()) {
      ids.push_back(h->first);
      std::sort(ids.begin(), ids.end());
    }
    return attach_outcome::attached;
  }

  result<bool> detach_proxy(std::string_view ns, std::string_view name,
                            std::string_view host_id) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto p = proxies_.find(proxy_key(ns, name));
    const auto canonical = parse_uuid(host_id);
    if (p == proxies_.end() || !canonical)
      return false;
    return std::erase(p->second.host_ids, *canonical) != 0;
  }

  result<std::vector<http_proxy_record>> list_proxies(std::string_view ns) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<http_proxy_record> out;
    for (const auto& [key, p] : proxies_) {
      if (p.ns == ns) {
        out.push_back(p);
        out.back().headers.clear();
      }
    }
    return out;
  }

  result<std::optional<http_proxy_record>> find_attached_proxy(std::string_view host_id,
                                                               std::string_view name) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(host_id);
    if (!canonical)
      return std::optional<http_proxy_record>();
    for (const auto& [key, p] : proxies_) {
      if (p.name == name &&
          std::find(p.host_ids.begin(), p.host_ids.end(), *canonical) != p.host_ids.end()) {
        auto out = p;
        out.host_ids = {*canonical};
        return std::optional<http_proxy_record>(std::move(out));
      }
    }
    return std::optional<http_proxy_record>();
  }

  // tenant_store

  result<void> insert_key(const api_key_record& k) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const bool taken = std::any_of(api_keys_.begin(), api_keys_.end(), [&](const auto& e) {
      return e.id == k.id || e.key_hash == k.key_hash;
    });
    if (taken)
      return make_error(errc::internal, "database error");  // the unique constraints
    api_keys_.push_back(k);
    return {};
  }

  result<std::vector<api_key_record>> list_keys() override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<api_key_record> out;
    for (const auto& k : api_keys_) {
      if (!k.revoked_at)
        out.push_back(k);
    }
    return out;
  }

  result<bool> revoke_key(std::string_view id, timestamp now) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    const auto canonical = parse_uuid(id);
    for (auto& k : api_keys_) {
      if (canonical && k.id == *canonical && !k.revoked_at) {
        k.revoked_at = now;
        return true;
      }
    }
    return false;
  }

  result<std::optional<api_key_record>> find_key(std::string_view key_hash) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    for (const auto& k : api_keys_) {
      if (k.key_hash == key_hash && !k.revoked_at)
        return std::optional<api_key_record>(k);
    }
    return std::optional<api_key_record>();
  }

  result<std::int64_t> append_audit(const audit_entry& e) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    auto row = e;
    row.id = static_cast<std::int64_t>(audit_.size()) + 1;
    if (row.host_id)
      row.host_id = parse_uuid(*row.host_id);
    audit_.push_back(row);
    return row.id;
  }

  result<std::vector<audit_entry>> list_audit(const audit_query& q) override {
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<audit_entry> out;
    for (const auto& e : audit_) {
      if (e.id <= q.after || (q.ns && e.ns != q.ns))
        continue;
      if (out.size() == q.limit)
        break;
      out.push_back(e);
    }
    return out;
  }

 private:
  static error unavailable() { return make_error(errc::unavailable, "database unavailable"); }

  /// The row of `id` in any letter case; end() when there is none or it is no UUID.
  std::map<std::string, host_record>::iterator find(std::string_view id) {
    const auto canonical = parse_uuid(id);
    return canonical ? hosts_.find(*canonical) : hosts_.end();
  }

  /// Appends the event of a change to `r` (what the hosts_events trigger does); pool members
  /// have none.
  void record(const host_record& r, event_type type, timestamp at) {
    if (r.pooled)
      return;
    events_.push_back(
        host_event{next_event_++, r.host.id, type, r.host.status, at, r.host.last_error, r.ns});
  }

  /// node_record `n` with what its hosts hold now.
  node_record with_usage(node_record n) const {
    n.hosts = n.used_cpus = n.used_memory_mib = 0;
    for (const auto& [id, r] : hosts_) {
      if (r.node_id != n.id || r.host.status == schema::host_status::error)
        continue;
      ++n.hosts;
      n.used_cpus += r.host.cpus;
      n.used_memory_mib += r.host.memory_mib;
    }
    return n;
  }

  /// What pg_store's refused_by_node checks, under the store's one lock.
  std::optional<error> refused_by_node(const host_record& h) const {
    if (!h.node_id)
      return std::nullopt;
    const auto it = std::find_if(nodes_.begin(), nodes_.end(),
                                 [&](const node_record& n) { return n.id == *h.node_id; });
    if (it == nodes_.end())
      return make_error(errc::capacity, "no node " + *h.node_id);
    return node_refusal(with_usage(*it), h.host.cpus, h.host.memory_mib);
  }

  /// What pg_store's place_on_node does, under the store's one lock.
  std::optional<error> place_on_node(host_record& h) const {
    if (h.node_id || h.node_choices.empty())
      return refused_by_node(h);
    std::vector<node_record> candidates;
    for (const auto& n : nodes_) {
      if (std::find(h.node_choices.begin(), h.node_choices.end(), n.id) != h.node_choices.end())
        candidates.push_back(with_usage(n));
    }
    auto chosen = choose_node(candidates, h.prefer_node, h.host.cpus, h.host.memory_mib);
    if (!chosen)
      return chosen.error();
    h.node_id = chosen->id;
    if (!chosen->ssh_host.empty())
      h.host.ssh_host = chosen->ssh_host;
    return std::nullopt;
  }

  node_record* find_node(std::string_view node) {
    const auto it = std::find_if(nodes_.begin(), nodes_.end(), [&](const node_record& n) {
      return n.id == node || n.uri == node;
    });
    return it == nodes_.end() ? nullptr : &*it;
  }

  /// What pg_store's over_quota checks, under the store's one lock.
  std::optional<error> over_quota(const std::string& ns, const namespace_quota& q, int cpus,
                                  int memory_mib) const {
    std::int64_t hosts = 0;
    std::int64_t used_cpus = 0;
    std::int64_t used_memory = 0;
    for (const auto& [id, r] : hosts_) {
      if (r.pooled || r.ns != ns || r.host.status == schema::host_status::error)
        continue;
      ++hosts;
      used_cpus += r.host.cpus;
      used_memory += r.host.memory_mib;
    }
    const auto exceeded = [](const char* what, std::int64_t limit) {
      return make_error(errc::quota,
                        "quota exceeded: " + std::string(what) + "=" + std::to_string(limit));
    };
    if (q.max_hosts && hosts + 1 > *q.max_hosts)
      return exceeded("max_hosts", *q.max_hosts);
    if (q.max_cpus && used_cpus + cpus > *q.max_cpus)
      return exceeded("max_cpus", *q.max_cpus);
    if (q.max_memory_mib && used_memory + memory_mib > *q.max_memory_mib)
      return exceeded("max_memory_mib", *q.max_memory_mib);
    return std::nullopt;
  }

  /// A free port of [lo, hi], or the one `holder` already leases.
  std::optional<int> free_port(int lo, int hi, const std::string& holder = {},
                               const std::vector<int>& avoid = {}) const {
    if (auto held = ports_.find(holder); !holder.empty() && held != ports_.end())
      return held->second;
    for (int p = lo; p <= hi; ++p) {
      if (std::find(avoid.begin(), avoid.end(), p) != avoid.end())
        continue;
      const bool used =
          std::any_of(ports_.begin(), ports_.end(), [p](const auto& e) { return e.second == p; });
      if (!used)
        return p;
    }
    return std::nullopt;
  }

  /// Ports leased to template builds share ports_ with hosts under a key no host id can be.
  static std::string template_port_key(const std::string& template_id) {
    return "template:" + template_id;
  }

  /// `t` with ssh_port = the port its build leases (0 when none).
  template_record with_port(template_record t) const {
    const auto p = ports_.find(template_port_key(t.id));
    t.ssh_port = p == ports_.end() ? 0 : p->second;
    return t;
  }

  /// No owner, or no beat within three of the owner's own intervals.
  bool gone(const std::optional<std::string>& owner, timestamp now) const {
    const auto b = owner ? beats_.find(parse_uuid(*owner).value_or(*owner)) : beats_.end();
    return b == beats_.end() || b->second.at < now - 3 * b->second.interval;
  }

  /// The pool key a host row serves (the columns a template is keyed by).
  static template_key_row key_of(const host_record& r) {
    return template_key_row{r.host.image_digest.value_or(""), r.host.cpus, r.host.memory_mib,
                            r.host.disk_gb, r.host.ssh_username};
  }

  /// `h` as a new pool member of `key`: pooled, provisioning, the key's columns.
  static host_record member_row(const host_record& h, const template_key_row& key) {
    auto row = h;
    row.pooled = true;
    row.host.status = schema::host_status::provisioning;
    row.host.image_digest = key.image_digest;
    row.host.cpus = key.cpus;
    row.host.memory_mib = key.memory_mib;
    row.host.disk_gb = key.disk_gb;
    row.host.ssh_username = key.ssh_username;
    return row;
  }

  struct beat {
    timestamp at;
    std::chrono::seconds interval;
  };

  struct key_row {
    idempotency_claim claim;
    std::string host_id;
  };
  std::mutex mutex_;
  std::map<std::string, host_record> hosts_;  // ids are UUIDv7: map order is creation order
  std::vector<node_record> nodes_;            // registration order
  std::map<std::string, key_row> keys_;
  std::map<std::string, int> ports_;  // host id, or template_port_key of a template id
  std::map<std::string, beat> beats_;
  std::map<std::string, template_record> templates_;  // by id
  // HTTP proxies by proxy_key (namespace and name, which is the list order).
  std::map<std::string, http_proxy_record> proxies_;

  static std::string proxy_key(std::string_view ns, std::string_view name) {
    return std::string(ns) + "\n" + std::string(name);
  }
  std::vector<host_event> events_;        // id order
  std::vector<api_key_record> api_keys_;  // insertion order
  std::vector<audit_entry> audit_;        // id order
  std::int64_t next_event_ = 1;
  std::int64_t pruned_through_ = 0;
};

}  // namespace litterbox::controlplane::testing
