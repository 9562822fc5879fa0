#include "controlplane/pg/pg_store.hpp"

#include "base/log.hpp"
#include "base/time.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/pg/connection_pool.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace litterbox::controlplane::pg {
namespace {

using schema::host_status;

// Every timestamp is read as exact epoch microseconds: extract() returns numeric since
// PostgreSQL 14, so nothing is rounded through a double.
constexpr const char* host_columns =
    "h.id::text, h.name, h.status, h.provider, h.image, h.image_digest, h.instance_type, "
    "h.cpus, h.memory_mib, h.disk_gb, h.ssh_host, h.ssh_port, h.internal_ssh_host, "
    "h.ssh_username, h.known_hosts, h.last_error, h.lease_seconds, h.owner_id::text, "
    "(extract(epoch from h.created_at) * 1000000)::bigint, "
    "(extract(epoch from h.updated_at) * 1000000)::bigint, "
    "(extract(epoch from h.activated_at) * 1000000)::bigint, "
    "(extract(epoch from h.expires_at) * 1000000)::bigint, "
    "(extract(epoch from h.provision_deadline) * 1000000)::bigint, h.pooled, h.create_path, "
    "h.namespace, h.node_id::text";
constexpr int host_column_count = 27;

constexpr const char* node_columns =
    "n.id::text, n.uri, n.ssh_host, n.cpus, n.memory_mib, n.reserved_cpus, "
    "n.reserved_memory_mib, n.cpu_overcommit, n.memory_overcommit, n.state, "
    "(extract(epoch from n.created_at) * 1000000)::bigint, "
    "(extract(epoch from n.updated_at) * 1000000)::bigint, "
    "(extract(epoch from n.last_seen_at) * 1000000)::bigint";
// What the hosts on node n.id hold: the ones not in error (whose VM is released).
constexpr const char* node_usage_of_n =
    "(SELECT count(*) FROM hosts u WHERE u.node_id = n.id AND u.status <> 'error'), "
    "(SELECT COALESCE(sum(u.cpus), 0) FROM hosts u WHERE u.node_id = n.id AND "
    "u.status <> 'error'), "
    "(SELECT COALESCE(sum(u.memory_mib), 0) FROM hosts u WHERE u.node_id = n.id AND "
    "u.status <> 'error')";

constexpr const char* template_columns =
    "t.id::text, t.image_digest, t.cpus, t.memory_mib, t.disk_gb, t.ssh_username, t.image, "
    "t.status, t.owner_id::text, t.last_error, "
    "(extract(epoch from t.retry_after) * 1000000)::bigint, "
    "(extract(epoch from t.created_at) * 1000000)::bigint, "
    "(extract(epoch from t.updated_at) * 1000000)::bigint, "
    "(extract(epoch from t.ready_at) * 1000000)::bigint, "
    "(extract(epoch from t.last_used_at) * 1000000)::bigint, "
    "(SELECT s.port FROM ssh_ports s WHERE s.template_id = t.id), t.node_id::text";

// The pool key's columns of a host row ($1..$5: digest, cpus, memory_mib, disk_gb, user).
constexpr const char* host_key_match =
    "h.image_digest = $1 AND h.cpus = $2::integer AND h.memory_mib = $3::integer AND "
    "h.disk_gb IS NOT DISTINCT FROM $4::integer AND h.ssh_username = $5";
// The same for a template row; templates_key_idx is on COALESCE(disk_gb, 0).
constexpr const char* template_key_match =
    "t.image_digest = $1 AND t.cpus = $2::integer AND t.memory_mib = $3::integer AND "
    "COALESCE(t.disk_gb, 0) = COALESCE($4::integer, 0) AND t.ssh_username = $5";
// An instance that beat within three of its own intervals before $1 (claim_interrupted's
// rule for "the owner is gone", negated).
constexpr const char* owner_alive =
    "EXISTS (SELECT 1 FROM instances i WHERE i.id = t.owner_id AND i.heartbeat_at >= "
    "$1::timestamptz - make_interval(secs => 3.0 * i.heartbeat_interval_s))";
// The class of the two-key advisory locks that serialise refills of one pool key (the
// two-key space does not overlap the migrations' single-key lock).
constexpr int pool_lock_class = 0x706f6f6c;  // "pool"
// The class of the two-key advisory locks under which a namespace's quota is checked and its
// new host inserted (or claimed), so that concurrent creates never overshoot the quota.
constexpr int quota_lock_class = 0x6e73716f;  // "nsqo"

constexpr int max_attempts = 5;
constexpr int port_attempts = 200;

std::string cols() {
  return host_columns;
}

std::string tcols() {
  return template_columns;
}

// Statements prepared on every connection; the hot ones (get_host) cost one round trip.
std::vector<std::pair<std::string, std::string>> statements() {
  const std::string c = cols();
  const std::string tc = tcols();
  const std::string owner_alive_at_1 = owner_alive;
  return {
      {"get_host", "SELECT " + c + " FROM hosts h WHERE h.id = $1::uuid"},
      {"lock_host", "SELECT 1 FROM hosts WHERE id = $1::uuid FOR UPDATE"},
      {"insert_host",
       "INSERT INTO hosts AS h (id, name, status, provider, image, image_digest, instance_type, "
       "cpus, memory_mib, disk_gb, ssh_host, ssh_port, internal_ssh_host, ssh_username, "
       "known_hosts, last_error, lease_seconds, owner_id, created_at, updated_at, activated_at, "
       "expires_at, provision_deadline, pooled, create_path, namespace, node_id) VALUES "
       "($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
       "$18::uuid, $19::timestamptz, $20::timestamptz, $21::timestamptz, $22::timestamptz, "
       "$23::timestamptz, $24::boolean, $25, $26, $27::uuid) RETURNING " +
           c},
      {"register_node",
       "INSERT INTO nodes AS n (id, uri, ssh_host, cpus, memory_mib, created_at, updated_at, "
       "last_seen_at) VALUES ($1::uuid, $2, $3, $4, $5, $6::timestamptz, $6::timestamptz, "
       "$6::timestamptz) ON CONFLICT (uri) DO UPDATE SET ssh_host = EXCLUDED.ssh_host, "
       "cpus = EXCLUDED.cpus, memory_mib = EXCLUDED.memory_mib, updated_at = "
       "EXCLUDED.updated_at, last_seen_at = EXCLUDED.last_seen_at RETURNING n.id::text"},
      {"adopt_hosts", "UPDATE hosts SET node_id = $1::uuid WHERE node_id IS NULL"},
      {"adopt_templates", "UPDATE templates SET node_id = $1::uuid WHERE node_id IS NULL"},
      {"lock_node_by_name",
       "SELECT id::text FROM nodes WHERE id::text = $1 OR uri = $1 FOR UPDATE"},
      {"node_host_count", "SELECT count(*) FROM hosts WHERE node_id = $1::uuid"},
      {"delete_node", "DELETE FROM nodes WHERE id = $1::uuid"},
      {"list_nodes", "SELECT " + std::string(node_columns) + ", " + node_usage_of_n +
                         " FROM nodes n ORDER BY n.created_at, n.id"},
      {"get_node", "SELECT " + std::string(node_columns) + ", " + node_usage_of_n +
                       " FROM nodes n WHERE n.id::text = $1 OR n.uri = $1"},
      {"set_node_state",
       "UPDATE nodes SET state = $2, updated_at = $3::timestamptz WHERE id::text = $1 OR "
       "uri = $1 RETURNING id::text"},
      {"configure_node",
       "UPDATE nodes SET reserved_cpus = COALESCE($2::integer, reserved_cpus), "
       "reserved_memory_mib = COALESCE($3::bigint, reserved_memory_mib), cpu_overcommit = "
       "COALESCE($4::double precision, cpu_overcommit), memory_overcommit = "
       "COALESCE($5::double precision, memory_overcommit), updated_at = $6::timestamptz "
       "WHERE id::text = $1 OR uri = $1 RETURNING id::text"},
      {"lock_node", "SELECT 1 FROM nodes WHERE id = $1::uuid FOR UPDATE"},
      {"expire_node_hosts",
       // The activation lease is dropped too: a bootstrapping host's activation would
       // otherwise stamp a new expires_at over this one.
       "UPDATE hosts SET expires_at = $2::timestamptz, lease_seconds = NULL WHERE node_id = "
       "$1::uuid AND status IN ('active', 'bootstrapping') AND (expires_at IS NULL OR "
       "expires_at > $2::timestamptz)"},
      {"delete_expired_key",
       "DELETE FROM idempotency_keys WHERE namespace = $1 AND key = $2 AND expires_at <= "
       "$3::timestamptz"},
      {"insert_key",
       "INSERT INTO idempotency_keys (namespace, key, fingerprint, host_id, created_at, "
       "expires_at) VALUES ($1, $2, $3, $4::uuid, $5::timestamptz, $6::timestamptz) "
       "ON CONFLICT DO NOTHING RETURNING 1"},
      {"key_host", "SELECT " + c +
                       ", k.fingerprint FROM idempotency_keys k JOIN hosts h ON h.id = k.host_id "
                       "WHERE k.namespace = $1 AND k.key = $2"},
      {"list_hosts",
       "SELECT " + c +
           " FROM hosts h WHERE NOT h.pooled AND ($1::text[] IS NULL OR h.status = "
           "ANY($1::text[])) "
           "AND ($2::uuid IS NULL OR h.id < $2::uuid) AND ($4::text IS NULL OR h.namespace = $4) "
           "ORDER BY h.id DESC LIMIT $3::bigint"},
      {"lock_namespace",
       "SELECT pg_advisory_xact_lock(" + std::to_string(quota_lock_class) + ", hashtext($1))"},
      {"namespace_usage",
       "SELECT count(*), COALESCE(sum(cpus), 0), COALESCE(sum(memory_mib), 0) FROM hosts "
       "WHERE namespace = $1 AND NOT pooled AND status <> 'error'"},
      {"host_status", "SELECT status FROM hosts WHERE id = $1::uuid"},
      {"renew",
       "UPDATE hosts h SET expires_at = $2::timestamptz, lease_seconds = NULL, "
       "updated_at = $3::timestamptz WHERE h.id = $1::uuid "
       "AND h.status IN ('bootstrapping', 'active') RETURNING " +
           c},
      {"remove_host", "DELETE FROM hosts WHERE id = $1::uuid"},
      {"release_keys", "DELETE FROM idempotency_keys WHERE host_id = $1::uuid"},
      {"release_port", "DELETE FROM ssh_ports WHERE host_id = $1::uuid"},
      {"port_of", "SELECT port FROM ssh_ports WHERE host_id = $1::uuid"},
      {"port_of_template", "SELECT port FROM ssh_ports WHERE template_id = $1::uuid"},
      {"free_port",
       // Concurrent creates must not all race for the same port: each searches the range
       // from its own starting point ($3, derived from its host id), wrapping around.
       // $4 are ports this node found bound by something else (move_port).
       "SELECT p FROM generate_series($1::int, $2::int) AS p WHERE NOT EXISTS "
       "(SELECT 1 FROM ssh_ports s WHERE s.port = p) AND p <> ALL($4::int[]) "
       "ORDER BY (p - $1::int + $3::int) % ($2::int - $1::int + 1) LIMIT 1"},
      {"lease_port",
       "INSERT INTO ssh_ports (port, host_id, leased_at) VALUES ($1, $2::uuid, $3::timestamptz) "
       "ON CONFLICT DO NOTHING RETURNING port"},
      {"lease_template_port",
       "INSERT INTO ssh_ports (port, template_id, leased_at) VALUES ($1, $2::uuid, "
       "$3::timestamptz) ON CONFLICT DO NOTHING RETURNING port"},
      {"count_by_status", "SELECT status, count(*) FROM hosts WHERE NOT pooled GROUP BY status"},
      // The due condition is evaluated again on the newest row version when the row lock is
      // taken (READ COMMITTED re-check), and once more by the UPDATE: a renewal that
      // committed first wins. SKIP LOCKED keeps concurrent reapers from waiting on each other.
      {"claim_expired",
       "WITH due AS (SELECT id FROM hosts WHERE (status IN ('active', 'bootstrapping') "
       "AND expires_at <= $1::timestamptz) OR (status IN ('error', 'deleting') "
       "AND updated_at < $2::timestamptz) ORDER BY id LIMIT $3::bigint FOR UPDATE SKIP LOCKED) "
       "UPDATE hosts h SET status = 'deleting', updated_at = $1::timestamptz FROM due "
       "WHERE h.id = due.id AND ((h.status IN ('active', 'bootstrapping') AND h.expires_at <= "
       "$1::timestamptz) OR (h.status IN ('error', 'deleting') AND h.updated_at < "
       "$2::timestamptz)) "
       "RETURNING " +
           c},
      {"heartbeat",
       "INSERT INTO instances (id, hostname, pid, started_at, heartbeat_at, heartbeat_interval_s) "
       "VALUES ($1::uuid, $2, $3, $4::timestamptz, $4::timestamptz, $5) ON CONFLICT (id) DO "
       "UPDATE SET hostname = excluded.hostname, pid = excluded.pid, heartbeat_at = "
       "excluded.heartbeat_at, heartbeat_interval_s = excluded.heartbeat_interval_s"},
      // Claim first: the rows move to `error` in this statement, so an owner that is merely
      // slow finds its next compare-and-set failing instead of racing the teardown. The lock
      // is taken on hosts only (SKIP LOCKED: concurrent sweeps never claim one row twice) and
      // the UPDATE re-checks the status it claimed from.
      {"claim_interrupted",
       "WITH due AS (SELECT h.id, h.status AS was, (h.provision_deadline IS NOT NULL AND "
       "h.provision_deadline + make_interval(secs => $2::double precision) < $1::timestamptz) "
       "AS overdue FROM hosts h LEFT JOIN instances i ON i.id = h.owner_id WHERE h.status IN "
       "('provisioning', 'pulling_image', 'creating_vm', 'bootstrapping') AND "
       "(h.owner_id IS NULL OR ((i.id IS NULL OR i.heartbeat_at < $1::timestamptz - "
       "make_interval(secs => 3.0 * i.heartbeat_interval_s)) AND h.owner_id IS DISTINCT FROM "
       "NULLIF($6, '')::uuid) OR (h.provision_deadline IS NOT "
       "NULL AND h.provision_deadline + make_interval(secs => $2::double precision) < "
       "$1::timestamptz)) ORDER BY h.id LIMIT $5::bigint FOR UPDATE OF h SKIP LOCKED) "
       "UPDATE hosts h SET status = 'error', last_error = (CASE WHEN due.overdue THEN $4 ELSE "
       "$3 END) || due.was, owner_id = NULL, lease_seconds = NULL, updated_at = "
       "$1::timestamptz FROM due WHERE h.id = due.id AND h.status = due.was RETURNING " +
           c + ", due.was, due.overdue"},
      {"release_keys_of", "DELETE FROM idempotency_keys WHERE host_id = ANY($1::uuid[])"},
      {"prune_instances",
       "DELETE FROM instances WHERE heartbeat_at < $1::timestamptz - make_interval(secs => "
       "greatest(3.0 * heartbeat_interval_s, 3600.0))"},
      {"all_ids", "SELECT id::text FROM hosts ORDER BY id"},
      {"digests_in_use",
       "SELECT image_digest FROM hosts WHERE image_digest IS NOT NULL UNION "
       "SELECT image_digest FROM templates"},
      {"ping", "SELECT 1"},
      {"find_template", "SELECT " + tc + " FROM templates t WHERE " + template_key_match},
      {"get_template", "SELECT " + tc + " FROM templates t WHERE t.id = $1::uuid"},
      {"list_templates", "SELECT " + tc + " FROM templates t ORDER BY t.created_at, t.id"},
      {"insert_template",
       "INSERT INTO templates (id, image_digest, cpus, memory_mib, disk_gb, ssh_username, image, "
       "status, owner_id, last_error, retry_after, created_at, updated_at, ready_at, "
       "last_used_at, node_id) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, 'building', $8::uuid, "
       "'', NULL, $9::timestamptz, $9::timestamptz, NULL, $9::timestamptz, $10::uuid) ON "
       "CONFLICT (image_digest, "
       "cpus, memory_mib, (COALESCE(disk_gb, 0)), ssh_username) DO NOTHING RETURNING id::text"},
      {"lock_template_of_key", "SELECT t.id::text FROM templates t WHERE " +
                                   std::string(template_key_match) + " FOR UPDATE"},
      // Runs with the row locked, in a snapshot newer than the lock: the owner's liveness
      // is judged on the latest beat.
      {"take_over_template",
       "UPDATE templates t SET status = 'building', owner_id = $3::uuid, retry_after = NULL, "
       "ready_at = NULL, updated_at = $1::timestamptz, node_id = $4::uuid WHERE t.id = "
       "$2::uuid AND "
       "((t.status = 'failed' AND t.retry_after <= $1::timestamptz) OR (t.status = 'building' "
       "AND NOT " +
           owner_alive_at_1 + ")) RETURNING t.id"},
      {"finish_template",
       "UPDATE templates t SET status = CASE WHEN $4::boolean THEN 'ready' ELSE 'failed' END, "
       "owner_id = NULL, last_error = CASE WHEN $4::boolean THEN '' ELSE $5 END, "
       "retry_after = CASE WHEN $4::boolean THEN NULL ELSE $6::timestamptz END, "
       "ready_at = CASE WHEN $4::boolean THEN $1::timestamptz ELSE t.ready_at END, "
       "last_used_at = CASE WHEN $4::boolean THEN $1::timestamptz ELSE t.last_used_at END, "
       "updated_at = $1::timestamptz "
       "WHERE t.id = $2::uuid AND t.status = 'building' AND t.owner_id = $3::uuid RETURNING t.id"},
      {"template_status", "SELECT status FROM templates WHERE id = $1::uuid"},
      {"release_template_ports", "DELETE FROM ssh_ports WHERE template_id = ANY($1::uuid[])"},
      {"lock_stale_templates",
       "SELECT t.id::text FROM templates t WHERE t.status = 'building' AND t.owner_id IS "
       "DISTINCT FROM NULLIF($2, '')::uuid AND NOT " +
           owner_alive_at_1 + " ORDER BY t.id FOR UPDATE SKIP LOCKED"},
      {"fail_stale_templates",
       "UPDATE templates t SET status = 'failed', last_error = $3, retry_after = "
       "$1::timestamptz, owner_id = NULL, updated_at = $1::timestamptz WHERE t.id = "
       "ANY($2::uuid[]) AND t.status = 'building' AND t.owner_id IS DISTINCT FROM "
       "NULLIF($4, '')::uuid AND NOT " +
           owner_alive_at_1 + " RETURNING t.id::text"},
      {"templates_by_ids",
       "SELECT " + tc + " FROM templates t WHERE t.id = ANY($1::uuid[]) ORDER BY t.id"},
      {"touch_template", "UPDATE templates SET last_used_at = $2::timestamptz WHERE id = $1::uuid"},
      {"remove_template",
       "DELETE FROM templates WHERE id = $1::uuid AND status = ANY($2::text[]) RETURNING 1"},
      {"lock_pool_key", "SELECT pg_advisory_xact_lock($1::integer, hashtext($2))"},
      {"count_live_members", "SELECT count(*) FROM hosts h WHERE h.pooled AND " +
                                 std::string(host_key_match) +
                                 " AND h.status NOT IN ('error', 'deleting')"},
      {"lock_free_member",
       "SELECT h.id::text FROM hosts h WHERE h.pooled AND h.status = 'active' AND " +
           std::string(host_key_match) + " ORDER BY h.id LIMIT 1 FOR UPDATE SKIP LOCKED"},
      {"claim_member",
       "UPDATE hosts h SET pooled = false, status = 'bootstrapping', create_path = 'pool', "
       "image = $3, instance_type = $4, expires_at = $5::timestamptz, lease_seconds = "
       "$6::bigint, owner_id = $7::uuid, provision_deadline = $8::timestamptz, created_at = "
       "$9::timestamptz, activated_at = NULL, updated_at = $2::timestamptz, namespace = $10 "
       "WHERE h.id = $1::uuid AND h.pooled AND h.status = 'active' RETURNING " +
           c},
      {"retire_member",
       "UPDATE hosts SET status = 'deleting', updated_at = $2::timestamptz WHERE id = $1::uuid "
       "AND pooled AND status IN ('active', 'error') RETURNING 1"},
      {"list_pool_members", "SELECT " + c + " FROM hosts h WHERE h.pooled ORDER BY h.id"},
      {"list_events",
       "SELECT e.id, e.host_id::text, e.type, e.status, (extract(epoch from e.at) * "
       "1000000)::bigint, COALESCE(e.detail->>'last_error', ''), h.pruned_through, e.namespace, "
       // One host's history is whole while its first event (the oldest, pruned first) is.
       "EXISTS (SELECT 1 FROM events c WHERE c.host_id = $2::uuid AND c.type = 'created') "
       "FROM "
       "event_horizon h LEFT JOIN LATERAL (SELECT * FROM events e WHERE e.id > $1::bigint AND "
       "($2::uuid IS NULL OR e.host_id = $2::uuid) AND ($3::text[] IS NULL OR e.status = "
       "ANY($3::text[])) AND ($5::text IS NULL OR e.namespace = $5) ORDER BY e.id LIMIT "
       "$4::bigint) e ON true ORDER BY e.id"},
      {"newest_event_id",
       "SELECT GREATEST((SELECT max(id) FROM events), (SELECT pruned_through FROM "
       "event_horizon))"},
      {"prune_events",
       "WITH gone AS (DELETE FROM events WHERE at < $1::timestamptz RETURNING id), "
       "moved AS (UPDATE event_horizon SET pruned_through = GREATEST(pruned_through, "
       "(SELECT max(id) FROM gone)) RETURNING 1) "
       "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM moved)"},
      {"mark_died", "SELECT set_config('litterbox.event_type', 'died', true)"},
      {"find_key",
       "SELECT id::text, namespace, name, key_hash, max_hosts, max_cpus, max_memory_mib, "
       "(extract(epoch from created_at) * 1000000)::bigint, NULL::bigint FROM api_keys "
       "WHERE key_hash = $1 AND revoked_at IS NULL"},
      {"append_audit",
       "INSERT INTO audit_log (at, key_id, namespace, action, host_id, request_id, status) "
       "VALUES ($1::timestamptz, $2, $3, $4, $5::uuid, $6, $7) RETURNING id"},
      {"count_pool",
       "SELECT COALESCE(image_digest, ''), cpus, memory_mib, disk_gb, ssh_username, status, "
       "count(*) FROM hosts WHERE pooled GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"},
  };
}

void prepare_all(pqxx::connection& conn) {
  static const auto all = statements();
  for (const auto& [name, sql] : all) {
    conn.prepare(name, sql);
  }
}

std::string ts(timestamp t) {
  return format_rfc3339(t);
}

std::optional<std::string> ts(const std::optional<timestamp>& t) {
  if (!t) {
    return std::nullopt;
  }
  return format_rfc3339(*t);
}

template <class T>
std::optional<T> opt(const pqxx::field& f) {
  if (f.is_null()) {
    return std::nullopt;
  }
  return f.as<T>();
}

timestamp from_us(std::int64_t us) {
  return timestamp(std::chrono::microseconds(us));
}

std::optional<timestamp> opt_ts(const pqxx::field& f) {
  if (f.is_null()) {
    return std::nullopt;
  }
  return from_us(f.as<std::int64_t>());
}

std::string status_array(const std::vector<host_status>& statuses) {
  std::string out = "{";
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    if (i != 0) {
      out += ',';
    }
    out += schema::to_string(statuses[i]);
  }
  out += '}';
  return out;
}

