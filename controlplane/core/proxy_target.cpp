#include "controlplane/core/proxy_target.hpp"

#include "controlplane/core/errc.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <cstring>
#include <ifaddrs.h>
#include <memory>
#include <netdb.h>
#include <netinet/in.h>
#include <optional>
#include <sys/socket.h>

namespace litterbox::controlplane {
namespace {

using address16 = std::array<std::uint8_t, 16>;

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

address16 mapped(const in_addr& v4) {
  address16 out{};
  out[10] = 0xff;
  out[11] = 0xff;
  std::memcpy(out.data() + 12, &v4, 4);
  return out;
}

address16 from_v6(const in6_addr& v6) {
  address16 out{};
  std::memcpy(out.data(), &v6, 16);
  return out;
}

/// `text` as an address: IPv4 (mapped) or IPv6.
std::optional<address16> parse_address(const std::string& text, bool& is_v4) {
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    is_v4 = true;
    return mapped(v4);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    is_v4 = false;
    return from_v6(v6);
  }
  return std::nullopt;
}

bool in_network(const address16& a, const ip_network& n) {
  int bits = n.prefix;
  for (std::size_t i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    const auto mask = static_cast<std::uint8_t>(bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff);
    if ((a[i] & mask) != (n.address[i] & mask)) {
      return false;
    }
  }
  return true;
}

ip_network v4_net(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d, int prefix) {
  ip_network n;
  n.address = {};
  n.address[10] = 0xff;
  n.address[11] = 0xff;
  n.address[12] = a;
  n.address[13] = b;
  n.address[14] = c;
  n.address[15] = d;
  n.prefix = 96 + prefix;
  return n;
}

ip_network v6_net(std::uint8_t first, std::uint8_t second, int prefix) {
  ip_network n;
  n.address = {};
  n.address[0] = first;
  n.address[1] = second;
  n.prefix = prefix;
  return n;
}

ip_network v6_text(const char* text, int prefix) {
  ip_network n;
  in6_addr v6{};
  inet_pton(AF_INET6, text, &v6);
  n.address = from_v6(v6);
  n.prefix = prefix;
  return n;
}

// What the guest egress firewall denies by default (README "What guests can reach"): a
// proxy must not reach what the guest itself may not.
const std::vector<ip_network>& restricted_networks() {
  static const std::vector<ip_network> nets = [] {
    std::vector<ip_network> out{
        v4_net(0, 0, 0, 0, 8),        // "this network", unspecified
        v4_net(10, 0, 0, 0, 8),       // RFC 1918
        v4_net(100, 64, 0, 0, 10),    // RFC 6598 shared address space
        v4_net(127, 0, 0, 0, 8),      // loopback
        v4_net(169, 254, 0, 0, 16),   // link-local
        v4_net(172, 16, 0, 0, 12),    // RFC 1918
        v4_net(192, 168, 0, 0, 16),   // RFC 1918
        v4_net(192, 0, 0, 0, 24),     // IETF protocol assignments
        v4_net(192, 0, 2, 0, 24),     // documentation
        v4_net(198, 18, 0, 0, 15),    // benchmarking
        v4_net(198, 51, 100, 0, 24),  // documentation
        v4_net(203, 0, 113, 0, 24),   // documentation
        v4_net(224, 0, 0, 0, 4),      // multicast
        v4_net(240, 0, 0, 0, 4),      // reserved, broadcast
        v6_net(0xfc, 0x00, 7),        // unique local
        v6_net(0xfe, 0x80, 10),       // link-local
        v6_net(0xff, 0x00, 8),        // multicast
        v6_text("2001:db8::", 32),    // documentation
        v6_text("100::", 64),         // discard-only
        v6_text("64:ff9b:1::", 48),   // local-use NAT64
        v6_net(0xfe, 0xc0, 10),       // site-local (deprecated)

    };
    ip_network loopback6;  // ::1
    loopback6.address[15] = 1;
    loopback6.prefix = 128;
    out.push_back(loopback6);
    ip_network unspecified6;  // ::
    unspecified6.prefix = 128;
    out.push_back(unspecified6);
    return out;
  }();
  return nets;
}

bool local_address(const address16& a) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return true;  // cannot tell: treat as ours (fail closed)
  }
  const std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> guard(list, freeifaddrs);
  for (const auto* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) {
      continue;
    }
    if (i->ifa_addr->sa_family == AF_INET) {
      sockaddr_in v4{};
      std::memcpy(&v4, i->ifa_addr, sizeof v4);
      if (mapped(v4.sin_addr) == a) {
        return true;
      }
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      sockaddr_in6 v6{};
      std::memcpy(&v6, i->ifa_addr, sizeof v6);
      if (from_v6(v6.sin6_addr) == a) {
        return true;
      }
    }
  }
  return false;
}

