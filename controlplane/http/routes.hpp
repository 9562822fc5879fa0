#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::controlplane::http {

/// The operations the server answers (API.md); one value per path template.
enum class route_id {
  hosts,         ///< /hosts
  host,          ///< /hosts/{host_id}
  host_renew,    ///< /hosts/{host_id}/renew
  host_console,  ///< /hosts/{host_id}/console
  healthz,       ///< /healthz
  doctor,        ///< /doctor
  metrics,       ///< /metrics
  openapi,       ///< /openapi.json
  events,        ///< /events (Server-Sent Events)
  host_events,   ///< /hosts/{host_id}/events
};

/// One path template and the methods served on it.
struct route {
  route_id id;
  std::string_view path;                  ///< OpenAPI-style template ("/hosts/{host_id}")
  std::vector<std::string_view> methods;  ///< upper-case, in the order of the Allow header
  bool needs_auth = true;                 ///< false for /healthz, /metrics, /openapi.json
};

/// The route table: exactly the operations served, and what /openapi.json documents.
const std::vector<route>& routes();

/// Every (method, path template) pair of the route table.
std::vector<std::pair<std::string, std::string>> operations();

/// A request target resolved against the route table.
struct route_match {
  const route* matched = nullptr;
  std::string host_id;  ///< the percent-decoded {host_id} segment, when the template has one
};

/// Resolves a path (no query string) to its route; nullopt when no template matches.
std::optional<route_match> match_route(std::string_view path);

/// True if `method` is served on `r`.
bool allows(const route& r, std::string_view method);

/// The Allow header value of `r` ("GET, POST").
std::string allow_header(const route& r);

/// The `method` label of the request metrics: the method itself when it is one of RFC 9110's
/// (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE) or PATCH, else "other". Methods are
/// caller-chosen tokens: labelling them verbatim would grow the metrics without bound.
std::string_view method_label(std::string_view method);

/// Percent-decodes `text` ('+' stays '+'; query values decode '+' as space with
/// `plus_is_space`). Malformed escapes are kept verbatim.
std::string percent_decode(std::string_view text, bool plus_is_space = false);

/// Splits a query string into decoded (name, value) pairs, in order.
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query);

/// Percent-encodes `text` for a query value (unreserved characters stay).
std::string percent_encode(std::string_view text);

}  // namespace litterbox::controlplane::http
