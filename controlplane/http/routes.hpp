#pragma once

#include "controlplane/http/wire_profile.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::controlplane::http {

/// The operations the server answers (API.md); one value per path template.
enum class route_id {
  hosts,            ///< /hosts
  host,             ///< /hosts/{host_id}
  host_renew,       ///< /hosts/{host_id}/renew
  host_console,     ///< /hosts/{host_id}/console
  http_proxies,     ///< /http-proxies
  http_proxy,       ///< /http-proxies/{name}
  http_proxy_host,  ///< /http-proxies/{name}/hosts/{host_id}
  healthz,          ///< /healthz
  doctor,           ///< /doctor
  metrics,          ///< /metrics
  openapi,          ///< /openapi.json
  events,           ///< /events (Server-Sent Events)
  host_events,      ///< /hosts/{host_id}/events
  keys,             ///< /keys (admin tokens only)
  key,              ///< /keys/{id} (admin tokens only)
  audit,            ///< /audit (admin tokens only)
};

/// A set of wire profiles (a bit per wire_profile).
enum class profiles : unsigned {
  none = 0U,
  litterbox = 1U << 0U,
  drukbox = 1U << 1U,
  both = litterbox | drukbox,
};

/// True if `set` holds `p`.
bool includes(profiles set, wire_profile p);

/// One method on a path template: the profiles that answer it, and those whose
/// /openapi.json lists it (a subset: drukbox answers /healthz and /openapi.json without
/// listing them, as drukbox itself does).
struct operation {
  std::string_view method;  ///< upper-case
  profiles served = profiles::litterbox;
  profiles listed = profiles::litterbox;
};

/// One path template and the operations on it. Adding an operation to either profile is
/// adding a row (or an operation) here and its description to schema/openapi.json; the
/// OpenAPI documents are generated from this table (controlplane/http/openapi.hpp).
struct route {
  route_id id;
  std::string_view path;              ///< OpenAPI-style template ("/hosts/{host_id}"), no prefix
  std::vector<operation> operations;  ///< in the order of the Allow header
  bool needs_auth = true;             ///< false for /healthz, /metrics, /openapi.json
  /// Only admin tokens (SERVICE_TOKENS) may call it; a scoped key is refused with 403.
  bool admin_only = false;
};

/// The route table: exactly the operations served, per profile.
const std::vector<route>& routes();

/// Every (method, path template) pair `p`'s /openapi.json lists, in table order. Paths are
/// without the profile's prefix, as the document names them.
std::vector<std::pair<std::string, std::string>> listed_operations(wire_profile p);

/// A request target resolved against the route table.
struct route_match {
  const route* matched = nullptr;
  wire_profile profile = wire_profile::litterbox;
  std::string host_id;  ///< the percent-decoded {host_id} segment, when the template has one
  /// Every `{param}` segment of the template by name ("host_id", "name", …), percent-decoded.
  std::vector<std::pair<std::string, std::string>> params;

  /// The value of `{name}`; "" when the template has no such segment.
  std::string_view param(std::string_view name) const;
};

/// Resolves a path (no query string) to its route and profile: `/drukbox/<template>` is the
/// drukbox profile, anything else the litterbox one. nullopt when no template serves the path
/// in its profile (`/drukbox/metrics` is unknown, as drukbox has no such route).
std::optional<route_match> match_route(std::string_view path);

/// The same against another table (for tests); the match points into `table`.
std::optional<route_match> match_route(std::string_view path, const std::vector<route>& table);

/// The label of `m` in the request metrics: the template with its profile's prefix.
std::string route_label(const route_match& m);

/// True if `method` is served on `r` in profile `p`.
bool allows(const route& r, std::string_view method, wire_profile p);

/// The Allow header value of `r` in profile `p` ("GET, POST").
std::string allow_header(const route& r, wire_profile p);

/// The `method` label of the request metrics: the method itself when it is one of RFC 9110's
/// (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE) or PATCH, else "other". Methods are
/// caller-chosen tokens: labelling them verbatim would grow the metrics without bound.
std::string_view method_label(std::string_view method);

/// Percent-decodes `text` ('+' stays '+'; query values decode '+' as space with
/// `plus_is_space`). Malformed escapes are kept verbatim.
std::string percent_decode(std::string_view text, bool plus_is_space = false);

/// Splits a query string into decoded (name, value) pairs, in order.
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query);

/// `text` as a non-negative decimal integer (a cursor, an id); nullopt for anything else
/// (empty, a sign, trailing bytes, out of range).
std::optional<std::int64_t> parse_non_negative(std::string_view text);

/// Percent-encodes `text` for a query value (unreserved characters stay).
std::string percent_encode(std::string_view text);

}  // namespace litterbox::controlplane::http
