#pragma once

#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// Where the driver hands the guest-facing proxy listeners it opens (issue 11): one listening
/// TCP socket per host, bound to that host's private link, so every connection accepted on it
/// comes from that host and nothing else. Implemented by the control plane's guest gateway.
/// Thread-safe; called from driver threads; must not block on the network.
class guest_listener_sink {
 public:
  virtual ~guest_listener_sink() = default;

  /// Starts serving `fd` (a listening, non-blocking-capable TCP socket; ownership passes to
  /// the sink, which closes it) as host `host_id`'s endpoint. A second call for the same host
  /// replaces (and closes) the previous listener.
  virtual void add_listener(const std::string& host_id, int fd) = 0;

  /// Stops accepting for `host_id`, closes its listener and every open connection from it.
  /// Unknown ids are ignored.
  virtual void remove_listener(std::string_view host_id) = 0;
};

}  // namespace litterbox::hypervisor
