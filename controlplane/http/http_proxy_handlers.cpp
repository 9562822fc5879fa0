#include "controlplane/http/http_proxy_handlers.hpp"

#include "base/time.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "schema/http_proxy.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace litterbox::controlplane::http {
namespace {

using json = nlohmann::ordered_json;

result<handler_answer> create(proxy_service& proxies, std::string_view body, std::string_view ns) {
  auto parsed = schema::parse_create_http_proxy_request(body);
  if (!parsed) {
    return parsed.error();
  }
  auto created = proxies.create(ns, *parsed);
  if (!created) {
    return created.error();
  }
  return handler_answer{201, json{{"name", created->name}, {"status", "created"}}.dump()};
}

result<handler_answer> list(proxy_service& proxies, std::string_view ns) {
  auto listed = proxies.list(ns);
  if (!listed) {
    return listed.error();
  }
  json out = json::array();
  for (const auto& p : *listed) {
    out.push_back(json{{"name", p.name},
                       {"target", p.target},
                       {"host_ids", p.host_ids},
                       {"created_at", format_rfc3339(p.created_at)}});
  }
  return handler_answer{200, out.dump()};
}

}  // namespace

result<handler_answer> handle_http_proxy(proxy_service& proxies, const route_match& m,
                                         std::string_view method, std::string_view body,
                                         std::string_view ns) {
  const auto name = m.param("name");
  const auto host_id = m.param("host_id");
  switch (m.matched->id) {
    case route_id::http_proxies:
      return method == "POST" ? create(proxies, body, ns) : list(proxies, ns);
    case route_id::http_proxy:
      if (auto removed = proxies.remove(ns, name); !removed) {
        return removed.error();
      }
      return handler_answer{204, {}};
    case route_id::http_proxy_host:
      if (method == "DELETE") {
        if (auto detached = proxies.detach(ns, name, host_id); !detached) {
          return detached.error();
        }
        return handler_answer{204, {}};
      }
      if (auto attached = proxies.attach(ns, name, host_id); !attached) {
        return attached.error();
      }
      return handler_answer{200,
                            json{{"name", std::string(name)},
                                 {"host_id", parse_uuid(host_id).value_or(std::string(host_id))},
                                 {"status", "attached"}}
                                .dump()};
    default:
      return make_error(errc::internal, "not an HTTP proxy route");
  }
}

}  // namespace litterbox::controlplane::http
