#pragma once

#include "base/result.hpp"
#include "controlplane/core/proxy_service.hpp"
#include "controlplane/http/routes.hpp"

#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// What an operation handled outside the server answers when it succeeds: a status and its
/// JSON body (empty for 204).
struct handler_answer {
  unsigned status = 200;
  std::string body;
};

/// Runs the HTTP proxy operation `m` names (API.md "HTTP proxies") with `method` and `body`
/// for namespace `ns`, the same in both profiles. Blocks (database, DNS): call it off the I/O
/// threads. Errors are proxy_service's, for to_http_error. No answer ever carries a header
/// value.
result<handler_answer> handle_http_proxy(proxy_service& proxies, const route_match& m,
                                         std::string_view method, std::string_view body,
                                         std::string_view ns = k_admin_namespace);

}  // namespace litterbox::controlplane::http
