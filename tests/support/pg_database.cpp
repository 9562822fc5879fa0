#include "tests/support/pg_database.hpp"

#include "base/secret.hpp"
#include "controlplane/pg/migrate.hpp"

#include <gtest/gtest.h>
#include <pqxx/connection>
#include <pqxx/nontransaction>

#include <cstdlib>
#include <stdexcept>

namespace litterbox::test {

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
  {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(name_));
  }
  url_ = with_database(admin_url_, name_);
  if (s == schema::empty) {
    return;
  }
  const auto migrated = controlplane::pg::migrate(url_);
  if (!migrated) {
    const std::string msg = "migrating test database failed: " + migrated.error().message;
    ADD_FAILURE() << msg;
    throw std::runtime_error(msg);
  }
}

test_database::~test_database() {
  try {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "dropping test database " << name_ << " failed: " << e.what();
  }
}

}  // namespace litterbox::test
