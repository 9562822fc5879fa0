#pragma once

#include "base/result.hpp"
#include "schema/http_proxy.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// An IP address (IPv4 as its IPv4-mapped IPv6 form) with a prefix length.
struct ip_network {
  std::array<std::uint8_t, 16> address{};
  int prefix = 128;  ///< over the 128-bit form (an IPv4 /8 is 104)
};

/// LITTERBOX_HTTP_PROXY_ALLOW: targets that may be reached although their address is
/// loopback, link-local, private or this machine's.
struct proxy_allow_list {
  std::vector<ip_network> networks;  ///< "127.0.0.0/8", "::1/128", "10.1.2.3"
  /// "host:port" entries: that exact host (as the target spells it) on that port.
  std::vector<std::pair<std::string, int>> host_ports;
};

/// Parses LITTERBOX_HTTP_PROXY_ALLOW (comma-separated CIDRs, addresses or host:port; blanks
/// ignored). Errors: validation naming the bad entry.
result<proxy_allow_list> parse_proxy_allow(std::string_view text);

/// True if `address` (16 bytes, IPv4 mapped) is loopback, link-local, private (RFC 1918,
/// RFC 6598 shared, IPv6 unique-local), unspecified, multicast, broadcast or another
/// special-purpose range the guest egress firewall denies (documentation, benchmarking…), or
/// any address of this machine's interfaces.
bool restricted_address(const std::array<std::uint8_t, 16>& address);

/// Decides whether `target` may be proxied to: allowed when listed as host:port, otherwise
/// every address its host resolves to (getaddrinfo; blocks) must be unrestricted or inside an
/// allowed network. Errors: validation (loc ["body", "target"]) when an address is refused
/// or the host does not resolve; messages never carry more than the host name.
result<void> check_proxy_target(const schema::origin& target, const proxy_allow_list& allow);

/// The resolved addresses of `target` that check_proxy_target's rule lets through (all of
/// them, or none), for the forwarder to connect to exactly what was checked. Blocks.
result<std::vector<std::array<std::uint8_t, 16>>> permitted_addresses(
    const schema::origin& target, const proxy_allow_list& allow);

}  // namespace litterbox::controlplane
