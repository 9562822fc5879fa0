#include "schema/host.hpp"

#include "base/time.hpp"
#include "schema/errc.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <utility>

namespace litterbox::schema {
namespace {

constexpr std::array<std::pair<host_status, std::string_view>, 7> k_status_names{{
    {host_status::provisioning, "provisioning"},
    {host_status::pulling_image, "pulling_image"},
    {host_status::creating_vm, "creating_vm"},
    {host_status::bootstrapping, "bootstrapping"},
    {host_status::active, "active"},
    {host_status::deleting, "deleting"},
    {host_status::error, "error"},
}};

template <class T>
nlohmann::ordered_json nullable(const std::optional<T>& v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
}

nlohmann::ordered_json nullable_time(const std::optional<timestamp>& t) {
  return t ? nlohmann::ordered_json(format_rfc3339(*t)) : nlohmann::ordered_json(nullptr);
}

}  // namespace

std::string_view to_string(host_status s) {
  for (const auto& [status, name] : k_status_names) {
    if (status == s) {
      return name;
    }
  }
  return "error";
}

std::optional<host_status> parse_host_status(std::string_view s) {
  for (const auto& [status, name] : k_status_names) {
    if (name == s) {
      return status;
    }
  }
  return std::nullopt;
}

std::string host_name_for(std::string_view id) {
  std::string hex;
  for (const char c : id) {
    if (c != '-') {
      hex.push_back(c);
    }
  }
  return "sb-" + (hex.size() > 12 ? hex.substr(hex.size() - 12) : hex);
}

nlohmann::ordered_json to_json(const host& h) {
  nlohmann::ordered_json j;
  j["id"] = h.id;
  j["name"] = h.name;
  j["status"] = to_string(h.status);
  j["provider"] = h.provider;
  j["image"] = h.image;
  j["image_digest"] = nullable(h.image_digest);
  j["instance_type"] = nullable(h.instance_type);
  j["cpus"] = h.cpus;
  j["memory_mib"] = h.memory_mib;
  j["disk_gb"] = nullable(h.disk_gb);
  j["ssh_host"] = h.ssh_host;
  j["ssh_port"] = h.ssh_port;
  j["external_ssh_host"] = h.ssh_host;
  j["external_ssh_port"] = h.ssh_port;
  j["internal_ssh_host"] = nullable(h.internal_ssh_host);
  j["ssh_username"] = h.ssh_username;
  j["known_hosts"] = h.known_hosts;
  j["tailscale_device_id"] = nullptr;
  j["private_key"] = nullable(h.private_key);
  j["last_error"] = h.last_error;
  j["created_at"] = format_rfc3339(h.created_at);
  j["updated_at"] = format_rfc3339(h.updated_at);
  j["activated_at"] = nullable_time(h.activated_at);
  j["expires_at"] = nullable_time(h.expires_at);
  return j;
}

result<host> host_from_json(const nlohmann::ordered_json& j) {
  try {
    host h;
    h.id = j.at("id").get<std::string>();
    h.name = j.at("name").get<std::string>();
    const auto status = parse_host_status(j.at("status").get<std::string>());
    if (!status) {
      return make_error(errc::invalid_field, "unknown host status");
    }
    h.status = *status;
    h.provider = j.at("provider").get<std::string>();
    h.image = j.at("image").get<std::string>();
    auto opt_string = [&](const char* k) -> std::optional<std::string> {
      const auto it = j.find(k);
      if (it == j.end() || it->is_null()) {
        return std::nullopt;
      }
      return it->get<std::string>();
    };
    // Reads an optional timestamp field into `out`; false when present but malformed.
    auto read_time = [&](const char* k, std::optional<timestamp>& out) {
      const auto text = opt_string(k);
      if (!text) {
        out.reset();
        return true;
      }
      out = parse_rfc3339(*text);
      return out.has_value();
    };
    h.image_digest = opt_string("image_digest");
    h.instance_type = opt_string("instance_type");
    h.cpus = j.at("cpus").get<int>();
    h.memory_mib = j.at("memory_mib").get<int>();
    if (const auto it = j.find("disk_gb"); it != j.end() && !it->is_null()) {
      h.disk_gb = it->get<int>();
    }
    h.ssh_host = j.at("ssh_host").get<std::string>();
    h.ssh_port = j.at("ssh_port").get<int>();
    h.internal_ssh_host = opt_string("internal_ssh_host");
    h.ssh_username = j.at("ssh_username").get<std::string>();
    h.known_hosts = j.at("known_hosts").get<std::string>();
    h.private_key = opt_string("private_key");
    h.last_error = j.at("last_error").get<std::string>();
    std::optional<timestamp> created;
    std::optional<timestamp> updated;
    if (!read_time("created_at", created) || !read_time("updated_at", updated) ||
        !read_time("activated_at", h.activated_at) || !read_time("expires_at", h.expires_at)) {
      return make_error(errc::invalid_field, "malformed timestamp in host object");
    }
    if (!created || !updated) {
      return make_error(errc::invalid_field, "created_at and updated_at are required");
    }
    h.created_at = created.value();
    h.updated_at = updated.value();
    return h;
  } catch (const nlohmann::json::exception& e) {
    return make_error(errc::invalid_json, std::string("malformed host object: ") + e.what());
  }
}

}  // namespace litterbox::schema
