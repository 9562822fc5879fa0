#pragma once

#include "base/uuid.hpp"
#include "controlplane/core/store.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "schema/host.hpp"
#include "tests/support/memory_store.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>

#include <string>

// What the store-side contract suites share: the two implementations every typed suite runs
// against (the in-memory fake and pg_store on a throw-away database), and a plain host row.

namespace litterbox::controlplane::contract {

struct memory_backend {
  static constexpr const char* name = "memory";
  testing::memory_store store;
};

struct pg_backend {
  static constexpr const char* name = "pg";
  test::test_database db;
  pg::pg_store store{db.url(), 8};
};

/// Names each instantiation after its backend ("memory", "pg").
struct backend_names {
  template <class T>
  static std::string GetName(int /*index*/) {
    return T::name;
  }
};

using store_backends = ::testing::Types<memory_backend, pg_backend>;

/// A host row of the admin namespace as a create would insert it: 1 vCPU, 512 MiB.
inline host_record make_host(timestamp created,
                             schema::host_status status = schema::host_status::provisioning) {
  host_record r;
  auto& h = r.host;
  h.id = new_uuid_v7(created);
  h.name = schema::host_name_for(h.id);
  h.status = status;
  h.provider = "libvirt";
  h.image = "registry.test/debian:12";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = created;
  h.updated_at = created;
  return r;
}

}  // namespace litterbox::controlplane::contract
