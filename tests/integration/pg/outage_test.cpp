#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "tests/support/pg_cluster.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>

namespace litterbox::controlplane::pg {
namespace {

using schema::host_status;

TEST(PgStoreOutage, StoppedDatabaseIsUnavailableAndTheSameStoreRecoversAfterRestart) {
  test::test_cluster cluster;
  test::test_database db(cluster.url());
  pg_store store(db.url(), 4);

  const timestamp now(std::chrono::microseconds(1'790'000'000'000'000));
  host_record r;
  r.host.id = new_uuid_v7(now);
  r.host.name = schema::host_name_for(r.host.id);
  r.host.status = host_status::active;
  r.host.provider = "libvirt";
  r.host.image = "img";
  r.host.cpus = 1;
  r.host.memory_mib = 256;
  r.host.ssh_username = "agent";
  r.host.created_at = now;
  r.host.updated_at = now;
  ASSERT_TRUE(store.insert_host(r, std::nullopt, port_range{20000, 29999}, now));
  ASSERT_TRUE(store.get_host(r.host.id));  // the pool now holds an open connection

  cluster.stop();
  const auto down = store.get_host(r.host.id);
  ASSERT_FALSE(down.has_value());
  EXPECT_EQ(down.error().code, errc::unavailable);
  EXPECT_EQ(store.ping().error().code, errc::unavailable);
  EXPECT_EQ(store.list_hosts({}).error().code, errc::unavailable);
  EXPECT_EQ(store.renew(r.host.id, now, now).error().code, errc::unavailable);

  cluster.start();
  EXPECT_TRUE(store.ping());
  const auto up = store.get_host(r.host.id);
  ASSERT_TRUE(up.has_value()) << up.error().message;
  EXPECT_EQ(up.value().host, r.host);
}

TEST(PgStoreOutage, RestartWhileIdleIsInvisibleToTheNextCall) {
  test::test_cluster cluster;
  test::test_database db(cluster.url());
  pg_store store(db.url(), 4);
  ASSERT_TRUE(store.ping());
  cluster.stop();
  cluster.start();
  // The pooled connection died with the old server; the store reconnects within the call.
  EXPECT_TRUE(store.ping());
  EXPECT_TRUE(store.all_host_ids());
}

}  // namespace
}  // namespace litterbox::controlplane::pg
