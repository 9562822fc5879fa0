#pragma once

#include "base/result.hpp"
#include "controlplane/core/key_service.hpp"
#include "controlplane/http/http_proxy_handlers.hpp"
#include "controlplane/http/routes.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// Runs the key or audit operation `m` names (API.md "Tenants: scoped keys") for an admin.
/// Blocks (database): call it off the I/O threads. The minted key is in the 201 of POST
/// /keys and nowhere else. Errors are key_service's or validation (loc ["query", …]).
result<handler_answer> handle_tenant(key_service& keys, const route_match& m,
                                     std::string_view method, std::string_view body,
                                     std::string_view query);

/// The audit action of a state-changing call ("create_host", "delete_host", "renew_host",
/// "create_http_proxy", "delete_http_proxy", "attach_http_proxy", "detach_http_proxy",
/// "create_key", "delete_key"); nullopt for reads, which are not audited.
std::optional<std::string_view> audit_action(route_id id, std::string_view method);

}  // namespace litterbox::controlplane::http