host_status parse_status(const pqxx::field& f) {
  const auto s = schema::parse_host_status(f.as<std::string>());
  if (!s) {
    throw std::runtime_error("unknown host status in database");
  }
  return *s;
}

host_record read_host(const pqxx::row& r) {
  host_record rec;
  schema::host& h = rec.host;
  h.id = r[0].as<std::string>();
  h.name = r[1].as<std::string>();
  h.status = parse_status(r[2]);
  h.provider = r[3].as<std::string>();
  h.image = r[4].as<std::string>();
  h.image_digest = opt<std::string>(r[5]);
  h.instance_type = opt<std::string>(r[6]);
  h.cpus = r[7].as<int>();
  h.memory_mib = r[8].as<int>();
  h.disk_gb = opt<int>(r[9]);
  h.ssh_host = r[10].as<std::string>();
  h.ssh_port = r[11].as<int>();
  h.internal_ssh_host = opt<std::string>(r[12]);
  h.ssh_username = r[13].as<std::string>();
  h.known_hosts = r[14].as<std::string>();
  h.last_error = r[15].as<std::string>();
  rec.lease_seconds = opt<std::int64_t>(r[16]);
  rec.owner_id = opt<std::string>(r[17]);
  h.created_at = from_us(r[18].as<std::int64_t>());
  h.updated_at = from_us(r[19].as<std::int64_t>());
  h.activated_at = opt_ts(r[20]);
  h.expires_at = opt_ts(r[21]);
  rec.provision_deadline = opt_ts(r[22]);
  rec.pooled = r[23].as<bool>();
  rec.ns = r[25].as<std::string>();
  rec.node_id = opt<std::string>(r[26]);
  if (!r[24].is_null()) {
    rec.path = create_path_from(r[24].as<std::string>());
    if (!rec.path) {
      throw std::runtime_error("unknown create path in database");
    }
  }
  return rec;
}

