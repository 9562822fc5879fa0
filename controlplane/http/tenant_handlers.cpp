#include "controlplane/http/tenant_handlers.hpp"

#include "base/time.hpp"
#include "controlplane/core/errc.hpp"
#include "schema/api_keys.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

using json = nlohmann::ordered_json;

constexpr std::size_t k_audit_default_limit = 100;
constexpr std::size_t k_audit_max_limit = 1000;

json optional_int(const std::optional<std::int64_t>& v) {
  return v ? json(*v) : json(nullptr);
}

json key_json(const api_key_record& k) {
  json quota{{"max_hosts", optional_int(k.quota.max_hosts)},
             {"max_cpus", optional_int(k.quota.max_cpus)},
             {"max_memory_mib", optional_int(k.quota.max_memory_mib)}};
  return json{{"id", k.id},
              {"namespace", k.ns},
              {"name", k.name},
              {"quota", std::move(quota)},
              {"created_at", format_rfc3339(k.created_at)}};
}

json audit_json(const audit_entry& e) {
  return json{{"id", e.id},
              {"at", format_rfc3339(e.at)},
              {"key_id", e.key_id},
              {"namespace", e.ns ? json(*e.ns) : json(nullptr)},
              {"action", e.action},
              {"host_id", e.host_id ? json(*e.host_id) : json(nullptr)},
              {"request_id", e.request_id},
              {"status", e.status}};
}

error query_error(const char* name, std::string msg) {
  error e = make_error(errc::validation, "validation failed");
  e.issues.push_back(field_issue{{"query", name}, std::move(msg), "value_error"});
  return e;
}

result<handler_answer> list_audit(key_service& keys, std::string_view query) {
  audit_query q;
  q.limit = k_audit_default_limit;
  for (const auto& [name, value] : parse_query(query)) {
    if (name == "namespace") {
      q.ns = value;
    } else if (name == "after") {
      const auto after = parse_non_negative(value);
      if (!after) {
        return query_error("after", "after must be an audit entry id (a whole number)");
      }
      q.after = *after;
    } else if (name == "limit") {
      const auto limit = parse_non_negative(value);
      if (!limit || *limit < 1 || *limit > static_cast<std::int64_t>(k_audit_max_limit)) {
        return query_error("limit", "limit must be between 1 and 1000");
      }
      q.limit = static_cast<std::size_t>(*limit);
    }
  }
  auto entries = keys.list_audit(q);
  if (!entries) {
    return entries.error();
  }
  json out = json::array();
  for (const auto& e : *entries) {
    out.push_back(audit_json(e));
  }
  return handler_answer{200, out.dump()};
}

}  // namespace

result<handler_answer> handle_tenant(key_service& keys, const route_match& m,
                                     std::string_view method, std::string_view body,
                                     std::string_view query) {
  switch (m.matched->id) {
    case route_id::keys: {
      if (method == "GET") {
        auto listed = keys.list();
        if (!listed) {
          return listed.error();
        }
        json out = json::array();
        for (const auto& k : *listed) {
          out.push_back(key_json(k));
        }
        return handler_answer{200, out.dump()};
      }
      auto req = schema::parse_create_key_request(body);
      if (!req) {
        return req.error();
      }
      auto minted = keys.create(*req);
      if (!minted) {
        return minted.error();
      }
      json out = key_json(minted->record);
      out["key"] = minted->key;
      return handler_answer{201, out.dump()};
    }
    case route_id::key:
      if (auto revoked = keys.revoke(m.param("id")); !revoked) {
        return revoked.error();
      }
      return handler_answer{204, {}};
    case route_id::audit:
      return list_audit(keys, query);
    default:
      return make_error(errc::internal, "not a key or audit route");
  }
}

std::optional<std::string_view> audit_action(route_id id, std::string_view method) {
  const bool post = method == "POST";
  const bool del = method == "DELETE";
  switch (id) {
    case route_id::hosts:
      return post ? std::optional<std::string_view>("create_host") : std::nullopt;
    case route_id::host:
      return del ? std::optional<std::string_view>("delete_host") : std::nullopt;
    case route_id::host_renew:
      return post ? std::optional<std::string_view>("renew_host") : std::nullopt;
    case route_id::http_proxies:
      return post ? std::optional<std::string_view>("create_http_proxy") : std::nullopt;
    case route_id::http_proxy:
      return del ? std::optional<std::string_view>("delete_http_proxy") : std::nullopt;
    case route_id::http_proxy_host:
      if (post) {
        return "attach_http_proxy";
      }
      return del ? std::optional<std::string_view>("detach_http_proxy") : std::nullopt;
    case route_id::keys:
      return post ? std::optional<std::string_view>("create_key") : std::nullopt;
    case route_id::key:
      return del ? std::optional<std::string_view>("delete_key") : std::nullopt;
    default:
      return std::nullopt;
  }
}

}  // namespace litterbox::controlplane::http
