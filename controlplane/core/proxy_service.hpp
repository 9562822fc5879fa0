#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/proxy_store.hpp"
#include "controlplane/core/proxy_target.hpp"
#include "controlplane/core/tenancy.hpp"
#include "schema/http_proxy.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// The HTTP proxy operations of API.md "HTTP proxies": the rules between the wire and the
/// proxy_store. Every method blocks (database, and DNS for create) and is thread-safe.
/// Headers are write-only: nothing this returns or logs carries them.
class proxy_service {
 public:
  /// `db` and `clk` must outlive the service.
  proxy_service(proxy_store& db, const clock& clk, proxy_allow_list allow);

  /// Creates proxy `req.name` in `ns`. Errors: validation (loc ["body", "target"]) when the
  /// target's address is refused or does not resolve; host_state "http proxy already
  /// exists"; unavailable.
  result<http_proxy_record> create(std::string_view ns,
                                   const schema::create_http_proxy_request& req);

  /// Deletes proxy `name` of `ns`, detaching it everywhere. Errors: not_found "http proxy
  /// not found"; unavailable.
  result<void> remove(std::string_view ns, std::string_view name);

  /// Attaches proxy `name` to `host_id` (again is fine). Errors: not_found "http proxy not
  /// found" / "host not found"; host_state "host does not have a backing VM"; unavailable.
  result<void> attach(std::string_view ns, std::string_view name, std::string_view host_id);

  /// Detaches. Errors: not_found "http proxy not attached" (also for an unknown proxy or
  /// host); unavailable.
  result<void> detach(std::string_view ns, std::string_view name, std::string_view host_id);

  /// The proxies of `ns` by name, without headers.
  result<std::vector<http_proxy_record>> list(std::string_view ns);

 private:
  proxy_store& db_;
  const clock& clock_;
  proxy_allow_list allow_;
};

}  // namespace litterbox::controlplane