// A row of node_columns followed by node_usage_of_n.
node_record read_node(const pqxx::row& r) {
  node_record n;
  n.id = r[0].as<std::string>();
  n.uri = r[1].as<std::string>();
  n.ssh_host = r[2].as<std::string>();
  n.cpus = r[3].as<int>();
  n.memory_mib = r[4].as<std::int64_t>();
  n.reserved_cpus = r[5].as<int>();
  n.reserved_memory_mib = r[6].as<std::int64_t>();
  n.cpu_overcommit = r[7].as<double>();
  n.memory_overcommit = r[8].as<double>();
  const auto state = node_state_from(r[9].as<std::string>());
  if (!state) {
    throw std::runtime_error("unknown node state in database");
  }
  n.state = *state;
  n.created_at = from_us(r[10].as<std::int64_t>());
  n.updated_at = from_us(r[11].as<std::int64_t>());
  n.last_seen_at = from_us(r[12].as<std::int64_t>());
  n.hosts = r[13].as<std::int64_t>();
  n.used_cpus = r[14].as<std::int64_t>();
  n.used_memory_mib = r[15].as<std::int64_t>();
  return n;
}

template_status parse_template_status(const pqxx::field& f) {
  const auto text = f.as<std::string>();
  for (auto s : {template_status::building, template_status::ready, template_status::failed}) {
    if (text == to_string(s)) {
      return s;
    }
  }
  throw std::runtime_error("unknown template status in database");
}

template_record read_template(const pqxx::row& r) {
  template_record t;
  t.id = r[0].as<std::string>();
  t.key.image_digest = r[1].as<std::string>();
  t.key.cpus = r[2].as<int>();
  t.key.memory_mib = r[3].as<int>();
  t.key.disk_gb = opt<int>(r[4]);
  t.key.ssh_username = r[5].as<std::string>();
  t.image = r[6].as<std::string>();
  t.status = parse_template_status(r[7]);
  t.owner_id = opt<std::string>(r[8]);
  t.last_error = r[9].as<std::string>();
  t.retry_after = opt_ts(r[10]);
  t.created_at = from_us(r[11].as<std::int64_t>());
  t.updated_at = from_us(r[12].as<std::int64_t>());
  t.ready_at = opt_ts(r[13]);
  t.last_used_at = from_us(r[14].as<std::int64_t>());
  t.ssh_port = opt<int>(r[15]).value_or(0);
  t.node_id = opt<std::string>(r[16]);
  return t;
}

std::vector<template_record> read_templates(const pqxx::result& res) {
  std::vector<template_record> out;
  out.reserve(res.size());
  for (const auto& row : res) {
    out.push_back(read_template(row));
  }
  return out;
}

std::vector<host_record> read_hosts(const pqxx::result& res) {
  std::vector<host_record> out;
  out.reserve(res.size());
  for (const auto& row : res) {
    out.push_back(read_host(row));
  }
  return out;
}

error not_found() {
  return make_error(errc::not_found, "host not found");
}

// A host id that is not a UUID names no row; checking here keeps malformed input from
// reaching the server as a type error.
std::optional<std::string> host_id(std::string_view id) {
  return parse_uuid(id);
}

// After a failed CAS: does the row exist at all?
error cas_failure(pqxx::transaction_base& tx, const std::string& id) {
  const auto r = tx.exec_prepared("host_status", id);
  if (r.empty()) {
    return not_found();
  }
  return make_error(errc::host_state,
                    "host is " + r[0][0].as<std::string>() + "; the operation is not allowed");
}

enum class failure_kind { retry, broken, in_doubt, timed_out, other };

bool timeout_state(const std::string& sqlstate) {
  // 57014: canceled by statement_timeout; 55P03: lock_timeout.
  return sqlstate == "57014" || sqlstate == "55P03";
}

bool connection_lost_state(const std::string& sqlstate) {
  // Class 08: connection exception; 57P01..03: the server is shutting down or starting.
  return sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03";
}

// Classifies the exception in flight. Must be called from inside a catch block.
failure_kind classify(pqxx::connection& conn, std::string& what) {
  try {
    throw;
  } catch (const pqxx::in_doubt_error&) {
    what = "commit outcome unknown";
    return failure_kind::in_doubt;
  } catch (const pqxx::statement_completion_unknown&) {
    what = "statement outcome unknown";
    return failure_kind::in_doubt;
  } catch (const pqxx::transaction_rollback&) {
    what = "serialization failure or deadlock";
    return failure_kind::retry;
  } catch (const pqxx::broken_connection&) {
    what = "connection lost";
    return failure_kind::broken;
  } catch (const pqxx::sql_error& e) {
    if (connection_lost_state(e.sqlstate()) || !conn.is_open()) {
      what = "connection lost";
      return failure_kind::broken;
    }
    // The server's primary message only: never the statement or its parameters.
    std::string msg = e.what();
    if (const auto nl = msg.find('\n'); nl != std::string::npos) {
      msg.resize(nl);
    }
    what = "sqlstate " + e.sqlstate() + ": " + msg;
    return timeout_state(e.sqlstate()) ? failure_kind::timed_out : failure_kind::other;
  } catch (const std::exception& e) {
    if (!conn.is_open()) {
      what = "connection lost";
      return failure_kind::broken;
    }
    what = e.what();
    return failure_kind::other;
  }
}

}  // namespace

namespace detail {

// Runs `fn(conn)` on a pooled connection and turns every exception into an error value:
// retries serialization failures and deadlocks, and retries once on a fresh connection when
// a pooled one turns out to be dead (e.g. the server restarted since it was opened).
template <class T, class F>
result<T> run(connection_pool& pool, std::string_view op, F&& fn) {
  bool reconnected = false;
  for (int attempt = 1;; ++attempt) {
    auto leased = pool.acquire();
    if (!leased) {
      return leased.error();
    }
    auto& l = *leased;
    std::string what;
    failure_kind kind{};
    try {
      return fn(l.conn());
    } catch (...) {
      kind = classify(l.conn(), what);
    }
    switch (kind) {
      case failure_kind::retry:
        if (attempt < max_attempts) {
          continue;
        }
        spdlog::warn("pg_store {}: giving up after {} attempts: {}", op, attempt, log_escape(what));
        return make_error(errc::unavailable, "database unavailable: too much contention");
      case failure_kind::broken:
        l.mark_broken();
        pool.drop_idle();
        // Running the call again is safe: an explicit transaction that lost its connection
        // before COMMIT never committed (losing it during COMMIT is in_doubt, above), and
        // every autocommit statement here is idempotent (reads, renew, remove, heartbeat,
        // port lease).
        if (!l.fresh() && !reconnected) {
          reconnected = true;
          continue;
        }
        spdlog::warn("pg_store {}: {}", op, what);
        return make_error(errc::unavailable, "database unavailable");
      case failure_kind::in_doubt:
        l.mark_broken();
        pool.drop_idle();
        spdlog::error("pg_store {}: {}", op, what);
        // Never retried and never reported as "not applied": the caller reads back.
        return make_error(errc::outcome_unknown, "database unavailable: commit outcome unknown");
      case failure_kind::timed_out:
        spdlog::warn("pg_store {}: {}", op, log_escape(what));
        return make_error(errc::unavailable, "database unavailable: statement or lock timeout");
      case failure_kind::other:
        spdlog::error("pg_store {}: {}", op, log_escape(what));
        return make_error(errc::internal, "database error");
    }
  }
}

}  // namespace detail

using detail::run;

