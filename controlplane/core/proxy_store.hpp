#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::controlplane {

/// Header name and value pairs, in the order the caller gave them.
using header_list = std::vector<std::pair<std::string, std::string>>;

/// An HTTP proxy row (API.md "HTTP proxies"). `headers` are write-only: the store hands them
/// back only through find_attached_proxy, for the guest-facing proxy.
struct http_proxy_record {
  std::string ns;      ///< caller namespace (all SERVICE_TOKENS share one)
  std::string name;    ///< 1–63 of a-z 0-9 -, validated by the service
  std::string target;  ///< an origin: "https://api.example.com[:port]"
  header_list headers;
  timestamp created_at{};
  std::vector<std::string> host_ids;  ///< attached hosts, ascending (list_proxies only)
};

/// What attach_proxy found.
enum class attach_outcome {
  attached,       ///< the attachment exists now (it may have existed before)
  no_proxy,       ///< no proxy of that name in the namespace
  no_host,        ///< no such host (pool members count as none)
  host_not_live,  ///< the host is not bootstrapping or active
};

/// Persistent HTTP proxies and their attachments to hosts. Every method blocks on the
/// database and is thread-safe. Deleting a host detaches its proxies (the proxies remain).
/// Errors of every method: controlplane::errc::unavailable, outcome_unknown, internal.
class proxy_store {
 public:
  virtual ~proxy_store() = default;

  /// Inserts `p` (host_ids ignored). False, and nothing changed, when the namespace already
  /// has a proxy of that name.
  virtual result<bool> insert_proxy(const http_proxy_record& p) = 0;

  /// Deletes proxy `name` of `ns` and every attachment of it. False when there was none.
  virtual result<bool> remove_proxy(std::string_view ns, std::string_view name) = 0;

  /// Attaches proxy `name` of `ns` to host `host_id` if the host is bootstrapping or active,
  /// checked under a lock on the host row so that a host being deleted concurrently never
  /// keeps an attachment. Attaching twice is `attached` again.
  virtual result<attach_outcome> attach_proxy(std::string_view ns, std::string_view name,
                                              std::string_view host_id, timestamp now) = 0;

  /// Removes the attachment of proxy `name` of `ns` to `host_id`. False when there was none.
  virtual result<bool> detach_proxy(std::string_view ns, std::string_view name,
                                    std::string_view host_id) = 0;

  /// The proxies of `ns` by name, with their attached hosts and without their headers.
  virtual result<std::vector<http_proxy_record>> list_proxies(std::string_view ns) = 0;

  /// The proxy `name` attached to host `host_id` (whatever its namespace), headers included;
  /// nullopt when that host has no attached proxy of that name. The guest-facing proxy's one
  /// lookup per request.
  virtual result<std::optional<http_proxy_record>> find_attached_proxy(std::string_view host_id,
                                                                       std::string_view name) = 0;
};

}  // namespace litterbox::controlplane
