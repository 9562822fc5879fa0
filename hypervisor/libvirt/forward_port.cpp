#include "hypervisor/libvirt/forward_port.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace litterbox::hypervisor {

bool forward_port_bindable(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (port <= 0 || port > 65535 || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return true;  // not ours to judge: the domain's own checks reject it
  }
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return true;
  }
  const int one = 1;
  bool taken = false;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
      ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    taken = errno == EADDRINUSE;
  }
  ::close(fd);
  return !taken;
}

bool is_forward_bind_failure(std::string_view libvirt_error) {
  // QEMU's words (net/slirp.c) when slirp_add_hostfwd fails, passed on by libvirt as
  // "qemu unexpectedly closed the monitor: ...".
  return libvirt_error.find("Could not set up host forwarding rule") != std::string_view::npos;
}

namespace {

std::string_view trim(std::string_view s) {
  constexpr std::string_view k_space = " \t\r\n";
  const auto b = s.find_first_not_of(k_space);
  if (b == std::string_view::npos) {
    return {};
  }
  return s.substr(b, s.find_last_not_of(k_space) - b + 1);
}

std::optional<int> port_number(std::string_view s) {
  int v = 0;
  const auto* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || ptr != end || v < 0 || v > 65535) {
    return std::nullopt;
  }
  return v;
}

std::optional<std::string> read_sysctl(const char* path) {
  std::ifstream in(path);
  if (!in) {
    return std::nullopt;
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

std::optional<int> ephemeral_ports_within(int lo, int hi, std::string_view local_port_range,
                                          std::string_view reserved_ports) {
  // "low<whitespace>high"
  const auto range = trim(local_port_range);
  const auto gap = range.find_first_of(" \t");
  if (gap == std::string_view::npos) {
    return std::nullopt;
  }
  const auto first = port_number(range.substr(0, gap));
  const auto last = port_number(trim(range.substr(gap)));
  if (!first || !last) {
    return std::nullopt;
  }
  // "a,b-c,..." (the kernel prints ranges with dashes, an empty line for none)
  std::vector<std::pair<int, int>> reserved;
  for (auto rest = trim(reserved_ports); !rest.empty();) {
    const auto comma = rest.find(',');
    const auto item = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const auto dash = item.find('-');
    const auto a = port_number(item.substr(0, dash));
    const auto b = dash == std::string_view::npos ? a : port_number(item.substr(dash + 1));
    if (!a || !b) {
      return std::nullopt;
    }
    reserved.emplace_back(*a, *b);
  }
  int count = 0;
  for (int p = std::max(lo, *first); p <= std::min(hi, *last); ++p) {
    const bool kept = std::any_of(reserved.begin(), reserved.end(),
                                  [p](const auto& r) { return p >= r.first && p <= r.second; });
    count += kept ? 0 : 1;
  }
  return count;
}

std::optional<int> ephemeral_ports_within(int lo, int hi) {
  const auto range = read_sysctl("/proc/sys/net/ipv4/ip_local_port_range");
  const auto reserved = read_sysctl("/proc/sys/net/ipv4/ip_local_reserved_ports");
  if (!range || !reserved) {
    return std::nullopt;
  }
  return ephemeral_ports_within(lo, hi, *range, *reserved);
}

}  // namespace litterbox::hypervisor
