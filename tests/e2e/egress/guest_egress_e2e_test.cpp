#include "hypervisor/libvirt/egress_firewall.hpp"
#include "tests/e2e/api/e2e_support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <ifaddrs.h>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <pwd.h>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

// What a real guest can reach, through a real litterboxd: a listener on a link-local address
// that the test puts in a network namespace of its own, behind a veth pair, is out of reach
// by default and reachable once LITTERBOX_GUEST_EGRESS allows exactly that address; this
// host's own addresses stay out of reach whatever is allowed. Public egress is not tested
// (no internet here). Needs root, libvirtd and the loopback registry scripts/test prepares.
namespace litterbox::e2e_test {
namespace {

using json = nlohmann::json;
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

/// A listening TCP socket on `address`, any free port; created in whatever network
/// namespace the calling thread is in, and staying there.
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

/// A network namespace with two link-local addresses, reached from this host through a veth
/// pair, and a listener on each. The namespace, the pair (both ends) and their routes are
/// gone when it is destroyed, also when construction fails halfway.
class link_local_peer {
 public:
  link_local_peer() {
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
      must({"ip", "link", "add", host_if_, "type", "veth", "peer", "name", peer_if, "netns",
            netns_});
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
  ~link_local_peer() { cleanup(); }
  link_local_peer(const link_local_peer&) = delete;
  link_local_peer& operator=(const link_local_peer&) = delete;

  const std::string& allowed() const { return allowed_; }
  const std::string& denied() const { return denied_; }
  int allowed_port() const { return port_of(allowed_fd_); }
  int denied_port() const { return port_of(denied_fd_); }

 private:
  void cleanup() {
    for (int* fd : {&allowed_fd_, &denied_fd_}) {
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    }
    if (created_) {
      // Deleting the namespace deletes its end of the pair, which takes the host end and
      // the host's route to the /24 with it.
      (void)run_process({"ip", "netns", "delete", netns_}, k_tool_env, 60s);
      (void)run_process({"ip", "link", "delete", host_if_}, k_tool_env, 60s);
      created_ = false;
    }
  }

  std::string netns_;
  std::string host_if_;
  std::string host_address_;
  std::string allowed_;
  std::string denied_;
  bool created_ = false;
  int allowed_fd_ = -1;
  int denied_fd_ = -1;
};

/// This host's first IPv4 address that is neither loopback nor link-local.
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

/// Puts the host's rules back to the default policy when the test is over, so the allowed
/// address does not stay open for other guests on this host.
struct default_policy_restorer {
  ~default_policy_restorer() {
    if (const passwd* pw = ::getpwnam("libvirt-qemu"); pw != nullptr) {
      hypervisor::iptables_egress_firewall fw{hypervisor::egress_policy{}};
      (void)fw.apply({pw->pw_uid});
    }
  }
};

/// One line per probe, "<label> OPEN" or "<label> CLOSED", from inside the guest: a TCP
/// connect through bash's /dev/tcp bounded by 10 s, all probes at once.
std::string probe_script(const std::vector<std::pair<std::string, std::string>>& targets) {
  std::string script;
  for (const auto& [label, address] : targets) {
    script += "(if timeout 10 bash -c 'exec 3<>/dev/tcp/" + address + "' 2>/dev/null; then echo '" +
              label + " OPEN'; else echo '" + label + " CLOSED'; fi) & ";
  }
  return script + "wait";
}

TEST(GuestEgress, LinkLocalPeerIsReachableOnlyWhereAllowedAndThisHostNeverIs) {
  const default_policy_restorer restore;
  std::unique_ptr<link_local_peer> peer;
  try {
    peer = std::make_unique<link_local_peer>();
  } catch (const std::exception& e) {
    FAIL() << "cannot set up the link-local peer: " << e.what();
  }
  const auto own = host_address();
  ASSERT_TRUE(own) << "this host has no non-loopback IPv4 address to probe";
  const int on_host_address = listen_on(*own);
  const int on_loopback = listen_on("127.0.0.1");

  std::unique_ptr<e2e_service> service;
  try {
    service = std::make_unique<e2e_service>(
        std::vector<std::string>{"--guest-egress", "allow=" + peer->allowed() + "/32"});
  } catch (const std::exception& e) {
    FAIL() << "cannot start litterboxd with the libvirt driver: " << e.what();
  }
  {
    SCOPED_TRACE("/doctor reports the firewall in force");
    const auto r = service->http().get("/doctor", e2e_service::auth());
    const json doctor = body_json(r);
    bool found = false;
    for (const auto& c : doctor.value("checks", json::array())) {
      if (c.value("name", "") == "guest_isolation") {
        found = true;
        EXPECT_EQ(c.value("status", ""), "ok") << c.dump();
      }
    }
    EXPECT_TRUE(found) << r;
  }

  const temp_dir work("lb-e2e-egress");
  const auto created = service->create(json::object());
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  const json host = body_json(created);
  ASSERT_TRUE(host.contains("private_key")) << host.dump();
  const auto login = make_ssh_login(host, work.path(), host["private_key"].get<std::string>());

  const auto r = ssh_run(
      login,
      probe_script(
          {{"own-sshd", "127.0.0.1/22"},
           {"allowed-link-local", peer->allowed() + "/" + std::to_string(peer->allowed_port())},
           {"denied-link-local", peer->denied() + "/" + std::to_string(peer->denied_port())},
           {"host-address", *own + "/" + std::to_string(port_of(on_host_address))},
           {"host-loopback", "10.0.2.2/" + std::to_string(port_of(on_loopback))}}));
  ASSERT_EQ(r.exit_code, 0) << r;
  // The first two lines prove that the probe works and that the peer is reachable at all,
  // so the CLOSED lines are the firewall's doing.
  EXPECT_NE(r.out.find("own-sshd OPEN\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("allowed-link-local OPEN\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("denied-link-local CLOSED\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("host-address CLOSED\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("host-loopback CLOSED\n"), std::string::npos) << r;

  const auto removed = service->remove(host.value("id", ""));
  EXPECT_EQ(removed.status, 204) << removed;
  EXPECT_TRUE(leftovers(*service, host).empty());
  ::close(on_host_address);
  ::close(on_loopback);
}

}  // namespace
}  // namespace litterbox::e2e_test
