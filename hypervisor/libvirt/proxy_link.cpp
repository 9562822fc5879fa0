#include "hypervisor/libvirt/proxy_link.hpp"

#include "base/process.hpp"
#include "hypervisor/errc.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {

constexpr std::chrono::milliseconds k_tool_timeout{10'000};
constexpr std::string_view k_host_address = "169.254.77.1";
constexpr std::string_view k_host_prefix = "169.254.77.1/30";
constexpr std::string_view k_tap_prefix = "lbp";

// Only TCP to the proxy listeners comes in, only their answers go out, nothing is forwarded;
// everything else, IPv6 included, is dropped. The namespace's whole ruleset is litterbox's:
// every prepare replaces all of it in one transaction, so a table someone added goes too.
constexpr std::string_view k_ruleset =
    "flush ruleset\n"
    "table inet litterbox_proxy {\n"
    "  chain input {\n"
    "    type filter hook input priority 0; policy drop;\n"
    "    meta nfproto ipv4 ip daddr 169.254.77.1 tcp dport 80 accept\n"
    "  }\n"
    "  chain forward {\n"
    "    type filter hook forward priority 0; policy drop;\n"
    "  }\n"
    "  chain output {\n"
    "    type filter hook output priority 0; policy drop;\n"
    "    meta nfproto ipv4 ip saddr 169.254.77.1 tcp sport 80 accept\n"
    "  }\n"
    "}\n";

bool valid_ifname(std::string_view name) {
  return !name.empty() && name.size() < 16 &&
         name.find_first_of("/ \t\n:") == std::string_view::npos;
}

// What `argv` printed, or why it failed.
result<std::string> output_of(const std::vector<std::string>& argv, std::string_view what) {
  const auto r = run_process(argv, k_tool_timeout);
  if (!r || r->timed_out || r->exit_code != 0) {
    return make_error(errc::unavailable,
                      "cannot read " + std::string(what) + ": " + process_failure_text(r));
  }
  return r->out;
}

// Runs `argv`; "" on success, else what went wrong.
std::string run(const std::vector<std::string>& argv) {
  const auto r = run_process(argv, k_tool_timeout);
  if (r && !r->timed_out && r->exit_code == 0) {
    return {};
  }
  std::string what;
  for (const auto& a : argv) {
    what += (what.empty() ? "" : " ") + (a.size() > 60 ? a.substr(0, 60) + "…" : a);
  }
  return what + ": " + process_failure_text(r);
}

}  // namespace

netns_proxy_links::netns_proxy_links(std::string netns, guest_listener_sink* sink)
    : netns_(std::move(netns)), sink_(sink) {}

