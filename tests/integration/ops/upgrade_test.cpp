#include "base/secret.hpp"
#include "controlplane/pg/embedded_migrations.hpp"
#include "controlplane/pg/migrate.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <map>
#include <string>

namespace litterbox {
namespace {

namespace pg = controlplane::pg;

/// An empty database (no schema at all), dropped at the end of the test.
struct bare_database : test::test_database {
  bare_database() : test::test_database(schema::empty) {}
};

/// Brings `url` to the schema of the first release exactly as `migrate` recorded it then:
/// migration 0001 applied and listed in schema_migrations, nothing later.
void apply_first_release_schema(const std::string& url) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec(
      "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
      "applied_at timestamptz NOT NULL DEFAULT now())");
  const auto& first = pg::migrations.front();
  ASSERT_EQ(first.version, 1);
  tx.exec(std::string(*first.sql));
  tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", first.version,
                 std::string(first.name));
  tx.commit();
}

/// Rows as the first release wrote them: an active host with a lease, port and key; one
/// still being created by a live instance; one without expiry; one in error.
void insert_first_release_rows(const std::string& url) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec(
      "INSERT INTO instances (id, hostname, pid, started_at, heartbeat_at) VALUES "
      "('018f0000-0000-7000-8000-0000000000aa', 'hv1', 4242, now(), now())");
  tx.exec(
      "INSERT INTO hosts (id, name, status, provider, image, image_digest, cpus, memory_mib, "
      "disk_gb, ssh_host, ssh_port, internal_ssh_host, ssh_username, known_hosts, expires_at, "
      "created_at, updated_at, activated_at) VALUES "
      "('018f0000-0000-7000-8000-000000000001', 'brave-otter', 'active', 'libvirt', "
      "'127.0.0.1:5000/litterbox/debian:12', 'sha256:aa', 2, 2048, 20, '127.0.0.1', 22001, "
      "'192.168.122.5', 'agent', '[127.0.0.1]:22001 ssh-ed25519 AAAA', "
      "'2030-01-01T00:00:00Z', now(), now(), now())");
  tx.exec(
      "INSERT INTO hosts (id, name, status, provider, image, cpus, memory_mib, ssh_username, "
      "lease_seconds, owner_id, created_at, updated_at) VALUES "
      "('018f0000-0000-7000-8000-000000000002', 'calm-heron', 'creating_vm', 'libvirt', "
      "'127.0.0.1:5000/litterbox/debian:12', 1, 1024, 'agent', 86400, "
      "'018f0000-0000-7000-8000-0000000000aa', now(), now())");
  tx.exec(
      "INSERT INTO hosts (id, name, status, provider, image, cpus, memory_mib, ssh_username, "
      "ssh_host, ssh_port, known_hosts, created_at, updated_at, activated_at) VALUES "
      "('018f0000-0000-7000-8000-000000000003', 'quiet-lynx', 'active', 'fake', 'img', 1, 512, "
      "'agent', '127.0.0.1', 22002, 'kh', now(), now(), now())");
  tx.exec(
      "INSERT INTO hosts (id, name, status, provider, image, cpus, memory_mib, ssh_username, "
      "last_error, created_at, updated_at) VALUES "
      "('018f0000-0000-7000-8000-000000000004', 'wild-crane', 'error', 'fake', 'img', 1, 512, "
      "'agent', 'boot timed out', now(), now())");
  tx.exec(
      "INSERT INTO ssh_ports (port, host_id, leased_at) VALUES "
      "(22001, '018f0000-0000-7000-8000-000000000001', now()), "
      "(22002, '018f0000-0000-7000-8000-000000000003', now())");
  tx.exec(
      "INSERT INTO idempotency_keys (namespace, key, fingerprint, host_id, created_at, "
      "expires_at) VALUES ('default', 'k1', 'fp', '018f0000-0000-7000-8000-000000000001', now(), "
      "now() + interval '1 day')");
  tx.commit();
}

/// id → status, name, port of every host: what must survive an upgrade unchanged.
std::map<std::string, std::string> host_fingerprints(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::map<std::string, std::string> out;
  for (const auto& row :
       tx.exec("SELECT id::text, name || '|' || status || '|' || ssh_port::text || '|' || "
               "coalesce(expires_at::text, '-') || '|' || known_hosts || '|' || last_error FROM "
               "hosts")) {
    out[row[0].as<std::string>()] = row[1].as<std::string>();
  }
  return out;
}

long count(const std::string& url, const std::string& table) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec1("SELECT count(*) FROM " + tx.quote_name(table))[0].as<long>();
}

TEST(SchemaUpgrade, MigratingFromTheFirstReleaseKeepsEveryHostPortKeyAndInstance) {
  const bare_database db;
  apply_first_release_schema(db.url());
  insert_first_release_rows(db.url());
  const auto before = host_fingerprints(db.url());
  ASSERT_EQ(before.size(), 4U);

  const auto applied = controlplane::migrate(db.url());
  ASSERT_TRUE(applied) << applied.error().message;
  EXPECT_EQ(*applied, static_cast<int>(pg::migrations.size()) - 1);

  EXPECT_EQ(host_fingerprints(db.url()), before);
  EXPECT_EQ(count(db.url(), "ssh_ports"), 2);
  EXPECT_EQ(count(db.url(), "idempotency_keys"), 1);
  EXPECT_EQ(count(db.url(), "instances"), 1);
  EXPECT_EQ(count(db.url(), "schema_migrations"), static_cast<long>(pg::migrations.size()));

  // The code of this release reads every upgraded row.
  pg::pg_store store(db.url(), 1);
  const auto hosts = store.list_hosts({});
  ASSERT_TRUE(hosts) << hosts.error().message;
  EXPECT_EQ(hosts->size(), 4U);
  const auto active = store.get_host("018f0000-0000-7000-8000-000000000001");
  ASSERT_TRUE(active) << active.error().message;
  EXPECT_EQ(active->host.name, "brave-otter");
  EXPECT_EQ(active->host.ssh_port, 22001);
}

TEST(SchemaUpgrade, MigratingTwiceAfterAnUpgradeChangesNothing) {
  const bare_database db;
  apply_first_release_schema(db.url());
  insert_first_release_rows(db.url());
  ASSERT_TRUE(controlplane::migrate(db.url()));
  const auto after_first = host_fingerprints(db.url());
  const auto again = controlplane::migrate(db.url());
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, 0);
  EXPECT_EQ(host_fingerprints(db.url()), after_first);
}

}  // namespace
}  // namespace litterbox
