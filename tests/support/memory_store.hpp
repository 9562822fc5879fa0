#pragma once

#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/store.hpp"

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
class memory_store final : public store {
 public:
  std::atomic<bool> down = false;
  /// The next insert_host lands but reports outcome_unknown.
  bool lose_insert_commit = false;
  /// The next transition to this status lands but reports outcome_unknown.
  std::optional<schema::host_status> lose_commit_to;
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
    const auto port = free_port(ports.lo, ports.hi);
    if (!port)
      return make_error(errc::capacity, "no SSH port left");
    auto row = h;
    row.host.id = *id;
    if (key)
      keys_[key->ns + "\n" + key->key] = key_row{*key, *id};
    hosts_[*id] = row;
    ports_[*id] = *port;
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
      if (after && h.id >= *after)
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
    r.host.updated_at = now;
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
    hosts_.erase(*canonical);
    ports_.erase(*canonical);
    for (auto k = keys_.begin(); k != keys_.end();) {
      k = k->second.host_id == *canonical ? keys_.erase(k) : std::next(k);
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
    for (const auto& [id, r] : hosts_)
      ++out[r.host.status];
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
    beats_[std::string(instance_id)] = beat{now, std::max(interval, std::chrono::seconds(1))};
    return {};
  }

  result<std::vector<interrupted_host>> claim_interrupted(timestamp now, std::chrono::seconds grace,
                                                          const std::string& interrupted_prefix,
                                                          const std::string& overdue_prefix,
                                                          std::size_t limit) override {
    if (before_claim)
      before_claim();
    const std::lock_guard lock(mutex_);
    if (down)
      return unavailable();
    std::vector<interrupted_host> out;
    for (auto& [id, r] : hosts_) {
      if (out.size() == limit)
        break;
      if (!schema::is_provisioning(r.host.status))
        continue;
      const auto b = r.owner_id ? beats_.find(*r.owner_id) : beats_.end();
      const bool gone = b == beats_.end() || b->second.at < now - 3 * b->second.interval;
      const bool overdue = r.provision_deadline && *r.provision_deadline + grace < now;
      if (!gone && !overdue)
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
          if (r.owner_id == b->first)
            r.owner_id.reset();
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
    return std::vector<std::string>(out.begin(), out.end());
  }

  result<void> ping() override {
    if (down)
      return unavailable();
    return {};
  }

  std::size_t key_count() {
    const std::lock_guard lock(mutex_);
    return keys_.size();
  }
  std::size_t port_count() {
    const std::lock_guard lock(mutex_);
    return ports_.size();
  }

 private:
  static error unavailable() { return make_error(errc::unavailable, "database unavailable"); }

  /// The row of `id` in any letter case; end() when there is none or it is no UUID.
  std::map<std::string, host_record>::iterator find(std::string_view id) {
    const auto canonical = parse_uuid(id);
    return canonical ? hosts_.find(*canonical) : hosts_.end();
  }

  std::optional<int> free_port(int lo, int hi) const {
    for (int p = lo; p <= hi; ++p) {
      const bool used =
          std::any_of(ports_.begin(), ports_.end(), [p](const auto& e) { return e.second == p; });
      if (!used)
        return p;
    }
    return std::nullopt;
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
  std::map<std::string, key_row> keys_;
  std::map<std::string, int> ports_;
  std::map<std::string, beat> beats_;
};

}  // namespace litterbox::controlplane::testing
