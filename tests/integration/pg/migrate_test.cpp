#include "controlplane/pg/migrate.hpp"

#include "base/secret.hpp"
#include "base/time.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/pg/embedded_migrations.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <latch>
#include <string>
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

constexpr int all_migrations = static_cast<int>(migrations.size());

/// Applies migrations up to `version` the way migrate() records them, as an older
/// litterboxd would have left the database.
void apply_up_to(const std::string& url, int version) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec(
      "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
      "applied_at timestamptz NOT NULL DEFAULT now())");
  for (const auto& m : migrations) {
    if (m.version <= version) {
      tx.exec(std::string(*m.sql));
      tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version,
                     std::string(m.name));
    }
  }
  tx.commit();
}

TEST(Migrate, AppliesEveryMigrationOnceAndNothingTheSecondTime) {
  bare_database db;
  const auto first = migrate(db.url());
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first.value(), all_migrations);
  const auto second = migrate(db.url());
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_EQ(second.value(), 0);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM schema_migrations"), all_migrations);
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
  EXPECT_EQ(a.value() + b.value(), all_migrations);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM schema_migrations"), all_migrations);
}

TEST(Migrate, UpgradingFromTheFirstSchemaKeepsEveryRowAsBootedAndUnpooled) {
  bare_database db;
  apply_up_to(db.url(), 1);
  const std::string active = "0190c0de-0000-7000-8000-0000000000f1";
  const std::string booting = "0190c0de-0000-7000-8000-0000000000f2";
  {
    pqxx::connection c(db.url());
    pqxx::work tx(c);
    tx.exec(
        "INSERT INTO instances (id, hostname, pid, started_at, heartbeat_at) VALUES "
        "('0190c0de-0000-7000-8000-0000000000e1', 'old', 1, now(), now())");
    for (const auto& [id, status] :
         {std::pair{active, "active"}, std::pair{booting, "creating_vm"}}) {
      tx.exec_params(
          "INSERT INTO hosts (id, name, status, provider, image, image_digest, cpus, memory_mib, "
          "ssh_username, created_at, updated_at) VALUES ($1::uuid, $2, $3, 'libvirt', "
          "'registry.test/debian:12', 'sha256:old', 1, 512, 'agent', "
          "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
          id, schema::host_name_for(id), std::string(status));
    }
    tx.exec_params(
        "INSERT INTO ssh_ports (port, host_id, leased_at) VALUES (22000, $1::uuid, now())", active);
    tx.exec_params(
        "INSERT INTO idempotency_keys (namespace, key, fingerprint, host_id, created_at, "
        "expires_at) VALUES ('default', 'k', 'fp', $1::uuid, now(), now() + interval '1 day')",
        active);
    tx.commit();
  }

  const auto applied = migrate(db.url());
  ASSERT_TRUE(applied.has_value()) << applied.error().message;
  EXPECT_EQ(applied.value(), all_migrations - 1);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM hosts WHERE create_path = 'boot' AND NOT pooled"),
            2);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM ssh_ports WHERE template_id IS NULL"), 1);
  EXPECT_EQ(count(db.url(), "SELECT count(*) FROM idempotency_keys"), 1);

  // The store reads the upgraded rows, lists them, and keeps their ports from templates.
  pg_store store(db.url(), 2);
  const auto got = store.get_host(active);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got.value().path, create_path::boot);
  EXPECT_FALSE(got.value().pooled);
  EXPECT_EQ(got.value().host.status, schema::host_status::active);
  EXPECT_TRUE(store.get_host(booting).value().provision_deadline);
  EXPECT_EQ(store.list_hosts({}).value().size(), 2U);
  const auto now = parse_rfc3339("2026-01-01T00:01:00Z").value();
  ASSERT_TRUE(store.heartbeat("0190c0de-0000-7000-8000-0000000000e2", "new", 2,
                              std::chrono::seconds(10), now));
  template_record want;
  want.id = "0190c0de-0000-7000-8000-0000000000d1";
  want.key = template_key_row{"sha256:old", 1, 512, std::nullopt, "agent"};
  want.image = "registry.test/debian:12";
  want.owner_id = "0190c0de-0000-7000-8000-0000000000e2";
  const auto built = store.claim_template_build(want, port_range{22000, 22001}, now);
  ASSERT_TRUE(built.has_value()) << built.error().message;
  ASSERT_TRUE(built.value());
  EXPECT_EQ(built.value()->ssh_port, 22001);
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
