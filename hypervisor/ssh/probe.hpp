#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// The outcome of one host-key probe.
enum class probe_status {
  matched,      ///< the server presented exactly the expected key
  mismatch,     ///< the server presented another key
  unreachable,  ///< no SSH handshake (refused, timed out, not SSH); worth retrying
};

struct probe_result {
  probe_status status = probe_status::unreachable;
  std::string detail;  ///< why, for logs and error messages; never contains key material
};

/// Connects to host:port, runs the SSH key exchange offering only ssh-ed25519 (no user
/// authentication, no config files read) and compares the server's host key blob with
/// `expected_public_line` ("ssh-ed25519 AAAA… [comment]"). Blocks for at most about
/// `timeout`. Thread-safe.
probe_result probe_host_key(std::string_view host, int port, std::string_view expected_public_line,
                            std::chrono::milliseconds timeout);

/// A TCP connection to an SSH endpoint opened ahead of its handshake, so that the server's
/// start-up for this connection overlaps other work: OpenSSH 9.2 forks and re-executes sshd
/// for every connection, which costs hundreds of milliseconds in an emulated guest, and the
/// new process reads the host key files then. Move-only; closes its socket when destroyed.
class ssh_connection {
 public:
  ssh_connection() = default;
  ssh_connection(ssh_connection&& other) noexcept;
  ssh_connection& operator=(ssh_connection&& other) noexcept;
  ssh_connection(const ssh_connection&) = delete;
  ssh_connection& operator=(const ssh_connection&) = delete;
  ~ssh_connection();

  /// Connects to host:port (an IPv4 literal) within `timeout`. A failure gives an object
  /// that is not open; `detail` says why.
  static ssh_connection open(std::string_view host, int port, std::chrono::milliseconds timeout);

  bool is_open() const { return fd_ >= 0; }
  const std::string& detail() const { return detail_; }
  /// Hands the socket over (the object is no longer open).
  int release();

 private:
  int fd_ = -1;
  std::string detail_;
};

/// probe_host_key over `connection`, which it consumes: the SSH version exchange and key
/// exchange run now, on the connection opened earlier. A connection that is not open is
/// unreachable.
probe_result probe_host_key(ssh_connection connection, std::string_view host, int port,
                            std::string_view expected_public_line,
                            std::chrono::milliseconds timeout);

}  // namespace litterbox::hypervisor
