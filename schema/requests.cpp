#include "schema/requests.hpp"

#include "base/time.hpp"
#include "schema/errc.hpp"
#include "schema/json_body.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

namespace litterbox::schema {
namespace {

using json = nlohmann::json;

// Bodies are capped at 1 MiB by the server, but a megabyte of '[' is still a million levels;
// no request of ours nests deeper than three.
constexpr int k_max_depth = 32;

/// Parses `body` into JSON or reports why not, as FastAPI would (type json_invalid).
result<json> parse_body(std::string_view body) {
  return parse_json_body(body, k_max_depth);
}

error type_error(std::vector<field_issue> issues) {
  error e = make_error(errc::invalid_field, "request validation failed");
  e.issues = std::move(issues);
  return e;
}

field_issue object_expected() {
  return {{"body"},
          "Input should be a valid dictionary or object to extract fields from",
          "model_attributes_type"};
}

std::optional<std::int64_t> as_int(const json& v) {
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    return v.get<std::int64_t>();
  }
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(u);
    }
    return std::nullopt;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9.0e15) {
      return static_cast<std::int64_t>(d);
    }
  }
  return std::nullopt;
}

/// Reads an optional string field; null means absent.
void read_string(const json& body, const char* key, std::optional<std::string>& out,
                 std::vector<field_issue>& issues) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) {
    return;
  }
  if (!it->is_string()) {
    issues.push_back({{"body", key}, "Input should be a valid string", "string_type"});
    return;
  }
  out = it->get<std::string>();
}

void read_int(const json& body, const char* key, std::optional<std::int64_t>& out,
              std::vector<field_issue>& issues) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) {
    return;
  }
  const auto v = it->is_boolean() ? std::nullopt : as_int(*it);
  if (!v) {
    issues.push_back({{"body", key}, "Input should be a valid integer", "int_type"});
    return;
  }
  out = v;
}

/// Reads `expires_at` as a zoned timestamp into `out`, or records why it is not one.
void read_timestamp(const json& v, std::optional<timestamp>& out,
                    std::vector<field_issue>& issues) {
  if (!v.is_string()) {
    issues.push_back({{"body", "expires_at"}, "Input should be a valid datetime", "datetime_type"});
    return;
  }
  const auto text = v.get<std::string>();
  if (const auto t = parse_rfc3339(text)) {
    out = t;
    return;
  }
  if (parse_rfc3339(text + "Z")) {
    issues.push_back({{"body", "expires_at"}, "Input should have timezone info", "timezone_aware"});
    return;
  }
  issues.push_back(
      {{"body", "expires_at"}, "Input should be a valid datetime", "datetime_parsing"});
}

}  // namespace

result<create_host_request> parse_create_host_request(std::string_view body) {
  auto parsed = parse_body(body);
  if (!parsed) {
    return parsed.error();
  }
  const json& j = *parsed;
  create_host_request r;
  if (j.is_null()) {
    return r;
  }
  if (!j.is_object()) {
    return type_error({object_expected()});
  }
  std::vector<field_issue> issues;
  read_string(j, "image", r.image, issues);
  read_string(j, "provider", r.provider, issues);
  read_string(j, "instance_type", r.instance_type, issues);
  read_int(j, "cpus", r.cpus, issues);
  read_int(j, "memory_mib", r.memory_mib, issues);
  read_int(j, "disk_gb", r.disk_gb, issues);
  if (const auto it = j.find("env"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      issues.push_back({{"body", "env"}, "Input should be a valid dictionary", "dict_type"});
    } else {
      std::map<std::string, std::string> env;
      bool ok = true;
      for (const auto& [k, v] : it->items()) {
        if (!v.is_string()) {
          issues.push_back({{"body", "env"},
                            "Value error, env values must be strings (key " + k + ")",
                            "value_error"});
          ok = false;
          break;
        }
        env.emplace(k, v.get<std::string>());
      }
      if (ok) {
        r.env = std::move(env);
      }
    }
  }
  if (const auto it = j.find("expires_at"); it != j.end()) {
    if (it->is_null()) {
      r.expiry = expiry_kind::never;
    } else {
      r.expiry = expiry_kind::at;
      read_timestamp(*it, r.expires_at, issues);
    }
  }
  if (const auto it = j.find("ssh_authorized_keys"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) {
      issues.push_back(
          {{"body", "ssh_authorized_keys"}, "Input should be a valid list", "list_type"});
    } else {
      std::vector<std::string> keys;
      for (std::size_t i = 0; i < it->size(); ++i) {
        const auto& k = (*it)[i];
        if (!k.is_string()) {
          issues.push_back({{"body", "ssh_authorized_keys", std::to_string(i)},
                            "Input should be a valid string",
                            "string_type"});
          continue;
        }
        keys.push_back(k.get<std::string>());
      }
      r.ssh_authorized_keys = std::move(keys);
    }
  }
  if (!issues.empty()) {
    return type_error(std::move(issues));
  }
  return r;
}

std::string canonical_text(const create_host_request& r) {
  // nlohmann::json (not ordered_json) sorts object keys, which makes the text canonical.
  json j = json::object();
  auto put = [&j](const char* k, const auto& v) {
    if (v) {
      j[k] = *v;
    } else {
      j[k] = nullptr;
    }
  };
  put("image", r.image);
  put("provider", r.provider);
  put("env", r.env);
  put("cpus", r.cpus);
  put("memory_mib", r.memory_mib);
  put("disk_gb", r.disk_gb);
  put("instance_type", r.instance_type);
  put("ssh_authorized_keys", r.ssh_authorized_keys);
  switch (r.expiry) {
    case expiry_kind::omitted:
      j["expires_at"] = "(default)";
      break;
    case expiry_kind::never:
      j["expires_at"] = nullptr;
      break;
    case expiry_kind::at:
      j["expires_at"] = r.expires_at ? format_rfc3339(*r.expires_at) : std::string();
      break;
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string to_json_text(const create_host_request& r) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (r.image)
    j["image"] = *r.image;
  if (r.provider)
    j["provider"] = *r.provider;
  if (r.env)
    j["env"] = *r.env;
  if (r.cpus)
    j["cpus"] = *r.cpus;
  if (r.memory_mib)
    j["memory_mib"] = *r.memory_mib;
  if (r.disk_gb)
    j["disk_gb"] = *r.disk_gb;
  if (r.instance_type)
    j["instance_type"] = *r.instance_type;
  if (r.ssh_authorized_keys)
    j["ssh_authorized_keys"] = *r.ssh_authorized_keys;
  if (r.expiry == expiry_kind::never) {
    j["expires_at"] = nullptr;
  } else if (r.expiry == expiry_kind::at && r.expires_at) {
    j["expires_at"] = format_rfc3339(*r.expires_at);
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

result<renew_request> parse_renew_request(std::string_view body) {
  auto parsed = parse_body(body);
  if (!parsed) {
    return parsed.error();
  }
  const json& j = *parsed;
  renew_request r;
  if (j.is_null()) {
    return r;
  }
  if (!j.is_object()) {
    return type_error({object_expected()});
  }
  std::vector<field_issue> issues;
  if (const auto it = j.find("expires_at"); it != j.end() && !it->is_null()) {
    read_timestamp(*it, r.expires_at, issues);
  }
  if (!issues.empty()) {
    return type_error(std::move(issues));
  }
  return r;
}

}  // namespace litterbox::schema
