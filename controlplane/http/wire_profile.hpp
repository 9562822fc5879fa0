#pragma once

#include "schema/doctor.hpp"
#include "schema/host.hpp"

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane::http {

/// The response shapes the API answers in (API.md "Wire profiles"): litterbox at the root,
/// drukbox under /drukbox. A profile is a view at the edge: it renders what host_service
/// returned and never changes what the service does. Errors, request bodies, query
/// parameters, headers and status codes are the same in both.
enum class wire_profile {
  litterbox,
  drukbox,
};

/// Every profile, in the order the route table lists them.
inline constexpr std::array<wire_profile, 2> k_wire_profiles{wire_profile::litterbox,
                                                             wire_profile::drukbox};

/// "litterbox" | "drukbox".
std::string_view to_string(wire_profile p);

/// The path prefix `p` is served under: "" (the root) or "/drukbox".
std::string_view path_prefix(wire_profile p);

/// The Host fields `p` answers with, in wire order: the 24 of API.md "The Host object" for
/// litterbox, drukbox's 19 `HostOut` fields for drukbox.
const std::vector<std::string>& host_fields(wire_profile p);

/// `s` as `p` names it on the wire: drukbox knows no pulling_image and reports it as
/// provisioning; every other status keeps its name.
std::string_view status_name(schema::host_status s, wire_profile p);

/// The `?status=` values of a list request of `p` as host_service reads them: a drukbox
/// caller asking for provisioning also gets the hosts it sees as provisioning (pulling_image).
/// Values are passed through unvalidated (host_service validates them).
std::vector<std::string> status_filter(std::vector<std::string> requested, wire_profile p);

/// The Host object in `p`'s shape: exactly host_fields(p), in that order. Never throws.
nlohmann::ordered_json host_json(const schema::host& h, wire_profile p);

/// The GET /doctor body in `p`'s shape. drukbox: `{"ok", "active_provider",
/// "tailscale_enabled": false, "checks"}`, each check's latency_ms in whole milliseconds and an
/// empty hint as null (drukbox's CheckOut).
std::string doctor_body(const schema::doctor_report& report, wire_profile p);

}  // namespace litterbox::controlplane::http