pg_store::pg_store(std::string url, std::size_t pool_size,
                   std::chrono::milliseconds acquire_timeout, const session_limits& limits) {
  const std::string bounded = with_session_limits(url, limits).value();
  // A call outliving its statement timeout plus the TCP bound means the server stopped
  // answering without the network noticing (a stopped or wedged backend still ACKs).
  const auto call_timeout = limits.statement_timeout.count() > 0
                                ? limits.statement_timeout + limits.tcp_timeout
                                : std::chrono::milliseconds(0);
  pool_ = std::make_unique<connection_pool>(bounded, pool_size, acquire_timeout, prepare_all,
                                            call_timeout);
  heartbeat_pool_ =
      std::make_unique<connection_pool>(bounded, 1, acquire_timeout, prepare_all, call_timeout);
}

pg_store::~pg_store() = default;

namespace {

// FNV-1a of the id: a stable, well-spread starting offset in the port range for this host, so
// that concurrent creates do not all race for the same lowest free port.
int port_search_start(std::string_view host_id, int lo, int hi) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (const char c : host_id) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  }
  return static_cast<int>(hash % static_cast<std::uint64_t>(hi - lo + 1));
}

// Who a port is leased to: a host, or the boot of a template guest (ssh_ports.template_id).
enum class port_holder { host, template_build };

// Leases a free port of [lo, hi] to `id` inside `tx`; nullopt when none is free. Another
// transaction may take the port picked between the two statements: the primary key turns
// that into an empty insert (after waiting for the other to finish) and we pick again.
// Ports of both kinds of holder are one table, so a host never gets a template's port.
std::optional<int> lease_free_port(pqxx::transaction_base& tx, const std::string& id, int lo,
                                   int hi, timestamp now, port_holder holder = port_holder::host,
                                   const std::vector<int>& avoid = {}) {
  const bool host = holder == port_holder::host;
  // A template row is claimed again for each rebuild: its search starts somewhere new each
  // time, so that a port something else on the node holds is not the one tried again.
  const int start = port_search_start(
      host ? id : id + "@" + std::to_string(now.time_since_epoch().count()), lo, hi);
  std::string avoided = "{";
  for (const int p : avoid) {
    avoided += (avoided.size() > 1 ? "," : "") + std::to_string(p);
  }
  avoided += '}';
  for (int attempt = 0; attempt < port_attempts; ++attempt) {
    const auto held = tx.exec_prepared(host ? "port_of" : "port_of_template", id);
    if (!held.empty()) {
      return held[0][0].as<int>();
    }
    const auto free = tx.exec_prepared("free_port", lo, hi, start, avoided);
    if (free.empty()) {
      return std::nullopt;
    }
    const auto leased = tx.exec_prepared(host ? "lease_port" : "lease_template_port",
                                         free[0][0].as<int>(), id, ts(now));
    if (!leased.empty()) {
      return leased[0][0].as<int>();
    }
  }
  throw pqxx::transaction_rollback("port allocation contention");
}

error no_port() {
  return make_error(errc::capacity, "no SSH port left");
}

std::optional<std::string> path_text(const std::optional<create_path>& p) {
  if (!p) {
    return std::nullopt;
  }
  return std::string(to_string(*p));
}

// Inserts row `h` under `id` (owner `owner`, already checked to be a UUID) and leases its
// port; false (and the caller rolls back) when no port is free, so that a row never exists
// without its port and running out keeps nothing.
bool insert_row(pqxx::transaction_base& tx, const std::string& id, const host_record& h,
                const std::optional<std::string>& owner, port_range ports, timestamp now,
                insert_outcome& out) {
  const schema::host& w = h.host;
  out.created = true;
  out.existing = read_host(tx.exec_prepared1(
      "insert_host", id, w.name, std::string(schema::to_string(w.status)), w.provider, w.image,
      w.image_digest, w.instance_type, w.cpus, w.memory_mib, w.disk_gb, w.ssh_host, w.ssh_port,
      w.internal_ssh_host, w.ssh_username, w.known_hosts, w.last_error, h.lease_seconds, owner,
      ts(w.created_at), ts(w.updated_at), ts(w.activated_at), ts(w.expires_at),
      ts(h.provision_deadline), h.pooled, path_text(h.path), h.ns, h.node_id));
  const auto port = lease_free_port(tx, id, ports.lo, ports.hi, now);
  if (!port) {
    return false;
  }
  out.port = *port;
  return true;
}

// Takes the lock of namespace `ns` (to this transaction's end) and checks that one more host
// of `cpus` and `memory_mib` fits `quota`; the error names the first limit it would exceed.
// Callers take it before any other write to hosts in the transaction, so the lock order is
// always namespace, then the events lock.
std::optional<error> over_quota(pqxx::transaction_base& tx, const std::string& ns,
                                const namespace_quota& quota, int cpus, int memory_mib) {
  if (quota.empty()) {
    return std::nullopt;
  }
  tx.exec_prepared("lock_namespace", ns);
  const auto used = tx.exec_prepared1("namespace_usage", ns);
  const auto over = [](const std::optional<std::int64_t>& limit, std::int64_t now_used,
                       std::int64_t more) { return limit && now_used + more > *limit; };
  const auto exceeded = [](const char* what, std::int64_t limit) {
    return make_error(errc::quota,
                      "quota exceeded: " + std::string(what) + "=" + std::to_string(limit));
  };
  if (over(quota.max_hosts, used[0].as<std::int64_t>(), 1)) {
    return exceeded("max_hosts", *quota.max_hosts);
  }
  if (over(quota.max_cpus, used[1].as<std::int64_t>(), cpus)) {
    return exceeded("max_cpus", *quota.max_cpus);
  }
  if (over(quota.max_memory_mib, used[2].as<std::int64_t>(), memory_mib)) {
    return exceeded("max_memory_mib", *quota.max_memory_mib);
  }
  return std::nullopt;
}

// Takes the lock of node `h.node_id` (to this transaction's end) and checks that it takes new
// hosts and has room for one of h's cpus and memory_mib; the error (capacity) says why not.
// Taken after the namespace lock and before any write to hosts, so the lock order is always
// namespace, node, events; every insert on one node is serialised on its row.
std::optional<error> refused_by_node(pqxx::transaction_base& tx, const host_record& h) {
  if (!h.node_id) {
    return std::nullopt;
  }
  const auto id = parse_uuid(*h.node_id);
  if (!id || tx.exec_prepared("lock_node", *id).empty()) {
    return make_error(errc::capacity, "no node " + *h.node_id);
  }
  // Read after the lock, in a statement of its own: it sees every insert committed by the
  // transactions that held the lock before this one.
  return node_refusal(read_node(tx.exec_prepared1("get_node", *id)), h.host.cpus,
                      h.host.memory_mib);
}

// Places `h` when it names no node of its own but node_choices: locks every candidate in id
// order (so that two inserts never deadlock, and each sees what the other committed), then
// lets choose_node pick; `h` gets the node's id and SSH address. The lock order stays
// namespace, node(s), events.
std::optional<error> place_on_node(pqxx::transaction_base& tx, host_record& h) {
  if (h.node_id || h.node_choices.empty()) {
    return refused_by_node(tx, h);
  }
  std::vector<std::string> ids;
  for (const auto& c : h.node_choices) {
    if (auto id = parse_uuid(c)) {
      ids.push_back(std::move(*id));
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<node_record> candidates;
  for (const auto& id : ids) {
    if (!tx.exec_prepared("lock_node", id).empty()) {
      candidates.push_back(read_node(tx.exec_prepared1("get_node", id)));
    }
  }
  auto chosen = choose_node(candidates, h.prefer_node, h.host.cpus, h.host.memory_mib);
  if (!chosen) {
    return chosen.error();
  }
  h.node_id = chosen->id;
  if (!chosen->ssh_host.empty()) {
    h.host.ssh_host = chosen->ssh_host;
  }
  return std::nullopt;
}

// The owner column of a row: NULL, or the owner's UUID; an owner that is no UUID is an error.
result<std::optional<std::string>> owner_column(const std::optional<std::string>& owner) {
  if (!owner) {
    return std::optional<std::string>();
  }
  auto id = parse_uuid(*owner);
  if (!id) {
    return make_error(errc::internal, "owner id is not a UUID");
  }
  return id;
}

}  // namespace

result<insert_outcome> pg_store::insert_host(const host_record& h,
                                             const std::optional<idempotency_claim>& key,
                                             port_range ports, timestamp now) {
  const auto id = host_id(h.host.id);
  if (!id) {
    return make_error(errc::internal, "host id is not a UUID");
  }
  if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi) {
    return no_port();
  }
  const auto owner_col = owner_column(h.owner_id);
  if (!owner_col) {
    return owner_col.error();
  }
  const auto& owner = *owner_col;
  return run<insert_outcome>(
      *pool_, "insert_host", [&](pqxx::connection& conn) -> result<insert_outcome> {
        if (!key) {
          // Explicit commit for the same reason as claim_expired: a retry after an unseen
          // commit would insert the row twice.
          pqxx::work tx(conn);
          if (auto over = over_quota(tx, h.ns, h.quota, h.host.cpus, h.host.memory_mib)) {
            return *over;  // rolled back
          }
          host_record placed = h;
          if (auto full = place_on_node(tx, placed)) {
            return *full;
          }
          insert_outcome out;
          if (!insert_row(tx, *id, placed, owner, ports, now, out)) {
            tx.abort();
            return no_port();
          }
          tx.commit();
          return out;
        }
        // The key's row goes in first (its foreign key is checked at commit): under READ
        // COMMITTED, ON CONFLICT waits for a concurrent claim of the same key to finish, so
        // exactly one transaction inserts a host for it.
        for (int attempt = 0; attempt < max_attempts; ++attempt) {
          pqxx::work tx(conn);
          tx.exec_prepared("delete_expired_key", key->ns, key->key, ts(now));
          const auto claimed = tx.exec_prepared("insert_key", key->ns, key->key, key->fingerprint,
                                                *id, ts(now), ts(key->expires_at));
          if (!claimed.empty()) {
            if (auto over = over_quota(tx, h.ns, h.quota, h.host.cpus, h.host.memory_mib)) {
              return *over;  // rolled back, and the key with it
            }
            host_record placed = h;
            if (auto full = place_on_node(tx, placed)) {
              return *full;
            }
            insert_outcome out;
            if (!insert_row(tx, *id, placed, owner, ports, now, out)) {
              tx.abort();  // the key goes with it: a retry is a fresh create
              return no_port();
            }
            tx.commit();
            return out;
          }
          const auto held = tx.exec_prepared("key_host", key->ns, key->key);
          if (held.empty()) {
            // The holder released the key between our two statements: claim it again.
            continue;
          }
          insert_outcome out;
          out.created = false;
          out.existing = read_host(held[0]);
          const auto stored = held[0][host_column_count].as<std::string>();
          out.fingerprint_matches =
              stored == key->fingerprint ||
              (!key->legacy_fingerprint.empty() && stored == key->legacy_fingerprint);
          tx.commit();
          return out;
        }
        return make_error(errc::unavailable, "database unavailable: idempotency key contention");
      });
}

result<host_record> pg_store::get_host(std::string_view id_text) {
  const auto id = host_id(id_text);
  if (!id) {
    return not_found();
  }
  return run<host_record>(*pool_, "get_host", [&](pqxx::connection& conn) -> result<host_record> {
    pqxx::nontransaction tx(conn);
    const auto r = tx.exec_prepared("get_host", *id);
    if (r.empty()) {
      return not_found();
    }
    return read_host(r[0]);
  });
}