result<void> netns_proxy_links::prepare() {
  if (!valid_ifname(netns_)) {
    return make_error(errc::unavailable, "the proxy namespace needs a plain name");
  }
  const std::lock_guard lock(prepare_mutex_);
  std::error_code ec;
  if (!std::filesystem::exists("/run/netns/" + netns_, ec)) {
    if (auto why = run({"ip", "netns", "add", netns_});
        !why.empty() && !std::filesystem::exists("/run/netns/" + netns_, ec)) {
      return make_error(errc::unavailable, "cannot create the proxy namespace: " + why);
    }
  }
  // New devices (taps moved in) take `default`; forwarding is off by default in a new
  // namespace and is pinned off anyway.
  if (auto why = run({"ip", "netns", "exec", netns_, "sysctl", "-q", "-w",
                      "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                      "net.ipv4.ip_forward=0"});
      !why.empty()) {
    return make_error(errc::unavailable, "cannot configure the proxy namespace: " + why);
  }
  if (auto why = run({"ip", "netns", "exec", netns_, "nft", std::string(k_ruleset)});
      !why.empty()) {
    return make_error(errc::unavailable, "cannot install the proxy namespace's filter: " + why);
  }
  auto listed = output_of({"ip", "netns", "exec", netns_, "nft", "list", "ruleset"},
                          "the proxy namespace's filter");
  if (!listed) {
    return listed.error();
  }
  ruleset_ = std::move(*listed);
  return {};
}

proxy_links::state netns_proxy_links::inspect() {
  state s;
  std::error_code ec;
  if (!std::filesystem::exists("/run/netns/" + netns_, ec)) {
    s.detail = "the proxy namespace " + netns_ + " does not exist";
    return s;
  }
  const auto sysctls =
      output_of({"ip", "netns", "exec", netns_, "sysctl", "-n", "net.ipv4.ip_forward",
                 "net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"},
                "the proxy namespace's settings");
  if (!sysctls) {
    s.detail = sysctls.error().message;
    return s;
  }
  if (*sysctls != "0\n1\n1\n") {
    s.detail = "forwarding is on or IPv6 is enabled in the proxy namespace " + netns_;
    return s;
  }
  const auto listed = output_of({"ip", "netns", "exec", netns_, "nft", "list", "ruleset"},
                                "the proxy namespace's filter");
  if (!listed) {
    s.detail = listed.error().message;
    return s;
  }
  {
    const std::lock_guard lock(prepare_mutex_);
    if (ruleset_.empty()) {
      s.detail = "the proxy namespace's filter was never installed by this process";
      return s;
    }
    if (*listed != ruleset_) {
      s.detail = "the nftables ruleset in the proxy namespace " + netns_ +
                 " is not the one litterbox installed (flushed, changed or added to)";
      return s;
    }
  }
  const auto links = taps();
  s.ok = true;
  s.detail = "namespace " + netns_ +
             ": only TCP to 169.254.77.1:80 admitted, no forwarding, no IPv6; " +
             (links ? std::to_string(links->size()) : std::string("?")) + " guest links";
  return s;
}

result<void> netns_proxy_links::adopt(const std::string& host_id, const std::string& tap,
                                      bool listen) {
  if (!valid_ifname(tap)) {
    return make_error(errc::vm_create_failed, "malformed proxy tap name");
  }
  auto fail = [&](const std::string& why) {
    return make_error(errc::vm_create_failed, "cannot set up the proxy link " + tap + ": " + why);
  };
  // Not here: a restart finds it in the namespace already.
  if (auto moved = run({"ip", "link", "set", "dev", tap, "netns", netns_}); !moved.empty()) {
    if (!run({"ip", "-n", netns_, "link", "show", "dev", tap}).empty()) {
      return fail(moved);
    }
  }
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "netns", "exec", netns_, "sysctl", "-q", "-w",
            "net.ipv6.conf." + tap + ".disable_ipv6=1"},
           {"ip", "-n", netns_, "addr", "replace", std::string(k_host_prefix), "dev", tap},
           {"ip", "-n", netns_, "link", "set", "dev", tap, "up"}}) {
    if (auto why = run(argv); !why.empty()) {
      return fail(why);
    }
  }
  if (!listen || sink_ == nullptr) {
    return {};
  }
  {
    // A listener of an earlier adopt holds the address on this tap: it goes first.
    const std::lock_guard lock(listeners_mutex_);
    sink_->remove_listener(host_id);
    listening_.erase(host_id);
  }
  auto fd = open_listener(tap);
  if (!fd) {
    return fd.error();
  }
  const std::lock_guard lock(listeners_mutex_);
  sink_->add_listener(host_id, *fd);
  listening_[host_id] = ++generation_;
  return {};
}

result<int> netns_proxy_links::open_listener(const std::string& tap, int port) {
  if (!valid_ifname(tap)) {
    return make_error(errc::vm_create_failed, "malformed proxy tap name");
  }
  const int ns = ::open(("/run/netns/" + netns_).c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    return make_error(errc::vm_create_failed,
                      "cannot open the proxy namespace: " + std::string(std::strerror(errno)));
  }
  // setns() changes the calling thread only: a thread of its own enters the namespace, and a
  // socket keeps the namespace it was created in for its whole life.
  int fd = -1;
  std::string why;
  std::thread([&] {
    if (::setns(ns, CLONE_NEWNET) != 0) {
      why = std::string("setns: ") + std::strerror(errno);
      return;
    }
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      why = std::string("socket: ") + std::strerror(errno);
      return;
    }
    const int one = 1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, std::string(k_host_address).c_str(), &addr.sin_addr);
    if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        ::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, tap.c_str(),
                     static_cast<socklen_t>(tap.size())) != 0) {
      why = std::string("setsockopt: ") + std::strerror(errno);
    } else if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      why = std::string("bind: ") + std::strerror(errno);
    } else if (::listen(fd, SOMAXCONN) != 0) {
      why = std::string("listen: ") + std::strerror(errno);
    }
    if (!why.empty()) {
      ::close(fd);
      fd = -1;
    }
  }).join();
  ::close(ns);
  if (fd < 0) {
    return make_error(errc::vm_create_failed,
                      "cannot open the proxy listener on " + tap + ": " + why);
  }
  return fd;
}

