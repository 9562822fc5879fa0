#include "controlplane/http/wire_profile.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <utility>

namespace litterbox::controlplane::http {

std::string_view to_string(wire_profile p) {
  switch (p) {
    case wire_profile::litterbox:
      return "litterbox";
    case wire_profile::drukbox:
      return "drukbox";
  }
  return "litterbox";
}

std::string_view path_prefix(wire_profile p) {
  return p == wire_profile::drukbox ? "/drukbox" : "";
}

const std::vector<std::string>& host_fields(wire_profile p) {
  // The litterbox shape is schema::to_json's, whatever it is; only drukbox's is listed here.
  static const std::vector<std::string> litterbox = [] {
    std::vector<std::string> keys;
    const auto sample = schema::to_json(schema::host{});
    for (const auto& item : sample.items()) {
      keys.push_back(item.key());
    }
    return keys;
  }();
  // drukbox's HostOut, in its order (API.md "Wire profiles").
  static const std::vector<std::string> drukbox{"id",
                                                "name",
                                                "status",
                                                "provider",
                                                "image",
                                                "instance_type",
                                                "disk_gb",
                                                "external_ssh_host",
                                                "external_ssh_port",
                                                "ssh_username",
                                                "internal_ssh_host",
                                                "known_hosts",
                                                "tailscale_device_id",
                                                "private_key",
                                                "last_error",
                                                "created_at",
                                                "updated_at",
                                                "activated_at",
                                                "expires_at"};
  return p == wire_profile::drukbox ? drukbox : litterbox;
}

std::string_view status_name(schema::host_status s, wire_profile p) {
  if (p == wire_profile::drukbox && s == schema::host_status::pulling_image) {
    return schema::to_string(schema::host_status::provisioning);
  }
  return schema::to_string(s);
}

std::vector<std::string> status_filter(std::vector<std::string> requested, wire_profile p) {
  if (p != wire_profile::drukbox) {
    return requested;
  }
  const auto provisioning = schema::to_string(schema::host_status::provisioning);
  const auto pulling = schema::to_string(schema::host_status::pulling_image);
  const bool wants_provisioning =
      std::find(requested.begin(), requested.end(), provisioning) != requested.end();
  const bool has_pulling =
      std::find(requested.begin(), requested.end(), pulling) != requested.end();
  if (wants_provisioning && !has_pulling) {
    requested.emplace_back(pulling);
  }
  return requested;
}

nlohmann::ordered_json host_json(const schema::host& h, wire_profile p) {
  auto full = schema::to_json(h);
  if (p == wire_profile::litterbox) {
    return full;
  }
  // One rendering of the host (schema::to_json), projected: a field can only differ between
  // the profiles by being left out, never by being computed twice.
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& key : host_fields(p)) {
    out[key] = std::move(full[key]);
  }
  out["status"] = status_name(h.status, p);
  return out;
}

std::string doctor_body(const schema::doctor_report& report, wire_profile p) {
  if (p == wire_profile::litterbox) {
    return schema::doctor_json(report);
  }
  nlohmann::ordered_json j;
  j["ok"] = report.ok;
  j["active_provider"] = report.active_provider;
  // drukbox reports whether its Tailscale integration is on; litterbox has none.
  j["tailscale_enabled"] = false;
  auto checks = nlohmann::ordered_json::array();
  for (const auto& c : report.checks) {
    nlohmann::ordered_json item;
    item["name"] = c.name;
    item["status"] = c.ok ? "ok" : "fail";
    item["detail"] = c.detail;
    item["latency_ms"] = std::llround(std::max(c.latency_ms, 0.0));
    item["hint"] =
        c.hint.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.hint);
    checks.push_back(std::move(item));
  }
  j["checks"] = std::move(checks);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace litterbox::controlplane::http
