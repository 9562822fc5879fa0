#include "schema/api_keys.hpp"

#include "schema/errc.hpp"
#include "schema/json_body.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <vector>

namespace litterbox::schema {
namespace {

using json = nlohmann::json;

constexpr int k_max_depth = 16;
constexpr std::size_t k_max_name = 200;

bool lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

bool valid_namespace(std::string_view ns) {
  if (ns.empty() || ns.size() > 63 || !lower_alnum(ns.front()) || !lower_alnum(ns.back())) {
    return false;
  }
  return std::all_of(ns.begin(), ns.end(), [](char c) { return lower_alnum(c) || c == '-'; });
}

result<create_key_request> parse_create_key_request(std::string_view body) {
  auto parsed = parse_json_body(body, k_max_depth);
  if (!parsed) {
    return parsed.error();
  }
  const json j = parsed->is_null() ? json::object() : std::move(*parsed);
  std::vector<field_issue> issues;
  create_key_request out;
  if (!j.is_object()) {
    issues.push_back({{"body"},
                      "Input should be a valid dictionary or object to extract fields from",
                      "model_attributes_type"});
  } else {
    const auto ns = j.find("namespace");
    if (ns == j.end()) {
      issues.push_back({{"body", "namespace"}, "Field required", "missing"});
    } else if (!ns->is_string()) {
      issues.push_back({{"body", "namespace"}, "Input should be a valid string", "string_type"});
    } else if (out.ns = ns->get<std::string>(); !valid_namespace(out.ns)) {
      issues.push_back(
          {{"body", "namespace"},
           "namespace must be 1-63 of a-z, 0-9 and -, starting and ending with a letter or digit"});
    }
    if (const auto name = j.find("name"); name != j.end() && !name->is_null()) {
      if (!name->is_string()) {
        issues.push_back({{"body", "name"}, "Input should be a valid string", "string_type"});
      } else if (out.name = name->get<std::string>(); out.name.size() > k_max_name) {
        issues.push_back({{"body", "name"}, "name must be at most 200 bytes"});
      }
    }
    if (const auto quota = j.find("quota"); quota != j.end() && !quota->is_null()) {
      if (!quota->is_object()) {
        issues.push_back({{"body", "quota"}, "Input should be a valid dictionary", "dict_type"});
      } else {
        const auto limit = [&](const char* field, std::optional<std::int64_t>& into) {
          const auto v = quota->find(field);
          if (v == quota->end() || v->is_null()) {
            return;
          }
          if (!v->is_number_integer() ||
              (v->is_number_unsigned() &&
               v->get<std::uint64_t>() >
                   static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) ||
              (!v->is_number_unsigned() &&
               (v->get<std::int64_t>() < 0 ||
                v->get<std::int64_t>() > std::numeric_limits<std::int32_t>::max()))) {
            issues.push_back({{"body", "quota", field},
                              "Input should be an integer between 0 and 2147483647",
                              "int_parsing"});
            return;
          }
          into = v->get<std::int64_t>();
        };
        limit("max_hosts", out.max_hosts);
        limit("max_cpus", out.max_cpus);
        limit("max_memory_mib", out.max_memory_mib);
      }
    }
  }
  if (!issues.empty()) {
    error e = make_error(errc::invalid_field, "request validation failed");
    e.issues = std::move(issues);
    return e;
  }
  return out;
}

}  // namespace litterbox::schema