result<void> netns_proxy_links::remove(const std::string& host_id, const std::string& tap) {
  if (sink_ != nullptr) {
    const std::lock_guard lock(listeners_mutex_);
    sink_->remove_listener(host_id);
    listening_.erase(host_id);
  }
  if (!valid_ifname(tap)) {
    return make_error(errc::teardown_failed, "malformed proxy tap name");
  }
  if (auto why = run({"ip", "-n", netns_, "link", "del", "dev", tap}); !why.empty()) {
    // Gone with its QEMU, or never moved here: either way not in the namespace.
    if (!run({"ip", "-n", netns_, "link", "show", "dev", tap}).empty()) {
      return {};
    }
    return make_error(errc::teardown_failed, "cannot delete the proxy link " + tap + ": " + why);
  }
  return {};
}

std::map<std::string, std::uint64_t> netns_proxy_links::listening() {
  const std::lock_guard lock(listeners_mutex_);
  return listening_;
}

void netns_proxy_links::drop_listener(const std::string& host_id, std::uint64_t generation) {
  const std::lock_guard lock(listeners_mutex_);
  const auto it = listening_.find(host_id);
  if (sink_ != nullptr && it != listening_.end() && it->second == generation) {
    sink_->remove_listener(host_id);
    listening_.erase(it);
  }
}

result<std::vector<std::string>> netns_proxy_links::taps() {
  const auto listed =
      output_of({"ip", "-n", netns_, "-o", "link", "show"}, "the proxy namespace's links");
  if (!listed) {
    return listed.error();
  }
  // "7: lbp0123456789ab: <BROADCAST,…" (a veth reads "name@ifN").
  std::vector<std::string> names;
  std::string_view text = *listed;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    const auto a = line.find(": ");
    if (a == std::string_view::npos) {
      continue;
    }
    std::string_view name = line.substr(a + 2);
    name = name.substr(0, std::min(name.find(':'), name.find('@')));
    if (name.substr(0, k_tap_prefix.size()) == k_tap_prefix) {
      names.emplace_back(name);
    }
  }
  return names;
}

result<void> fake_proxy_links::prepare() {
  const std::lock_guard lock(mutex_);
  calls_.emplace_back("prepare");
  broken_ = false;
  return {};
}

proxy_links::state fake_proxy_links::inspect() {
  const std::lock_guard lock(mutex_);
  ++inspections_;
  if (broken_) {
    return {false, "the fake proxy namespace was broken"};
  }
  return {true, "fake proxy links: " + std::to_string(taps_.size()) + " guest links"};
}

void fake_proxy_links::break_namespace() {
  const std::lock_guard lock(mutex_);
  broken_ = true;
}

int fake_proxy_links::inspections() {
  const std::lock_guard lock(mutex_);
  return inspections_;
}

result<void> fake_proxy_links::adopt(const std::string& host_id, const std::string& tap,
                                     bool listen) {
  const std::lock_guard lock(mutex_);
  calls_.push_back("adopt " + host_id + " " + tap + (listen ? " listen" : ""));
  if (fail_adopt_) {
    fail_adopt_ = false;
    return make_error(errc::vm_create_failed, "cannot set up the proxy link " + tap + ": injected");
  }
  taps_.push_back(tap);
  if (listen) {
    listening_[host_id] = ++generation_;
  }
  return {};
}

result<void> fake_proxy_links::remove(const std::string& host_id, const std::string& tap) {
  const std::lock_guard lock(mutex_);
  calls_.push_back("remove " + host_id + " " + tap);
  std::erase(taps_, tap);
  listening_.erase(host_id);
  return {};
}

std::map<std::string, std::uint64_t> fake_proxy_links::listening() {
  const std::lock_guard lock(mutex_);
  return listening_;
}

void fake_proxy_links::drop_listener(const std::string& host_id, std::uint64_t generation) {
  const std::lock_guard lock(mutex_);
  const auto it = listening_.find(host_id);
  if (it != listening_.end() && it->second == generation) {
    calls_.push_back("drop " + host_id);
    listening_.erase(it);
  }
}

result<std::vector<std::string>> fake_proxy_links::taps() {
  const std::lock_guard lock(mutex_);
  return taps_;
}

std::vector<std::string> fake_proxy_links::calls() {
  const std::lock_guard lock(mutex_);
  return calls_;
}

void fake_proxy_links::fail_next_adopt() {
  const std::lock_guard lock(mutex_);
  fail_adopt_ = true;
}

void fake_proxy_links::add_tap(std::string tap) {
  const std::lock_guard lock(mutex_);
  taps_.push_back(std::move(tap));
}

}  // namespace litterbox::hypervisor