result<std::vector<host_record>> pg_store::list_hosts(const list_query& q) {
  std::optional<std::string> after;
  if (q.after) {
    after = parse_uuid(*q.after);
    if (!after) {
      error e = make_error(errc::validation, "validation failed");
      e.issues.push_back(field_issue{{"query", "after"}, "invalid cursor", "value_error"});
      return e;
    }
  }
  std::optional<std::string> statuses;
  if (!q.statuses.empty()) {
    statuses = status_array(q.statuses);
  }
  std::optional<std::int64_t> limit;
  if (q.limit != 0) {
    limit = static_cast<std::int64_t>(q.limit);
  }
  return run<std::vector<host_record>>(
      *pool_, "list_hosts", [&](pqxx::connection& conn) -> result<std::vector<host_record>> {
        pqxx::nontransaction tx(conn);
        return read_hosts(tx.exec_prepared("list_hosts", statuses, after, limit, q.ns));
      });
}

result<host_record> pg_store::transition(std::string_view id_text,
                                         const std::vector<host_status>& from,
                                         const host_patch& patch, timestamp now) {
  const auto id = host_id(id_text);
  if (!id) {
    return not_found();
  }
  // Only the columns the patch names are set; values always travel as parameters.
  std::vector<std::optional<std::string>> params{*id, status_array(from), ts(now)};
  std::string sets = "updated_at = $3::timestamptz";
  auto set = [&](const char* column, const char* cast, const std::optional<std::string>& value) {
    params.push_back(value);
    sets += std::string(", ") + column + " = $" + std::to_string(params.size()) + cast;
  };
  if (patch.status) {
    set("status", "", std::string(schema::to_string(*patch.status)));
  }
  if (patch.image_digest) {
    set("image_digest", "", *patch.image_digest);
  }
  if (patch.ssh_host) {
    set("ssh_host", "", *patch.ssh_host);
  }
  if (patch.ssh_port) {
    set("ssh_port", "::integer", std::to_string(*patch.ssh_port));
  }
  if (patch.known_hosts) {
    set("known_hosts", "", *patch.known_hosts);
  }
  if (patch.last_error) {
    set("last_error", "", *patch.last_error);
  }
  if (patch.activated_at) {
    set("activated_at", "::timestamptz", ts(*patch.activated_at));
  }
  if (patch.expires_at) {
    set("expires_at", "::timestamptz", ts(*patch.expires_at));
  }
  if (patch.clear_lease) {
    sets += ", lease_seconds = NULL";
  }
  if (patch.clear_owner) {
    sets += ", owner_id = NULL";
  }
  if (patch.path) {
    set("create_path", "", std::string(to_string(*patch.path)));
  }
  const std::string sql = "UPDATE hosts h SET " + sets +
                          " WHERE h.id = $1::uuid AND h.status = ANY($2::text[]) RETURNING " +
                          cols();
  return run<host_record>(*pool_, "transition", [&](pqxx::connection& conn) -> result<host_record> {
    pqxx::work tx(conn);
    if (patch.died) {
      // Read by the hosts_events trigger (0004_events.sql); gone at the end of the transaction.
      tx.exec_prepared("mark_died");
    }
    const auto r = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
    if (r.empty()) {
      return cas_failure(tx, *id);
    }
    auto rec = read_host(r[0]);
    if (patch.release_idempotency_key) {
      tx.exec_prepared("release_keys", *id);
    }
    if (patch.release_port) {
      tx.exec_prepared("release_port", *id);
    }
    tx.commit();
    return rec;
  });
}

result<host_record> pg_store::renew(std::string_view id_text, timestamp expires_at, timestamp now) {
  const auto id = host_id(id_text);
  if (!id) {
    return not_found();
  }
  return run<host_record>(*pool_, "renew", [&](pqxx::connection& conn) -> result<host_record> {
    pqxx::nontransaction tx(conn);
    const auto r = tx.exec_prepared("renew", *id, ts(expires_at), ts(now));
    if (r.empty()) {
      return cas_failure(tx, *id);
    }
    return read_host(r[0]);
  });
}

result<void> pg_store::remove_host(std::string_view id_text) {
  const auto id = host_id(id_text);
  if (!id) {
    return {};
  }
  return run<void>(*pool_, "remove_host", [&](pqxx::connection& conn) -> result<void> {
    pqxx::nontransaction tx(conn);
    tx.exec_prepared("remove_host", *id);
    return {};
  });
}

result<int> pg_store::allocate_port(std::string_view host_id_text, int lo, int hi, timestamp now) {
  const auto id = host_id(host_id_text);
  if (!id) {
    return not_found();
  }
  if (lo < 1 || hi > 65535 || lo > hi) {
    return no_port();
  }
  return run<int>(*pool_, "allocate_port", [&](pqxx::connection& conn) -> result<int> {
    pqxx::nontransaction tx(conn);
    try {
      const auto port = lease_free_port(tx, *id, lo, hi, now);
      if (!port) {
        return no_port();
      }
      return *port;
    } catch (const pqxx::foreign_key_violation&) {
      return not_found();
    }
  });
}

result<int> pg_store::move_port(std::string_view host_id_text, int lo, int hi,
                                const std::vector<int>& avoid, timestamp now) {
  const auto id = host_id(host_id_text);
  if (!id) {
    return not_found();
  }
  if (lo < 1 || hi > 65535 || lo > hi) {
    return no_port();
  }
  return run<int>(*pool_, "move_port", [&](pqxx::connection& conn) -> result<int> {
    pqxx::work tx(conn);
    // The host's row is locked first, so that a concurrent delete (which releases the port
    // with it) either finishes before, and this finds no host, or waits for this.
    if (tx.exec_prepared("lock_host", *id).empty()) {
      return not_found();
    }
    tx.exec_prepared("release_port", *id);
    const auto port = lease_free_port(tx, *id, lo, hi, now, port_holder::host, avoid);
    if (!port) {
      return no_port();  // rolled back: the old lease stays
    }
    tx.commit();
    return *port;
  });
}

result<node_record> pg_store::register_node(const node_report& r, timestamp now) {
  if (r.uri.empty() || r.cpus < 0 || r.memory_mib < 0) {
    return make_error(errc::validation, "a node needs a URI and what it reports of itself");
  }
  return run<node_record>(
      *pool_, "register_node", [&](pqxx::connection& conn) -> result<node_record> {
        pqxx::work tx(conn);
        const auto id = tx.exec_prepared1("register_node", new_uuid_v7(now), r.uri, r.ssh_host,
                                          r.cpus, r.memory_mib, ts(now))[0]
                            .as<std::string>();
        tx.exec_prepared("adopt_hosts", id);
        tx.exec_prepared("adopt_templates", id);
        auto n = read_node(tx.exec_prepared1("get_node", id));
        tx.commit();
        return n;
      });
}

result<std::vector<node_record>> pg_store::list_nodes() {
  return run<std::vector<node_record>>(
      *pool_, "list_nodes", [&](pqxx::connection& conn) -> result<std::vector<node_record>> {
        pqxx::nontransaction tx(conn);
        std::vector<node_record> out;
        for (const auto& row : tx.exec_prepared("list_nodes")) {
          out.push_back(read_node(row));
        }
        return out;
      });
}

result<node_record> pg_store::set_node_state(std::string_view node, node_state state,
                                             timestamp now) {
  return run<node_record>(
      *pool_, "set_node_state", [&](pqxx::connection& conn) -> result<node_record> {
        pqxx::work tx(conn);
        const auto set = tx.exec_prepared("set_node_state", std::string(node),
                                          std::string(to_string(state)), ts(now));
        if (set.size() != 1) {
          return make_error(errc::not_found, "no node " + std::string(node));
        }
        auto n = read_node(tx.exec_prepared1("get_node", set[0][0].as<std::string>()));
        tx.commit();
        return n;
      });
}

result<node_record> pg_store::configure_node(std::string_view node, const node_settings& set,
                                             timestamp now) {
  if (auto bad = invalid_node_settings(set)) {
    return *bad;
  }
  return run<node_record>(
      *pool_, "configure_node", [&](pqxx::connection& conn) -> result<node_record> {
        pqxx::work tx(conn);
        const auto done = tx.exec_prepared("configure_node", std::string(node), set.reserved_cpus,
                                           set.reserved_memory_mib, set.cpu_overcommit,
                                           set.memory_overcommit, ts(now));
        if (done.size() != 1) {
          return make_error(errc::not_found, "no node " + std::string(node));
        }
        auto n = read_node(tx.exec_prepared1("get_node", done[0][0].as<std::string>()));
        tx.commit();
        return n;
      });
}

result<node_record> pg_store::remove_node(std::string_view node) {
  return run<node_record>(
      *pool_, "remove_node", [&](pqxx::connection& conn) -> result<node_record> {
        pqxx::work tx(conn);
        // The node's lock: no insert places a host on it while this decides.
        const auto locked = tx.exec_prepared("lock_node_by_name", std::string(node));
        if (locked.empty()) {
          return make_error(errc::not_found, "no node " + std::string(node));
        }
        const auto id = locked[0][0].as<std::string>();
        auto n = read_node(tx.exec_prepared1("get_node", id));
        const auto rows = tx.exec_prepared1("node_host_count", id)[0].as<std::int64_t>();
        if (rows > 0) {
          return make_error(errc::host_state,
                            "node " + n.uri + " still has " + std::to_string(rows) +
                                " host row(s): drain it (litterboxd node drain --delete-hosts "
                                "--wait) before removing it");
        }
        tx.exec_prepared("delete_node", id);
        tx.commit();
        return n;
      });
}

result<int> pg_store::expire_node_hosts(std::string_view node_id, timestamp now) {
  const auto id = parse_uuid(node_id);
  if (!id) {
    return make_error(errc::not_found, "no node " + std::string(node_id));
  }
  return run<int>(*pool_, "expire_node_hosts", [&](pqxx::connection& conn) -> result<int> {
    pqxx::nontransaction tx(conn);
    return static_cast<int>(tx.exec_prepared("expire_node_hosts", *id, ts(now)).affected_rows());
  });
}

result<std::map<host_status, std::int64_t>> pg_store::count_by_status() {
  return run<std::map<host_status, std::int64_t>>(
      *pool_, "count_by_status",
      [&](pqxx::connection& conn) -> result<std::map<host_status, std::int64_t>> {
        pqxx::nontransaction tx(conn);
        const auto r = tx.exec_prepared("count_by_status");
        std::map<host_status, std::int64_t> out;
        for (auto s : {host_status::provisioning, host_status::pulling_image,
                       host_status::creating_vm, host_status::bootstrapping, host_status::active,
                       host_status::deleting, host_status::error}) {
          out[s] = 0;
        }
        for (const auto& row : r) {
          out[parse_status(row[0])] = row[1].as<std::int64_t>();
        }
        return out;
      });
}

