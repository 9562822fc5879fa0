#include "controlplane/core/errc.hpp"
#include "controlplane/pg/connection_pool.hpp"
#include "controlplane/pg/embedded_migrations.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <cstdlib>
#include <stdexcept>

namespace litterbox::controlplane::pg {
namespace {

using namespace std::chrono_literals;

TEST(TestDatabase, MissingEnvironmentVariableFailsTheTestWithAClearMessage) {
  const char* set = std::getenv("LITTERBOX_TEST_DATABASE_URL");  // NOLINT(concurrency-mt-unsafe)
  const std::string saved = set == nullptr ? "" : set;
  ::unsetenv("LITTERBOX_TEST_DATABASE_URL");  // NOLINT(concurrency-mt-unsafe)
  EXPECT_NONFATAL_FAILURE(
      {
        try {
          const test::test_database db;
        } catch (const std::runtime_error&) {
        }
      },
      "LITTERBOX_TEST_DATABASE_URL is not set");
  if (!saved.empty()) {
    ::setenv("LITTERBOX_TEST_DATABASE_URL", saved.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  }
}

TEST(TestDatabase, IsMigratedAndDroppedAfterwards) {
  std::string name;
  {
    const test::test_database db;
    name = db.name();
    pqxx::connection c(db.url());
    pqxx::nontransaction tx(c);
    EXPECT_EQ(tx.exec("SELECT count(*) FROM schema_migrations")[0][0].as<int>(),
              static_cast<int>(controlplane::pg::migrations.size()));
  }
  pqxx::connection admin(test::admin_database_url());
  pqxx::nontransaction tx(admin);
  EXPECT_TRUE(tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", name).empty());
}

TEST(ConnectionPool, AcquireTimesOutWithUnavailableWhenEveryConnectionIsLeased) {
  const test::test_database db;
  connection_pool pool(db.url(), 1, 20ms, nullptr);
  auto first = pool.acquire();
  ASSERT_TRUE(first.has_value()) << first.error().message;
  const auto second = pool.acquire();
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, errc::unavailable);
}

TEST(ConnectionPool, AReturnedConnectionIsReusedAndABrokenOneReplaced) {
  const test::test_database db;
  connection_pool pool(db.url(), 1, 1s, nullptr);
  int backend = 0;
  {
    auto l = pool.acquire();
    ASSERT_TRUE(l.has_value());
    EXPECT_TRUE(l.value().fresh());
    backend = l.value().conn().backendpid();
  }
  {
    auto l = pool.acquire();
    ASSERT_TRUE(l.has_value());
    EXPECT_FALSE(l.value().fresh());
    EXPECT_EQ(l.value().conn().backendpid(), backend);
    l.value().mark_broken();
  }
  auto l = pool.acquire();
  ASSERT_TRUE(l.has_value());
  EXPECT_TRUE(l.value().fresh());
  EXPECT_NE(l.value().conn().backendpid(), backend);
}

TEST(ConnectionPool, ConnectTimeoutIsAddedUnlessTheUrlNamesOne) {
  EXPECT_EQ(with_connect_timeout("postgresql://h/db", 5), "postgresql://h/db?connect_timeout=5");
  EXPECT_EQ(with_connect_timeout("postgresql://h/db?sslmode=disable", 5),
            "postgresql://h/db?sslmode=disable&connect_timeout=5");
  EXPECT_EQ(with_connect_timeout("host=h dbname=db", 5), "host=h dbname=db connect_timeout=5");
  EXPECT_EQ(with_connect_timeout("postgresql://h/db?connect_timeout=1", 5),
            "postgresql://h/db?connect_timeout=1");
}

}  // namespace
}  // namespace litterbox::controlplane::pg
