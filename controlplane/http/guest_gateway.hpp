#pragma once

#include "hypervisor/guest_listener_sink.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace litterbox::controlplane {
class proxy_store;
struct proxy_allow_list;
}  // namespace litterbox::controlplane

namespace litterbox::controlplane::http {

class metrics;

/// Bounds of the guest-facing proxy (config: LITTERBOX_GUEST_PROXY_*).
struct guest_gateway_options {
  int threads = 2;         ///< I/O threads
  int lookup_threads = 4;  ///< threads for the blocking proxy lookups and target resolution
  int max_connections_per_host = 64;         ///< more from one host are answered 503 and closed
  std::chrono::seconds connect_timeout{10};  ///< TCP connect plus TLS handshake to a target
  /// Longest wait for any one read or write (guest or target), and for a guest's next
  /// request on a kept-alive connection.
  std::chrono::seconds idle_timeout{60};
  std::size_t header_limit = 64 * 1024;  ///< request and response head, each
};

/// The guest-facing end of the HTTP proxies (API.md "HTTP proxies"): serves
/// `http://proxy.litterbox.internal/<name>/<path>?<query>` on the per-host listeners the
/// driver hands it, so every request is attributed to the host whose listener accepted it.
/// Per request it looks the proxy up with proxy_store::find_attached_proxy(host, name)
/// (a detach takes effect on the next request) and forwards to `<target>/<path>?<query>`
/// over HTTP or HTTPS (TLS verified against the system CA store, with the target's host name
/// and SNI), connecting only to the addresses permitted_addresses checked, with the proxy's
/// headers set (replacing the guest's of the same name), Host rewritten and hop-by-hop
/// headers dropped. Bodies stream both ways through a fixed buffer per connection. Anything
/// else (no name, an unknown or unattached name, a malformed request) is answered 404/400
/// and nothing else is served: no API route is ever reachable here. Header values never
/// reach a log line, a response or an error. `proxies`, `stats` must outlive the gateway.
/// Thread-safe.
class guest_gateway final : public hypervisor::guest_listener_sink {
 public:
  guest_gateway(const guest_gateway_options& options, proxy_store& proxies,
                const proxy_allow_list& allow, metrics& stats);
  /// stop()s.
  ~guest_gateway() override;
  guest_gateway(const guest_gateway&) = delete;
  guest_gateway& operator=(const guest_gateway&) = delete;

  /// Starts the I/O threads. Listeners added before are served from then on.
  void start();
  /// Closes every listener and connection and joins the threads. Idempotent.
  void stop();

  void add_listener(const std::string& host_id, int fd) override;
  void remove_listener(std::string_view host_id) override;

  /// Connections of `host_id` being served now (0 for an unknown host).
  int connections(std::string_view host_id) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace litterbox::controlplane::http