result<std::vector<host_record>> pg_store::claim_expired(timestamp now, timestamp error_cutoff,
                                                         std::size_t limit) {
  if (limit == 0) {
    return std::vector<host_record>{};
  }
  const auto n = static_cast<std::int64_t>(limit);
  return run<std::vector<host_record>>(
      *pool_, "claim_expired", [&](pqxx::connection& conn) -> result<std::vector<host_record>> {
        // An explicit commit, so that losing the connection while committing surfaces as
        // "outcome unknown" rather than a retry that would leave the first claim's hosts in
        // `deleting` with nobody holding them.
        pqxx::work tx(conn);
        auto claimed = read_hosts(tx.exec_prepared("claim_expired", ts(now), ts(error_cutoff), n));
        tx.commit();
        return claimed;
      });
}

result<void> pg_store::heartbeat(std::string_view instance_id, std::string_view hostname, int pid,
                                 std::chrono::seconds interval, timestamp now) {
  const auto id = parse_uuid(instance_id);
  if (!id) {
    return make_error(errc::internal, "instance id is not a UUID");
  }
  const std::string host(hostname);
  const auto every = static_cast<int>(std::max<std::chrono::seconds::rep>(1, interval.count()));
  // Its own connection: a request pool busy with slow calls must not make this instance look
  // dead to the others (whose recovery would then take over its creates).
  return run<void>(*heartbeat_pool_, "heartbeat", [&](pqxx::connection& conn) -> result<void> {
    pqxx::nontransaction tx(conn);
    tx.exec_prepared("heartbeat", *id, host, pid, ts(now), every);
    return {};
  });
}

result<std::vector<interrupted_host>> pg_store::claim_interrupted(
    timestamp now, std::chrono::seconds grace, const std::string& interrupted_prefix,
    const std::string& overdue_prefix, std::size_t limit, std::string_view self) {
  if (limit == 0) {
    return std::vector<interrupted_host>{};
  }
  const auto n = static_cast<std::int64_t>(limit);
  const auto grace_s = static_cast<double>(grace.count());
  return run<std::vector<interrupted_host>>(
      *pool_, "claim_interrupted",
      [&](pqxx::connection& conn) -> result<std::vector<interrupted_host>> {
        // Explicit commit: the claim and the release of the keys land together or not at all.
        pqxx::work tx(conn);
        const auto r = tx.exec_prepared("claim_interrupted", ts(now), grace_s, interrupted_prefix,
                                        overdue_prefix, n, std::string(self));
        std::vector<interrupted_host> out;
        out.reserve(r.size());
        std::string ids = "{";
        for (const auto& row : r) {
          interrupted_host h;
          h.host = read_host(row);
          h.was = parse_status(row[host_column_count]);
          h.overdue = row[host_column_count + 1].as<bool>();
          if (out.size() != 0) {
            ids += ',';
          }
          ids += h.host.host.id;
          out.push_back(std::move(h));
        }
        ids += '}';
        if (!out.empty()) {
          tx.exec_prepared("release_keys_of", ids);
        }
        tx.commit();
        return out;
      });
}

result<int> pg_store::prune_instances(timestamp now) {
  return run<int>(*pool_, "prune_instances", [&](pqxx::connection& conn) -> result<int> {
    pqxx::nontransaction tx(conn);
    return static_cast<int>(tx.exec_prepared("prune_instances", ts(now)).affected_rows());
  });
}

namespace {

/// The first column of every row a parameterless prepared statement returns, as text.
result<std::vector<std::string>> text_column(connection_pool& pool, const char* what,
                                             const char* statement) {
  return run<std::vector<std::string>>(
      pool, what, [&](pqxx::connection& conn) -> result<std::vector<std::string>> {
        pqxx::nontransaction tx(conn);
        const auto r = tx.exec_prepared(statement);
        std::vector<std::string> out;
        out.reserve(r.size());
        for (const auto& row : r) {
          out.push_back(row[0].as<std::string>());
        }
        return out;
      });
}

}  // namespace

result<std::vector<std::string>> pg_store::all_host_ids() {
  return text_column(*pool_, "all_host_ids", "all_ids");
}

result<std::vector<std::string>> pg_store::image_digests_in_use() {
  return text_column(*pool_, "image_digests_in_use", "digests_in_use");
}

result<void> pg_store::ping() {
  return run<void>(*pool_, "ping", [&](pqxx::connection& conn) -> result<void> {
    pqxx::nontransaction tx(conn);
    tx.exec_prepared("ping");
    return {};
  });
}

namespace {

error template_not_found() {
  return make_error(errc::not_found, "template not found");
}

// The parameters $1..$5 of host_key_match / template_key_match.
struct key_params {
  std::string image_digest;
  int cpus;
  int memory_mib;
  std::optional<int> disk_gb;
  std::string ssh_username;
};

key_params params_of(const template_key_row& k) {
  return key_params{k.image_digest, k.cpus, k.memory_mib, k.disk_gb, k.ssh_username};
}

// What names a pool key to the advisory lock (hashtext of it).
std::string lock_name(const template_key_row& k) {
  return k.image_digest + "\n" + std::to_string(k.cpus) + "\n" + std::to_string(k.memory_mib) +
         "\n" + (k.disk_gb ? std::to_string(*k.disk_gb) : std::string()) + "\n" + k.ssh_username;
}

// A text[] / uuid[] literal of `ids` (UUIDs and status names: nothing to quote).
std::string array_literal(const std::vector<std::string>& ids) {
  std::string out = "{";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i != 0) {
      out += ',';
    }
    out += ids[i];
  }
  out += '}';
  return out;
}

std::string template_status_array(const std::vector<template_status>& statuses) {
  std::vector<std::string> names;
  names.reserve(statuses.size());
  for (auto s : statuses) {
    names.emplace_back(to_string(s));
  }
  return array_literal(names);
}

bool fingerprint_matches(const std::string& stored, const idempotency_claim& key) {
  return stored == key.fingerprint ||
         (!key.legacy_fingerprint.empty() && stored == key.legacy_fingerprint);
}

// The host an unexpired Idempotency-Key names, as a replay; nullopt when the key is free.
std::optional<insert_outcome> key_replay(pqxx::transaction_base& tx, const idempotency_claim& key,
                                         timestamp now) {
  tx.exec_prepared("delete_expired_key", key.ns, key.key, ts(now));
  const auto held = tx.exec_prepared("key_host", key.ns, key.key);
  if (held.empty()) {
    return std::nullopt;
  }
  insert_outcome out;
  out.created = false;
  out.existing = read_host(held[0]);
  out.fingerprint_matches = fingerprint_matches(held[0][host_column_count].as<std::string>(), key);
  return out;
}

}  // namespace

result<std::optional<template_record>> pg_store::find_template(const template_key_row& key) {
  const auto k = params_of(key);
  return run<std::optional<template_record>>(
      *pool_, "find_template",
      [&](pqxx::connection& conn) -> result<std::optional<template_record>> {
        pqxx::nontransaction tx(conn);
        const auto r = tx.exec_prepared("find_template", k.image_digest, k.cpus, k.memory_mib,
                                        k.disk_gb, k.ssh_username);
        if (r.empty()) {
          return std::optional<template_record>();
        }
        return std::optional<template_record>(read_template(r[0]));
      });
}

result<std::vector<template_record>> pg_store::list_templates() {
  return run<std::vector<template_record>>(
      *pool_, "list_templates",
      [&](pqxx::connection& conn) -> result<std::vector<template_record>> {
        pqxx::nontransaction tx(conn);
        return read_templates(tx.exec_prepared("list_templates"));
      });
}

result<std::optional<template_record>> pg_store::claim_template_build(const template_record& want,
                                                                      port_range ports,
                                                                      timestamp now) {
  const auto id = parse_uuid(want.id);
  if (!id) {
    return make_error(errc::internal, "template id is not a UUID");
  }
  const auto owner = want.owner_id ? parse_uuid(*want.owner_id) : std::nullopt;
  if (!owner) {
    return make_error(errc::internal, "owner id is not a UUID");
  }
  if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi) {
    return no_port();
  }
  const auto k = params_of(want.key);
  return run<std::optional<template_record>>(
      *pool_, "claim_template_build",
      [&](pqxx::connection& conn) -> result<std::optional<template_record>> {
        for (int attempt = 0; attempt < max_attempts; ++attempt) {
          // The key's unique index decides between concurrent first builds: ON CONFLICT waits
          // for the other insert and yields to it. A row that exists is locked before its
          // state is judged, so two takeovers never both win.
          pqxx::work tx(conn);
          const auto inserted = tx.exec_prepared("insert_template", *id, k.image_digest, k.cpus,
                                                 k.memory_mib, k.disk_gb, k.ssh_username,
                                                 want.image, *owner, ts(now), want.node_id);
          std::string row_id;
          if (!inserted.empty()) {
            row_id = inserted[0][0].as<std::string>();
          } else {
            const auto locked = tx.exec_prepared("lock_template_of_key", k.image_digest, k.cpus,
                                                 k.memory_mib, k.disk_gb, k.ssh_username);
            if (locked.empty()) {
              continue;  // removed between the two statements: try to insert again
            }
            row_id = locked[0][0].as<std::string>();
            if (tx.exec_prepared("take_over_template", ts(now), row_id, *owner, want.node_id)
                    .empty()) {
              return std::optional<template_record>();  // someone else has it
            }
          }
          if (!lease_free_port(tx, row_id, ports.lo, ports.hi, now, port_holder::template_build)) {
            tx.abort();  // the insert or takeover goes with it
            return no_port();
          }
          auto row = read_template(tx.exec_prepared1("get_template", row_id));
          // Explicit commit: losing it is outcome_unknown, never a second claim by a retry.
          tx.commit();
          return std::optional<template_record>(std::move(row));
        }
        return make_error(errc::unavailable, "database unavailable: template contention");
      });
}

result<template_record> pg_store::finish_template(std::string_view id_text,
                                                  std::string_view owner_id, bool ready,
                                                  const std::string& last_error,
                                                  std::optional<timestamp> retry_after,
                                                  timestamp now) {
  const auto id = parse_uuid(id_text);
  if (!id) {
    return template_not_found();
  }
  // An owner that is no UUID owns nothing: the CAS fails and the row's state is reported.
  const auto owner = parse_uuid(owner_id);
  return run<template_record>(
      *pool_, "finish_template", [&](pqxx::connection& conn) -> result<template_record> {
        pqxx::work tx(conn);
        const auto r = tx.exec_prepared("finish_template", ts(now), *id, owner, ready, last_error,
                                        ts(retry_after));
        if (r.empty()) {
          const auto st = tx.exec_prepared("template_status", *id);
          if (st.empty()) {
            return template_not_found();
          }
          return make_error(errc::host_state, "template is " + st[0][0].as<std::string>() +
                                                  " and no longer built by this instance");
        }
        tx.exec_prepared("release_template_ports", array_literal({*id}));
        auto row = read_template(tx.exec_prepared1("get_template", *id));
        tx.commit();
        return row;
      });
}