error target_error(std::string msg) {
  error e = make_error(errc::validation, msg);
  e.issues.push_back(field_issue{{"body", "target"}, std::move(msg)});
  return e;
}

result<std::vector<address16>> resolve(const schema::origin& target) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const auto port = std::to_string(target.port);
  const int rc = getaddrinfo(target.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return target_error("target host " + target.host + " does not resolve");
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(found, freeaddrinfo);
  std::vector<address16> out;
  for (const auto* ai = found; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      sockaddr_in v4{};
      std::memcpy(&v4, ai->ai_addr, sizeof v4);
      out.push_back(mapped(v4.sin_addr));
    } else if (ai->ai_family == AF_INET6) {
      sockaddr_in6 v6{};
      std::memcpy(&v6, ai->ai_addr, sizeof v6);
      out.push_back(from_v6(v6.sin6_addr));
    }
  }
  if (out.empty()) {
    return target_error("target host " + target.host + " does not resolve");
  }
  return out;
}

}  // namespace

result<proxy_allow_list> parse_proxy_allow(std::string_view text) {
  proxy_allow_list out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const auto entry = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (entry.empty()) {
      continue;
    }
    const auto bad = [&entry] {
      return make_error(errc::validation, "LITTERBOX_HTTP_PROXY_ALLOW: '" + entry +
                                              "' is not a CIDR, an address or host:port");
    };
    const auto slash = entry.find('/');
    bool is_v4 = false;
    if (auto a = parse_address(entry.substr(0, slash), is_v4)) {
      ip_network n;
      n.address = *a;
      n.prefix = 128;
      if (slash != std::string::npos) {
        int prefix = -1;
        const auto digits = std::string_view(entry).substr(slash + 1);
        const auto [end, ec] =
            std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (ec != std::errc() || end != digits.data() + digits.size() || prefix < 0 ||
            prefix > (is_v4 ? 32 : 128)) {
          return bad();
        }
        n.prefix = is_v4 ? 96 + prefix : prefix;
      }
      out.networks.push_back(n);
      continue;
    }
    // host:port, the host as a target would spell it ([v6] or a name).
    const auto colon = entry.rfind(':');
    if (colon == std::string::npos || slash != std::string::npos) {
      return bad();
    }
    auto host = entry.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    int port = 0;
    const auto digits = std::string_view(entry).substr(colon + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (host.empty() || ec != std::errc() || end != digits.data() + digits.size() || port < 1 ||
        port > 65535) {
      return bad();
    }
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    out.host_ports.emplace_back(std::move(host), port);
  }
  return out;
}

bool restricted_address(const address16& address) {
  const auto& nets = restricted_networks();
  return std::any_of(nets.begin(), nets.end(),
                     [&](const ip_network& n) { return in_network(address, n); }) ||
         local_address(address);
}

result<std::vector<address16>> permitted_addresses(const schema::origin& target,
                                                   const proxy_allow_list& allow) {
  auto addresses = resolve(target);
  if (!addresses) {
    return addresses.error();
  }
  const bool listed =
      std::find(allow.host_ports.begin(), allow.host_ports.end(),
                std::pair<std::string, int>(target.host, target.port)) != allow.host_ports.end();
  if (listed) {
    return addresses;
  }
  for (const auto& a : *addresses) {
    const bool allowed = std::any_of(allow.networks.begin(), allow.networks.end(),
                                     [&](const ip_network& n) { return in_network(a, n); });
    if (!allowed && restricted_address(a)) {
      return target_error(
          "target " + target.host +
          " is a loopback, link-local, private, special-purpose or local address; list it in "
          "LITTERBOX_HTTP_PROXY_ALLOW to allow it");
    }
  }
  return addresses;
}

result<void> check_proxy_target(const schema::origin& target, const proxy_allow_list& allow) {
  auto permitted = permitted_addresses(target, allow);
  if (!permitted) {
    return permitted.error();
  }
  return {};
}

}  // namespace litterbox::controlplane
