#pragma once

#include <array>
#include <string_view>

// Defined in the file lb_embed generates for litterbox::schema (schema/CMakeLists.txt).
namespace litterbox::schema::embedded {
extern const std::string_view migration_0001;
extern const std::string_view migration_0002;
extern const std::string_view migration_0003;
extern const std::string_view migration_0004;
extern const std::string_view migration_0005;
extern const std::string_view migration_0006;
extern const std::string_view migration_0007;
extern const std::string_view migration_0008;
}  // namespace litterbox::schema::embedded

namespace litterbox::controlplane::pg {

/// One numbered schema migration.
struct migration {
  int version;
  std::string_view name;
  const std::string_view* sql;
};

/// Every migration, in the order it must be applied. A new file is appended here and in the
/// lb_embed call of schema/CMakeLists.txt; old ones never change once deployed.
inline constexpr std::array migrations{
    migration{1, "0001_init", &schema::embedded::migration_0001},
    migration{2, "0002_lifecycle_bounds", &schema::embedded::migration_0002},
    migration{3, "0003_templates_and_pool", &schema::embedded::migration_0003},
    migration{4, "0004_events", &schema::embedded::migration_0004},
    migration{5, "0005_http_proxies", &schema::embedded::migration_0005},
    migration{6, "0006_tenants", &schema::embedded::migration_0006},
    migration{7, "0007_nodes", &schema::embedded::migration_0007},
    migration{8, "0008_node_templates", &schema::embedded::migration_0008},
};

}  // namespace litterbox::controlplane::pg
