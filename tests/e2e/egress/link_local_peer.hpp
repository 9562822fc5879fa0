#pragma once

#include <optional>
#include <string>

// A link-local peer for the guest egress test (guest_egress_e2e_test.cpp): set up before the
// litterboxd that allows it starts (the shared service of tests/e2e/clones), so that the test
// runs on a clone instead of a cold boot.
namespace litterbox::e2e_test {

/// A listening TCP socket on `address`, any free port; created in whatever network
/// namespace the calling thread is in, and staying there. Throws std::runtime_error.
int listen_on(const std::string& address);

/// The port `fd` is bound to.
int port_of(int fd);

/// This host's first IPv4 address that is neither loopback nor link-local.
std::optional<std::string> host_address();

/// A network namespace with two link-local addresses, reached from this host through a veth
/// pair, and a listener on each. The namespace, the pair (both ends) and their routes are
/// gone when it is destroyed, also when construction fails halfway. Throws
/// std::runtime_error when it cannot be set up.
class link_local_peer {
 public:
  link_local_peer();
  ~link_local_peer();
  link_local_peer(const link_local_peer&) = delete;
  link_local_peer& operator=(const link_local_peer&) = delete;

  /// The address LITTERBOX_GUEST_EGRESS is to allow, and the one it is not.
  const std::string& allowed() const { return allowed_; }
  const std::string& denied() const { return denied_; }
  int allowed_port() const { return port_of(allowed_fd_); }
  int denied_port() const { return port_of(denied_fd_); }

 private:
  void cleanup();

  std::string netns_;
  std::string host_if_;
  std::string host_address_;
  std::string allowed_;
  std::string denied_;
  bool created_ = false;
  int allowed_fd_ = -1;
  int denied_fd_ = -1;
};

/// Puts the host's rules back to the default policy when destroyed, so the allowed address
/// does not stay open for other guests on this host.
struct default_policy_restorer {
  default_policy_restorer() = default;
  default_policy_restorer(const default_policy_restorer&) = delete;
  default_policy_restorer& operator=(const default_policy_restorer&) = delete;
  ~default_policy_restorer();
};

}  // namespace litterbox::e2e_test
