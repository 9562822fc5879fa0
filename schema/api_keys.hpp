#pragma once

#include "base/result.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace litterbox::schema {

/// True if `ns` can name a namespace: 1–63 of a-z 0-9 -, starting and ending with a letter or
/// digit (a DNS label, so that it is safe in logs, metrics and file names).
bool valid_namespace(std::string_view ns);

/// The body of POST /keys (API.md "Tenants: scoped keys"). Unset quota limits are no limit.
struct create_key_request {
  std::string ns;
  std::string name;
  std::optional<std::int64_t> max_hosts;
  std::optional<std::int64_t> max_cpus;
  std::optional<std::int64_t> max_memory_mib;
};

/// Parses a POST /keys body; every problem is reported (errc::invalid_json / invalid_field
/// with `issues`, loc ["body", <field>...]). Fields it does not know are ignored.
result<create_key_request> parse_create_key_request(std::string_view body);

}  // namespace litterbox::schema
