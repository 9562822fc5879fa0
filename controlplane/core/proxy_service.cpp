#include "controlplane/core/proxy_service.hpp"

#include "controlplane/core/errc.hpp"

#include <utility>

namespace litterbox::controlplane {
namespace {

error proxy_not_found() {
  return make_error(errc::not_found, "http proxy not found");
}

}  // namespace

proxy_service::proxy_service(proxy_store& db, const clock& clk, proxy_allow_list allow)
    : db_(db), clock_(clk), allow_(std::move(allow)) {}

result<http_proxy_record> proxy_service::create(std::string_view ns,
                                                const schema::create_http_proxy_request& req) {
  if (auto allowed = check_proxy_target(req.target, allow_); !allowed) {
    return allowed.error();
  }
  http_proxy_record p;
  p.ns = std::string(ns);
  p.name = req.name;
  p.target = req.target.text;
  p.headers = req.headers;
  p.created_at = clock_.now();
  auto inserted = db_.insert_proxy(p);
  if (!inserted) {
    return inserted.error();
  }
  if (!*inserted) {
    return make_error(errc::host_state, "http proxy already exists");
  }
  p.headers.clear();
  return p;
}

result<void> proxy_service::remove(std::string_view ns, std::string_view name) {
  auto removed = db_.remove_proxy(ns, name);
  if (!removed) {
    return removed.error();
  }
  if (!*removed) {
    return proxy_not_found();
  }
  return {};
}

result<void> proxy_service::attach(std::string_view ns, std::string_view name,
                                   std::string_view host_id) {
  auto outcome = db_.attach_proxy(ns, name, host_id, clock_.now());
  if (!outcome) {
    return outcome.error();
  }
  switch (*outcome) {
    case attach_outcome::attached:
      return {};
    case attach_outcome::no_proxy:
      return proxy_not_found();
    case attach_outcome::no_host:
      return make_error(errc::not_found, "host not found");
    case attach_outcome::host_not_live:
      return make_error(errc::host_state, "host does not have a backing VM");
  }
  return make_error(errc::internal, "unknown attach outcome");
}

result<void> proxy_service::detach(std::string_view ns, std::string_view name,
                                   std::string_view host_id) {
  auto removed = db_.detach_proxy(ns, name, host_id);
  if (!removed) {
    return removed.error();
  }
  if (!*removed) {
    return make_error(errc::not_found, "http proxy not attached");
  }
  return {};
}

result<std::vector<http_proxy_record>> proxy_service::list(std::string_view ns) {
  return db_.list_proxies(ns);
}

}  // namespace litterbox::controlplane
