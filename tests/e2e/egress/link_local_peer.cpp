#include "tests/e2e/egress/link_local_peer.hpp"

#include "hypervisor/libvirt/egress_firewall.hpp"
#include "tests/e2e/api/e2e_support.hpp"

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sched.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace litterbox::e2e_test {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> k_tool_env{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};

void must(const std::vector<std::string>& argv) {
  const auto r = run_process(argv, k_tool_env, 60s);
  if (r.exit_code != 0) {
    std::string line;
    for (const auto& a : argv) {
      line += a + " ";
    }
    throw std::runtime_error(line + "failed: " + r.err);
  }
}

}  // namespace

int listen_on(const std::string& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 16) != 0) {
    throw std::runtime_error("cannot listen on " + address + ": " + std::strerror(errno));
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::optional<std::string> host_address() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    return std::nullopt;
  }
  std::optional<std::string> out;
  for (const ifaddrs* i = list; i != nullptr && !out; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) {
      continue;
    }
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    const std::uint32_t a = ntohl(in->sin_addr.s_addr);
    if ((a >> 24U) == 127U || (a >> 16U) == 0xA9FEU) {
      continue;
    }
    std::array<char, INET_ADDRSTRLEN> buf{};
    ::inet_ntop(AF_INET, &in->sin_addr, buf.data(), buf.size());
    out = buf.data();
  }
  ::freeifaddrs(list);
  return out;
}

link_local_peer::link_local_peer() {
  const auto id = std::to_string(::getpid());
  netns_ = "lb-egress-" + id;
  host_if_ = "lbe" + id + "h";
  const std::string peer_if = "lbe" + id + "n";
  // A /24 of its own per run, so that parallel runs rarely meet.
  const std::string net = "169.254." + std::to_string(100 + ::getpid() % 100) + ".";
  host_address_ = net + "1";
  allowed_ = net + "2";
  denied_ = net + "3";
  try {
    must({"ip", "netns", "add", netns_});
    created_ = true;
    must({"ip", "link", "add", host_if_, "type", "veth", "peer", "name", peer_if, "netns", netns_});
    must({"ip", "addr", "add", host_address_ + "/24", "dev", host_if_});
    must({"ip", "link", "set", host_if_, "up"});
    for (const auto& a : {allowed_, denied_}) {
      must({"ip", "-n", netns_, "addr", "add", a + "/24", "dev", peer_if});
    }
    must({"ip", "-n", netns_, "link", "set", peer_if, "up"});
    must({"ip", "-n", netns_, "link", "set", "lo", "up"});
    // Sockets stay in the namespace they were made in: make them on a thread that enters
    // it, so that this process never leaves the host's namespace.
    std::string failure;
    std::thread([&] {
      try {
        const int ns = ::open(("/run/netns/" + netns_).c_str(), O_RDONLY | O_CLOEXEC);
        if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
          throw std::runtime_error("cannot enter " + netns_ + ": " + std::strerror(errno));
        }
        ::close(ns);
        allowed_fd_ = listen_on(allowed_);
        denied_fd_ = listen_on(denied_);
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }).join();
    if (!failure.empty()) {
      throw std::runtime_error(failure);
    }
  } catch (...) {
    cleanup();
    throw;
  }
}

link_local_peer::~link_local_peer() {
  cleanup();
}

void link_local_peer::cleanup() {
  for (int* fd : {&allowed_fd_, &denied_fd_}) {
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  }
  if (created_) {
    // Deleting the namespace deletes its end of the pair, which takes the host end and the
    // host's route to the /24 with it.
    (void)run_process({"ip", "netns", "delete", netns_}, k_tool_env, 60s);
    (void)run_process({"ip", "link", "delete", host_if_}, k_tool_env, 60s);
    created_ = false;
  }
}

default_policy_restorer::~default_policy_restorer() {
  if (const passwd* pw = ::getpwnam("libvirt-qemu"); pw != nullptr) {
    hypervisor::iptables_egress_firewall fw{hypervisor::egress_policy{}};
    (void)fw.apply({pw->pw_uid});
  }
}

}  // namespace litterbox::e2e_test
