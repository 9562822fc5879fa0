#include "controlplane/pg/pg_store.hpp"

#include "base/log.hpp"
#include "base/time.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/pg/connection_pool.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

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
    "(extract(epoch from h.provision_deadline) * 1000000)::bigint";
constexpr int host_column_count = 23;

constexpr int max_attempts = 5;
constexpr int port_attempts = 200;

std::string cols() {
  return host_columns;
}

// Statements prepared on every connection; the hot ones (get_host) cost one round trip.
std::vector<std::pair<std::string, std::string>> statements() {
  const std::string c = cols();
  return {
      {"get_host", "SELECT " + c + " FROM hosts h WHERE h.id = $1::uuid"},
      {"insert_host",
       "INSERT INTO hosts AS h (id, name, status, provider, image, image_digest, instance_type, "
       "cpus, memory_mib, disk_gb, ssh_host, ssh_port, internal_ssh_host, ssh_username, "
       "known_hosts, last_error, lease_seconds, owner_id, created_at, updated_at, activated_at, "
       "expires_at, provision_deadline) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
       "$11, $12, $13, $14, $15, $16, $17, $18::uuid, $19::timestamptz, $20::timestamptz, "
       "$21::timestamptz, $22::timestamptz, $23::timestamptz) RETURNING " +
           c},
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
           " FROM hosts h WHERE ($1::text[] IS NULL OR h.status = ANY($1::text[])) "
           "AND ($2::uuid IS NULL OR h.id < $2::uuid) ORDER BY h.id DESC LIMIT $3::bigint"},
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
      {"free_port",
       // Concurrent creates must not all race for the same port: each searches the range
       // from its own starting point ($3, derived from its host id), wrapping around.
       "SELECT p FROM generate_series($1::int, $2::int) AS p WHERE NOT EXISTS "
       "(SELECT 1 FROM ssh_ports s WHERE s.port = p) "
       "ORDER BY (p - $1::int + $3::int) % ($2::int - $1::int + 1) LIMIT 1"},
      {"lease_port",
       "INSERT INTO ssh_ports (port, host_id, leased_at) VALUES ($1, $2::uuid, $3::timestamptz) "
       "ON CONFLICT DO NOTHING RETURNING port"},
      {"count_by_status", "SELECT status, count(*) FROM hosts GROUP BY status"},
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
       "(h.owner_id IS NULL OR i.id IS NULL OR i.heartbeat_at < $1::timestamptz - "
       "make_interval(secs => 3.0 * i.heartbeat_interval_s) OR (h.provision_deadline IS NOT "
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
      {"digests_in_use", "SELECT DISTINCT image_digest FROM hosts WHERE image_digest IS NOT NULL"},
      {"ping", "SELECT 1"},
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
  return rec;
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

// Leases a free port of [lo, hi] to `id` inside `tx`; nullopt when none is free. Another
// transaction may take the port picked between the two statements: the primary key turns
// that into an empty insert (after waiting for the other to finish) and we pick again.
std::optional<int> lease_free_port(pqxx::transaction_base& tx, const std::string& id, int lo,
                                   int hi, timestamp now) {
  const int start = port_search_start(id, lo, hi);
  for (int attempt = 0; attempt < port_attempts; ++attempt) {
    const auto held = tx.exec_prepared("port_of", id);
    if (!held.empty()) {
      return held[0][0].as<int>();
    }
    const auto free = tx.exec_prepared("free_port", lo, hi, start);
    if (free.empty()) {
      return std::nullopt;
    }
    const auto leased = tx.exec_prepared("lease_port", free[0][0].as<int>(), id, ts(now));
    if (!leased.empty()) {
      return leased[0][0].as<int>();
    }
  }
  throw pqxx::transaction_rollback("port allocation contention");
}

error no_port() {
  return make_error(errc::capacity, "no SSH port left");
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
  std::optional<std::string> owner;
  if (h.owner_id) {
    owner = parse_uuid(*h.owner_id);
    if (!owner) {
      return make_error(errc::internal, "owner id is not a UUID");
    }
  }
  const schema::host& w = h.host;
  // Inserts the row and leases its port; false (and the caller rolls back) when no port is
  // free, so that a row never exists without its port and running out keeps nothing.
  auto insert_row = [&](pqxx::transaction_base& tx, insert_outcome& out) {
    out.created = true;
    out.existing = read_host(tx.exec_prepared1(
        "insert_host", *id, w.name, std::string(schema::to_string(w.status)), w.provider, w.image,
        w.image_digest, w.instance_type, w.cpus, w.memory_mib, w.disk_gb, w.ssh_host, w.ssh_port,
        w.internal_ssh_host, w.ssh_username, w.known_hosts, w.last_error, h.lease_seconds, owner,
        ts(w.created_at), ts(w.updated_at), ts(w.activated_at), ts(w.expires_at),
        ts(h.provision_deadline)));
    const auto port = lease_free_port(tx, *id, ports.lo, ports.hi, now);
    if (!port) {
      return false;
    }
    out.port = *port;
    return true;
  };
  return run<insert_outcome>(
      *pool_, "insert_host", [&](pqxx::connection& conn) -> result<insert_outcome> {
        if (!key) {
          // Explicit commit for the same reason as claim_expired: a retry after an unseen
          // commit would insert the row twice.
          pqxx::work tx(conn);
          insert_outcome out;
          if (!insert_row(tx, out)) {
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
            insert_outcome out;
            if (!insert_row(tx, out)) {
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
        return read_hosts(tx.exec_prepared("list_hosts", statuses, after, limit));
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
  const std::string sql = "UPDATE hosts h SET " + sets +
                          " WHERE h.id = $1::uuid AND h.status = ANY($2::text[]) RETURNING " +
                          cols();
  return run<host_record>(*pool_, "transition", [&](pqxx::connection& conn) -> result<host_record> {
    pqxx::work tx(conn);
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
    const std::string& overdue_prefix, std::size_t limit) {
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
                                        overdue_prefix, n);
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

}  // namespace litterbox::controlplane::pg
