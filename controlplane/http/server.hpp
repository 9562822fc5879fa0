#pragma once

#include "controlplane/core/config.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/key_service.hpp"
#include "controlplane/core/proxy_service.hpp"
#include "controlplane/http/metrics.hpp"

#include <functional>
#include <memory>

namespace litterbox::controlplane::http {

/// The HTTP/1.1 API of API.md, in both wire profiles (the root and /drukbox/, rendered by
/// wire_profile.hpp from the same calls). Turns requests into host_service calls (always on a
/// blocking pools — cfg.blocking_threads for database-only calls, cfg.hypervisor_threads for
/// calls that reach the hypervisor — never on the I/O threads) and results into JSON;
/// holds no business rules. Tokens are checked by `keys` (admin tokens and scoped keys).
/// `cfg`, `hosts`, `stats`, `keys` and `proxies` must outlive the server.
class http_server {
 public:
  /// Without `proxies` the HTTP proxy routes answer 404 like unknown ones.
  http_server(const config& cfg, host_service& hosts, metrics& stats, key_service& keys,
              proxy_service* proxies = nullptr);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Binds cfg.listen ("host:port", "[v6]:port"; port 0 picks a free one) and starts
  /// accepting. Throws std::runtime_error on a bad address or a failed bind (a start-up
  /// error).
  void start();

  /// The bound port; valid after start().
  int port() const;

  /// On the first SIGINT or SIGTERM: stop accepting connections, run `drain` on a thread of
  /// its own while requests in flight are still served (a create waiting for its host gets
  /// its answer when the drain settles it), then stop(). A second signal stops at once.
  /// Call before run().
  void stop_on_signals(std::function<void()> drain = {});

  /// Serves on cfg.http_threads threads (this one included) until stop(); blocks.
  void run();

  /// Stops accepting and ends run(); requests in flight are abandoned. Thread-safe.
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace litterbox::controlplane::http
