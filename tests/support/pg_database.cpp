#include "tests/support/pg_database.hpp"

#include "base/secret.hpp"
#include "controlplane/pg/migrate.hpp"
#include "tests/support/litterboxd_process.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/nontransaction>

#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>

namespace litterbox::test {
namespace {

/// Per cluster (admin URL), one database of this process migrated to the current schema, from
/// which every further migrated test database is copied (CREATE DATABASE … TEMPLATE): a copy
/// takes a fraction of the time running every migration takes, and it is the same schema.
/// Each process has templates of its own, so no other process is ever connected to one while
/// it is copied. They are dropped when the process exits (a killed process leaves its template
/// behind like its test databases: the clusters are throw-away).
class migrated_templates {
 public:
  migrated_templates() = default;
  migrated_templates(const migrated_templates&) = delete;
  migrated_templates& operator=(const migrated_templates&) = delete;
  ~migrated_templates() = default;

  /// Drops every template (errors ignored: a test's private cluster may be gone, and so is
  /// its template). Runs from std::atexit, registered after libpqxx was first used, so before
  /// libpqxx's own static objects are destroyed.
  void drop_all() {
    const std::lock_guard lock(mutex_);
    for (const auto& [admin_url, name] : names_) {
      drop(admin_url, name);
    }
    names_.clear();
  }

  /// Creates `name` on `admin_url`'s cluster as a migrated database. Serialized: a template
  /// may not be copied twice at once, nor while it is being made.
  void create_migrated(const std::string& admin_url, const std::string& name) {
    const std::lock_guard lock(mutex_);
    auto it = names_.find(admin_url);
    if (it == names_.end()) {
      const std::string tmpl = "lbtest_template_" + random_hex(8);
      create(admin_url, tmpl, "");
      const auto migrated = controlplane::pg::migrate(with_database(admin_url, tmpl));
      if (!migrated) {
        drop(admin_url, tmpl);
        const std::string msg = "migrating test database failed: " + migrated.error().message;
        ADD_FAILURE() << msg;
        throw std::runtime_error(msg);
      }
      it = names_.emplace(admin_url, tmpl).first;
      static const bool drop_at_exit = std::atexit(drop_templates_at_exit) == 0;
      (void)drop_at_exit;
    }
    create(admin_url, name, it->second);
  }

  static void drop_templates_at_exit();

  static void create(const std::string& admin_url, const std::string& name,
                     const std::string& from) {
    pqxx::connection admin(admin_url);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(name) +
            (from.empty() ? std::string() : " TEMPLATE " + tx.quote_name(from)));
  }

 private:
  static void drop(const std::string& admin_url, const std::string& name) {
    try {
      pqxx::connection admin(admin_url);
      pqxx::nontransaction tx(admin);
      tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name) + " WITH (FORCE)");
    } catch (const std::exception&) {
      // Best effort: the cluster is throw-away.
    }
  }

  std::mutex mutex_;
  std::map<std::string, std::string> names_;
};

migrated_templates& templates() {
  static migrated_templates t;
  return t;
}

void migrated_templates::drop_templates_at_exit() {
  templates().drop_all();
}

}  // namespace

std::string admin_database_url() {
  // Tests read the environment before they start threads.
  const char* env = std::getenv("LITTERBOX_TEST_DATABASE_URL");  // NOLINT(concurrency-mt-unsafe)
  if (env == nullptr || *env == '\0') {
    const std::string msg =
        "LITTERBOX_TEST_DATABASE_URL is not set: integration tests need the admin URL of a "
        "throw-away PostgreSQL cluster (scripts/test starts one), e.g. "
        "postgresql://postgres@127.0.0.1:55432/postgres";
    ADD_FAILURE() << msg;
    throw std::runtime_error(msg);
  }
  return env;
}

std::string with_database(const std::string& url, const std::string& dbname) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) {
    // key=value form: a later keyword overrides an earlier one.
    return url + (url.empty() ? "" : " ") + "dbname=" + dbname;
  }
  const auto authority = scheme + 3;
  const auto query = url.find('?', authority);
  const auto path = url.find('/', authority);
  const std::string rest = query == std::string::npos ? "" : url.substr(query);
  const auto end_of_host =
      (path != std::string::npos && (query == std::string::npos || path < query))
          ? path
          : (query == std::string::npos ? url.size() : query);
  return url.substr(0, end_of_host) + "/" + dbname + rest;
}

test_database::test_database(schema s) : test_database(admin_database_url(), s) {}

test_database::test_database(const std::string& admin_url, schema s)
    : admin_url_(admin_url), name_("lbtest_" + random_hex(8)) {
  if (s == schema::empty) {
    migrated_templates::create(admin_url_, name_, "");
  } else {
    templates().create_migrated(admin_url_, name_);
  }
  url_ = with_database(admin_url_, name_);
}

test_database::~test_database() {
  std::error_code ec;
  std::filesystem::remove_all(fake_node_dir(url_), ec);
  try {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "dropping test database " << name_ << " failed: " << e.what();
  }
}

}  // namespace litterbox::test
