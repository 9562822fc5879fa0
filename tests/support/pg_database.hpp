#pragma once

#include <string>

namespace litterbox::test {

/// A throw-away database on the cluster named by LITTERBOX_TEST_DATABASE_URL (an admin URL),
/// created with a unique name and migrated to the current schema (the process migrates one
/// database per cluster and copies it for every later one); dropped (WITH (FORCE)) when
/// destroyed, together with the fake_node_dir of the servers that ran on it. Without the variable
/// the calling test fails: integration tests never skip.
class test_database {
 public:
  /// Whether the new database gets the schema (every migration) or stays empty.
  enum class schema { migrated, empty };

  explicit test_database(schema s = schema::migrated);
  /// Uses `admin_url` instead of the environment (e.g. a test_cluster's url()).
  explicit test_database(const std::string& admin_url, schema s = schema::migrated);
  test_database(const test_database&) = delete;
  test_database& operator=(const test_database&) = delete;
  ~test_database();

  /// Connection URL of the new database.
  const std::string& url() const { return url_; }
  /// Its name.
  const std::string& name() const { return name_; }

 private:
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

/// `url` (libpq URI or key=value string) with its database name replaced by `dbname`.
std::string with_database(const std::string& url, const std::string& dbname);

/// The admin URL from LITTERBOX_TEST_DATABASE_URL; fails the calling test (and throws) when
/// it is not set.
std::string admin_database_url();

}  // namespace litterbox::test
