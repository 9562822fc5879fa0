#pragma once

#include "base/result.hpp"
#include "controlplane/core/proxy_store.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/core/tenancy.hpp"
#include "controlplane/pg/session_limits.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace litterbox::controlplane::pg {

class connection_pool;

/// The PostgreSQL `store` (libpqxx). Holds a bounded connection pool that is filled lazily,
/// so constructing one never touches the network; a database that is down makes calls fail
/// with errc::unavailable, and later calls reconnect by themselves. Thread-safe. It is also
/// the `proxy_store` and the `tenant_store`, on the same connections.
class pg_store final : public store, public proxy_store, public tenant_store {
 public:
  /// `url` is a libpq connection string or URI; `pool_size` bounds open connections;
  /// `acquire_timeout` bounds how long a call waits for a free connection; `limits` bound
  /// every session (see with_session_limits: what `url` sets itself wins). A call that hits
  /// a statement or lock timeout fails with errc::unavailable. heartbeat() has a connection
  /// of its own, so a busy request pool cannot starve it. Throws error_exception when `url`
  /// cannot be parsed (a start-up error).
  pg_store(std::string url, std::size_t pool_size,
           std::chrono::milliseconds acquire_timeout = std::chrono::seconds(5),
           const session_limits& limits = {});
  pg_store(const pg_store&) = delete;
  pg_store& operator=(const pg_store&) = delete;
  pg_store(pg_store&&) = delete;
  pg_store& operator=(pg_store&&) = delete;
  ~pg_store() override;

  result<insert_outcome> insert_host(const host_record& h,
                                     const std::optional<idempotency_claim>& key, port_range ports,
                                     timestamp now) override;
  result<host_record> get_host(std::string_view id) override;
  result<std::vector<host_record>> list_hosts(const list_query& q) override;
  result<host_record> transition(std::string_view id, const std::vector<schema::host_status>& from,
                                 const host_patch& patch, timestamp now) override;
  result<host_record> renew(std::string_view id, timestamp expires_at, timestamp now) override;
  result<void> remove_host(std::string_view id) override;
  result<int> allocate_port(std::string_view host_id, int lo, int hi, timestamp now) override;
  result<node_record> register_node(const node_report& r, timestamp now) override;
  result<std::vector<node_record>> list_nodes() override;
  result<node_record> set_node_state(std::string_view node, node_state state,
                                     timestamp now) override;
  result<node_record> configure_node(std::string_view node, const node_settings& s,
                                     timestamp now) override;
  result<node_record> remove_node(std::string_view node) override;
  result<int> expire_node_hosts(std::string_view node_id, timestamp now) override;
  result<int> move_port(std::string_view host_id, int lo, int hi, const std::vector<int>& avoid,
                        timestamp now) override;
  result<std::map<schema::host_status, std::int64_t>> count_by_status() override;
  result<std::vector<host_record>> claim_expired(timestamp now, timestamp error_cutoff,
                                                 std::size_t limit) override;
  result<void> heartbeat(std::string_view instance_id, std::string_view hostname, int pid,
                         std::chrono::seconds interval, timestamp now) override;
  result<std::vector<interrupted_host>> claim_interrupted(timestamp now, std::chrono::seconds grace,
                                                          const std::string& interrupted_prefix,
                                                          const std::string& overdue_prefix,
                                                          std::size_t limit,
                                                          std::string_view self) override;
  result<int> prune_instances(timestamp now) override;
  result<std::vector<std::string>> all_host_ids() override;
  result<std::vector<std::string>> image_digests_in_use() override;
  result<void> ping() override;
  result<std::optional<template_record>> find_template(const template_key_row& key) override;
  result<std::vector<template_record>> list_templates() override;
  result<std::optional<template_record>> claim_template_build(const template_record& want,
                                                              port_range ports,
                                                              timestamp now) override;
  result<template_record> finish_template(std::string_view id, std::string_view owner_id,
                                          bool ready, const std::string& last_error,
                                          std::optional<timestamp> retry_after,
                                          timestamp now) override;
  result<std::vector<template_record>> claim_stale_template_builds(timestamp now,
                                                                   const std::string& last_error,
                                                                   std::string_view self) override;
  result<void> touch_template(std::string_view id, timestamp now) override;
  result<bool> remove_template(std::string_view id,
                               const std::vector<template_status>& from) override;
  result<insert_outcome> insert_pool_member(const host_record& h, const template_key_row& key,
                                            int target, port_range ports, timestamp now) override;
  result<std::optional<insert_outcome>> claim_pool_member(
      const pool_claim& c, const std::optional<idempotency_claim>& key, timestamp now) override;
  result<bool> retire_pool_member(std::string_view id, timestamp now) override;
  result<std::vector<host_record>> list_pool_members() override;
  result<std::vector<pool_count>> count_pool() override;
  result<std::vector<host_event>> list_events(const event_query& q) override;
  result<std::int64_t> newest_event_id() override;
  result<std::int64_t> prune_events(timestamp before) override;

  result<bool> insert_proxy(const http_proxy_record& p) override;
  result<bool> remove_proxy(std::string_view ns, std::string_view name) override;
  result<attach_outcome> attach_proxy(std::string_view ns, std::string_view name,
                                      std::string_view host_id, timestamp now) override;
  result<bool> detach_proxy(std::string_view ns, std::string_view name,
                            std::string_view host_id) override;
  result<std::vector<http_proxy_record>> list_proxies(std::string_view ns) override;
  result<std::optional<http_proxy_record>> find_attached_proxy(std::string_view host_id,
                                                               std::string_view name) override;

  result<void> insert_key(const api_key_record& k) override;
  result<std::vector<api_key_record>> list_keys() override;
  result<bool> revoke_key(std::string_view id, timestamp now) override;
  result<std::optional<api_key_record>> find_key(std::string_view key_hash) override;
  result<std::int64_t> append_audit(const audit_entry& e) override;
  result<std::vector<audit_entry>> list_audit(const audit_query& q) override;

 private:
  std::unique_ptr<connection_pool> pool_;
  std::unique_ptr<connection_pool> heartbeat_pool_;
};

}  // namespace litterbox::controlplane::pg

namespace litterbox::controlplane {
using pg::pg_store;
}  // namespace litterbox::controlplane