result<std::vector<template_record>> pg_store::claim_stale_template_builds(
    timestamp now, const std::string& last_error, std::string_view self) {
  return run<std::vector<template_record>>(
      *pool_, "claim_stale_template_builds",
      [&](pqxx::connection& conn) -> result<std::vector<template_record>> {
        // Lock first (SKIP LOCKED: concurrent sweeps and takeovers never wait on each other),
        // then fail in a newer snapshot that re-judges each owner on its latest beat.
        pqxx::work tx(conn);
        std::vector<std::string> ids;
        for (const auto& row :
             tx.exec_prepared("lock_stale_templates", ts(now), std::string(self))) {
          ids.push_back(row[0].as<std::string>());
        }
        if (ids.empty()) {
          return std::vector<template_record>{};
        }
        std::vector<std::string> failed;
        for (const auto& row : tx.exec_prepared("fail_stale_templates", ts(now), array_literal(ids),
                                                last_error, std::string(self))) {
          failed.push_back(row[0].as<std::string>());
        }
        if (failed.empty()) {
          return std::vector<template_record>{};
        }
        tx.exec_prepared("release_template_ports", array_literal(failed));
        auto out = read_templates(tx.exec_prepared("templates_by_ids", array_literal(failed)));
        tx.commit();
        return out;
      });
}

result<void> pg_store::touch_template(std::string_view id_text, timestamp now) {
  const auto id = parse_uuid(id_text);
  if (!id) {
    return {};
  }
  return run<void>(*pool_, "touch_template", [&](pqxx::connection& conn) -> result<void> {
    pqxx::nontransaction tx(conn);
    tx.exec_prepared("touch_template", *id, ts(now));
    return {};
  });
}

result<bool> pg_store::remove_template(std::string_view id_text,
                                       const std::vector<template_status>& from) {
  const auto id = parse_uuid(id_text);
  if (!id) {
    return false;
  }
  const auto statuses = template_status_array(from);
  return run<bool>(*pool_, "remove_template", [&](pqxx::connection& conn) -> result<bool> {
    pqxx::work tx(conn);
    const bool removed = !tx.exec_prepared("remove_template", *id, statuses).empty();
    tx.commit();
    return removed;
  });
}

result<insert_outcome> pg_store::insert_pool_member(const host_record& h,
                                                    const template_key_row& key, int target,
                                                    port_range ports, timestamp now) {
  const auto id = host_id(h.host.id);
  if (!id) {
    return make_error(errc::internal, "host id is not a UUID");
  }
  if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi) {
    return no_port();
  }
  const auto owner_col = owner_column(h.owner_id);
  if (!owner_col) {
    return owner_col.error();
  }
  // A member is the key's by its columns: they are what claims and counts match on.
  host_record member = h;
  member.pooled = true;
  member.host.status = host_status::provisioning;
  member.host.image_digest = key.image_digest;
  member.host.cpus = key.cpus;
  member.host.memory_mib = key.memory_mib;
  member.host.disk_gb = key.disk_gb;
  member.host.ssh_username = key.ssh_username;
  const auto k = params_of(key);
  const auto name = lock_name(key);
  return run<insert_outcome>(
      *pool_, "insert_pool_member", [&](pqxx::connection& conn) -> result<insert_outcome> {
        // Count and insert under one lock per key, held to the end of the transaction: two
        // refills of one key (in any process) never both see room for the last member.
        pqxx::work tx(conn);
        tx.exec_prepared("lock_pool_key", pool_lock_class, name);
        const auto live = tx.exec_prepared1("count_live_members", k.image_digest, k.cpus,
                                            k.memory_mib, k.disk_gb, k.ssh_username)[0]
                              .as<std::int64_t>();
        if (live >= target) {
          tx.abort();
          return insert_outcome{false, {}, true, 0};
        }
        if (auto full = refused_by_node(tx, member)) {
          return *full;
        }
        insert_outcome out;
        if (!insert_row(tx, *id, member, *owner_col, ports, now, out)) {
          tx.abort();
          return no_port();
        }
        tx.commit();
        return out;
      });
}

result<std::optional<insert_outcome>> pg_store::claim_pool_member(
    const pool_claim& c, const std::optional<idempotency_claim>& key, timestamp now) {
  const auto owner_col = owner_column(c.as.owner_id);
  if (!owner_col) {
    return owner_col.error();
  }
  const auto k = params_of(c.key);
  const schema::host& as = c.as.host;
  return run<std::optional<insert_outcome>>(
      *pool_, "claim_pool_member",
      [&](pqxx::connection& conn) -> result<std::optional<insert_outcome>> {
        for (int attempt = 0; attempt < max_attempts; ++attempt) {
          {
            pqxx::work tx(conn);
            if (key) {
              // The common replay touches no member.
              if (auto held = key_replay(tx, *key, now)) {
                tx.commit();
                return held;
              }
            }
            const auto free = tx.exec_prepared("lock_free_member", k.image_digest, k.cpus,
                                               k.memory_mib, k.disk_gb, k.ssh_username);
            if (free.empty()) {
              return std::optional<insert_outcome>();  // rolled back: the key stays free
            }
            const auto member = free[0][0].as<std::string>();
            if (key && tx.exec_prepared("insert_key", key->ns, key->key, key->fingerprint, member,
                                        ts(now), ts(key->expires_at))
                           .empty()) {
              // A concurrent claim of the same key committed first (ON CONFLICT waited for
              // it). This transaction rolls back, and the member with it; the winner's host
              // is read in a fresh snapshot below.
              tx.abort();
            } else {
              if (auto over = over_quota(tx, c.as.ns, c.as.quota, as.cpus, as.memory_mib)) {
                return *over;  // rolled back: the member stays in the pool, the key free
              }
              insert_outcome out;
              out.created = true;
              out.existing = read_host(
                  tx.exec_prepared1("claim_member", member, ts(now), as.image, as.instance_type,
                                    ts(as.expires_at), c.as.lease_seconds, *owner_col,
                                    ts(c.as.provision_deadline), ts(as.created_at), c.as.ns));
              const auto port = tx.exec_prepared("port_of", member);
              out.port = port.empty() ? 0 : port[0][0].as<int>();
              // Explicit commit: losing it is outcome_unknown, never a second claim.
              tx.commit();
              return std::optional<insert_outcome>(std::move(out));
            }
          }
          pqxx::work tx(conn);
          auto replay = key_replay(tx, *key, now);
          tx.commit();
          if (replay) {
            return replay;
          }
          // The winner's key went again (its create failed at once): claim afresh.
        }
        return make_error(errc::unavailable, "database unavailable: idempotency key contention");
      });
}

result<bool> pg_store::retire_pool_member(std::string_view id_text, timestamp now) {
  const auto id = host_id(id_text);
  if (!id) {
    return false;
  }
  return run<bool>(*pool_, "retire_pool_member", [&](pqxx::connection& conn) -> result<bool> {
    // Explicit commit: a retry after an unseen commit would report a retired member as not.
    pqxx::work tx(conn);
    const bool retired = !tx.exec_prepared("retire_member", *id, ts(now)).empty();
    tx.commit();
    return retired;
  });
}

result<std::vector<host_record>> pg_store::list_pool_members() {
  return run<std::vector<host_record>>(
      *pool_, "list_pool_members", [&](pqxx::connection& conn) -> result<std::vector<host_record>> {
        pqxx::nontransaction tx(conn);
        return read_hosts(tx.exec_prepared("list_pool_members"));
      });
}

result<std::vector<pool_count>> pg_store::count_pool() {
  return run<std::vector<pool_count>>(
      *pool_, "count_pool", [&](pqxx::connection& conn) -> result<std::vector<pool_count>> {
        pqxx::nontransaction tx(conn);
        std::vector<pool_count> out;
        for (const auto& row : tx.exec_prepared("count_pool")) {
          pool_count c;
          c.key.image_digest = row[0].as<std::string>();
          c.key.cpus = row[1].as<int>();
          c.key.memory_mib = row[2].as<int>();
          c.key.disk_gb = opt<int>(row[3]);
          c.key.ssh_username = row[4].as<std::string>();
          c.status = parse_status(row[5]);
          c.count = row[6].as<std::int64_t>();
          out.push_back(std::move(c));
        }
        return out;
      });
}

// HTTP proxies. Rare, small statements: run unprepared rather than on every connection.

namespace {

std::string headers_json(const header_list& headers) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, value] : headers) {
    out[name] = value;
  }
  return out.dump();
}

header_list parse_headers(const std::string& text) {
  header_list out;
  const auto parsed = nlohmann::json::parse(text);
  for (const auto& [name, value] : parsed.items()) {
    out.emplace_back(name, value.get<std::string>());
  }
  return out;
}

std::vector<std::string> parse_text_array(const pqxx::field& f) {
  std::vector<std::string> out;
  if (f.is_null()) {
    return out;
  }
  auto parser = f.as_array();
  for (auto [kind, value] = parser.get_next(); kind != pqxx::array_parser::juncture::done;
       std::tie(kind, value) = parser.get_next()) {
    if (kind == pqxx::array_parser::juncture::string_value) {
      out.push_back(value);
    }
  }
  return out;
}

}  // namespace

result<bool> pg_store::insert_proxy(const http_proxy_record& p) {
  return run<bool>(*pool_, "insert_proxy", [&](pqxx::connection& conn) -> result<bool> {
    pqxx::work tx(conn);
    const auto inserted = tx.exec_params(
        "INSERT INTO http_proxies (namespace, name, target, headers, created_at) VALUES ($1, $2, "
        "$3, $4::jsonb, $5::timestamptz) ON CONFLICT DO NOTHING RETURNING 1",
        p.ns, p.name, p.target, headers_json(p.headers), ts(p.created_at));
    tx.commit();
    return !inserted.empty();
  });
}

result<bool> pg_store::remove_proxy(std::string_view ns, std::string_view name) {
  return run<bool>(*pool_, "remove_proxy", [&](pqxx::connection& conn) -> result<bool> {
    pqxx::nontransaction tx(conn);
    return !tx.exec_params(
                  "DELETE FROM http_proxies WHERE namespace = $1 AND name = $2 RETURNING 1",
                  std::string(ns), std::string(name))
                .empty();
  });
}

result<attach_outcome> pg_store::attach_proxy(std::string_view ns, std::string_view name,
                                              std::string_view host_id_text, timestamp now) {
  const auto host_id = parse_uuid(host_id_text);
  return run<attach_outcome>(
      *pool_, "attach_proxy", [&](pqxx::connection& conn) -> result<attach_outcome> {
        pqxx::work tx(conn);
        // The proxy row is locked against a concurrent delete, the host row against a
        // concurrent status change (a delete moves it to deleting first).
        if (tx.exec_params("SELECT 1 FROM http_proxies WHERE namespace = $1 AND name = $2 "
                           "FOR SHARE",
                           std::string(ns), std::string(name))
                .empty()) {
          return attach_outcome::no_proxy;
        }
        if (!host_id) {
          return attach_outcome::no_host;
        }
        // Another namespace's host is no host: a proxy serves only its own namespace's.
        const auto host = tx.exec_params(
            "SELECT status FROM hosts WHERE id = $1::uuid AND NOT pooled AND namespace = $2 "
            "FOR SHARE",
            *host_id, std::string(ns));
        if (host.empty()) {
          return attach_outcome::no_host;
        }
        const auto status = parse_status(host[0][0]);
        if (status != host_status::bootstrapping && status != host_status::active) {
          return attach_outcome::host_not_live;
        }
        tx.exec_params(
            "INSERT INTO http_proxy_hosts (namespace, proxy_name, host_id, attached_at) VALUES "
            "($1, $2, $3::uuid, $4::timestamptz) ON CONFLICT DO NOTHING",
            std::string(ns), std::string(name), *host_id, ts(now));
        tx.commit();
        return attach_outcome::attached;
      });
}

