#include "controlplane/pg/migrate.hpp"

#include "base/secret.hpp"
#include "controlplane/core/errc.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <latch>
#include <thread>

namespace litterbox::controlplane::pg {
namespace {

/// An empty database (no schema at all), dropped at the end of the test.
struct bare_database : test::test_database {
  bare_database() : test::test_database(schema::empty) {}
};

long long count(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long long>();
}

TEST(Migrate, AppliesEveryMigrationOnceAndNothingTheSecondTime) {
  bare_database db;
  const auto first = migrate(db.url());
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first.value(), 2);
  const auto second = migrate(db.url());
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_EQ(second.value(), 0);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM schema_migrations"), 2);
  EXPECT_EQ(count(db.url(),
                  "SELECT count(*) FROM schema_migrations WHERE version = 1 AND "
                  "name = '0001_init' AND applied_at IS NOT NULL"),
            1);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM hosts"), 0);
}

TEST(Migrate, TwoConcurrentMigratorsApplyEachMigrationExactlyOnce) {
  bare_database db;
  std::latch start(2);
  result<int> a = 0;
  result<int> b = 0;
  std::thread ta([&] {
    start.arrive_and_wait();
    a = migrate(db.url());
  });
  std::thread tb([&] {
    start.arrive_and_wait();
    b = migrate(db.url());
  });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.has_value()) << a.error().message;
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_EQ(a.value() + b.value(), 2);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM schema_migrations"), 2);
}

TEST(Migrate, AnUnreachableDatabaseIsUnavailable) {
  bare_database db;
  // A database name that does not exist: the server refuses the connection.
  const auto out = migrate(test::with_database(db.url(), "lbtest_missing_" + random_hex(8)));
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::unavailable);
}

TEST(Migrate, WithDatabaseReplacesOnlyTheDatabaseName) {
  EXPECT_EQ(test::with_database("postgresql://u@h:5/postgres", "x"), "postgresql://u@h:5/x");
  EXPECT_EQ(test::with_database("postgresql://u@h:5", "x"), "postgresql://u@h:5/x");
  EXPECT_EQ(test::with_database("postgresql://u@h:5/db?sslmode=disable", "x"),
            "postgresql://u@h:5/x?sslmode=disable");
  EXPECT_EQ(test::with_database("host=h port=5", "x"), "host=h port=5 dbname=x");
}

}  // namespace
}  // namespace litterbox::controlplane::pg
