#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace litterbox::schema {

/// Lifecycle states of API.md, in the order a healthy create passes through them.
enum class host_status {
  provisioning,
  pulling_image,
  creating_vm,
  bootstrapping,
  active,
  deleting,
  error,
};

std::string_view to_string(host_status s);
std::optional<host_status> parse_host_status(std::string_view s);

/// True while a create is still working on the host (provisioning … bootstrapping).
constexpr bool is_provisioning(host_status s) {
  return s == host_status::provisioning || s == host_status::pulling_image ||
         s == host_status::creating_vm || s == host_status::bootstrapping;
}

/// The Host object of API.md, field for field. `ssh_host`/`ssh_port` double as the
/// `external_ssh_*` fields on the wire.
struct host {
  std::string id;
  std::string name;
  host_status status = host_status::provisioning;
  std::string provider;
  std::string image;
  std::optional<std::string> image_digest;
  std::optional<std::string> instance_type;
  int cpus = 0;
  int memory_mib = 0;
  std::optional<int> disk_gb;
  std::string ssh_host;
  int ssh_port = 0;
  std::optional<std::string> internal_ssh_host;
  std::string ssh_username;
  std::string known_hosts;
  std::optional<std::string> private_key;
  std::string last_error;
  timestamp created_at{};
  timestamp updated_at{};
  std::optional<timestamp> activated_at;
  std::optional<timestamp> expires_at;

  bool operator==(const host&) const = default;
};

/// `sb-` + the last 12 hex digits of the id (API.md `name`; also the libvirt domain name).
std::string host_name_for(std::string_view id);

/// The wire JSON of a host, fields in API.md order.
nlohmann::ordered_json to_json(const host& h);

/// Parses a Host object as the server sends it (used by the client).
result<host> host_from_json(const nlohmann::ordered_json& j);

}  // namespace litterbox::schema