result<bool> pg_store::detach_proxy(std::string_view ns, std::string_view name,
                                    std::string_view host_id_text) {
  const auto host_id = parse_uuid(host_id_text);
  if (!host_id) {
    return false;
  }
  return run<bool>(*pool_, "detach_proxy", [&](pqxx::connection& conn) -> result<bool> {
    pqxx::nontransaction tx(conn);
    return !tx.exec_params(
                  "DELETE FROM http_proxy_hosts WHERE namespace = $1 AND proxy_name = "
                  "$2 AND host_id = $3::uuid RETURNING 1",
                  std::string(ns), std::string(name), *host_id)
                .empty();
  });
}

result<std::vector<http_proxy_record>> pg_store::list_proxies(std::string_view ns) {
  return run<std::vector<http_proxy_record>>(
      *pool_, "list_proxies",
      [&](pqxx::connection& conn) -> result<std::vector<http_proxy_record>> {
        pqxx::nontransaction tx(conn);
        std::vector<http_proxy_record> out;
        for (const auto& row : tx.exec_params(
                 "SELECT p.name, p.target, (extract(epoch from p.created_at) * 1000000)::bigint, "
                 "(SELECT array_agg(a.host_id::text ORDER BY a.host_id) FROM http_proxy_hosts a "
                 "WHERE a.namespace = p.namespace AND a.proxy_name = p.name) "
                 "FROM http_proxies p WHERE p.namespace = $1 ORDER BY p.name",
                 std::string(ns))) {
          http_proxy_record p;
          p.ns = std::string(ns);
          p.name = row[0].as<std::string>();
          p.target = row[1].as<std::string>();
          p.created_at = from_us(row[2].as<std::int64_t>());
          p.host_ids = parse_text_array(row[3]);
          out.push_back(std::move(p));
        }
        return out;
      });
}

result<std::optional<http_proxy_record>> pg_store::find_attached_proxy(
    std::string_view host_id_text, std::string_view name) {
  const auto host_id = parse_uuid(host_id_text);
  if (!host_id) {
    return std::optional<http_proxy_record>();
  }
  return run<std::optional<http_proxy_record>>(
      *pool_, "find_attached_proxy",
      [&](pqxx::connection& conn) -> result<std::optional<http_proxy_record>> {
        pqxx::nontransaction tx(conn);
        const auto rows = tx.exec_params(
            "SELECT p.namespace, p.name, p.target, p.headers::text, "
            "(extract(epoch from p.created_at) * 1000000)::bigint FROM http_proxy_hosts a "
            "JOIN http_proxies p ON p.namespace = a.namespace AND p.name = a.proxy_name "
            "WHERE a.host_id = $1::uuid AND a.proxy_name = $2 LIMIT 1",
            *host_id, std::string(name));
        if (rows.empty()) {
          return std::optional<http_proxy_record>();
        }
        http_proxy_record p;
        p.ns = rows[0][0].as<std::string>();
        p.name = rows[0][1].as<std::string>();
        p.target = rows[0][2].as<std::string>();
        p.headers = parse_headers(rows[0][3].as<std::string>());
        p.created_at = from_us(rows[0][4].as<std::int64_t>());
        p.host_ids = {*host_id};
        return std::optional<http_proxy_record>(std::move(p));
      });
}

namespace {

event_type parse_event_type(const pqxx::field& f) {
  const auto t = event_type_from(f.as<std::string>());
  if (!t) {
    throw std::runtime_error("unknown event type in database");
  }
  return *t;
}

}  // namespace

result<std::vector<host_event>> pg_store::list_events(const event_query& q) {
  std::optional<std::string> host;
  if (q.host_id) {
    host = host_id(*q.host_id);
    if (!host) {
      return std::vector<host_event>{};  // no host has such an id, so no event names it
    }
  }
  std::optional<std::string> statuses;
  if (!q.statuses.empty()) {
    statuses = status_array(q.statuses);
  }
  std::optional<std::int64_t> limit;
  if (q.limit != 0) {
    limit = static_cast<std::int64_t>(q.limit);
  }
  return run<std::vector<host_event>>(
      *pool_, "list_events", [&](pqxx::connection& conn) -> result<std::vector<host_event>> {
        // One statement, one snapshot: the horizon and the events agree.
        pqxx::nontransaction tx(conn);
        const auto r = tx.exec_prepared("list_events", q.after, host, statuses, limit, q.ns);
        const bool whole_host_history = host && !r.empty() && r[0][8].as<bool>();
        if (!r.empty() && q.after < r[0][6].as<std::int64_t>() && !whole_host_history) {
          return make_error(errc::history_gone, "event history no longer available");
        }
        std::vector<host_event> out;
        out.reserve(r.size());
        for (const auto& row : r) {
          if (row[0].is_null()) {
            continue;  // the horizon row alone: no event matched
          }
          host_event e;
          e.id = row[0].as<std::int64_t>();
          e.host_id = row[1].as<std::string>();
          e.type = parse_event_type(row[2]);
          e.status = parse_status(row[3]);
          e.at = from_us(row[4].as<std::int64_t>());
          e.last_error = row[5].as<std::string>();
          e.ns = row[7].as<std::string>();
          out.push_back(std::move(e));
        }
        return out;
      });
}

result<std::int64_t> pg_store::newest_event_id() {
  return run<std::int64_t>(*pool_, "newest_event_id",
                           [&](pqxx::connection& conn) -> result<std::int64_t> {
                             pqxx::nontransaction tx(conn);
                             return tx.exec_prepared1("newest_event_id")[0].as<std::int64_t>();
                           });
}

result<std::int64_t> pg_store::prune_events(timestamp before) {
  return run<std::int64_t>(
      *pool_, "prune_events", [&](pqxx::connection& conn) -> result<std::int64_t> {
        // One statement: the events and the horizon move together.
        pqxx::nontransaction tx(conn);
        return tx.exec_prepared1("prune_events", ts(before))[0].as<std::int64_t>();
      });
}

// Scoped keys and the audit log (API.md "Tenants: scoped keys").

namespace {

constexpr const char* key_columns =
    "id::text, namespace, name, key_hash, max_hosts, max_cpus, max_memory_mib, "
    "(extract(epoch from created_at) * 1000000)::bigint, "
    "(extract(epoch from revoked_at) * 1000000)::bigint";

api_key_record read_key(const pqxx::row& r) {
  api_key_record k;
  k.id = r[0].as<std::string>();
  k.ns = r[1].as<std::string>();
  k.name = r[2].as<std::string>();
  k.key_hash = r[3].as<std::string>();
  k.quota.max_hosts = opt<std::int64_t>(r[4]);
  k.quota.max_cpus = opt<std::int64_t>(r[5]);
  k.quota.max_memory_mib = opt<std::int64_t>(r[6]);
  k.created_at = from_us(r[7].as<std::int64_t>());
  k.revoked_at = opt_ts(r[8]);
  return k;
}

}  // namespace

result<void> pg_store::insert_key(const api_key_record& k) {
  const auto id = parse_uuid(k.id);
  if (!id) {
    return make_error(errc::internal, "key id is not a UUID");
  }
  return run<void>(*pool_, "insert_key", [&](pqxx::connection& conn) -> result<void> {
    pqxx::work tx(conn);
    tx.exec_params(
        "INSERT INTO api_keys (id, namespace, name, key_hash, max_hosts, max_cpus, "
        "max_memory_mib, created_at) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8::timestamptz)",
        *id, k.ns, k.name, k.key_hash, k.quota.max_hosts, k.quota.max_cpus, k.quota.max_memory_mib,
        ts(k.created_at));
    tx.commit();
    return {};
  });
}

result<std::vector<api_key_record>> pg_store::list_keys() {
  return run<std::vector<api_key_record>>(
      *pool_, "list_keys", [&](pqxx::connection& conn) -> result<std::vector<api_key_record>> {
        pqxx::nontransaction tx(conn);
        std::vector<api_key_record> out;
        for (const auto& row :
             tx.exec(std::string("SELECT ") + key_columns +
                     " FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id")) {
          out.push_back(read_key(row));
        }
        return out;
      });
}

result<bool> pg_store::revoke_key(std::string_view id_text, timestamp now) {
  const auto id = parse_uuid(id_text);
  if (!id) {
    return false;
  }
  return run<bool>(*pool_, "revoke_key", [&](pqxx::connection& conn) -> result<bool> {
    pqxx::work tx(conn);
    const auto r = tx.exec_params(
        "UPDATE api_keys SET revoked_at = $2::timestamptz WHERE id = $1::uuid AND revoked_at "
        "IS NULL RETURNING 1",
        *id, ts(now));
    tx.commit();
    return !r.empty();
  });
}

result<std::optional<api_key_record>> pg_store::find_key(std::string_view key_hash) {
  return run<std::optional<api_key_record>>(
      *pool_, "find_key", [&](pqxx::connection& conn) -> result<std::optional<api_key_record>> {
        pqxx::nontransaction tx(conn);
        const auto r = tx.exec_prepared("find_key", std::string(key_hash));
        if (r.empty()) {
          return std::optional<api_key_record>();
        }
        return std::optional<api_key_record>(read_key(r[0]));
      });
}

result<std::int64_t> pg_store::append_audit(const audit_entry& e) {
  std::optional<std::string> host;
  if (e.host_id) {
    host = parse_uuid(*e.host_id);  // a malformed path id names no host
  }
  return run<std::int64_t>(
      *pool_, "append_audit", [&](pqxx::connection& conn) -> result<std::int64_t> {
        pqxx::work tx(conn);
        const auto id = tx.exec_prepared1("append_audit", ts(e.at), e.key_id, e.ns, e.action, host,
                                          e.request_id, e.status)[0]
                            .as<std::int64_t>();
        tx.commit();
        return id;
      });
}

result<std::vector<audit_entry>> pg_store::list_audit(const audit_query& q) {
  return run<std::vector<audit_entry>>(
      *pool_, "list_audit", [&](pqxx::connection& conn) -> result<std::vector<audit_entry>> {
        pqxx::nontransaction tx(conn);
        std::vector<audit_entry> out;
        const auto r = tx.exec_params(
            "SELECT id, (extract(epoch from at) * 1000000)::bigint, key_id, namespace, action, "
            "host_id::text, request_id, status FROM audit_log WHERE id > $1::bigint AND "
            "($2::text IS NULL OR namespace = $2) ORDER BY id LIMIT $3::bigint",
            q.after, q.ns, static_cast<std::int64_t>(q.limit));
        out.reserve(r.size());
        for (const auto& row : r) {
          audit_entry e;
          e.id = row[0].as<std::int64_t>();
          e.at = from_us(row[1].as<std::int64_t>());
          e.key_id = row[2].as<std::string>();
          e.ns = opt<std::string>(row[3]);
          e.action = row[4].as<std::string>();
          e.host_id = opt<std::string>(row[5]);
          e.request_id = row[6].as<std::string>();
          e.status = row[7].as<int>();
          out.push_back(std::move(e));
        }
        return out;
      });
}

}  // namespace litterbox::controlplane::pg
