#include "controlplane/pg/migrate.hpp"

#include "controlplane/core/errc.hpp"
#include "controlplane/pg/connection_pool.hpp"
#include "controlplane/pg/embedded_migrations.hpp"

#include <pqxx/connection>
#include <pqxx/except>
#include <pqxx/transaction>
#include <spdlog/spdlog.h>

#include <memory>

namespace litterbox::controlplane::pg {
namespace {

// Arbitrary but fixed: every litterboxd that migrates takes this same lock.
constexpr std::int64_t migration_lock_key = 0x6c6974746572626f;  // "litterbo"

}  // namespace

result<int> migrate(const std::string& url) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(with_connect_timeout(url, 5));
  } catch (const std::exception&) {
    // The message may echo the connection string: never pass it on.
    return make_error(errc::unavailable, "database unavailable");
  }
  int applied = 0;
  for (const auto& m : migrations) {
    try {
      pqxx::work tx(*conn);
      // Held to the end of the transaction: a second migrator waits here, then sees the
      // version recorded and skips it.
      tx.exec_params("SELECT pg_advisory_xact_lock($1)", migration_lock_key);
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
          "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
      if (!tx.exec_params("SELECT 1 FROM schema_migrations WHERE version = $1", m.version)
               .empty()) {
        continue;
      }
      tx.exec(std::string(*m.sql));
      tx.exec_params(
          "INSERT INTO schema_migrations (version, name, applied_at) "
          "VALUES ($1, $2, now())",
          m.version, std::string(m.name));
      tx.commit();
      ++applied;
      spdlog::info("applied schema migration {}", m.name);
    } catch (const pqxx::broken_connection&) {
      return make_error(errc::unavailable, "database unavailable");
    } catch (const pqxx::sql_error& e) {
      std::string msg = e.what();
      if (const auto nl = msg.find('\n'); nl != std::string::npos) {
        msg.resize(nl);
      }
      spdlog::error("schema migration {} failed: sqlstate {}: {}", m.name, e.sqlstate(), msg);
      return make_error(errc::internal,
                        "schema migration " + std::string(m.name) + " failed: " + msg);
    } catch (const std::exception& e) {
      if (!conn->is_open()) {
        return make_error(errc::unavailable, "database unavailable");
      }
      spdlog::error("schema migration {} failed: {}", m.name, e.what());
      return make_error(errc::internal, "schema migration " + std::string(m.name) + " failed");
    }
  }
  return applied;
}

}  // namespace litterbox::controlplane::pg
